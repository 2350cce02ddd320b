"""Events on disk: `events/<id>/event.json`, `snapshot.jpg` (the best frame), `frame-<n>.jpg` (frames kept over
its length, written when it ends) and an optional `clip.mp4` (a sound source's: `clip.wav`).

Pruned by age and by total size, oldest first. Ids are checked against one pattern before they reach a path.
"""

from __future__ import annotations

import calendar
import json
import re
import shutil
import time
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from ..config import Config
from ..errors import CommandError
from ..files import read_json_object, write_atomic
from ..sources.wav import read_wav, wav_bytes
from .layout import StateLayout

EVENT_ID_RE = re.compile(r"\d{8}-\d{6}-[0-9a-f]{6}")
KEPT_FRAME_RE = re.compile(r"frame-(\d{1,3})\.jpg")


def _jpeg(frame: np.ndarray, quality: int) -> Optional[bytes]:
    ok, encoded = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return encoded.tobytes() if ok else None


def event_store(cfg: Config) -> "EventStore":
    """The state folder's events, with the config's limits."""
    events = cfg.events
    return EventStore(StateLayout(cfg.state_path).events, int(events.max_mb * 2**20), events.max_age_days * 86400)


class EventStore:
    def __init__(self, folder: Path, max_bytes: int, max_age_s: float):
        self.folder = Path(folder)
        self.max_bytes, self.max_age_s = max_bytes, max_age_s

    def _dir(self, event_id: str) -> Path:
        if not isinstance(event_id, str) or not EVENT_ID_RE.fullmatch(event_id):
            raise CommandError(f"event id {str(event_id)[:40]!r} is not of the form YYYYMMDD-HHMMSS-xxxxxx")
        return self.folder / event_id

    def save(self, message: dict, frame: Optional[np.ndarray], quality: int = 85) -> Optional[bytes]:
        """Write (or rewrite) an event's record and, when given, its snapshot; the snapshot's JPEG written."""
        folder = self._dir(message["id"])
        folder.mkdir(parents=True, exist_ok=True)
        jpeg = _jpeg(frame, quality) if frame is not None else None
        if jpeg is not None:
            write_atomic(folder / "snapshot.jpg", jpeg)
        write_atomic(folder / "event.json", json.dumps(message).encode())
        return jpeg

    def save_frames(self, event_id: str, frames: list[np.ndarray], quality: int = 85) -> int:
        """The frames an event kept over its length, as `frame-<n>.jpg`; how many were written."""
        folder = self._dir(event_id)
        folder.mkdir(parents=True, exist_ok=True)
        written = 0
        for jpeg in (_jpeg(frame, quality) for frame in frames):
            if jpeg is not None:
                write_atomic(folder / f"frame-{written}.jpg", jpeg)
                written += 1
        return written

    def frames(self, event_id: str) -> list[bytes]:
        """The event's pictures to learn from: its snapshot (the best frame), then the frames kept over its length."""
        folder = self._dir(event_id)
        kept = sorted((p for p in folder.glob("frame-*.jpg") if KEPT_FRAME_RE.fullmatch(p.name)),
                      key=lambda p: int(KEPT_FRAME_RE.fullmatch(p.name).group(1)))
        snapshot = self.snapshot(event_id)
        return ([snapshot] if snapshot is not None else []) + [p.read_bytes() for p in kept]

    def save_clip(self, event_id: str, frames: list[np.ndarray], fps: float) -> Optional[Path]:
        if not frames:
            return None
        folder = self._dir(event_id)
        folder.mkdir(parents=True, exist_ok=True)
        h, w = frames[0].shape[:2]
        partial = folder / "clip.partial.mp4"
        writer = cv2.VideoWriter(str(partial), cv2.VideoWriter_fourcc(*"mp4v"), max(fps, 1.0), (w, h))
        if not writer.isOpened():
            return None
        try:
            for frame in frames:
                writer.write(frame if frame.shape[:2] == (h, w) else cv2.resize(frame, (w, h)))
        finally:
            writer.release()
        final = folder / "clip.mp4"
        partial.replace(final)
        return final

    def save_sound(self, event_id: str, samples: np.ndarray) -> Path:
        """A sound event's clip: the sound before, during and after it, as `clip.wav`."""
        folder = self._dir(event_id)
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(folder / "clip.wav", wav_bytes(samples))
        return folder / "clip.wav"

    def get(self, event_id: str) -> dict:
        folder = self._dir(event_id)
        record = read_json_object(folder / "event.json")
        if not record:
            raise CommandError(f"no event {event_id!r}")
        record["has_clip"] = (folder / "clip.mp4").exists() or (folder / "clip.wav").exists()
        return record

    def snapshot(self, event_id: str) -> Optional[bytes]:
        path = self._dir(event_id) / "snapshot.jpg"
        return path.read_bytes() if path.exists() else None

    def sound(self, event_id: str) -> Optional[np.ndarray]:
        """A sound event's clip (16 kHz samples), or None for an event of pictures."""
        path = self._dir(event_id) / "clip.wav"
        return read_wav(path) if path.is_file() else None

    def clip_path(self, event_id: str) -> Optional[Path]:
        """The event's clip: `clip.mp4` of a camera, `clip.wav` of a sound; None when there is none (yet)."""
        for name in ("clip.mp4", "clip.wav"):
            path = self._dir(event_id) / name
            if path.is_file():
                return path
        return None

    def ids(self) -> list[str]:
        """Every stored event, newest first (ids sort by time)."""
        if not self.folder.is_dir():
            return []
        return sorted((p.name for p in self.folder.iterdir() if EVENT_ID_RE.fullmatch(p.name)), reverse=True)

    def list(self, limit: int = 20, head: Optional[str] = None, label: Optional[str] = None) -> list[dict]:
        out = []
        for event_id in self.ids():
            record = read_json_object(self.folder / event_id / "event.json")
            if not record or (head and record.get("head") != head) or (label and record.get("label") != label):
                continue
            out.append(record)
            if len(out) >= limit:
                break
        return out

    def prune(self, now: Optional[float] = None) -> int:
        """Remove events older than the age limit, then the oldest until the total is under the size limit."""
        now = time.time() if now is None else now
        removed, total = 0, 0
        for event_id in self.ids():  # newest first
            folder = self.folder / event_id
            started = calendar.timegm(time.strptime(event_id[:15], "%Y%m%d-%H%M%S"))
            size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
            if now - started > self.max_age_s or total + size > self.max_bytes:
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
                continue
            total += size
        return removed
