"""Where what the daemon sees goes: each head's latest prediction (for the teach page), MQTT, the console.

The frame loop hands it predictions; it knows the topics and the payloads, the loop knows neither.
"""

from __future__ import annotations

from typing import Callable, Optional

from ..heads.base import Prediction


class Outputs:
    def __init__(self, link: Callable[[], object], backbone_id: str, model_sha: str, print_predictions: bool):
        self.link = link  # the MQTT link, or None (disabled, or not up yet)
        self.backbone_id, self.model_sha = backbone_id, model_sha
        self.print_predictions = print_predictions
        self.latest: dict[str, dict] = {}  # the last prediction payload per head, for readers off the frame loop

    def prediction(self, head: str, pred: Prediction, frame, frame_index: int, latency_ms: float) -> None:
        payload = pred.message(head, frame_index, frame.pos, latency_ms, self.backbone_id, self.model_sha)
        self.latest[head] = payload
        link = self.link()
        if link is not None:
            link.publish(link.topics.prediction(head), payload)
        if self.print_predictions:
            print(f"{head}: {pred.label} {pred.score:.2f} (frame {frame.pos}, {latency_ms:.1f} ms)", flush=True)

    def stats(self, payload: dict) -> None:
        link = self.link()
        if link is not None:
            link.publish(link.topics.stats, payload, retain=True)  # retained: `fleet ls` reads it

    def review(self, item: dict) -> None:
        link = self.link()
        if link is not None:
            link.publish(link.topics.review, {**item, "thumbnail": f"review/{item['id']}/frame.jpg"}, qos=1)

    def snapshot(self, jpeg: bytes) -> Optional[str]:
        """Publish a snapshot; the topic it went to, or None without MQTT."""
        link = self.link()
        if link is None:
            return None
        link.publish(link.topics.snapshot, jpeg, qos=1)
        return link.topics.snapshot
