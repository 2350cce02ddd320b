"""What each command does. Validation is done before (edged.serve.commands); replies go through the responder."""

from __future__ import annotations

import base64
import logging
from typing import Callable, Optional

import cv2

from ..errors import CommandError
from ..heads.base import TrainRequest
from ..state.review import ReviewQueue
from ..state.store import Store
from .capture import CaptureDesk, CaptureJob
from .commands import Activate, Capture, Discard, Empty, Export, Forget, Label, Rollback, Train
from .dispatch import DEFERRED, Handler, Responder
from .headset import HeadSet
from .jobs import JobRunner, run_reporting
from .learning import Learning

log = logging.getLogger(__name__)


class CommandHandlers:
    def __init__(self, store: Store, backbone_id: str, heads: HeadSet, learning: Learning, captures: CaptureDesk,
                 jobs: JobRunner, status: Callable[[], dict], changed: Callable[[], None],
                 last_frame: Callable[[], object], publish_snapshot: Callable[[bytes], Optional[str]],
                 capture_cfg, reviews: ReviewQueue, stop=None):
        self.store = store
        self.backbone_id = backbone_id
        self.heads = heads
        self.learning = learning
        self.captures = captures
        self.jobs = jobs
        self.status_fn = status
        self.changed = changed  # the status changed: publish it soon
        self.last_frame = last_frame
        self.publish_snapshot = publish_snapshot
        self.capture_cfg = capture_cfg
        self.reviews = reviews
        self.stop = stop

    def table(self) -> dict[str, Handler]:
        return {"capture": self.capture, "forget": self.forget, "status": self.status, "snapshot": self.snapshot,
                "heads": self.list_heads, "activate": self.activate, "train": self.train, "export": self.export,
                "rollback": self.rollback, "review": self.list_review, "label": self.label, "discard": self.discard}

    def capture(self, cmd: Capture, responder: Responder):
        cfg = self.capture_cfg
        timeout = cmd.timeout_s if cmd.timeout_s is not None else cmd.count * cmd.interval_ms / 1000.0 + cfg.timeout_s
        job = CaptureJob(self.store, self.backbone_id, cmd.label, cmd.count, cmd.interval_ms / 1000.0, cmd.box,
                         responder=responder, corr_id=cmd.id, timeout_s=timeout,
                         dedupe=cmd.dedupe if cmd.dedupe is not None else cfg.dedupe)
        self.captures.start(job)
        log.info("capture of %d %r examples started", cmd.count, cmd.label)
        self.changed()
        return DEFERRED  # replied when the last example is stored

    def forget(self, cmd: Forget, responder: Responder) -> dict:
        removed = self.store.forget(cmd.label)
        self.heads.forget(cmd.label)
        log.info("forgot %d examples of %r", removed, cmd.label)
        self.changed()
        return {"label": cmd.label, "removed": removed}

    def activate(self, cmd: Activate, responder: Responder) -> dict:
        result = {}
        if cmd.heads is not None:
            self.heads.activate(cmd.heads)
        if cmd.model is not None:
            result = self.learning.use_model(cmd.model, cmd.version)
        self.changed()
        return {**result, "active": self.heads.active}

    def rollback(self, cmd: Rollback, responder: Responder) -> dict:
        result = self.learning.rollback_model(cmd.model)
        self.changed()
        return {**result, "active": self.heads.active}

    def train(self, cmd: Train, responder: Responder):
        request = TrainRequest(mode=cmd.mode, epochs=cmd.epochs, fine_tune_layers=cmd.fine_tune_layers)
        self._job(f"train {cmd.head}", cmd.id, responder,
                  lambda: self.learning.train(cmd.head, request, responder.progress, self.stop))
        return DEFERRED

    def export(self, cmd: Export, responder: Responder):
        self._job(f"export {cmd.head} {cmd.quantize}", cmd.id, responder,
                  lambda: self.learning.export(cmd.head, cmd.quantize, cmd.force, responder.progress, self.stop))
        return DEFERRED

    def _job(self, what: str, corr_id, responder: Responder, work) -> None:
        self.jobs.start(what, lambda: run_reporting(work, responder, what, self.changed), corr_id)
        self.changed()

    def snapshot(self, cmd: Empty, responder: Responder) -> dict:
        frame = self.last_frame()
        if frame is None:
            raise CommandError("no frame has arrived yet")
        ok, jpeg = cv2.imencode(".jpg", frame.image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        if not ok:
            raise CommandError("JPEG encoding failed")
        data = jpeg.tobytes()
        topic = self.publish_snapshot(data)
        return {"topic": topic, "bytes": len(data), "pos": frame.pos,
                "jpeg_base64": base64.b64encode(data).decode() if len(data) < 48_000 else None}

    def list_heads(self, cmd: Empty, responder: Responder) -> dict:
        return {"heads": self.heads.describe(), "active": self.heads.active}

    def status(self, cmd: Empty, responder: Responder) -> dict:
        self.changed()
        return self.status_fn()

    def list_review(self, cmd: Empty, responder: Responder) -> dict:
        return {"items": self.reviews.list()}

    def label(self, cmd: Label, responder: Responder) -> dict:
        example_id, embedding = self.reviews.label(cmd.review_id, cmd.label, self.store, self.backbone_id,
                                                   self.learning.embed_image)
        self.heads.learned(embedding, cmd.label)
        log.info("review item %s stored as an example of %r", cmd.review_id, cmd.label)
        self.changed()
        return {"review_id": cmd.review_id, "label": cmd.label, "example": example_id,
                "examples": self.store.counts().get(cmd.label, 0)}

    def discard(self, cmd: Discard, responder: Responder) -> dict:
        self.reviews.discard(cmd.review_id)
        return {"review_id": cmd.review_id, "discarded": True}
