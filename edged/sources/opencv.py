"""Cameras (by index), rtsp/http streams and video files, decoded by OpenCV."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import cv2

from ..config import SourceConfig, redact_uri
from ..errors import SourceError
from .base import Frame, Source


class OpenCVSource(Source):
    def __init__(self, uri: str, cfg: SourceConfig):
        self.uri = uri
        self.cfg = cfg
        self.is_camera = uri.isdigit()
        self.is_stream = "://" in uri
        self.live = self.is_camera or self.is_stream
        self.description = f"camera {uri}" if self.is_camera else redact_uri(uri)
        self._cap: Optional[cv2.VideoCapture] = None
        self._pos = 0
        self.fps = cfg.fps

    def _thread_params(self) -> list[int]:
        threads = self.cfg.decode_threads
        return [cv2.CAP_PROP_N_THREADS, threads] if threads and hasattr(cv2, "CAP_PROP_N_THREADS") else []

    def open(self) -> None:
        if self.is_camera:
            cap = cv2.VideoCapture(int(self.uri))
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.cfg.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.cfg.height)
        elif self.is_stream:  # a stalled stream must fail a read, not block the grabber for good
            timeout_ms = int(self.cfg.read_timeout_s * 1000)
            cap = cv2.VideoCapture(self.uri, cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms,
                                                              cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms]
                                   + self._thread_params())
        else:
            if not Path(self.uri).is_file():
                raise SourceError(f"video file not found: {self.uri}")
            cap = cv2.VideoCapture(self.uri, cv2.CAP_FFMPEG, self._thread_params())
            if not cap.isOpened():  # a format FFmpeg does not take: any backend OpenCV has
                cap.release()
                cap = cv2.VideoCapture(self.uri)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"cannot open {self.description}")
        file_fps = cap.get(cv2.CAP_PROP_FPS)
        if not self.live and file_fps and 0 < file_fps < 1000:
            self.fps = file_fps
        self._cap = cap
        self._pos = 0

    def read(self) -> Optional[Frame]:
        if self._cap is None:
            raise SourceError("source not open")
        ok, img = self._cap.read()
        if not ok or img is None:
            if self.live:
                raise SourceError(f"{self.description} lost")
            if not self.cfg.loop:
                return None
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            self._pos = 0
            ok, img = self._cap.read()
            if not ok:
                raise SourceError(f"cannot rewind {self.description}")
        frame = Frame(img, self._pos)
        self._pos += 1
        return frame

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
