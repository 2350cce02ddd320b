"""Home Assistant discovery for a running daemon: published retained at start, again when Home Assistant's birth
message arrives, updated when heads or labels change, removed (empty retained payloads) once disabled or when
announced the other way ([homeassistant] discovery)."""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Callable, Optional

import cv2

from .. import __version__
from ..config import Config
from ..files import read_json_object, write_atomic
from ..mqtt.discovery import DeviceFacts, birth_topic, discovery_payload, discovery_topic, entity_payloads
from ..mqtt.link import MqttLink
from ..scene.views import views_of
from ..state.layout import StateLayout

log = logging.getLogger(__name__)
BIRTH_RESEND_S = 10.0


class HomeAssistant:
    def __init__(self, cfg: Config, link: MqttLink, describe: Callable[[], tuple[list[str], list[str], str]],
                 last_frame: Callable[[], object], stop: threading.Event):
        self.cfg, self.ha = cfg, cfg.homeassistant
        self.link, self.describe, self.last_frame, self.stop = link, describe, last_frame, stop
        self.topic = discovery_topic(self.ha.discovery_prefix, cfg.device)
        self.marker = StateLayout(cfg.state_path).homeassistant_memory  # the topics published, to remove them later
        self._birth = threading.Event()
        self._stale = threading.Event()  # heads, labels or models may have changed: recompute the payload
        self._stale.set()
        self._last: Optional[dict[str, bytes]] = None  # what each discovery topic holds
        self._last_forced = float("-inf")
        self._thread = threading.Thread(target=self._run, name="homeassistant", daemon=True)

    def start(self) -> Optional[Callable[[], None]]:
        if not self.ha.enabled:
            self._remove(self._published_before())
            return None
        self.link.route(birth_topic(self.ha.discovery_prefix), self._on_birth)
        self._thread.start()
        return lambda: self._thread.join(5)

    def _published_before(self) -> set[str]:
        memory = read_json_object(self.marker)
        topics = memory.get("topics", [memory.get("topic")])
        return {t for t in topics if isinstance(t, str) and t}

    def _remember(self, topics: set[str]) -> None:
        write_atomic(self.marker, json.dumps({"topics": sorted(topics)}).encode())

    def _remove(self, topics: set[str]) -> None:
        for topic in sorted(topics):
            self.link.publish(topic, b"", retain=True, qos=1)
        if topics:
            log.info("Home Assistant discovery removed from %d topic(s)", len(topics))
        if not self.ha.enabled:
            self.marker.unlink(missing_ok=True)

    def changed(self) -> None:
        """Called with every status change (edged.serve.telemetry): the discovery is recomputed then, not polled."""
        self._stale.set()

    def _on_birth(self, topic: str, payload: bytes, retained: bool) -> None:
        if payload.strip() == b"online":
            self._birth.set()

    def facts(self) -> DeviceFacts:
        heads, labels, model = self.describe()
        places = tuple(view.name for camera in self.cfg.cameras for view in views_of(camera))
        sources = tuple(camera.name for camera in self.cfg.cameras)
        return DeviceFacts(self.cfg.device, __version__, model, heads, labels, self.ha.capture_count, places, sources,
                           self.ha.event_image)

    def payload(self) -> dict:
        """Device mode: the one payload, with the entities dropped since the last one named for removal."""
        facts = self.facts()
        current = discovery_payload(self.link.topics, facts)
        removed = {}
        sent = (self._last or {}).get(self.topic)
        if sent:
            removed = {cid: c["platform"] for cid, c in json.loads(sent)["components"].items()
                       if cid not in current["components"] and len(c) > 1}
        return discovery_payload(self.link.topics, facts, removed) if removed else current

    def payloads(self) -> dict[str, bytes]:
        """Every discovery topic and what it should hold now (b"" removes an entity or the other mode's payloads)."""
        if self.ha.discovery == "device":
            wanted = {self.topic: self.payload()}
        else:
            wanted = entity_payloads(self.link.topics, self.facts(), self.ha.discovery_prefix)
        out = {topic: json.dumps(payload).encode() for topic, payload in wanted.items()}
        out.update({topic: b"" for topic in self._published_before() - set(wanted)})
        return out

    def _publish(self, payloads: dict[str, bytes], forced: bool) -> None:
        last = self._last or {}
        self._remember({topic for topic, payload in payloads.items() if payload})
        for topic, payload in payloads.items():
            if forced or last.get(topic) != payload:
                self.link.publish(topic, payload, retain=True, qos=1)
        self._last = {topic: payload for topic, payload in payloads.items() if payload}

    def _run(self) -> None:
        next_snapshot = time.monotonic()
        while not self.stop.wait(0.5):
            try:
                next_snapshot = self._tick(next_snapshot)
            except Exception:  # a bad moment (e.g. a head swapping) must not end discovery for good
                log.exception("Home Assistant discovery update failed; trying again")

    def _tick(self, next_snapshot: float) -> float:
        # a birth re-sends the discovery at most every BIRTH_RESEND_S: a client flooding births gets no flood back
        forced = self._birth.is_set() and time.monotonic() - self._last_forced >= BIRTH_RESEND_S
        if forced or self._stale.is_set():
            if forced:
                self._birth.clear()
                self._last_forced = time.monotonic()
            self._stale.clear()
            try:
                payloads = self.payloads()
            except Exception:
                self._stale.set()  # try again on the next tick
                raise
            if forced or payloads != self._last:
                self._publish(payloads, forced)
        if self.ha.snapshot_interval_s and time.monotonic() >= next_snapshot:
            next_snapshot = time.monotonic() + self.ha.snapshot_interval_s
            frame = self.last_frame()
            if frame is not None:
                ok, jpeg = cv2.imencode(".jpg", frame.image, [cv2.IMWRITE_JPEG_QUALITY, 80])
                if ok:
                    self.link.publish(self.link.topics.snapshot, jpeg.tobytes(), retain=True, qos=0)
        return next_snapshot
