"""Train and export on a trainer node (`edged trainer --fleet`) for a device without TensorFlow.

Trainers announce themselves retained on `<prefix>/fleet/trainers/<name>` (LWT: offline) with a signed
announcement; only a certified, unrevoked trainer whose certificate names it is used. A job goes to one of them as
a parcel in this device's tree (`<prefix>/<device>/share/job/<trainer>`: the stored examples with their embeddings
and frames, the job, the device's backbone and head settings), signed by this device and sealed for that trainer.
The trainer sends signed progress and done messages on `fleet/trainers/<trainer>/{progress,done}/<device>`, and
the new version as a parcel sealed for this device on `fleet/trainers/<trainer>/share/result/<device>`. Only the
trainer the job went to can answer it; the device verifies and commits the version as its own next one.
"""

from __future__ import annotations

import json
import logging
import queue
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, Optional

from .. import wire
from ..config import Config
from ..errors import TrainingError
from .parcels import Assembler, ShareError, pack
from .signing import FleetTrust
from ..mqtt.topics import FleetTopics
from ..state.backbones import BackboneInfo
from .bundles import BundleError, pack_examples, pack_folder, unpack_into
from ..state.layout import StateLayout
from ..state.store import Store
from .trust import Certificate, TrustError
from .trainer_node import job_context

log = logging.getLogger(__name__)

FRESH_S = 60.0  # a trainer is alive while its signed heartbeat (edged.fleet.trainer_node.HEARTBEAT_S) is this fresh;
                # a job's trainer silent this long has stopped


