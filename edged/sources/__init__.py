"""Frame sources: camera index / URL / video file, image folder, synthetic scenes, sound (microphone, WAV file);
preprocessing."""

from __future__ import annotations

from pathlib import Path

from ..config import SourceConfig, is_audio_uri
from .audio import MicrophoneSource, WavSource
from .base import IMAGE_SUFFIXES, Frame, Source
from .folder import FolderSource
from .grabber import FrameGrabber
from .mjpeg import HttpCameraSource
from .opencv import OpenCVSource
from .synthetic import SyntheticSource

__all__ = ["IMAGE_SUFFIXES", "Frame", "Source", "FolderSource", "FrameGrabber", "HttpCameraSource", "OpenCVSource",
           "SyntheticSource", "open_source"]


def open_source(cfg: SourceConfig) -> Source:
    uri = cfg.uri.strip()
    if uri == "synthetic" or uri.startswith("synthetic:"):
        return SyntheticSource(uri, cfg)
    if is_audio_uri(uri):
        return MicrophoneSource(uri, cfg) if uri.startswith("audio:") else WavSource(uri, cfg)
    if not uri.isdigit() and "://" not in uri and Path(uri).is_dir():
        return FolderSource(uri, cfg)
    if uri.lower().startswith("http://"):  # https stays with FFmpeg, which accepts cameras' self-signed certificates
        return HttpCameraSource(uri, cfg)
    return OpenCVSource(uri, cfg)
