"""Frame sources: camera index / URL / video file, image folder, synthetic scenes, sound (microphone, WAV file);
preprocessing. Which class opens a URI is edged.source_kinds' table."""

from __future__ import annotations

from ..config import SourceConfig
from ..source_kinds import SourceKind, kind_of
from .base import IMAGE_SUFFIXES, Frame, Sound, Source
from .grabber import FrameGrabber

__all__ = ["IMAGE_SUFFIXES", "Frame", "Sound", "Source", "FrameGrabber", "open_source"]


def open_source(cfg: SourceConfig, kinds: tuple[SourceKind, ...] = ()) -> Source:
    """The source `cfg.uri` names, opened by its kind's class (`kinds` are asked before the installed ones)."""
    uri = cfg.uri.strip()
    return kind_of(uri, kinds).opener_class()(uri, cfg)
