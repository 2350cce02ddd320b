"""What each command does. Validation is done before (edged.commands.schema); replies go through the responder."""

from __future__ import annotations

import base64
import json
import logging
import threading
from dataclasses import dataclass, field
from typing import Callable, Optional, Protocol

import cv2
import numpy as np

from ..config import BACKGROUND, CaptureConfig, EventsConfig
from ..errors import CommandError, HeadError
from ..heads.base import TrainRequest
from ..serve.capture import CaptureDesk, CaptureJob, CaptureRequest, CaptureTarget
from ..serve.headset import HeadSet
from ..serve.background import JobRunner, TopicResponder, run_reporting
from ..serve.learning import Learning
from ..state.events import EventStore
from ..state.layout import StateLayout
from ..state.review import ReviewQueue
from ..state.store import NewExample, Store
from .dispatch import DEFERRED, Handler, Responder
from .schema import COMMANDS, Activate, Capture, Delete, Discard, Empty, Events, Export, Forget, Label, ListExamples
from .schema import Publish, Relabel, Rollback, Share, Snapshot, Train, Wrong

log = logging.getLogger(__name__)


class Sharer(Protocol):
    """What `publish` and `share` need from the fleet side (edged.fleet.sharing.Sharing)."""

    def publish(self, name: str, kind: str, version: Optional[str], progress) -> dict: ...

    def share_examples(self, label: Optional[str], progress) -> dict: ...


class SceneView(Protocol):
    """What `state` and a capture of a source or region need from the scene (edged.serve.scene.Scene)."""

    views: list
    sources: list[str]

    def states(self) -> dict: ...

    def view(self, source: str, region: str = ""): ...


MAX_SNAPSHOT_REPLY = 2 << 20


@dataclass
class Teaching:
    """What the commands act on: the examples, the heads and their learning, captures, the review queue, the scene
    (states; the sources and regions a capture names), the event store and the fleet's sharing."""

    store: Store
    backbone_id: str
    heads: HeadSet
    learning: Learning
    captures: CaptureDesk
    capture_cfg: CaptureConfig
    reviews: ReviewQueue
    sharing: Sharer
    scene: Optional[SceneView] = None
    events: Optional[EventStore] = None
    events_cfg: EventsConfig = field(default_factory=lambda: EventsConfig(retrain_after_wrong=0))  # "wrong" marks


@dataclass
class Reporting:
    """How the commands reach beyond their own reply: the status (`changed`: publish it soon), the newest frame and
    the snapshot topic, background jobs and where a follow-up job reports (None: train waits for its fine-tune)."""

    status: Callable[[], dict]
    changed: Callable[[], None]
    last_frame: Callable[[Optional[str]], object]
    publish_snapshot: Callable[[bytes], Optional[str]]
    jobs: JobRunner
    publish_job: Optional[Callable[[dict], None]] = None
    stop: Optional[threading.Event] = None


