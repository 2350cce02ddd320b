"""What came over the wire, read as data: JSON bounded in size and nesting depth, and numbers in topic levels.

Python's json module recurses once per nesting level: 30,000 brackets in a 60 KB manifest raise RecursionError,
which is not a ValueError and escaped the handlers that caught bad JSON. Everything here fails with ValueError
alone, naming what was wrong.
"""

from __future__ import annotations

import json
import re

import numpy as np

MAX_DEPTH = 64
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)


def nesting_depth(text: str) -> int:
    """How deep the brackets of a JSON text nest (strings left out)."""
    codes = np.frombuffer(_STRING.sub("", text).encode("utf-8", "replace"), np.uint8)
    steps = np.isin(codes, (ord("["), ord("{"))).astype(np.int32) - np.isin(codes, (ord("]"), ord("}")))
    return int(np.cumsum(steps).max(initial=0))


def loads(data: bytes | str, max_bytes: int = 1 << 20, max_depth: int = MAX_DEPTH):
    """JSON from the wire; ValueError for what is too large, too deep, not UTF-8 or not JSON."""
    if len(data) > max_bytes:
        raise ValueError(f"{len(data)} bytes of JSON, over the {max_bytes} byte limit")
    text = data.decode("utf-8") if isinstance(data, (bytes, bytearray, memoryview)) else data
    depth = nesting_depth(text)
    if depth > max_depth:
        raise ValueError(f"JSON nested {depth} levels deep, over the limit of {max_depth}")
    try:
        return json.loads(text)
    except RecursionError:  # not reached after the depth check; kept as the last wall
        raise ValueError("JSON nested too deep") from None


def topic_number(level: str, max_digits: int = 6) -> int:
    """A topic level that must be a small non-negative number: ASCII digits only (`str.isdigit` takes '²', which
    `int` refuses)."""
    if not (0 < len(level) <= max_digits and level.isascii() and level.isdigit()):
        raise ValueError(f"{level[:16]!r} is not a number of at most {max_digits} digits")
    return int(level)
