"""Capture jobs: store what was in front of the source while the capture ran, under a label; one job at a time."""

from __future__ import annotations

import queue
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from ..config import BACKGROUND
from ..errors import CommandError
from ..heads.fewshot import FEW_DISTINCT, NEAR_COPY, DistinctFrames, unlike_the_rest
from ..sources.base import Sound
from ..state.store import NewExample, Store

LONG_SOUND_WINDOWS = 16  # a sound filling this many windows in a row gives one example each time (2 s at 0.125 s)


@dataclass(frozen=True)
class CaptureRequest:
    """What to capture: `count` examples of `label` (sounds, of a sound source), one due every `interval_s`, from a
    source and region; `objects` (label, box) when the frames hold boxes; ends at `timeout_s` with what it has."""

    label: str
    count: int
    interval_s: float = 0.0
    objects: Optional[list[tuple[str, tuple]]] = None
    source: str = ""
    region: str = ""
    near_copy: float = NEAR_COPY
    timeout_s: Optional[float] = None


@dataclass(frozen=True)
class CaptureTarget:
    """Where captured examples go: the store (embeddings under `backbone_id`), its caps, the writer thread, and
    `learned(embedding, label, box)` once each is on disk."""

    store: Store
    backbone_id: str
    max_per_label: int = 0
    max_total: int = 0
    writer: bool = False
    learned: Optional[Callable[[np.ndarray, str, object], None]] = None


