"""Reduced JPEG decoding: a large photo decoded at 1/2, 1/4 or 1/8 scale costs a fraction of a full decode."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from ..config import SourceConfig

# start-of-frame markers (baseline, progressive, lossless, arithmetic); they carry the image size
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
REDUCED_FLAGS = {8: cv2.IMREAD_REDUCED_COLOR_8, 4: cv2.IMREAD_REDUCED_COLOR_4, 2: cv2.IMREAD_REDUCED_COLOR_2}
HEADER_BYTES = 1 << 17  # EXIF blocks (thumbnails included) stay under 64 KB


def jpeg_size(data: bytes) -> Optional[tuple[int, int]]:
    """(width, height) from a JPEG's start-of-frame segment, or None when `data` holds none."""
    if data[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 9 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # segments without a length
            i += 2
            continue
        if marker in _SOF:
            return int.from_bytes(data[i + 7:i + 9], "big"), int.from_bytes(data[i + 5:i + 7], "big")
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return None


def least_size(cfg: SourceConfig) -> Optional[tuple[int, int]]:
    """The least (w, h) a JPEG source decodes to: the configured frame size, or None when reduction is off."""
    return (cfg.width, cfg.height) if cfg.reduced_decoding else None


def reduction(size: tuple[int, int], least: tuple[int, int]) -> int:
    """The largest factor (8, 4, 2, else 1) leaving an image of `size` at least `least` (w, h), either orientation."""
    long_side, short_side = max(size), min(size)
    need_long, need_short = max(least), min(least)
    for factor in REDUCED_FLAGS:
        if long_side // factor >= need_long and short_side // factor >= need_short:
            return factor
    return 1


def decode_flag(header: bytes, least: Optional[tuple[int, int]]) -> int:
    """The OpenCV read flag for a JPEG starting with `header`: reduced as far as `least` (w, h) allows."""
    size = jpeg_size(header) if least else None
    return REDUCED_FLAGS.get(reduction(size, least) if size else 1, cv2.IMREAD_COLOR)


def read_image(path: Path, least: Optional[tuple[int, int]]) -> Optional[np.ndarray]:
    """A BGR image; a JPEG larger than `least` (w, h) is decoded reduced, never below `least`. None if unreadable."""
    flag = cv2.IMREAD_COLOR
    if least is not None and path.suffix.lower() in (".jpg", ".jpeg"):
        with open(path, "rb") as f:
            flag = decode_flag(f.read(HEADER_BYTES), least)
    return cv2.imread(str(path), flag)
