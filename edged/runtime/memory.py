"""Giving memory back to the system after start-up, where the C library allows it."""

from __future__ import annotations

import ctypes
import gc
import logging

log = logging.getLogger(__name__)


def _libc():
    """The C library's symbols as this process already has them (no `ldconfig` child, which `find_library` forks)."""
    try:
        return ctypes.CDLL(None)
    except OSError:
        return None


def release_free_memory() -> None:
    """Start-up builds and drops large temporaries (the int8 check, re-embedding stored frames); glibc keeps the
    freed heap mapped. `malloc_trim(0)` returns it (measured by `edged bench memory`). No-op elsewhere."""
    gc.collect()  # start-up garbage in reference cycles first, so that its memory is free to return
    libc = _libc()
    trim = getattr(libc, "malloc_trim", None) if libc is not None else None
    if trim is not None:
        trim(0)


MADV_DONTNEED = 4


def release_file_pages(path: str) -> int:
    """Drop this process's resident pages of a read-only mapping of `path` (a model file): XNNPACK has packed the
    weights into its own buffers, so the file's pages are not read again; if they are, they fault back in from the
    page cache. Returns the bytes of address space advised; 0 where /proc or madvise are missing."""
    libc = _libc()
    madvise = getattr(libc, "madvise", None) if libc is not None else None
    if madvise is None:
        return 0
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    target = str(path)
    advised = 0
    try:
        with open("/proc/self/maps") as maps:
            lines = maps.readlines()
    except OSError:
        return 0
    for line in lines:
        parts = line.split(maxsplit=5)
        if len(parts) < 6 or parts[5].strip() != target or "w" in parts[1]:
            continue
        start, end = (int(v, 16) for v in parts[0].split("-"))
        if madvise(start, end - start, MADV_DONTNEED) == 0:
            advised += end - start
    return advised