class CaptureJob:
    """Frames are due every `interval_s` from the start (not from the last one stored) and each due frame is stored:
    a still scene is what the user showed, so its near-copies are kept, never traded for a later, different scene.
    A frame at least `near_copy` similar to an earlier one of this capture counts as a near-copy; the reply says how
    many stored frames are distinct and warns when too few are. Ends at `count`, or at `timeout_s` with what it
    has.

    Of sound (`offer_window`), `count` is a number of sounds: a sound label keeps one window per sound event (the
    middle one of those holding the whole sound; a long sound gives one every LONG_SOUND_WINDOWS windows), and when
    the capture ends the sounds unlike the capture's others are set aside (deleted again, and named in the reply):
    a whistle heard while the doorbell was taught is not the doorbell. `background` keeps quiet windows as frames.

    With a `writer` (`learned` is called for each example once it is on disk), the JPEG and the SQLite row are
    written on a thread of the job's own: the frame loop only chooses frames and never waits on the disk. `stored`
    counts what is on disk; the reply is made only after `close()` has waited for the last write."""

    def __init__(self, request: "CaptureRequest", target: "CaptureTarget", responder=None, corr_id=None):
        self.request = request
        self.store = target.store
        self.source = request.source  # the source examples are taken from ("" the one source)
        self.region = request.region  # "" the whole frame, else a region's crop
        self.place = "/".join(part for part in (self.source, self.region) if part)  # the view's name (edged.scene.views)
        self.backbone_id = target.backbone_id
        self.label = request.label
        self.count = request.count
        self.interval_s = request.interval_s
        self.objects = list(request.objects) if request.objects else None
        self.box = self.objects[0][1] if self.objects and len(self.objects) == 1 else None
        self.responder = responder
        self.corr_id = corr_id
        self.distinct = DistinctFrames(request.near_copy)
        self.timeout_s = request.timeout_s
        self.caps = (target.max_per_label, target.max_total)  # the store's example caps, applied when the capture ends
        self.stored = 0
        self.skipped_loudness = 0  # sound windows of the wrong loudness for the label
        self.skipped_cut = 0  # sound windows holding only a part of a sound (edged.sources.audio.holds_whole_sound)
        self.sound = False  # sound windows were offered: `count` counts sounds
        self._event: list[tuple] = []  # the whole windows of the sound being heard
        self.set_aside: list[int] = []  # sounds unlike the capture's others, deleted again at the end
        self.cancelled = False
        self.started = time.monotonic()
        self.capture_id = f"capture:{uuid.uuid4().hex[:16]}"  # its frames are validated together, never split
        self._next_due = self.started
        self.accepted = 0  # frames chosen (stored, or waiting for the writer)
        self.failed: Optional[str] = None  # why the writer stopped
        self.learned = target.learned
        self._kept: list[tuple[int, np.ndarray]] = []  # (example id, embedding) of the sounds this capture stored
        self._writes: Optional["queue.Queue"] = None
        if target.writer:
            self._writes = queue.Queue()
            self._writer = threading.Thread(target=self._write_loop, name="capture-writer", daemon=True)
            self._writer.start()

    @property
    def done(self) -> bool:
        return self.stored >= self.count

    @property
    def timed_out(self) -> bool:
        return self.timeout_s is not None and time.monotonic() - self.started > self.timeout_s

    @property
    def all_chosen(self) -> bool:
        return self.accepted >= self.count or self.failed is not None

    def offer(self, image: np.ndarray, embedding: np.ndarray, audio: Optional[np.ndarray] = None) -> bool:
        """Take this frame if one is due; True once it is on disk (with a writer: once it is handed to it)."""
        now = time.monotonic()
        if self.all_chosen or now < self._next_due:
            return False
        self._next_due = max(self._next_due + self.interval_s, now - self.interval_s)
        self._take(image, embedding, audio)
        return True

    def offer_window(self, image: np.ndarray, embedding: np.ndarray, sound: Sound) -> bool:
        """A sound window: quiet ones are `background`'s, a sound's are kept one per sound event."""
        self.sound = True
        audio = sound.samples
        if self.label == BACKGROUND:
            if sound.loud:
                self.skipped_loudness += 1  # a sound is not the room's background
                return False
            return self.offer(image, embedding, audio)
        if not sound.loud:
            if self._event:
                return self.flush()
            self.skipped_loudness += 1
            return False
        if not sound.whole:
            self.skipped_cut += 1  # the sound runs past the window's edge: only a part of it is here
            return False
        self._event.append((image, embedding, audio))
        return len(self._event) >= LONG_SOUND_WINDOWS and self.flush()

    def flush(self) -> bool:
        """The sound being heard has ended (or the capture does): keep its middle whole window."""
        event, self._event = self._event, []
        if not event or self.all_chosen:
            return False
        self._take(*event[len(event) // 2])
        return True

    def _take(self, image: np.ndarray, embedding: np.ndarray, audio: Optional[np.ndarray]) -> None:
        self.accepted += 1
        if embedding is not None:
            self.distinct.add(embedding)
        if self._writes is not None:
            self._writes.put((image, embedding, audio))
        else:
            self._write(image, embedding, audio)

    def _write(self, image: np.ndarray, embedding: np.ndarray, audio: Optional[np.ndarray] = None) -> None:
        example_id = self.store.add(NewExample(image, self.label, embedding, objects=self.objects,
                                               source=self.source or None, audio=audio, capture=self.capture_id),
                                    self.backbone_id)
        self.stored += 1
        if self.sound and self.label != BACKGROUND and embedding is not None:  # what set_aside_odd_sounds compares
            self._kept.append((example_id, np.reshape(embedding, -1)))
        if self.learned is not None:
            self.learned(embedding, self.label, self.box)

    def _write_loop(self) -> None:
        while True:
            item = self._writes.get()
            if item is None:
                return
            if self.failed is not None:
                continue
            try:
                self._write(*item)
            except Exception as e:  # e.g. the disk is full: the job ends with what is on disk
                self.failed = f"capture stopped after {self.stored} examples: {type(e).__name__}: {e}"
                continue
            if self.responder is not None and self.stored % 10 == 0 and not self.done:
                self.responder.progress(self.progress())

    def close(self) -> None:
        """Wait for the writer to put every chosen frame on disk (a no-op without a writer)."""
        if self._writes is not None and self._writer.is_alive():
            self._writes.put(None)
            self._writer.join()

    def set_aside_odd_sounds(self) -> int:
        """After `close()`: delete the sounds of this capture unlike its others (see the class); how many."""
        if not self.sound or self.label == BACKGROUND or len(self._kept) < 4:
            return 0
        odd = unlike_the_rest(np.stack([v for _, v in self._kept]))
        if odd:
            self.set_aside = [self._kept[i][0] for i in odd]
            self.store.delete(self.set_aside)
            self.stored -= len(odd)
        return len(odd)

    def prune(self) -> int:
        """Apply the example caps (oldest first); how many examples were removed."""
        return self.store.prune(self.label, *self.caps) if any(self.caps) else 0

    def progress(self) -> dict:
        where = {k: v for k, v in (("source", self.source), ("region", self.region)) if v}
        counted = ({"sounds": self.stored} if self.sound and self.label != BACKGROUND else
                   {"distinct": len(self.distinct), "near_copies": max(0, self.accepted - len(self.distinct))})
        return {"label": self.label, **where, "stored": self.stored, "count": self.count, **counted,
                **({"skipped_loudness": self.skipped_loudness} if self.skipped_loudness else {}),
                **({"skipped_cut": self.skipped_cut} if self.skipped_cut else {}),
                **({"set_aside": self.set_aside} if self.set_aside else {}),
                "seconds": round(time.monotonic() - self.started, 2)}

    def warnings(self, label_examples: int) -> list[str]:
        """What the user should know of what was stored: too few distinct frames, or too few sounds."""
        out = []
        if self.set_aside:
            out.append(f"{len(self.set_aside)} sound(s) unlike the others of this capture were set aside (example "
                       f"ids {self.set_aside} deleted): was something else heard while it ran?")
        if self.sound and self.label != BACKGROUND:
            if label_examples < FEW_DISTINCT:
                out.append(f"{self.label!r} has {label_examples} sound(s): {FEW_DISTINCT} or more, made a few "
                           f"seconds apart, teach it better")
        elif self.stored > 1 and len(self.distinct) < min(FEW_DISTINCT, self.stored):
            out.append(f"{len(self.distinct)} of the {self.stored} frames are distinct, the rest near-copies (the "
                       f"scene hardly changed): kept, as it was what was shown; move the thing, turn it, change the "
                       f"light and capture again to teach it better")
        return out


class CaptureDesk:
    """Holds the one running capture job; the frame loop offers it frames."""

    def __init__(self):
        self._lock = threading.Lock()
        self.current: Optional[CaptureJob] = None

    def start(self, job: CaptureJob) -> None:
        with self._lock:
            running = self.current
            if running is not None:
                raise CommandError(f"capture of {running.label!r} is running ({running.stored}/{running.count}); "
                                   f"wait for its reply", job.corr_id)
            self.current = job

    def finish(self, job: CaptureJob) -> None:
        with self._lock:
            if self.current is job:
                self.current = None
