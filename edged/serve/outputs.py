"""Where what the daemon sees goes: each head's latest prediction (for the teach page), MQTT, the console.

The frame loop and the scene hand it predictions, states and events; it knows the topics and the payloads, they
know neither. Per-frame predictions go out as `[publish] predictions` says (every one, on change, or not at all)
and at most `max_rate` a second per head and region.
"""

from __future__ import annotations

import time
from typing import Optional

from ..config import PublishConfig
from ..heads.base import Prediction
from ..scene.views import WHOLE, View


class Outputs:
    def __init__(self, link: Optional[object], backbone_id: str, model_sha: str, print_predictions: bool,
                 publish: Optional[PublishConfig] = None, frames: bool = False):
        self.link = link  # the MQTT link (it queues until connected), or None when MQTT is disabled
        # camera frames (snapshots) go on the broker only for Home Assistant's image entities ([homeassistant]):
        # anyone who may read the device's tree could read them (docs/security.md, who sees a frame)
        self.frames = frames
        self.backbone_id, self.model_sha = backbone_id, model_sha
        self.print_predictions = print_predictions
        self.publish = publish or PublishConfig(predictions="every")
        self.latest: dict[str, dict] = {}  # the last prediction payload per head (`head/region`), off the frame loop
        self._published: dict[str, tuple[str, float]] = {}  # key -> (label, monotonic time) of the last sent
        self.predictions_sent = self.predictions_held = 0

    def prediction(self, head: str, pred: Prediction, frame, frame_index: int, latency_ms: float,
                   view: View = WHOLE) -> None:
        payload = pred.message(head, frame_index, frame.pos, latency_ms, self.backbone_id, self.model_sha)
        region = view.name  # the place: [source/]region
        key = f"{head}/{region}" if region else head
        payload.update(view.fields)
        self.latest[key] = payload
        if self.print_predictions:
            where = f" in {region}" if region else ""
            print(f"{head}{where}: {pred.label} {pred.score:.2f} (frame {frame.pos}, {latency_ms:.1f} ms)", flush=True)
        link = self.link
        if link is None or not self._due(key, pred.label):
            return
        link.publish(link.topics.prediction(head, region), payload)

    def _due(self, key: str, label: str) -> bool:
        mode, now = self.publish.predictions, time.monotonic()
        last = self._published.get(key)
        if mode == "off" or (mode == "change" and last is not None and last[0] == label) or (
                self.publish.max_rate and last is not None and now - last[1] < 1.0 / self.publish.max_rate):
            self.predictions_held += 1
            return False
        self._published[key] = (label, now)
        self.predictions_sent += 1
        return True

    def state(self, head: str, region: str, payload: dict) -> None:
        link = self.link
        if link is not None:
            link.publish(link.topics.state(head, region), payload, retain=True, qos=1)

    def event(self, head: str, region: str, payload: dict) -> None:
        link = self.link
        if link is not None:
            link.publish(link.topics.event(head, region), payload, qos=1)

    def event_snapshot(self, jpeg: bytes) -> None:
        """The latest event's best frame, retained (Home Assistant's event image)."""
        link = self.link
        if link is not None and self.frames:
            link.publish(link.topics.event_snapshot, jpeg, retain=True, qos=1)

    def job(self, payload: dict) -> None:
        """A background job's progress and result (a fine-tune following a train's answer)."""
        link = self.link
        if link is not None:
            link.publish(link.topics.job, payload, qos=1)

    def stats(self, payload: dict) -> None:
        link = self.link
        if link is not None:
            link.publish(link.topics.stats, payload, retain=True)  # retained: `fleet ls` reads it

    def review(self, item: dict) -> None:
        link = self.link
        if link is not None:
            link.publish(link.topics.review, {**item, "thumbnail": f"review/{item['id']}/frame.jpg"}, qos=1)

    def snapshot(self, jpeg: bytes) -> Optional[str]:
        """Publish a snapshot; the topic it went to, or None without MQTT or without Home Assistant to show it."""
        link = self.link
        if link is None or not self.frames:
            return None
        link.publish(link.topics.snapshot, jpeg, qos=1)
        return link.topics.snapshot
