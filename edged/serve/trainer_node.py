"""`edged trainer --fleet`: a machine with TensorFlow that trains and exports for devices without it.

It announces itself retained on `<prefix>/fleet/trainers/<name>` (will: offline), takes job parcels addressed to
it (`fleet/share/job/<name>`, sent by edged.serve.remote_trainer), runs each in the TensorFlow worker against a
state folder of that device (`<state_dir>/devices/<device>/`: the device's backbone and head settings, its
examples as sent), and answers with progress, the new version as a parcel and a done message.
"""

from __future__ import annotations

import json
import logging
import queue
import shutil
import tempfile
import threading
import time
from pathlib import Path

from pydantic import ValidationError

from .. import __version__
from ..config import Config
from ..errors import EdgedError
from ..mqtt.link import IncomingCommand, MqttLink, valid_level
from ..mqtt.parcels import Assembler, Parcel, ShareError, pack
from ..mqtt.replies import MqttResponder
from ..mqtt.topics import trainer_topics
from ..state.backbones import backbone_id
from ..state.bundles import BundleError, pack_folder, unpack_examples, unpack_into
from ..state.store import Store
from ..state.versions import Versions
from .dispatch import answer_status_only
from .worker import TrainerWorker

log = logging.getLogger(__name__)

JOBS = ("train", "export")


class TrainerNode:
    def __init__(self, cfg: Config, name: str, stop: threading.Event):
        if not valid_level(name):
            raise EdgedError(f"trainer name {name!r} cannot be a topic level")
        self.cfg, self.name, self.stop = cfg, name, stop
        self.prefix = cfg.mqtt.prefix
        self.link = MqttLink(cfg.mqtt, f"trainer-{name}", self._command, self._status,
                             topics=trainer_topics(self.prefix, name))
        self.assembler = Assembler(self.prefix, cfg.fleet.max_share_bytes)
        self.inbox: "queue.Queue[tuple[str, bytes]]" = queue.Queue()
        self.worker = TrainerWorker(cfg.trainer.idle_exit_s)
        self.current: dict | None = None
        self.done = 0

    def _status(self) -> dict:
        return {"state": "online", "role": "trainer", "name": self.name, "version": __version__,
                "ts": round(time.time(), 3), "job": self.current, "jobs_done": self.done}

    def _command(self, incoming: IncomingCommand) -> None:
        answer_status_only(incoming.name, incoming.payload, MqttResponder(self.link, incoming), self._status,
                           "a trainer node")

    def run(self) -> None:
        """Serve jobs until the stop event is set."""
        self.link.route(f"{self.prefix}/fleet/share/job/{self.name}/#", lambda t, p, r: self.inbox.put((t, bytes(p))))
        self.link.start()
        log.info("trainer %r taking jobs on %s:%s", self.name, self.cfg.mqtt.host, self.cfg.mqtt.port)
        try:
            while not self.stop.is_set():
                try:
                    topic, payload = self.inbox.get(timeout=0.25)
                except queue.Empty:
                    continue
                try:
                    parcel = self.assembler.feed(topic, payload)
                except ShareError as e:
                    log.warning("job refused: %s", e)
                    continue
                if parcel is not None:
                    self._handle(parcel)
        finally:
            self.worker.close()
            self.link.stop()

    def _reply(self, kind: str, device: str, body: dict) -> None:
        self.link.publish(f"{self.link.topics.base}/{kind}/{device}", body, qos=1)

    def _handle(self, parcel: Parcel) -> None:
        m = parcel.manifest
        device, job_id = str(m.get("device", "")), str(m.get("job_id", ""))
        if not valid_level(device) or not job_id:
            log.warning("job without a valid device or job id refused")
            return
        self.current = {"device": device, "job": m.get("job"), "head": m.get("head"), "job_id": job_id}
        self.link.publish_status()
        started = time.monotonic()
        try:
            result, folder = self._run(m, parcel.data, device, job_id)
            messages = pack(self.prefix, "result", device, pack_folder(folder), {"job_id": job_id, "trainer": self.name},
                            self.cfg.fleet.chunk_bytes, self.cfg.fleet.max_share_bytes)
            for topic, payload in messages:
                self.link.publish(topic, payload, qos=1)
            sha = json.loads(messages[-1][1])["sha256"]
            self._reply("done", device, {"job_id": job_id, "ok": True, "result": result, "sha256": sha,
                                         "seconds": round(time.monotonic() - started, 1)})
            log.info("%s of %s for %s done in %.1f s", m.get("job"), m.get("head"), device, time.monotonic() - started)
        except (EdgedError, ValidationError, OSError) as e:
            log.warning("job %s from %s failed: %s", job_id, device, e)
            self._reply("done", device, {"job_id": job_id, "ok": False, "error": str(e)})
        finally:
            self.current = None
            self.done += 1
            self.link.publish_status()

    def _run(self, m: dict, data: bytes, device: str, job_id: str) -> tuple[dict, Path]:
        job, head = m.get("job"), str(m.get("head", ""))
        if job not in JOBS:
            raise EdgedError(f"job {job!r} is not one of {JOBS}")
        folder = Path(self.cfg.state_dir) / "devices" / device
        cfg = Config.model_validate({"device": device, "state_dir": str(folder), "backbone": m.get("backbone_config"),
                                     "heads": m.get("heads_config"), "trainer": self.cfg.trainer.model_dump(),
                                     "mqtt": {"enabled": False}, "log_level": self.cfg.log_level})
        bid = backbone_id(cfg.backbone)
        if bid != m.get("backbone"):
            raise EdgedError(f"this trainer builds backbone {bid!r} from the device's settings; the device serves "
                             f"{m.get('backbone')!r} (weights files differ?)")
        with tempfile.TemporaryDirectory(dir=folder.parent if folder.parent.is_dir() else None) as tmp:
            unpack_into(data, Path(tmp))
            self._fill_state(cfg, Path(tmp), head, bid, device)
        progress = lambda p: self._reply("progress", device, {"job_id": job_id, "progress": p})  # noqa: E731
        result = self.worker.run(cfg, job, head, dict(m.get("params") or {}), progress, self.stop)
        version = result.get("version") if job == "train" else result.get("model_version")
        root = "heads" if job == "train" else "models"
        return result, cfg.state_path / root / head / str(version)

    @staticmethod
    def _fill_state(cfg: Config, job_dir: Path, head: str, bid: str, device: str) -> None:
        """The device's examples (as sent, replacing those of its last job) and its current head version."""
        store_dir = cfg.state_path / "store"
        shutil.rmtree(store_dir, ignore_errors=True)
        try:
            examples = unpack_examples((job_dir / "examples.npz").read_bytes(), None)
        except (OSError, BundleError) as e:
            raise EdgedError(f"job examples: {e}") from None
        store = Store(store_dir)
        try:
            store.add_many(examples.new_examples(device), bid)
        finally:
            store.close()
        sent_head = job_dir / "head"
        if sent_head.is_dir() and any(sent_head.iterdir()):
            versions = Versions(cfg.state_path / "heads" / head)
            staging = versions.staging()
            shutil.copytree(sent_head, staging, dirs_exist_ok=True)
            versions.commit(staging, activate=True)
