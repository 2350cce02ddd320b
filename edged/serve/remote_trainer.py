"""Train and export on a trainer node (`edged trainer --fleet`) for a device without TensorFlow.

Trainers announce themselves retained on `<prefix>/fleet/trainers/<name>` (LWT: offline). A job goes to one of
them as a parcel (`fleet/share/job/<trainer>`: the stored examples with their embeddings and frames, the job, the
device's backbone and head settings); the trainer sends progress and a done message on
`fleet/trainers/<trainer>/{progress,done}/<device>`, and the new version as a parcel on `fleet/share/result/<device>`.
The device verifies it (sha256), commits it as its own next version, and serves it as after a local job.
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

from ..config import Config
from ..errors import TrainingError
from ..mqtt.parcels import Assembler, ShareError, pack
from ..mqtt.topics import trainer_status
from ..state.backbones import BackboneInfo
from ..state.bundles import BundleError, pack_examples, pack_folder, unpack_into
from ..state.store import Store
from ..state.versions import Versions

log = logging.getLogger(__name__)


class RemoteTrainer:
    def __init__(self, cfg: Config, store: Store, backbone: BackboneInfo, link: Callable[[], object]):
        self.cfg, self.store, self.backbone, self.link = cfg, store, backbone, link
        self.prefix = cfg.mqtt.prefix
        self.trainers: dict[str, dict] = {}  # name -> its retained status
        self.assembler = Assembler(self.prefix, cfg.fleet.max_share_bytes)
        self.events: "queue.Queue[tuple[str, object]]" = queue.Queue()
        self._lock = threading.Lock()

    # -- MQTT side (paho's thread: only record and queue) ------------------------------------
    def routes(self) -> list[tuple[str, Callable[[str, bytes, bool], None]]]:
        device = self.cfg.device
        return [(trainer_status(self.prefix), self._on_trainer),
                (f"{trainer_status(self.prefix)}/+/{device}", self._on_event),
                (f"{self.prefix}/fleet/share/result/{device}/#", self._on_result)]

    def _on_trainer(self, topic: str, payload: bytes, retained: bool) -> None:
        name = topic.rsplit("/", 1)[-1]
        try:
            status = json.loads(payload) if payload else {"state": "offline"}
        except ValueError:
            return
        with self._lock:
            self.trainers[name] = status if isinstance(status, dict) else {"state": "offline"}
        self.events.put(("trainer", name))

    def _on_event(self, topic: str, payload: bytes, retained: bool) -> None:
        parts = topic.split("/")
        try:
            body = json.loads(payload)
        except ValueError:
            return
        self.events.put((parts[-2], {**body, "trainer": parts[-3]}))  # ("progress" | "done", message)

    def _on_result(self, topic: str, payload: bytes, retained: bool) -> None:
        self.events.put(("chunk", (topic, bytes(payload))))

    # -- the job ------------------------------------------------------------------------------
    def available(self) -> Optional[str]:
        with self._lock:
            online = sorted(n for n, s in self.trainers.items() if s.get("state") == "online")
        return online[0] if online else None

    def describe(self) -> dict:
        with self._lock:
            return {name: status.get("state") for name, status in self.trainers.items()}

    def run(self, job: str, head: str, params: dict, progress=None, stop: Optional[threading.Event] = None) -> dict:
        """Send the job to a trainer, wait for its version, commit it here. Returns the job's result (local names)."""
        link = self.link()
        trainer = self.available()
        if link is None or trainer is None:
            raise TrainingError(f"{job} needs TensorFlow, which is not installed here, and no trainer is online "
                                f"(start `edged trainer --fleet` on a machine with TensorFlow on this broker)")
        rows = self.store.own_examples(self.backbone.id, include_received=True)
        if not rows:
            raise TrainingError("the store has no examples yet: capture some first")
        job_id = uuid.uuid4().hex[:12]
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "examples.npz").write_bytes(pack_examples(rows, max(2 * self.backbone.input_size, 320)))
            head_version = Versions(self.cfg.state_path / "heads" / head).current_path()
            if head_version is not None:  # export starts from it
                shutil.copytree(head_version, Path(tmp) / "head")
            data = pack_folder(Path(tmp))
        manifest = {"device": self.cfg.device, "job_id": job_id, "job": job, "head": head, "params": params,
                    "backbone": self.backbone.id, "backbone_config": json.loads(self.cfg.backbone.model_dump_json()),
                    "heads_config": json.loads(self.cfg.heads.model_dump_json()), "trainer": trainer}
        self._drain()
        for topic, payload in pack(self.prefix, "job", trainer, data, manifest, self.cfg.fleet.chunk_bytes,
                                   self.cfg.fleet.max_share_bytes):
            link.publish(topic, payload, qos=1)
        if progress:
            progress({"stage": "sent to trainer", "trainer": trainer, "examples": len(rows), "bytes": len(data)})
        done, parcel = self._wait(job_id, trainer, progress, stop)
        if not done.get("ok"):
            raise TrainingError(f"trainer {trainer}: {done.get('error')}")
        return self._commit(job, head, done["result"], parcel, trainer)

    def _drain(self) -> None:
        while True:
            try:
                self.events.get_nowait()
            except queue.Empty:
                return

    def _wait(self, job_id: str, trainer: str, progress, stop) -> tuple[dict, object]:
        deadline = time.monotonic() + self.cfg.trainer.job_timeout_s
        done, parcel = None, None
        while done is None or (done.get("ok") and parcel is None):
            if stop is not None and stop.is_set():
                raise TrainingError("the daemon is stopping: the trainer's result will not be taken")
            if time.monotonic() > deadline:
                raise TrainingError(f"no result from trainer {trainer} after trainer.job_timeout_s = "
                                    f"{self.cfg.trainer.job_timeout_s:g} s")
            try:
                kind, body = self.events.get(timeout=0.25)
            except queue.Empty:
                continue
            if kind == "trainer" and body == trainer and self.trainers.get(trainer, {}).get("state") != "online":
                raise TrainingError(f"trainer {trainer} went offline during the job")
            elif kind == "progress" and body.get("job_id") == job_id and progress:
                progress({**body.get("progress", {}), "trainer": trainer})
            elif kind == "done" and body.get("job_id") == job_id:
                done = body
            elif kind == "chunk":
                try:
                    got = self.assembler.feed(*body)
                except ShareError as e:
                    raise TrainingError(f"trainer {trainer}: the result did not arrive intact: {e}") from None
                if got is not None and got.manifest.get("job_id") == job_id:
                    parcel = got
        if parcel is not None and parcel.manifest["sha256"] != done.get("sha256"):
            raise TrainingError(f"trainer {trainer}: result sha256 {parcel.manifest['sha256'][:16]} is not the one "
                                f"announced ({str(done.get('sha256'))[:16]})")
        return done, parcel

    def _commit(self, job: str, head: str, result: dict, parcel, trainer: str) -> dict:
        root = "heads" if job == "train" else "models"
        versions = Versions(self.cfg.state_path / root / head)
        staging = versions.staging()
        try:
            unpack_into(parcel.data, staging)
            version = versions.commit(staging, activate=bool(result.get("activated", True)))
        except BundleError as e:
            versions.discard(staging)
            raise TrainingError(f"trainer {trainer}: {e}") from None
        except BaseException:
            versions.discard(staging)
            raise
        local = dict(result, trainer=trainer)
        if job == "train":
            local["version"] = version
        else:
            local["model_version"] = version
            local["path"] = str(versions.root / version / "model.tflite")
        log.info("%s of %s done by trainer %s: %s", job, head, trainer, version)
        return local
