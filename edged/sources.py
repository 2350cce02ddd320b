"""Frame sources (camera, stream, file, folder, synthetic) and the grabber thread that feeds the loop."""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import cv2
import numpy as np

from .config import SourceConfig
from .synthetic import scene_at

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


class SourceError(Exception):
    """The source cannot be opened or was lost."""


@dataclass
class Frame:
    image: np.ndarray  # BGR uint8, as captured
    pos: int  # index of the frame in its source (files: position in the file)
    ts: float = field(default_factory=time.time)
    pixels: Optional[np.ndarray] = None  # preprocessed RGB uint8, filled by the grabber


class Source:
    """Interface: open(), read() -> Frame | None at the end, close(). Raises SourceError when lost."""

    live = True  # cameras and streams pace themselves and can drop out
    description = "source"

    def open(self) -> None: ...

    def read(self) -> Optional[Frame]: ...

    def close(self) -> None: ...


class OpenCVSource(Source):
    def __init__(self, uri: str, cfg: SourceConfig):
        self.uri = uri
        self.cfg = cfg
        self.is_camera = uri.isdigit()
        self.is_stream = "://" in uri
        self.live = self.is_camera or self.is_stream
        self.description = f"camera {uri}" if self.is_camera else uri
        self._cap: Optional[cv2.VideoCapture] = None
        self._pos = 0
        self.fps = cfg.fps

    def open(self) -> None:
        if self.is_camera:
            cap = cv2.VideoCapture(int(self.uri))
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.cfg.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.cfg.height)
        elif self.is_stream:
            cap = cv2.VideoCapture(self.uri, cv2.CAP_FFMPEG)
        else:
            if not Path(self.uri).is_file():
                raise SourceError(f"video file not found: {self.uri}")
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


class FolderSource(Source):
    live = False

    def __init__(self, folder: str, cfg: SourceConfig):
        self.folder = Path(folder)
        self.cfg = cfg
        self.description = f"folder {folder}"
        self.fps = cfg.fps
        self._files: list[Path] = []
        self._pos = 0

    def open(self) -> None:
        self._files = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self._files:
            raise SourceError(f"no images in {self.folder}")
        self._pos = 0

    def read(self) -> Optional[Frame]:
        for _ in range(len(self._files)):
            if self._pos >= len(self._files):
                if not self.cfg.loop:
                    return None
                self._pos = 0
            path = self._files[self._pos]
            pos = self._pos
            self._pos += 1
            img = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if img is not None:
                return Frame(img, pos)
            log.warning("skipping unreadable image %s", path)
        raise SourceError(f"no readable images in {self.folder}")


class SyntheticSource(Source):
    """`synthetic`, or `synthetic:shape=triangle,clutter=4,frames=100`."""

    live = False

    def __init__(self, spec: str, cfg: SourceConfig):
        self.cfg = cfg
        self.fps = cfg.fps
        self.description = spec
        opts = dict(kv.split("=", 1) for kv in spec.partition(":")[2].split(",") if "=" in kv)
        unknown = set(opts) - {"shape", "clutter", "frames"}
        if unknown:
            raise SourceError(f"synthetic source: unknown option(s) {sorted(unknown)}")
        self.shape = opts.get("shape")
        self.clutter = int(opts.get("clutter", 10))
        self.frames = int(opts.get("frames", 0))  # 0 = endless
        self._pos = 0

    def open(self) -> None:
        self._pos = 0

    def read(self) -> Optional[Frame]:
        if self.frames and self._pos >= self.frames:
            if not self.cfg.loop:
                return None
            self._pos = 0
        scene = scene_at(self.cfg.seed, self._pos, self.cfg.width, self.cfg.height, self.shape, self.clutter)
        frame = Frame(scene.image, self._pos)
        self._pos += 1
        return frame