class RemoteTrainer:
    def __init__(self, cfg: Config, store: Store, backbone: BackboneInfo, link: Callable[[], object],
                 trust: FleetTrust):
        self.cfg, self.store, self.backbone, self.link, self.trust = cfg, store, backbone, link, trust
        self.prefix = cfg.mqtt.prefix
        self.trainers: dict[str, dict] = {}  # name -> {"state", "cert"?, "reason"?}
        self.assembler = Assembler(self.prefix, cfg.fleet.max_share_bytes, trust.open_manifest, kinds=("result",))
        self.events: "queue.Queue[tuple[str, object]]" = queue.Queue(maxsize=100_000)
        self.refused = 0  # result chunks and manifests that could not be taken (logged)
        self.waiting = False  # a job is out on a trainer
        self._cancelled = threading.Event()
        self._lock = threading.Lock()

    # -- MQTT side (paho's thread: only record and queue) ------------------------------------
    def routes(self) -> list[tuple[str, Callable[[str, bytes, bool], None]]]:
        device = self.cfg.device
        fleet = FleetTopics(self.prefix)
        return [(fleet.trainer_status(), self._on_trainer),
                (fleet.trainer_messages_for(device), self._on_event),
                (fleet.every_share("result", device, role="trainer"), self._on_result)]

    def _put(self, item) -> None:
        try:
            self.events.put_nowait(item)
        except queue.Full:
            log.warning("trainer event queue full; dropped a %s", item[0])

    def _on_trainer(self, topic: str, payload: bytes, retained: bool) -> None:
        name = topic.rsplit("/", 1)[-1]
        try:
            status = wire.loads(payload) if payload else {"state": "offline"}
        except ValueError:
            return
        entry = {"state": "offline"}
        if isinstance(status, dict) and status.get("state") == "online":
            try:
                body, cert = self.trust.check(status.get("announce") if self.trust.signed else status, name,
                                              "trainer", f"trainer {name!r}")
                ts = body.get("ts")
                if not isinstance(ts, (int, float)) or abs(time.time() - ts) > FRESH_S:
                    raise TrustError(f"trainer {name!r}: its signed status is from {ts!r}, not within {FRESH_S:g} s "
                                     f"of now (a saved one replayed, or a clock far off)")
                if body.get("state", "online") != "online":
                    raise TrustError(f"trainer {name!r}: its signed status says {str(body.get('state'))[:20]!r}")
                entry = {"state": "online", "cert": cert, "heard": time.monotonic()}
            except (TrustError, ValueError) as e:
                entry = {"state": "refused", "reason": str(e)}
        with self._lock:
            if len(self.trainers) < 256 or name in self.trainers:
                self.trainers[name] = entry
        self._put(("trainer", name))

    def _on_event(self, topic: str, payload: bytes, retained: bool) -> None:
        parts = topic.split("/")
        try:
            body, _ = self.trust.check(wire.loads(payload), parts[-3], "trainer", f"{parts[-2]} from {parts[-3]!r}")
        except (ValueError, TrustError) as e:
            log.warning("trainer message on %s refused: %s", topic[:200], e)
            return
        self._put((parts[-2], {**body, "trainer": parts[-3]}))  # ("progress" | "done", message)

    def _on_result(self, topic: str, payload: bytes, retained: bool) -> None:
        self._put(("chunk", (topic, bytes(payload))))

    # -- the job ------------------------------------------------------------------------------
    def available(self) -> Optional[str]:
        """An online trainer whose signed heartbeat came lately and that is not revoked now (a revocation applies at
        once to trainers heard of before it)."""
        now = time.monotonic()
        with self._lock:
            online = sorted(n for n, s in self.trainers.items()
                            if s.get("state") == "online" and now - s.get("heard", now) <= FRESH_S)
        return next((n for n in online if not self.revoked(n)), None)

    def cancel(self) -> bool:
        """End the job waiting on a trainer now (its result, if one comes, is not taken)."""
        if not self.waiting:
            return False
        self._cancelled.set()
        return True

    def revoked(self, name: str) -> bool:
        with self._lock:
            cert = self.trainers.get(name, {}).get("cert")
        return self.trust.is_revoked(name, cert)

    def describe(self) -> dict:
        with self._lock:
            trainers = dict(self.trainers)
        return {name: ("revoked" if s["state"] == "online" and self.revoked(name) else s["state"])
                + (f": {s['reason']}" if s.get("reason") else "") for name, s in trainers.items()}

    def run(self, job: str, head: str, params: dict, progress=None, stop: Optional[threading.Event] = None) -> dict:
        """Send the job to a trainer, wait for its version, commit it here. Returns the job's result (local names)."""
        link = self.link
        trainer = self.available()
        if link is None or trainer is None:
            raise TrainingError(f"{job} needs TensorFlow, which is not installed here, and no trainer is online "
                                f"(start `edged trainer --fleet` on a machine with TensorFlow on this broker)")
        cert: Optional[Certificate] = self.trainers.get(trainer, {}).get("cert")
        rows = self.store.own_examples(self.backbone.id, include_received=True)
        if not rows:
            raise TrainingError("the store has no examples yet: capture some first")
        job_id = uuid.uuid4().hex[:12]
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "examples.npz").write_bytes(pack_examples(rows, max(2 * self.backbone.input_size, 320)))
            head_version = StateLayout(self.cfg.state_path).heads(head).current_path()
            if head_version is not None:  # export starts from it
                shutil.copytree(head_version, Path(tmp) / "head")
            data = pack_folder(Path(tmp))
        try:
            data, sealed = self.trust.seal_for(data, cert, job_context(self.cfg.device, trainer, job_id))
        except TrustError as e:
            raise TrainingError(f"trainer {trainer}: {e}") from None
        manifest = {"job_id": job_id, "job": job, "head": head, "params": params, "backbone": self.backbone.id,
                    "backbone_config": json.loads(self.cfg.backbone.model_dump_json(exclude={"weights", "path"})),
                    "heads_config": json.loads(self.cfg.heads.model_dump_json()), "trainer": trainer, **sealed}
        self._drain()
        try:
            messages = pack(FleetTopics(self.prefix).publisher(self.cfg.device), "job", trainer, data, manifest,
                            self.cfg.fleet.chunk_bytes, self.cfg.fleet.max_share_bytes, self.trust.sign_manifest)
        except (ShareError, TrustError) as e:
            raise TrainingError(str(e)) from None
        for topic, payload in messages:
            link.publish(topic, payload, qos=1)
        if progress:
            progress({"stage": "sent to trainer", "trainer": trainer, "examples": len(rows), "bytes": len(data)})
        done, parcel = self._wait(job_id, trainer, progress, stop)
        if not done.get("ok"):
            raise TrainingError(f"trainer {trainer}: {done.get('error')}")
        try:
            folder = self.trust.unseal(parcel.data, parcel.manifest, job_context(self.cfg.device, trainer, job_id))
        except TrustError as e:
            raise TrainingError(f"trainer {trainer}: the result {e}") from None
        return self._commit(job, head, done.get("result") or {}, folder, trainer)

    def _drain(self) -> None:
        while True:
            try:
                self.events.get_nowait()
            except queue.Empty:
                return

    def _wait(self, job_id: str, trainer: str, progress, stop) -> tuple[dict, object]:
        """The done message and the result parcel of `job_id`, both from `trainer` (anyone else's are ignored)."""
        deadline = time.monotonic() + self.cfg.trainer.job_timeout_s
        heard = time.monotonic()  # the trainer's last word: a heartbeat, progress, a result chunk
        done, parcel = None, None
        self._cancelled.clear()
        self.waiting = True
        try:
            while done is None or (done.get("ok") and parcel is None):
                if stop is not None and stop.is_set():
                    raise TrainingError("the daemon is stopping: the trainer's result will not be taken")
                if self._cancelled.is_set():
                    raise TrainingError(f"cancelled: the job on trainer {trainer} is no longer waited for")
                now = time.monotonic()
                if now > deadline:
                    raise TrainingError(f"no result from trainer {trainer} after trainer.job_timeout_s = "
                                        f"{self.cfg.trainer.job_timeout_s:g} s")
                if now - heard > FRESH_S:
                    raise TrainingError(f"no word from trainer {trainer} for {FRESH_S:g} s (no heartbeat, no "
                                        f"progress): it stopped, or was never there")
                try:
                    kind, body = self.events.get(timeout=0.25)
                except queue.Empty:
                    continue
                done, parcel, heard = self._take(kind, body, job_id, trainer, progress, done, parcel, heard)
        finally:
            self.waiting = False
        if parcel is not None and parcel.manifest["sha256"] != done.get("sha256"):
            raise TrainingError(f"trainer {trainer}: result sha256 {parcel.manifest['sha256'][:16]} is not the one "
                                f"announced ({str(done.get('sha256'))[:16]})")
        return done, parcel

    def _take(self, kind: str, body, job_id: str, trainer: str, progress, done, parcel, heard: float):
        """One event while waiting on `trainer`: (done, parcel, when it was last heard of)."""
        if kind == "trainer" and body == trainer:
            if self.trainers.get(trainer, {}).get("state") != "online":
                raise TrainingError(f"trainer {trainer} went offline during the job")
            heard = time.monotonic()
        if self.revoked(trainer):  # revoked while the job ran: nothing more is taken from it
            raise TrainingError(f"trainer {trainer} was revoked during the job: its result is not taken")
        if kind in ("progress", "done") and (body.get("job_id") != job_id or body.get("trainer") != trainer):
            return done, parcel, heard
        if kind == "progress":
            heard = time.monotonic()
            if progress:
                progress({**(body.get("progress") if isinstance(body.get("progress"), dict) else {}), "trainer": trainer})
        elif kind == "done":
            done, heard = body, time.monotonic()
        elif kind == "chunk":
            try:
                got = self.assembler.feed(*body)
            except Exception as e:  # a stranger's bad message never ends this job
                self.refused += 1
                log.warning("a result parcel was refused (%d so far): %s", self.refused, e)
                return done, parcel, heard
            if got is not None and got.publisher == trainer and got.manifest.get("job_id") == job_id:
                parcel, heard = got, time.monotonic()
        return done, parcel, heard

    def _commit(self, job: str, head: str, result: dict, data: bytes, trainer: str) -> dict:
        root = "heads" if job == "train" else "models"
        versions = StateLayout(self.cfg.state_path).versions(root, head)
        try:
            with versions.draft(activate=bool(result.get("activated", True))) as draft:
                unpack_into(data, draft.folder, self.cfg.fleet.max_share_bytes)
        except BundleError as e:
            raise TrainingError(f"trainer {trainer}: {e}") from None
        version = draft.version
        versions.prune(self.cfg.fleet.keep_versions)
        local = {k: v for k, v in result.items() if k not in ("version", "model_version", "path")}
        local["trainer"] = trainer
        if job == "train":
            local["version"] = version
        else:
            local["model_version"] = version
            local["path"] = str(versions.root / version / "model.tflite")
        log.info("%s of %s done by trainer %s: %s", job, head, trainer, version)
        return local


