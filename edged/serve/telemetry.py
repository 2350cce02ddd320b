"""What the daemon says about itself: the retained status and the periodic stats."""

from __future__ import annotations

import shutil
import sys
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from .. import __version__
from ..config import redact_uri


@dataclass
class StageTimes:
    invoke: float = 0.0
    head: float = 0.0
    publish: float = 0.0
    gate: float = 0.0  # seconds spent deciding (motion) per frame, inferred or not
    frames: int = 0  # frames handled, inferred or skipped by the gate
    inferences: int = 0  # backbone (or model) runs: one per inferred view
    by_source: Counter = field(default_factory=Counter)  # inferences per source name
    latencies_ms: deque = field(default_factory=lambda: deque(maxlen=2000))


def _percentile(values, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else 0.0


class Telemetry:
    """Builds status and stats from the running parts; `changed()` asks for a status publish soon."""

    def __init__(self, *, cfg, backbone, engine, model_sha: str, heads, store, captures, jobs, times: StageTimes,
                 cameras: Callable[[], object], precision: Optional[dict] = None):
        self.cfg, self.backbone, self.engine, self.model_sha = cfg, backbone, engine, model_sha
        self.precision = precision or {"precision": "float32"}
        self.heads, self.store, self.captures, self.jobs, self.times = heads, store, captures, jobs, times
        self.cameras = cameras
        self.sections: dict[str, Callable[[], dict]] = {}  # more of the status, from parts started later
        self.stats_sections: dict[str, Callable[[], dict]] = {}  # more of the stats (the motion gate's counts)
        self.listeners: list[Callable[[], None]] = []  # told of every change (e.g. Home Assistant discovery)
        self._dirty = threading.Event()
        self._key = None
        self._mark = (time.monotonic(), 0, 0, 0)
        self._source_marks: dict[str, tuple[int, int]] = {}  # name -> (captured, inferences) at the last stats

    def changed(self) -> None:
        self._dirty.set()
        for listener in list(self.listeners):
            listener()

    def refresh(self) -> None:
        """Only the status's figures changed (a scene state): publish it again soon, nothing else to recompute."""
        self._dirty.set()

    def status(self) -> dict:
        capture = self.captures.current
        g = self.cameras()
        return {
            "state": "online",
            "version": __version__,
            "device": self.cfg.device,
            "ts": round(time.time(), 3),
            "model": self.backbone.id,
            "model_sha": self.model_sha,
            "backbone": {"description": self.backbone.description, **self.precision},
            "interpreter": self.engine.interpreter_name,
            "delegate": self.engine.delegate,
            "heads": self.heads.describe(),
            "active": self.heads.active,
            "examples": self.store.counts(),
            "store": self._store_figures(),
            "source": {"uri": ", ".join(redact_uri(c.source.uri) for c in self.cfg.cameras),
                       "state": g.health if g else "starting", "error": g.error if g else None},
            **({"sources": self._sources()} if len(self.cfg.cameras) > 1 else {}),
            "capture": capture.progress() if capture else None,
            "job": self.jobs.running,
            "jobs_queued": self.jobs.queued,
            "last_job": self.jobs.last,
            "tensorflow_imported": "tensorflow" in sys.modules,
            **{name: describe() for name, describe in list(self.sections.items())},
        }

    def _sources(self) -> dict:
        """Every source's own state, when the daemon serves several."""
        g = self.cameras()
        out = {}
        for camera in self.cfg.cameras:
            grabber = g.grabbers.get(camera.name) if g else None
            out[camera.name] = {"uri": redact_uri(camera.source.uri), "state": grabber.health if grabber else "starting",
                                "error": grabber.error if grabber else None,
                                "reconnects": grabber.reconnects if grabber else 0}
        return out

    def _source_stats(self, dt: float) -> dict:
        """Per source: frames in and inferences a second since the last stats, state, drops and reconnects."""
        g, out = self.cameras(), {}
        for name, grabber in g.grabbers.items():
            inferred = self.times.by_source[name]
            captured_prev, inferred_prev = self._source_marks.get(name, (0, 0))
            self._source_marks[name] = (grabber.captured, inferred)
            out[name] = {"fps_in": round((grabber.captured - captured_prev) / dt, 2),
                         "inference_fps": round((inferred - inferred_prev) / dt, 2), "inferences": inferred,
                         "state": grabber.health, "dropped": grabber.dropped, "reconnects": grabber.reconnects}
        return out

    def _store_figures(self) -> dict:
        cap = self.cfg.capture
        try:
            free = shutil.disk_usage(self.cfg.state_path).free
        except OSError:
            free = None
        return {"max_per_label": cap.max_per_label or None, "max_total": cap.max_total or None, "free_bytes": free}

    def status_due(self) -> Optional[str]:
        """The source's state when the status should go out again (it changed, or something asked), else None."""
        g = self.cameras()
        key = (g.health, g.error) if g else ("starting", None)
        if key != self._key or self._dirty.is_set():
            self._key = key
            self._dirty.clear()
            return key[0]
        return None

    def stats(self) -> dict:
        now = time.monotonic()
        t_prev, captured_prev, frames_prev, inferred_prev = self._mark
        dt = max(now - t_prev, 1e-6)
        g, t = self.cameras(), self.times
        self._mark = (now, g.captured, t.frames, t.inferences)
        n = max(t.inferences, 1)
        lat = list(t.latencies_ms)
        stats = {
            "ts": round(time.time(), 3),
            "fps_in": round((g.captured - captured_prev) / dt, 2),
            "fps_out": round((t.frames - frames_prev) / dt, 2),
            "inference_fps": round((t.inferences - inferred_prev) / dt, 2),
            "frames": t.frames,
            "inferences": t.inferences,
            "dropped": g.dropped,
            "latency_ms": {"p50": round(_percentile(lat, 50), 2), "p99": round(_percentile(lat, 99), 2)},
            "stage_ms": {
                "decode": round(g.decode_s / max(g.captured, 1) * 1000, 3),
                "preprocess": round(g.preprocess_s / max(g.captured, 1) * 1000, 3),
                "invoke": round(t.invoke / n * 1000, 3),
                "head": round(t.head / n * 1000, 3),
                "publish": round(t.publish / n * 1000, 3),
                "gate": round(t.gate / max(t.frames, 1) * 1000, 3),
            },
            "interpreter": self.engine.interpreter_name,
            "delegate": self.engine.delegate,
            "source_state": g.health,
            "reconnects": g.reconnects,
            "bad_frames": g.bad_frames,
        }
        if g.several:
            stats["sources"] = self._source_stats(dt)
        stats.update({name: describe() for name, describe in list(self.stats_sections.items())})
        return stats
