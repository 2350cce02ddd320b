"""The serving daemon: wiring, the frame loop, commands, live head swaps, sd_notify."""

from __future__ import annotations

import base64
import logging
import queue
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Optional

import cv2
import numpy as np

from . import __version__
from .backbone import file_sha256
from .capture import CaptureJob
from .commands import Activate, Capture, CommandError, Empty, Export, Forget, Rollback, Train, parse
from .config import Config
from .heads import HeadError, Prediction
from .mqtt import IncomingCommand, MqttLink
from .notify import Notifier
from .pipeline import HeadSet, open_backbone, reembed_missing
from .preprocess import to_pixels
from .sources import FrameGrabber, open_source
from .store import Store

log = logging.getLogger(__name__)


def _percentile(values, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else 0.0


@dataclass
class StageTimes:
    invoke: float = 0.0
    head: float = 0.0
    publish: float = 0.0
    frames: int = 0
    latencies_ms: deque = field(default_factory=lambda: deque(maxlen=2000))


class Daemon:
    """Start order: store, backbone, heads, MQTT, grabber, command worker. Stop: the reverse."""

    def __init__(self, cfg: Config, stop: Optional[threading.Event] = None):
        self.cfg = cfg
        self.stop = stop or threading.Event()
        self.notifier = Notifier()
        self.commands: queue.Queue[IncomingCommand] = queue.Queue(maxsize=256)
        self.capture: Optional[CaptureJob] = None
        self.capture_lock = threading.Lock()
        self.job: Optional[threading.Thread] = None
        self.last_frame = None
        self.frames_seen = 0
        self.times = StageTimes()
        self._stack: list = []  # (name, stop function), stopped in reverse
        self._status_key = None
        self._status_dirty = threading.Event()
        self.mqtt: Optional[MqttLink] = None

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> None:
        cfg = self.cfg
        state = cfg.state_path
        state.mkdir(parents=True, exist_ok=True)
        self.notifier.status("loading backbone")
        self.store = Store(state / "store")
        self._stack.append(("store", self.store.close))
        self.backbone, self.engine = open_backbone(cfg)
        self._stack.append(("engine", self.engine.close))
        self.model_sha = file_sha256(self.backbone.path)[:16]
        reembed_missing(self.store, self.backbone, self.engine)
        self.heads = HeadSet(cfg, self.store, self.backbone)
        self._stack.append(("heads", self.heads.close))
        if cfg.trainer.preload:
            self.heads.worker.preload()
        self._store_version = self.store.data_version()
        if cfg.mqtt.enabled:
            self.mqtt = MqttLink(cfg.mqtt, cfg.device, self._enqueue_command, self.status)
            self.mqtt.start()
            self._stack.append(("mqtt", self.mqtt.stop))
        self.source = open_source(cfg.source)
        size = self.backbone.input_size
        self.grabber = FrameGrabber(self.source, cfg.source, self.stop, lambda img: to_pixels(img, size), cfg.serve.queue_size)
        self.grabber.start()
        self._stack.append(("grabber", self.grabber.join))
        self.worker = threading.Thread(target=self._command_loop, name="commands", daemon=True)
        self.worker.start()
        self._stack.append(("commands", self._join_workers))
        log.info(
            "edged %s serving device %r: %s via %s (%s), heads %s, source %s",
            __version__, cfg.device, self.backbone.description, self.engine.interpreter_name,
            self.engine.delegate, ",".join(self.heads.active), self.source.description,
        )
        self.notifier.ready(f"serving {self.source.description}")

    def _join_workers(self) -> None:
        self.worker.join(5)
        if self.job is not None:
            self.job.join(10)  # a train/export child is told to stop through the stop event

    def shutdown(self) -> None:
        self.stop.set()
        self.notifier.stopping()
        while self._stack:
            name, fn = self._stack.pop()
            try:
                fn()
            except Exception:
                log.exception("error while stopping %s", name)
        self.notifier.close()
        log.info("stopped")

    def run(self) -> None:
        """The frame loop; returns when the stop event is set."""
        cfg = self.cfg
        period = 1.0 / cfg.serve.max_fps if cfg.serve.max_fps else 0.0
        next_due = 0.0
        stats_due = time.monotonic() + cfg.mqtt.stats_interval_s
        self._stats_mark = (time.monotonic(), 0, 0)
        while not self.stop.is_set():
            frame = self.grabber.get(timeout=0.25)
            now = time.monotonic()
            if now >= stats_due:
                stats_due = now + cfg.mqtt.stats_interval_s
                self._publish_stats()
                self._sync_store()
            self._maybe_publish_status()
            if frame is None:
                continue
            if period:
                if now < next_due:
                    continue
                next_due = max(next_due + period, now)
            try:
                self._process(frame)
            except Exception:
                log.exception("frame %d failed", frame.pos)

    # -- frame path ----------------------------------------------------------------
    def _process(self, frame) -> None:
        t0 = time.perf_counter()
        job = self.capture
        embedding = self.engine.embed(frame.pixels) if job is not None or self.heads.needs_embedding else None
        t1 = time.perf_counter()
        self.frames_seen += 1
        self.last_frame = frame
        if job is not None:
            self._capture_step(job, frame, embedding)
        predictions = self.heads.predict(embedding, frame.pixels)
        t2 = time.perf_counter()
        latency_ms = (t2 - t0) * 1000
        for name, pred in predictions:
            self._publish_prediction(name, pred, frame, latency_ms)
        t3 = time.perf_counter()
        times = self.times
        times.invoke += t1 - t0
        times.head += t2 - t1
        times.publish += t3 - t2
        times.frames += 1
        times.latencies_ms.append((time.time() - frame.ts) * 1000)
        self.notifier.watchdog()

    def _publish_prediction(self, head: str, pred: Prediction, frame, latency_ms: float) -> None:
        payload = {
            "ts": round(time.time(), 3),
            "frame": self.frames_seen,
            "pos": frame.pos,
            "head": head,
            "label": pred.label,
            "score": round(pred.score, 4),
            "scores": {k: round(v, 4) for k, v in pred.scores.items()},
            "boxes": pred.boxes,
            "latency_ms": round(latency_ms, 2),
            "model": self.backbone.id,
            "model_sha": pred.model_sha or self.model_sha,
        }
        if self.mqtt is not None:
            self.mqtt.publish(self.mqtt.topics.prediction(head), payload)
        if self.cfg.serve.print_predictions:
            print(f"{head}: {pred.label} {pred.score:.2f} (frame {frame.pos}, {latency_ms:.1f} ms)", flush=True)

    def _capture_step(self, job: CaptureJob, frame, embedding) -> None:
        try:
            if not job.offer(frame.image, embedding):
                return
            self.heads.learned(embedding, job.label, job.box)
        except Exception as e:
            log.exception("capture failed")
            self._finish_capture(job, error=f"capture stopped after {job.stored} examples: {type(e).__name__}: {e}")
            return
        if job.done:
            self._finish_capture(job)
        elif job.stored % 10 == 0:
            self._reply(job.incoming, job.corr_id, {"progress": job.progress()}, ok=True, final=False)

    def _finish_capture(self, job: CaptureJob, error: Optional[str] = None) -> None:
        with self.capture_lock:
            self.capture = None
        self._status_dirty.set()
        if error:
            self._reply(job.incoming, job.corr_id, None, ok=False, error=error)
        else:
            result = job.progress()
            result["examples"] = self.store.counts().get(job.label, 0)
            self._reply(job.incoming, job.corr_id, result)

    # -- commands ------------------------------------------------------------------
    def _enqueue_command(self, incoming: IncomingCommand) -> None:
        try:
            self.commands.put_nowait(incoming)
        except queue.Full:
            self._reply(incoming, None, None, ok=False, error="busy: too many commands queued; try again")

    def _command_loop(self) -> None:
        while not self.stop.is_set():
            try:
                incoming = self.commands.get(timeout=0.25)
            except queue.Empty:
                continue
            corr = None
            try:
                command = parse(incoming.name, incoming.payload)
                corr = command.id
                result = self.handle(incoming, command)
                if result is not None:
                    self._reply(incoming, corr, result)
            except CommandError as e:
                self._reply(incoming, e.corr_id, None, ok=False, error=str(e))
            except (HeadError, ValueError) as e:
                self._reply(incoming, corr, None, ok=False, error=str(e))
            except Exception as e:
                log.exception("command %s failed", incoming.name)
                self._reply(incoming, corr, None, ok=False, error=f"internal error: {type(e).__name__}: {e}")

    def handle(self, incoming: IncomingCommand, command) -> Optional[dict]:
        """Run one validated command; return the reply result, or None when the reply comes later."""
        if isinstance(command, Capture):
            return self._start_capture(incoming, command)
        if isinstance(command, Forget):
            removed = self.store.forget(command.label)
            self.heads.forget(command.label)
            self._status_dirty.set()
            return {"label": command.label, "removed": removed}
        if isinstance(command, Activate):
            result = {}
            if command.heads is not None:
                self.heads.activate(command.heads)
            if command.model is not None:
                result = self.heads.use_model(command.model, command.version)
            self._status_dirty.set()
            return {**result, "active": self.heads.active}
        if isinstance(command, Rollback):
            result = self.heads.rollback_model(command.model)
            self._status_dirty.set()
            return {**result, "active": self.heads.active}
        if isinstance(command, Train):
            params = {k: v for k, v in (("epochs", command.epochs), ("fine_tune_layers", command.fine_tune_layers)) if v is not None}
            return self._start_job(incoming, command.id, f"train {command.head}",
                                   lambda progress: self.heads.train(command.head, progress, self.stop, **params))
        if isinstance(command, Export):
            return self._start_job(incoming, command.id, f"export {command.head} {command.quantize}",
                                   lambda progress: self.heads.export(command.head, command.quantize, command.force, progress, self.stop))
        if incoming.name == "snapshot":
            return self._snapshot()
        if incoming.name == "heads":
            return {"heads": self.heads.describe(), "active": self.heads.active}
        if isinstance(command, Empty):  # status
            status = self.status()
            if self.mqtt is not None:
                self.mqtt.publish_status()
            return status
        raise CommandError(f"command {incoming.name!r} has no handler")

    def _start_capture(self, incoming: IncomingCommand, cmd: Capture) -> Optional[dict]:
        with self.capture_lock:
            if self.capture is not None:
                running = self.capture
                raise CommandError(f"capture of {running.label!r} is running ({running.stored}/{running.count}); wait for its reply", cmd.id)
            self.capture = CaptureJob(
                self.store, self.backbone.id, cmd.label, cmd.count, cmd.interval_ms / 1000.0, cmd.box,
                incoming=incoming, corr_id=cmd.id,
            )
        self._status_dirty.set()
        return None  # replied when the last example is stored

    def _start_job(self, incoming: IncomingCommand, corr_id, what: str, work) -> None:
        """Train/export run in their own thread: serving and other commands go on meanwhile."""
        with self.capture_lock:
            if self.job is not None and self.job.is_alive():
                raise CommandError(f"busy with {self.job.name}; wait for its reply", corr_id)

            def run():
                def progress(p):
                    self._reply(incoming, corr_id, {"progress": p}, ok=True, final=False)

                try:
                    result = work(progress)
                    self._reply(incoming, corr_id, result)
                except Exception as e:
                    if not isinstance(e, (HeadError, CommandError)):
                        log.exception("%s failed", what)
                    self._reply(incoming, corr_id, None, ok=False, error=str(e))
                finally:
                    self._status_dirty.set()

            self.job = threading.Thread(target=run, name=what, daemon=True)
            self.job.start()
        return None

    def _snapshot(self) -> dict:
        frame = self.last_frame
        if frame is None:
            raise CommandError("no frame has arrived yet")
        ok, jpeg = cv2.imencode(".jpg", frame.image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        if not ok:
            raise CommandError("JPEG encoding failed")
        data = jpeg.tobytes()
        if self.mqtt is not None:
            self.mqtt.publish(self.mqtt.topics.snapshot, data, qos=1)
        return {"topic": self.mqtt.topics.snapshot if self.mqtt else None, "bytes": len(data), "pos": frame.pos,
                "jpeg_base64": base64.b64encode(data).decode() if len(data) < 48_000 else None}

    def _reply(self, incoming: IncomingCommand, corr_id, result, ok: bool = True, error: Optional[str] = None, final: bool = True) -> None:
        payload = {"id": corr_id, "command": incoming.name[:64], "ok": ok, "final": final}
        if ok:
            payload["result"] = result
        else:
            payload["error"] = error
            log.info("command %s rejected: %s", incoming.name[:64], error)
        if self.mqtt is not None:
            self.mqtt.reply(incoming, payload)

    # -- status and stats ----------------------------------------------------------
    def status(self) -> dict:
        capture = self.capture
        return {
            "state": "online",
            "version": __version__,
            "device": self.cfg.device,
            "ts": round(time.time(), 3),
            "model": self.backbone.id,
            "model_sha": self.model_sha,
            "backbone": self.backbone.description,
            "interpreter": self.engine.interpreter_name,
            "delegate": self.engine.delegate,
            "heads": self.heads.describe(),
            "active": self.heads.active,
            "examples": self.store.counts(),
            "source": {"uri": self.cfg.source.uri, "state": self.grabber.state if hasattr(self, "grabber") else "starting",
                       "error": self.grabber.error if hasattr(self, "grabber") else None},
            "capture": capture.progress() if capture else None,
            "job": self.job.name if self.job is not None and self.job.is_alive() else None,
            "tensorflow_imported": "tensorflow" in sys.modules,
        }

    def _maybe_publish_status(self) -> None:
        key = (self.grabber.state, self.grabber.error)
        if key != self._status_key or self._status_dirty.is_set():
            self._status_key = key
            self._status_dirty.clear()
            if self.mqtt is not None:
                self.mqtt.publish_status()
            self.notifier.status(f"source {key[0]}")

    def _publish_stats(self) -> None:
        now = time.monotonic()
        t_prev, captured_prev, frames_prev = self._stats_mark
        dt = max(now - t_prev, 1e-6)
        g, t = self.grabber, self.times
        self._stats_mark = (now, g.captured, t.frames)
        n = max(t.frames, 1)
        lat = list(t.latencies_ms)
        stats = {
            "ts": round(time.time(), 3),
            "fps_in": round((g.captured - captured_prev) / dt, 2),
            "fps_out": round((t.frames - frames_prev) / dt, 2),
            "frames": t.frames,
            "dropped": g.dropped,
            "latency_ms": {"p50": round(_percentile(lat, 50), 2), "p99": round(_percentile(lat, 99), 2)},
            "stage_ms": {
                "decode": round(g.decode_s / max(g.captured, 1) * 1000, 3),
                "preprocess": round(g.preprocess_s / max(g.captured, 1) * 1000, 3),
                "invoke": round(t.invoke / n * 1000, 3),
                "head": round(t.head / n * 1000, 3),
                "publish": round(t.publish / n * 1000, 3),
            },
            "interpreter": self.engine.interpreter_name,
            "delegate": self.engine.delegate,
            "source_state": g.state,
            "reconnects": g.reconnects,
        }
        if self.mqtt is not None:
            stats["mqtt_queued"] = len(self.mqtt.queue)
            stats["mqtt_dropped"] = self.mqtt.queue_dropped
            self.mqtt.publish(self.mqtt.topics.stats, stats)

    def _sync_store(self) -> None:
        """Pick up examples another process (e.g. `edged collect`) added to the store."""
        version = self.store.data_version()
        if version != self._store_version:
            self._store_version = version
            reembed_missing(self.store, self.backbone, self.engine)
            self.heads.refit_incremental()
            self._status_dirty.set()