class CommandHandlers:
    def __init__(self, teaching: Teaching, reporting: Reporting):
        self.store, self.backbone_id, self.heads = teaching.store, teaching.backbone_id, teaching.heads
        self.learning, self.captures, self.capture_cfg = teaching.learning, teaching.captures, teaching.capture_cfg
        self.reviews, self.sharing, self.scene, self.events = (teaching.reviews, teaching.sharing, teaching.scene,
                                                               teaching.events)
        self.status_fn, self.changed, self.last_frame = reporting.status, reporting.changed, reporting.last_frame
        self.publish_snapshot, self.jobs = reporting.publish_snapshot, reporting.jobs
        self.publish_job, self.stop = reporting.publish_job, reporting.stop
        self.events_cfg = teaching.events_cfg
        self._marks = 0  # "wrong" marks since the last automatic train
        self._marks_lock = threading.Lock()

    def table(self) -> dict[str, Handler]:
        """Every command name (edged.commands.schema.COMMANDS) and its handler, the method `on_<name>`."""
        return {name: getattr(self, f"on_{name}") for name in COMMANDS}

    def on_publish(self, cmd: Publish, responder: Responder) -> dict:
        return self.sharing.publish(cmd.model, cmd.kind, cmd.version, responder.progress)

    def on_share(self, cmd: Share, responder: Responder) -> dict:
        return self.sharing.share_examples(cmd.label, responder.progress)

    def on_capture(self, cmd: Capture, responder: Responder):
        cfg = self.capture_cfg
        source = self._capture_source(cmd)
        if self.scene is not None and self.scene.view(source, cmd.region or "") is None:
            regions = [v.region for v in self.scene.views if v.source == source and v.region]
            raise CommandError(f"capture.region: no region {cmd.region!r}" + (f" in source {source!r}" if source else "")
                               + f"; configured: {', '.join(regions) or 'none'}", cmd.id)
        timeout = cmd.timeout_s if cmd.timeout_s is not None else cmd.count * cmd.interval_ms / 1000.0 + cfg.timeout_s
        request = CaptureRequest(cmd.label, cmd.count, cmd.interval_ms / 1000.0, cmd.objects(), source,
                                 cmd.region or "", cmd.near_copy if cmd.near_copy is not None else cfg.near_copy,
                                 timeout)
        target = CaptureTarget(self.store, self.backbone_id, cfg.max_per_label, cfg.max_total, writer=True,
                               learned=self.heads.learned)
        job = CaptureJob(request, target, responder=responder, corr_id=cmd.id)
        self.captures.start(job)
        log.info("capture of %d %r examples started", cmd.count, cmd.label)
        self.changed()
        return DEFERRED  # replied when the last example is stored

    def _capture_source(self, cmd: Capture) -> str:
        """The source a capture takes frames from: the one there is, or the one it names."""
        sources = self.scene.sources if self.scene is not None else [""]
        if cmd.source is None:
            if len(sources) > 1:
                raise CommandError(f"capture.source: this daemon serves several sources; name one of "
                                   f"{', '.join(sources)}", cmd.id)
            return sources[0]
        if cmd.source not in sources:
            raise CommandError(f"capture.source: no source {cmd.source!r}; configured: "
                               f"{', '.join(s for s in sources if s) or 'one unnamed [source]'}", cmd.id)
        return cmd.source

    def on_forget(self, cmd: Forget, responder: Responder) -> dict:
        removed = self.store.forget(cmd.label)
        self.heads.forget(cmd.label)
        log.info("forgot %d examples of %r", removed, cmd.label)
        self.changed()
        return {"label": cmd.label, "removed": removed}

    def on_activate(self, cmd: Activate, responder: Responder) -> dict:
        result = {}
        if cmd.heads is not None:
            self.heads.activate(cmd.heads)
        if cmd.model is not None:
            result = self.learning.use_model(cmd.model, cmd.version)
        log.info("activated %s", result or {"heads": cmd.heads})
        self.changed()
        return {**result, "active": self.heads.active}

    def on_rollback(self, cmd: Rollback, responder: Responder) -> dict:
        result = self.learning.rollback_model(cmd.model)
        log.info("rolled back %s to %s", cmd.model, result["version"])
        self.changed()
        return {**result, "active": self.heads.active}

    def _known(self, head: str, command: str) -> None:
        if head not in self.heads.classes:
            raise HeadError(f"{command}.head: unknown head {head!r}; installed: {sorted(self.heads.classes)}")

    def on_train(self, cmd: Train, responder: Responder):
        self._known(cmd.head, "train")
        request = TrainRequest(mode=cmd.mode, epochs=cmd.epochs, fine_tune_layers=cmd.fine_tune_layers)

        def later(what: str, job) -> str:
            follow = TopicResponder(self.publish_job, what, cmd.id)
            self.jobs.start(what, lambda: run_reporting(lambda: job(follow.progress), follow, what, self.changed,
                                                        self.jobs))
            return (f"following as the job {what!r}: the head trained now serves meanwhile; progress and result on "
                    f"the job topic (edged/<device>/job) and in the status (job, last_job)")

        def work() -> dict:
            responder.progress({"phase": "starting", "step": f"training {cmd.head} ({cmd.mode})"})
            log.info("training %s (%s)", cmd.head, cmd.mode)
            result = self.learning.train(cmd.head, request, responder.progress, self.stop,
                                         later if self.publish_job is not None else None)
            if cmd.activate and cmd.head not in self.heads.active:
                self.heads.activate(self.heads.active + [cmd.head])
            result["active"] = cmd.head in self.heads.active
            if not result["active"]:
                result["note"] = f"{cmd.head} is trained but not predicting: activate {{\"heads\": [..., \"{cmd.head}\"]}}"
            log.info("trained %s %s: %s", cmd.head, result.get("version"),
                     {k: v for k, v in result.get("metrics", {}).items() if k in ("cv_accuracy", "chosen", "fine_tune")})
            return result

        self._job(f"train {cmd.head}", cmd.id, responder, work)
        return DEFERRED

    def on_export(self, cmd: Export, responder: Responder):
        self._known(cmd.head, "export")

        def work() -> dict:
            responder.progress({"phase": "starting", "step": f"exporting {cmd.head} as {cmd.quantize}"})
            result = self.learning.export(cmd.head, cmd.quantize, cmd.force, responder.progress, self.stop)
            log.info("exported %s %s (%s), parity %s", cmd.head, result["model_version"], cmd.quantize, result["parity"])
            return result

        self._job(f"export {cmd.head} {cmd.quantize}", cmd.id, responder, work)
        return DEFERRED

    def _job(self, what: str, corr_id, responder: Responder, work) -> None:
        self.jobs.start(what, lambda: run_reporting(work, responder, what, self.changed, self.jobs), corr_id,
                        waiting=lambda ahead: responder.progress({"phase": "queued", "step": f"waiting for {ahead}"}))
        self.changed()

    def on_snapshot(self, cmd: Snapshot, responder: Responder) -> dict:
        if cmd.source is not None and self.scene is not None and cmd.source not in self.scene.sources:
            raise CommandError(f"snapshot.source: no source {cmd.source!r}; configured: "
                               f"{', '.join(s for s in self.scene.sources if s) or 'one unnamed [source]'}", cmd.id)
        frame = self.last_frame(cmd.source)
        if frame is None:
            raise CommandError("no frame has arrived yet" + (f" from {cmd.source!r}" if cmd.source else ""))
        ok, jpeg = cv2.imencode(".jpg", frame.image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        if not ok:
            raise CommandError("JPEG encoding failed")
        data = jpeg.tobytes()
        topic = self.publish_snapshot(data)
        return {"topic": topic, "bytes": len(data), "pos": frame.pos, **({"source": frame.source} if frame.source else {}),
                "jpeg_base64": base64.b64encode(data).decode() if len(data) < 48_000 else None}

    def on_state(self, cmd: Empty, responder: Responder) -> dict:
        """Every head's (and region's) debounced state."""
        if self.scene is None:
            raise CommandError("states are kept by a serving daemon")
        return {"states": self.scene.states()}

    def on_events(self, cmd: Events, responder: Responder) -> dict:
        """Recent events (newest first), or one event with its snapshot."""
        if self.events is None:
            raise CommandError("events are kept by a serving daemon")
        if cmd.event is None:
            return {"events": self.events.list(cmd.limit, cmd.head, cmd.label)}
        event = self.events.get(cmd.event)
        jpeg = self.events.snapshot(cmd.event)
        if jpeg is not None and len(jpeg) <= MAX_SNAPSHOT_REPLY:
            event["snapshot_jpeg_base64"] = base64.b64encode(jpeg).decode()
        return {"event": event}

    def on_wrong(self, cmd: Wrong, responder: Responder) -> dict:
        """"That was wrong": the event's pictures (its best frame and the frames it kept over its length; of its
        place: a region's crop) or windows of its sound become examples of what it was, `background` by default, all
        of one capture. The instant heads know them at once, a trained head at its next train; `delete {"ids":
        [...]}` takes them back."""
        if self.events is None:
            raise CommandError("wrong: events are kept by a serving daemon", cmd.id)
        event_id = cmd.event or self._newest_event(cmd.head, cmd.id)
        event = self.events.get(event_id)
        label = cmd.label or BACKGROUND
        if label == event.get("label"):
            raise CommandError(f"wrong.label: event {event_id} already said {label!r}", cmd.id)
        source, region = event.get("source", ""), event.get("region", "")
        clip = self.events.sound(event_id)
        if clip is not None:
            examples = self.learning.sound_examples(clip, self.events_cfg.kept_frames, self.events_cfg.clip_s)
        else:
            pictures = self.events.frames(event_id)
            if not pictures:
                raise CommandError(f"wrong.event: event {event_id} has no snapshot to learn from", cmd.id)
            view = self.scene.view(source, region) if self.scene is not None else None
            examples = []
            for jpeg in pictures:
                image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
                if image is not None:
                    image = view.crop(image) if view is not None else image
                    examples.append((image, None, self.learning.embed_image(image)))
        capture = f"wrong:{event_id}"
        ids = self.store.add_many([NewExample(image, label, embedding, source=source or None, audio=audio,
                                              capture=capture) for image, audio, embedding in examples],
                                  self.backbone_id)
        for _, _, embedding in examples:
            self.heads.learned(embedding, label)
        log.info("event %s (%s) marked wrong: %d examples of %r", event_id, event.get("label"), len(ids), label)
        self.changed()
        return {"event": event_id, "said": event.get("label"), "label": label, "examples": ids,
                "counts": self.store.counts(), "undo": f"delete {{\"ids\": {ids}}}",
                "note": "the instant heads know it now; " + self._retrain_after_a_mark(cmd.id)}

    def _retrain_after_a_mark(self, corr_id) -> str:
        """Count the mark; every `retrain_after_wrong` marks, train the active heads that learn only by `train`, each
        as a job reporting on the job topic (the same train a user sends, with its defaults)."""
        every = self.events_cfg.retrain_after_wrong
        trained = [name for name in self.heads.active if not self.heads.classes[name].incremental]
        if not every or not trained or self.publish_job is None:
            return "train the classifier to teach it there" if not trained else f"train {', '.join(trained)} to teach it there"
        with self._marks_lock:
            self._marks += 1
            due = self._marks >= every
            left = every - self._marks
            if due:
                self._marks = 0
        if not due:
            return f"{', '.join(trained)} train again by themselves after {left} more mark{'s' if left != 1 else ''}"
        for name in trained:
            self.on_train(Train(head=name, id=corr_id),
                          TopicResponder(self.publish_job, f"train {name} after wrong marks", corr_id))
        log.info("%d wrong marks: training %s again", every, ", ".join(trained))
        return (f"{every} marks: training {', '.join(trained)} again now (job 'train <head> after "
                f"wrong marks' on edged/<device>/job)")

    def _newest_event(self, head: str, corr) -> str:
        found = self.events.list(1, head)
        if not found:
            raise CommandError(f"wrong.head: no event of head {head!r} yet", corr)
        return found[0]["id"]

    def on_heads(self, cmd: Empty, responder: Responder) -> dict:
        return {"heads": self.heads.describe(), "active": self.heads.active}

    def on_status(self, cmd: Empty, responder: Responder) -> dict:
        self.changed()
        return self.status_fn()

    def on_review(self, cmd: Empty, responder: Responder) -> dict:
        return {"items": self.reviews.list()}

    def on_label(self, cmd: Label, responder: Responder) -> dict:
        example_id, embedding = self.reviews.label(cmd.review_id, cmd.label, self.store, self.backbone_id,
                                                   self.learning.embed_image)
        self.heads.learned(embedding, cmd.label)
        log.info("review item %s stored as an example of %r", cmd.review_id, cmd.label)
        self.changed()
        return {"review_id": cmd.review_id, "label": cmd.label, "example": example_id,
                "examples": self.store.counts().get(cmd.label, 0)}

    def on_discard(self, cmd: Discard, responder: Responder) -> dict:
        self.reviews.discard(cmd.review_id)
        return {"review_id": cmd.review_id, "discarded": True}

    def on_examples(self, cmd: ListExamples, responder: Responder) -> dict:
        return {"examples": self.store.list(cmd.label, cmd.limit, cmd.offset), "counts": self.store.counts()}

    def on_delete(self, cmd: Delete, responder: Responder) -> dict:
        removed = self.store.delete(cmd.ids)
        self.heads.refit_incremental()
        log.info("deleted %d examples", removed)
        self.changed()
        return {"deleted": removed, "counts": self.store.counts()}

    def on_relabel(self, cmd: Relabel, responder: Responder) -> dict:
        changed = self.store.relabel(cmd.ids, cmd.label)
        self.heads.refit_incremental()
        log.info("relabelled %d examples as %r", changed, cmd.label)
        self.changed()
        return {"relabelled": changed, "label": cmd.label, "counts": self.store.counts()}

    def on_models(self, cmd: Empty, responder: Responder) -> dict:
        """Per head: trained versions with their metrics, exported models with precision and parity, and which one
        predicts (`predicts`): the current trained version, unless the head serves one of its exported models."""
        layout = StateLayout(self.learning.cfg.state_path)
        out = {}
        for name in sorted(self.heads.classes):
            trained, exported = layout.heads(name), layout.models(name)
            served = self.heads.models.get(name)
            served_model = served.folder.name if served is not None else None
            active = name in self.heads.active
            versions = [_summary(trained.root / v / "head.json", v, trained.current()) for v in trained.versions()]
            models = [_summary(exported.root / v / "metadata.json", v, exported.current()) for v in exported.versions()]
            for v in versions:
                v["predicts"] = active and served_model is None and v["current"]
            for m in models:
                m["predicts"] = active and m["version"] == served_model
            out[name] = {"active": active, "serving_model": served_model is not None, "versions": versions,
                         "models": models}
        return {"heads": out}

    def on_cancel(self, cmd: Empty, responder: Responder) -> dict:
        """Stop the running capture (its stored examples are kept) and the running TensorFlow job."""
        capture = self.captures.current
        if capture is not None:
            capture.cancelled = True
        job = self.jobs.running
        stopped_job = self.learning.cancel()
        log.info("cancel: capture %s, job %s", capture.label if capture else None, job if stopped_job else None)
        return {"capture": capture.label if capture else None, "job": job if stopped_job else None}


def _summary(meta_path, version: str, current) -> dict:
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        meta = {}
    metrics = meta.get("metrics", {})
    keep = {k: metrics[k] for k in ("cv_accuracy", "chosen", "val_accuracy", "val_iou", "fine_tune") if k in metrics}
    out = {"version": version, "current": version == current, "metrics": keep}
    for key in ("quantization", "parity", "bytes", "created", "from_version"):
        if key in meta:
            out[key] = meta[key]
    return out
