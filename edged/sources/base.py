"""What every frame source gives: a Frame, and the open/read/close interface."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


@dataclass
class Frame:
    image: np.ndarray  # BGR uint8, as captured
    pos: int  # index of the frame in its source (files: position in the file)
    ts: float = field(default_factory=time.time)
    pixels: Optional[np.ndarray] = None  # preprocessed RGB uint8, filled by the grabber
    source: str = ""  # the name of the source it came from ("" for the one `[source]`), set by the grabber
    sound: Optional["Sound"] = None  # a sound window's samples and loudness; `image` is then its spectrogram


@dataclass(frozen=True)
class Sound:
    """What a sound source adds to its frame (edged.sources.audio)."""

    samples: np.ndarray  # the window's samples (16 kHz mono, int16 range)
    level_db: float  # loudness of its newest hop (dB below full scale)
    hops: tuple  # its hops, oldest first: which are above the room's noise floor
    loud: bool  # any hop above the noise floor (the gate infers it)
    whole: bool  # holding a whole sound, or filled by a long one (a capture stores it)


class Source:
    """Interface: open(), read() -> Frame | None at the end, close(). Raises SourceError when lost."""

    live = True  # cameras and streams pace themselves and can drop out
    description = "source"

    def open(self) -> None: ...

    def read(self) -> Optional[Frame]: ...

    def close(self) -> None: ...
