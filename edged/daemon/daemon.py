"""The serving daemon: wiring only. Components start in one list and stop in reverse; one stop event ends it."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Callable, Optional

from .. import __version__
from ..commands.dispatch import Dispatcher
from ..commands.handlers import CommandHandlers, Reporting, Teaching
from ..config import Config
from ..files import file_sha256
from ..fleet.remote_trainer import RemoteTrainer
from ..fleet.sharing import Sharing
from ..mqtt.link import IncomingCommand, MqttLink, check_broker_certificate
from ..mqtt.replies import MqttResponder
from ..fleet.signing import device_trust
from ..runtime.memory import ARENAS, keep_the_heap_small, release_file_pages, release_free_memory
from ..serve.backbone import reembed_missing
from ..serve.capture import CaptureDesk
from ..fleet.backbones import fetch as fetch_backbones
from ..fleet.roster import fleet_statuses
from ..serve.frameloop import FrameLoop
from ..serve.homeassistant import HomeAssistant
from ..serve.background import JobRunner
from ..serve.notify import Notifier
from ..serve.outputs import Outputs
from ..serve.precision import choose_precision
from ..serve.reviewer import Reviewer
from ..serve.scene import Scene
from ..serve.stack import ServingStack
from ..serve.telemetry import StageTimes, Telemetry
from ..sources import open_source
from ..sources.cameras import Cameras
from ..sources.preprocess import to_pixels
from ..state.backbones import int8_path, short_name
from ..state.events import event_store
from ..state.layout import StateLayout
from ..state.review import ReviewQueue

log = logging.getLogger(__name__)


class Daemon:
    def __init__(self, cfg: Config, stop: Optional[threading.Event] = None,
                 extra: tuple[tuple[str, Callable[["Daemon"], Optional[Callable[[], None]]]], ...] = ()):
        self.cfg = cfg
        self.extra = extra  # (name, start(daemon) -> stop) started last, stopped first (e.g. the web page)
        self.stop = stop or threading.Event()
        self.notifier = Notifier()
        self.captures = CaptureDesk()
        self.jobs = JobRunner()
        self.times = StageTimes()
        self.mqtt: Optional[MqttLink] = None
        self.cameras: Optional[Cameras] = None
        self._stack: list[tuple[str, Callable[[], None]]] = []

    # -- lifecycle -----------------------------------------------------------------
    def components(self) -> list[tuple[str, Callable[[], Optional[Callable[[], None]]]]]:
        """(name, start) in start order; each start returns the function that stops it."""
        return [("store, backbone and heads", self._start_stack), ("precision", self._start_precision), ("frame loop", self._start_frame_loop),
                ("learning", self._start_learning), ("commands", self._start_commands), ("mqtt", self._start_mqtt),
                ("fleet", self._start_fleet), ("homeassistant", self._start_homeassistant),
                ("events", lambda: self.scene.end_events),
                ("source", self._start_source)] + [(name, lambda start=start: start(self)) for name, start in self.extra]

    def start(self) -> None:
        self.cfg.state_path.mkdir(parents=True, exist_ok=True)
        if keep_the_heap_small():  # before the components' threads allocate
            log.debug("malloc: large blocks mapped on their own, %d arenas", ARENAS)
        for name, start in self.components():
            self.notifier.status(f"starting {name}")
            stopper = start()
            if stopper is not None:
                self._stack.append((name, stopper))
        log.info("edged %s serving device %r: %s via %s (%s), heads %s, source %s",
                 __version__, self.cfg.device, self.backbone.description, self.engine.interpreter_name,
                 self.engine.delegate, ",".join(self.heads.active), self.cameras.description)
        release_free_memory()
        release_file_pages(os.path.realpath(self.engine.options.model_path))
        self.notifier.ready(f"serving {self.cameras.description}")

    def shutdown(self) -> None:
        self.stop.set()
        self.notifier.stopping()
        while self._stack:
            name, stopper = self._stack.pop()
            try:
                stopper()
            except Exception:
                log.exception("error while stopping %s", name)
        self.notifier.close()
        log.info("stopped")

    def _start_stack(self):
        """Store, backbone (stored frames re-embedded for it when it changed) and heads (edged.serve.stack). A board
        that can convert no backbone takes one a fleet machine built (edged.fleet.backbones)."""
        self.trust = device_trust(self.cfg)
        self.stack = ServingStack(self.cfg, lambda done, total: self.notifier.extend_start(
            60, f"embedding stored frames {done}/{total}"),
                                  lambda step: self.notifier.extend_start(120, step),
                                  lambda: fleet_statuses(self.cfg),
                                  lambda wanted: fetch_backbones(self.cfg, self.trust, wanted))
        self.cfg = self.stack.cfg  # with backbone.choose = "auto": the backbone chosen for this machine
        self.store, self.backbone, self.engine, self.heads = (self.stack.store, self.stack.backbone, self.stack.engine,
                                                              self.stack.heads)
        self.model_sha = file_sha256(self.backbone.path)[:16]
        self._store_version = self.store.data_version()

        def stop():  # the engine that serves is closed by the precision step
            self.heads.close()
            self.store.close()

        return stop

    def _start_precision(self):
        """Serve the int8 backbone when it is faster here and answers like float (edged.serve.precision)."""
        self.engine, self.precision = choose_precision(self.cfg, self.backbone, self.engine, self.store, self.heads)
        log.info("backbone precision %s: %s", self.precision["precision"], self.precision["reason"])
        if self.precision["precision"] == "int8":
            self.model_sha = file_sha256(int8_path(self.backbone))[:16]
        return self.engine.close

    def _start_frame_loop(self):
        """Telemetry, the outputs (MQTT, the teach page's latest, the console), the review queue and the loop."""
        self.telemetry = Telemetry(cfg=self.cfg, backbone=self.backbone, engine=self.engine, model_sha=self.model_sha,
                                   heads=self.heads, store=self.store, captures=self.captures, jobs=self.jobs,
                                   times=self.times, cameras=lambda: self.cameras,
                                   precision=self.precision)
        self.reviews = ReviewQueue(StateLayout(self.cfg.state_path).review, self.cfg.review.max_items)
        # the link exists (unconnected) before what publishes on it; `mqtt` connects it
        self.mqtt = MqttLink(self.cfg.mqtt, self.cfg.device, self._on_command, self.telemetry.status) \
            if self.cfg.mqtt.enabled else None
        self.outputs = Outputs(self.mqtt, self.backbone.id, self.model_sha, self.cfg.serve.print_predictions,
                               self.cfg.publish, frames=self.cfg.homeassistant.enabled)
        self.reviewer = Reviewer(self.cfg.review, self.reviews, self.backbone.id, self.outputs.review, self.stop)
        self.events = event_store(self.cfg)
        self.scene = Scene(self.cfg, self.outputs, self.events, self.telemetry.refresh)
        self.telemetry.sections["scene"] = self.scene.describe
        self.telemetry.sections["backbone_choice"] = lambda: self.stack.choice
        self.telemetry.sections["sound"] = self.sound
        self.telemetry.stats_sections["gate"] = self.scene.gate_stats
        self.loop = FrameLoop(self.engine, self.heads, self.captures, self.times, self.outputs, self.scene,
                              self.telemetry.changed, self.notifier.watchdog, self.reviewer.consider,
                              self._source_state)
        return self.scene.close

    def _start_learning(self):
        if not self.trust.signed:
            log.warning("fleet.trust = \"broker\": parcels, jobs and trainers are taken from anyone who can publish "
                        "on the broker")
        # trainer nodes are reached over the broker; they are heard of once MQTT is up (_start_fleet)
        self.remote = RemoteTrainer(self.cfg, self.store, self.backbone, self.mqtt, self.trust) \
            if self.mqtt is not None else None
        self.learning = self.stack.with_learning(self.remote).learning
        self.learning.start()
        return self.learning.close

    def _start_commands(self):
        self.sharing = Sharing(self.cfg, self.store, self.backbone, self.heads, self.learning, self.mqtt,
                               self.telemetry.changed, self.stop, self.trust)
        self.telemetry.sections["fleet"] = self.sharing.describe
        handlers = CommandHandlers(
            Teaching(self.store, self.backbone.id, self.heads, self.learning, self.captures, self.cfg.capture,
                     self.reviews, self.sharing, self.scene, self.events, self.cfg.events),
            Reporting(self.telemetry.status, self.telemetry.changed, self.loop.newest, self.outputs.snapshot,
                      self.jobs, self.outputs.job, self.stop))
        self.dispatcher = Dispatcher(handlers.table(), self.stop)
        self.dispatcher.start()
        self.reviewer.start()

        def stop():
            self.reviewer.join()
            self.dispatcher.join(5)
            self.jobs.join(10)  # a train/export child is told to stop through the stop event

        return stop

    def _start_mqtt(self):
        if self.mqtt is None:
            return None
        check_broker_certificate(self.cfg.mqtt)
        self.mqtt.start()
        return self.mqtt.stop

    def _start_fleet(self):
        """Follow what other devices share (models, head versions, examples) when [fleet] asks for it; find
        trainer nodes for TensorFlow jobs."""
        if self.mqtt is None:
            return None
        for topic_filter, callback in self.remote.routes():
            self.mqtt.route(topic_filter, callback)
        self.telemetry.sections["trainers"] = self.remote.describe
        self.sharing.start(self.mqtt.route)
        return self.sharing.join

    def _start_homeassistant(self):
        if self.mqtt is None:
            return None
        homeassistant = HomeAssistant(self.cfg, self.mqtt, self._entities, lambda: self.loop.last_frame, self.stop)
        self.telemetry.listeners.append(homeassistant.changed)
        return homeassistant.start()

    def _entities(self) -> tuple[list[str], list[str], str]:
        """What Home Assistant shows: the active heads, every known label, the backbone and served models (so a
        model swap updates the discovery)."""
        labels, served = set(self.store.counts()), []
        for name, head in sorted(self.heads.describe().items()):
            labels.update(head.get("classes") or [])
            if head.get("model"):
                served.append(f"{name} {head['model']['version']}")
        model = short_name(self.cfg.backbone) + (f"; serving {', '.join(served)}" if served else "")
        return list(self.heads.active), sorted(labels), model

    def _start_source(self):
        """A grabber per source (edged.sources.cameras), all feeding the one frame loop."""
        size = self.backbone.input_size
        # gated by motion, most frames are never inferred: the frame loop preprocesses those it infers
        preprocess = lambda camera: None if camera.gate.mode == "motion" else (lambda img: to_pixels(img, size))  # noqa: E731
        self.cameras = Cameras(self.cfg.cameras, open_source, self.stop, preprocess, self.cfg.serve.queue_size)
        self.cameras.start()
        return self.cameras.join

    def sound(self) -> Optional[dict]:
        """The newest sound window's loudness (the teach page's level meter); None for pictures."""
        frame = self.loop.last_frame
        if frame is None or frame.sound is None:
            return None
        return {"level_db": frame.sound.level_db, "loud": frame.sound.loud}

    def _source_state(self, source: str = "") -> str:
        """A source's state (a capture's reply names it): starting, ok, camera_lost, stalled or ended."""
        if self.cameras is None:
            return "starting"
        return self.cameras.grabbers[source].health if source in self.cameras.grabbers else self.cameras.health

    # -- the loop ------------------------------------------------------------------
    def run(self) -> None:
        """Serve frames (edged.serve.frameloop) until the stop event is set."""
        self._stats_due = time.monotonic() + self.cfg.mqtt.stats_interval_s
        self.loop.run(self.cameras.get, self.stop, self.cfg.serve.max_fps, self._housekeeping)

    def _housekeeping(self, now: float) -> None:
        """Between frames: the retained stats and the store's changes every stats interval, the status when due."""
        if now >= self._stats_due:
            self._stats_due = now + self.cfg.mqtt.stats_interval_s
            self.outputs.stats({**self.telemetry.stats(), **(self.mqtt.figures() if self.mqtt else {})})
            self._sync_store()
        source = self.telemetry.status_due()
        if source is not None:
            if self.mqtt is not None:
                self.mqtt.publish_status()
            self.notifier.status(f"source {source}")

    def page_sources(self) -> "PageSources":
        """What the teach page reads and does (edged.web.server.PageSources)."""
        return PageSources(self)

    # -- edges ---------------------------------------------------------------------
    def _on_command(self, incoming: IncomingCommand) -> None:
        self.dispatcher.submit(incoming.name, incoming.payload, MqttResponder(self.mqtt, incoming))

    def _sync_store(self) -> None:
        """Pick up examples another process (e.g. `edged collect`) added to the store."""
        version = self.store.data_version()
        if version != self._store_version:
            self._store_version = version
            reembed_missing(self.store, self.backbone, self.engine)
            self.heads.refit_incremental()
            self.telemetry.changed()


class PageSources:
    """The teach page's narrow view of a running daemon."""

    def __init__(self, daemon: Daemon):
        self._daemon = daemon

    def submit(self, name: str, payload: bytes, responder) -> None:
        self._daemon.dispatcher.submit(name, payload, responder)

    def last_frame(self, source: Optional[str] = None):
        return self._daemon.loop.newest(source)

    def source_names(self) -> list[str]:
        return [camera.name for camera in self._daemon.cfg.cameras]

    def latest(self) -> dict:
        return self._daemon.outputs.latest

    def sound(self) -> Optional[dict]:
        return self._daemon.sound()

    def model_input(self, frame):
        """What the backbone sees of a frame (the centred square at its input size), made when the gate skipped it."""
        return frame.pixels if frame.pixels is not None else to_pixels(frame.image, self._daemon.backbone.input_size)

    def status(self) -> dict:
        return self._daemon.telemetry.status()

    def reviews(self) -> list[dict]:
        return self._daemon.reviews.list()

    def review_frame(self, item_id: str) -> Path:
        return self._daemon.reviews.folder / item_id / "frame.jpg"

    def example_frame(self, example_id: int):
        return self._daemon.store.load_frame(example_id)

    def recent_events(self, limit: int = 12) -> list[dict]:
        return self._daemon.events.list(limit)

    def event_snapshot(self, event_id: str) -> Optional[bytes]:
        return self._daemon.events.snapshot(event_id)
