"""The kinds of source a `uri` can name: how its URIs look, whether it hears (sound) or sees, and the class that opens
it. One table for the config's checks and for opening sources.

A new kind is one module under `edged/sources/` (a `Source` subclass taking `(uri, cfg)`) plus its `SourceKind`
here, or, from another package, a `SourceKind` in the `edged.sources` entry-point group (asked first, so it may
claim a scheme such as `thermal:`). The opener is named as "module:Class" and imported only when a source of that
kind opens, so this module imports nothing of edged and the config can ask it what a URI is.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

ENTRY_POINTS = "edged.sources"


@dataclass(frozen=True)
class SourceKind:
    name: str
    matches: Callable[[str], bool]  # the stripped URI is of this kind
    opener: str  # "module:Class", the Source subclass that opens it: Class(uri, cfg)
    hears: bool = False  # sound windows (the image is a spectrogram), not pictures

    def opener_class(self) -> type:
        module, _, name = self.opener.partition(":")
        return getattr(importlib.import_module(module), name)


def _synthetic(uri: str) -> bool:
    return uri == "synthetic" or uri.startswith("synthetic:")


def _folder(uri: str) -> bool:
    return not uri.isdigit() and "://" not in uri and Path(uri).is_dir()


BUILT_IN = (
    SourceKind("synthetic", _synthetic, "edged.sources.synthetic:SyntheticSource"),
    SourceKind("microphone", lambda uri: uri.startswith("audio:"), "edged.sources.audio:MicrophoneSource", hears=True),
    SourceKind("wav", lambda uri: uri.lower().endswith(".wav"), "edged.sources.audio:WavSource", hears=True),
    SourceKind("folder", _folder, "edged.sources.folder:FolderSource"),
    # https stays with FFmpeg (the last kind), which accepts cameras' self-signed certificates
    SourceKind("http", lambda uri: uri.lower().startswith("http://"), "edged.sources.mjpeg:HttpCameraSource"),
    SourceKind("opencv", lambda uri: True, "edged.sources.opencv:OpenCVSource"),  # camera index, rtsp://, video file
)


@lru_cache(maxsize=1)
def installed() -> tuple[SourceKind, ...]:
    """Kinds from the `edged.sources` entry-point group, then the built-in ones."""
    found = []
    for entry in importlib.metadata.entry_points(group=ENTRY_POINTS):
        kind = entry.load()
        if not isinstance(kind, SourceKind):
            raise TypeError(f"entry point {entry.name!r} in {ENTRY_POINTS!r} is not a SourceKind: {kind!r}")
        found.append(kind)
    return tuple(found) + BUILT_IN


def kind_of(uri: str, kinds: tuple[SourceKind, ...] = ()) -> SourceKind:
    """The first kind (of `kinds`, then the installed ones) whose URIs look like `uri`."""
    uri = uri.strip()
    return next(kind for kind in kinds + installed() if kind.matches(uri))


def hears(uri: str) -> bool:
    """A sound source (a microphone, `audio:` or `audio:<device>`, or a WAV file)."""
    return kind_of(uri).hears
