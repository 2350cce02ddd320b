"""What every section shares: strict models (unknown keys refused), names that are one topic level."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict


# a device, trainer or head name: one topic level, one path component
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def check_unit_box(box: tuple[float, float, float, float], what: str) -> None:
    x1, y1, x2, y2 = box
    if not (0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1):
        raise ValueError(f"{what} must be [x1, y1, x2, y2] with x1 < x2 and y1 < y2, all within [0, 1] of the frame")


def topic_level(v: str, what: str) -> str:
    if not NAME_RE.fullmatch(v):
        raise ValueError(f"{what} must be 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit")
    return v


def unique_names(items: list, what: str) -> list:
    names = [item.name for item in items]
    if len(set(names)) != len(names):
        raise ValueError(f"{what} names must be unique: {names}")
    return items
