"""What came over the wire, read as data: JSON bounded in size and nesting depth, and numbers in topic levels.

Python's json module recurses once per nesting level: 30,000 brackets in a 60 KB manifest raise RecursionError,
which is not a ValueError and escaped the handlers that caught bad JSON. Everything here fails with ValueError
alone, naming what was wrong.
"""

from __future__ import annotations

import json
import re

MAX_DEPTH = 64
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_BRACKET = re.compile(r"[\[\]{}]")


def nesting_depth(text: str, limit: int = MAX_DEPTH) -> int:
    """How deep the brackets of a JSON text nest (strings left out), counted up to just past `limit`."""
    depth = deepest = 0
    for match in _BRACKET.finditer(_STRING.sub("", text)):
        depth += 1 if match.group() in "[{" else -1
        if depth > deepest:
            deepest = depth
            if deepest > limit:
                break
    return deepest


def loads(data: bytes | str, max_bytes: int = 1 << 20, max_depth: int = MAX_DEPTH):
    """JSON from the wire; ValueError for what is too large, too deep, not UTF-8 or not JSON."""
    if len(data) > max_bytes:
        raise ValueError(f"{len(data)} bytes of JSON, over the {max_bytes} byte limit")
    text = data.decode("utf-8") if isinstance(data, (bytes, bytearray, memoryview)) else data
    depth = nesting_depth(text, max_depth)
    if depth > max_depth:
        raise ValueError(f"JSON nested more than {max_depth} levels deep")
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
