"""Arrays from files that may have come from another machine, read only once their size is known to be bounded.

A zip (`.npz`) member's declared size and a `.npy` header's shape are read first: 1.57 MB of deflated zeros took a
follower from 129 MB to 1.70 GB before. Object arrays are never read (no pickle)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from numpy.lib import format as npy

from ..errors import EdgedError

MAX_ARRAYS_BYTES = 256 << 20  # a head's or an example set's arrays at most, unpacked


class ArraysError(EdgedError):
    """Arrays that cannot be read as data within their bounds; the message names the member and the size."""


def _member_bytes(stream: BinaryIO, name: str, declared: int) -> int:
    """What `.npy` member `name` unpacks to, from its header; refused when it could not fit in `declared` bytes."""
    try:
        version = npy.read_magic(stream)
        shape, _, dtype = (npy.read_array_header_1_0(stream) if version == (1, 0) else
                           npy.read_array_header_2_0(stream))
    except (ValueError, OSError, SyntaxError) as e:
        raise ArraysError(f"{name}: not an array ({e})") from None
    if dtype.hasobject:
        raise ArraysError(f"{name}: an object array (it would need pickle)")
    size = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
    if size > declared:
        raise ArraysError(f"{name}: its header claims {size} bytes of data, more than the member's {declared}")
    return size


def load_npz(source: Union[str, Path, bytes], max_bytes: int = MAX_ARRAYS_BYTES) -> dict[str, np.ndarray]:
    """Every array of an `.npz` file (or its bytes) once the members' unpacked sizes add up to at most `max_bytes`."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source)
    except (zipfile.BadZipFile, OSError) as e:
        raise ArraysError(f"not an array archive ({e})") from None
    with archive:
        total = 0
        for info in archive.infolist():
            if not info.filename.endswith(".npy") or info.is_dir():
                raise ArraysError(f"{info.filename[:80]!r}: not an array")
            total += info.file_size
            if total > max_bytes:
                raise ArraysError(f"{info.filename[:80]!r}: the arrays unpack to more than {max_bytes} bytes")
            with archive.open(info) as member:
                _member_bytes(member, info.filename, info.file_size)
        try:
            with np.load(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source,
                         allow_pickle=False) as data:
                return {key: data[key] for key in data.files}
        except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
            raise ArraysError(f"unreadable arrays ({e})") from None
