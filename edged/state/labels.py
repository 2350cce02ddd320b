"""What a label may be: one rule for commands, the store and what other devices share (no OpenCV, no numpy: the
command line checks a command with it before it is sent)."""

from __future__ import annotations

import re
from typing import Optional

LABEL_RE = re.compile(r"[\w][\w .\-]{0,63}")  # what a label may be: 1-64 letters, digits, '_', '-', '.', space
# the names of the empty state and of the open-set answer (edged.scene.states): taught as classes, they would be
# answers that mean nothing was seen
RESERVED_LABELS = ("none", "unknown")


def label_problem(label) -> Optional[str]:
    """Why `label` cannot be an example's label, or None when it can."""
    if not isinstance(label, str) or not LABEL_RE.fullmatch(label):
        return ("label must be 1-64 characters: letters, digits, '_', '-', '.', space; not starting with a space or "
                "punctuation")
    if label.strip().lower() in RESERVED_LABELS:
        return (f"label {label!r} is reserved: 'none' is the empty state and 'unknown' the answer for what was not "
                f"taught; teach the empty scene as 'background'")
    return None
