"""HTTP cameras. An MJPEG stream (multipart JPEGs) is parsed and decoded here, so large frames can be
decoded reduced; any other HTTP stream goes to OpenCV's FFmpeg backend."""

from __future__ import annotations

import base64
import urllib.parse
import urllib.request
from http.client import HTTPResponse
from typing import Optional

import cv2
import numpy as np

from ..config import SourceConfig, redact_uri
from ..errors import SourceError
from .base import Frame, Source
from .jpeg import decode_flag, least_size
from .opencv import OpenCVSource

MAX_LINE = 4096  # a boundary or part-header line
MAX_PART = 64 << 20  # one JPEG; anything larger is not a camera frame


def _request(uri: str) -> urllib.request.Request:
    """The URL without its user:password, which goes into a Basic authorization header instead."""
    parts = urllib.parse.urlsplit(uri)
    if parts.username is None:
        return urllib.request.Request(uri)
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    plain = urllib.parse.urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    secret = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
    token = base64.b64encode(secret.encode()).decode()
    return urllib.request.Request(plain, headers={"Authorization": f"Basic {token}"})


class HttpCameraSource(Source):
    live = True

    def __init__(self, uri: str, cfg: SourceConfig):
        self.uri = uri
        self.cfg = cfg
        self.description = redact_uri(uri)
        self.fps = cfg.fps
        self._least = least_size(cfg)
        self._response: Optional[HTTPResponse] = None
        self._other: Optional[OpenCVSource] = None  # a stream that is not MJPEG
        self._boundary = b""
        self._at_part = False  # the boundary line before the next part is already consumed
        self._first: Optional[bytes] = None  # the part read by open()
        self._pos = 0

    def open(self) -> None:
        self.close()
        try:
            response = urllib.request.urlopen(_request(self.uri), timeout=self.cfg.read_timeout_s)
        except (OSError, ValueError) as e:  # URLError and HTTPError are OSErrors; a malformed URL a ValueError
            raise SourceError(f"cannot open {self.description}: {e}") from None
        if response.headers.get_content_type() != "multipart/x-mixed-replace":
            response.close()
            self._other = OpenCVSource(self.uri, self.cfg)
            self._other.open()
            return
        boundary = (response.headers.get_param("boundary") or "").strip('"')
        if not boundary:
            response.close()
            raise SourceError(f"{self.description}: multipart stream without a boundary")
        self._boundary = b"--" + boundary.removeprefix("--").encode()  # some cameras put the dashes in the header
        self._response, self._at_part, self._pos = response, False, 0
        # open means a frame arrived: a camera that answers but sends nothing is still lost
        try:
            self._first = self._next_part()
        except (OSError, ValueError, SourceError) as e:
            self.close()
            raise SourceError(f"cannot open {self.description}: no frame within {self.cfg.read_timeout_s:g} s "
                              f"({e or type(e).__name__})") from None

    def read(self) -> Optional[Frame]:
        if self._other is not None:
            return self._other.read()
        if self._response is None:
            raise SourceError("source not open")
        try:
            data, self._first = self._first or self._next_part(), None
        except (OSError, ValueError) as e:  # a socket timeout is an OSError
            raise SourceError(f"{self.description} lost: {e or type(e).__name__}") from None
        frame = Frame(self._decode(data), self._pos)  # None for a corrupt JPEG: the grabber counts it as bad
        self._pos += 1
        return frame

    def _decode(self, data: bytes) -> Optional[np.ndarray]:
        return cv2.imdecode(np.frombuffer(data, np.uint8), decode_flag(data, self._least))

    def _line(self) -> bytes:
        line = self._response.readline(MAX_LINE)
        if not line:
            raise SourceError(f"{self.description} lost: the stream ended")
        return line

    def _next_part(self) -> bytes:
        if not self._at_part:
            while not self._line().startswith(self._boundary):
                pass
        self._at_part = False
        length = None
        while (line := self._line()).strip():
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        if length is not None:
            if length > MAX_PART:
                raise ValueError(f"a part of {length} bytes")
            data = self._response.read(length)
            if len(data) < length:
                raise SourceError(f"{self.description} lost: the stream ended inside a frame")
            return data
        chunks, total = [], 0  # no length given: the part runs to the next boundary
        while not (line := self._response.readline(MAX_PART)).startswith(self._boundary):
            if not line:
                raise SourceError(f"{self.description} lost: the stream ended")
            chunks.append(line)
            total += len(line)
            if total > MAX_PART:
                raise ValueError(f"a part longer than {MAX_PART} bytes")
        self._at_part = True
        return b"".join(chunks).removesuffix(b"\n").removesuffix(b"\r")

    def close(self) -> None:
        if self._other is not None:
            self._other.close()
            self._other = None
        if self._response is not None:
            self._response.close()
            self._response = None