def open_source(cfg: SourceConfig) -> Source:
    uri = cfg.uri.strip()
    if uri == "synthetic" or uri.startswith("synthetic:"):
        return SyntheticSource(uri, cfg)
    if not uri.isdigit() and "://" not in uri and Path(uri).is_dir():
        return FolderSource(uri, cfg)
    return OpenCVSource(uri, cfg)


class FrameGrabber:
    """Reads and preprocesses frames in its own thread; keeps only the newest `queue_size` frames.

    States: starting, ok, camera_lost (reconnecting with backoff), ended (file finished).
    """

    def __init__(
        self,
        source: Source,
        cfg: SourceConfig,
        stop: threading.Event,
        preprocess: Callable[[np.ndarray], np.ndarray],
        queue_size: int = 2,
    ):
        self.source = source
        self.cfg = cfg
        self.stop = stop
        self.preprocess = preprocess
        self.frames: queue.Queue[Frame] = queue.Queue(maxsize=queue_size)
        self.state = "starting"
        self.error: Optional[str] = None
        self.captured = 0
        self.dropped = 0
        self.reconnects = 0
        self.decode_s = 0.0
        self.preprocess_s = 0.0
        self._thread = threading.Thread(target=self._run, name="grabber", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float = 5.0) -> None:
        self._thread.join(timeout)

    def get(self, timeout: float) -> Optional[Frame]:
        try:
            return self.frames.get(timeout=timeout)
        except queue.Empty:
            return None

    def _put(self, frame: Frame, wait: bool) -> None:
        """Live sources: keep the newest frames, counting drops. Unpaced files: wait for room (no wasted decodes)."""
        if wait:
            while not self.stop.is_set():
                try:
                    self.frames.put(frame, timeout=0.1)
                    return
                except queue.Full:
                    continue
            return
        while True:
            try:
                self.frames.put_nowait(frame)
                return
            except queue.Full:
                try:
                    self.frames.get_nowait()
                    self.dropped += 1
                except queue.Empty:
                    pass

    def _open_with_backoff(self) -> bool:
        delay = self.cfg.reconnect_min_s
        while not self.stop.is_set():
            try:
                self.source.open()
                self.state, self.error = "ok", None
                return True
            except SourceError as e:
                self.state, self.error = "camera_lost", str(e)
                log.warning("%s; retrying in %.1fs", e, delay)
            except Exception as e:  # OpenCV can raise cv2.error on odd URLs
                self.state, self.error = "camera_lost", f"{type(e).__name__}: {e}"
                log.warning("cannot open %s: %s; retrying in %.1fs", self.source.description, e, delay)
            if self.stop.wait(delay):
                return False
            delay = min(delay * 2, self.cfg.reconnect_max_s)
            self.reconnects += 1
        return False

    def _run(self) -> None:
        paced = self.cfg.realtime and not self.source.live
        backpressure = not self.source.live and not paced
        try:
            while not self.stop.is_set():
                if self.state != "ok" and not self._open_with_backoff():
                    return
                next_due = time.monotonic()
                while not self.stop.is_set():
                    t0 = time.perf_counter()
                    try:
                        frame = self.source.read()
                    except SourceError as e:
                        log.warning("%s", e)
                        self.state, self.error = "camera_lost", str(e)
                        self.source.close()
                        break
                    if frame is None:
                        self.state = "ended"
                        log.info("%s ended", self.source.description)
                        return
                    t1 = time.perf_counter()
                    frame.pixels = self.preprocess(frame.image)
                    t2 = time.perf_counter()
                    self.decode_s += t1 - t0
                    self.preprocess_s += t2 - t1
                    self.captured += 1
                    self._put(frame, backpressure)
                    if paced:
                        next_due += 1.0 / getattr(self.source, "fps", self.cfg.fps)
                        wait = next_due - time.monotonic()
                        if wait > 0 and self.stop.wait(wait):
                            return
                        if wait < -1.0:
                            next_due = time.monotonic()
        finally:
            self.source.close()
