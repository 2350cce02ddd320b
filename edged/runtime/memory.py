"""Giving memory back to the system after start-up, where the C library allows it."""

from __future__ import annotations

import ctypes
import gc
import logging
import os

log = logging.getLogger(__name__)


def _libc():
    """The C library's symbols as this process already has them (no `ldconfig` child, which `find_library` forks)."""
    try:
        return ctypes.CDLL(None)
    except OSError:
        return None


M_MMAP_THRESHOLD, M_ARENA_MAX = -3, -8  # mallopt's parameters (glibc's malloc.h)
MMAP_THRESHOLD = 1 << 20  # blocks this large (numpy's buffers of frames, batches, training) are mapped on their own
ARENAS = 2


def keep_the_heap_small() -> bool:
    """glibc only, set before the daemon's threads start: blocks of `MMAP_THRESHOLD` and more mapped on their own,
    so freeing one returns it at once (glibc's default raises that threshold to the largest block freed so far;
    after the first train, every later buffer of that size comes from a heap that keeps it), and `ARENAS` malloc
    arenas, not one per thread with its own freed memory. Not where MALLOC_ARENA_MAX, MALLOC_MMAP_THRESHOLD_ or
    GLIBC_TUNABLES already say otherwise. Measured by `edged bench soak`."""
    if any(os.environ.get(v) for v in ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES")):
        return False
    libc = _libc()
    mallopt = getattr(libc, "mallopt", None) if libc is not None else None
    if mallopt is None:
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_ARENA_MAX, ARENAS))


def release_free_memory(collect: bool = True) -> None:
    """Start-up builds and drops large temporaries (the int8 check, re-embedding stored frames); glibc keeps the
    freed heap mapped. `malloc_trim(0)` returns it (measured by `edged bench memory`); after a job, without the
    garbage collection (`collect`) that would hold the frame loop. No-op elsewhere."""
    if collect:
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
