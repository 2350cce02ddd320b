"""`edged trainer --fleet`: a machine with TensorFlow that trains and exports for devices without it.

It announces itself retained on `<prefix>/fleet/trainers/<name>` (will: offline), with a signed announcement that
carries its certificate (devices seal jobs for the key it names). It takes job parcels addressed to it
(`<prefix>/<device>/share/job/<name>`, signed by that device and sealed for this trainer), runs each in the
TensorFlow worker against a state folder of that device (`<state_dir>/devices/<device>/`: the device's head
settings with this trainer's own backbone weights, its examples as sent), and answers with signed progress and
done messages and the new version as a parcel sealed for the device.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path

from pydantic import ValidationError

from .. import __version__
from ..commands.dispatch import answer_status_only
from ..config import NAME_RE, Config
from ..errors import EdgedError
from ..files import read_json_object, write_atomic
from ..heads.registry import head_classes, plugin_manager
from ..mqtt.link import IncomingCommand, MqttLink
from .parcels import Assembler, Parcel, ShareError, pack
from ..mqtt.replies import MqttResponder
from .signing import FleetTrust
from ..mqtt.topics import FleetTopics
from ..serve.worker_client import TrainerWorker
from ..state.backbones import backbone_id
from .bundles import BundleError, pack_folder, unpack_examples, unpack_into
from ..state.layout import StateLayout
from ..state.store import Store
from .trust import TrustError, trainer_identity

log = logging.getLogger(__name__)

JOBS = ("train", "export")
JOB_MAX_AGE_S = 600.0   # a job signed longer ago than this is a replay, not a request
HEARTBEAT_S = 20.0  # a trainer signs and publishes its status this often, jobs running or not: devices take a
                    # trainer for alive only while its signed heartbeats come (edged.fleet.remote_trainer)
SEEN_JOBS = 10_000


def job_context(device: str, trainer: str, job_id: str) -> str:
    """What a sealed job or result is bound to: it opens only as this job, between these two."""
    return f"edged job {device}>{trainer} {job_id}"


class TrainerNode:
    def __init__(self, cfg: Config, name: str, stop: threading.Event):
        if not NAME_RE.fullmatch(name) or name in ("fleet", "clients"):
            raise EdgedError(f"trainer name {name!r}: 1-64 letters, digits, '_', '.' or '-'")
        self.cfg, self.name, self.stop = cfg, name, stop
        self.prefix = cfg.mqtt.prefix
        self.identity = trainer_identity(cfg, name)
        self.trust = FleetTrust(cfg.fleet.trust, self.identity, StateLayout(cfg.state_path).revocation)
        self.heads = sorted(head_classes(plugin_manager(cfg.plugins_dir)))
        self.link = MqttLink(cfg.mqtt, f"trainer-{name}", self._command, self._status,
                             topics=FleetTopics(self.prefix).trainer(name))
        self.assembler = Assembler(self.prefix, cfg.fleet.max_share_bytes, self.trust.open_manifest, kinds=("job",))
        self.inbox: "queue.Queue[tuple[str, bytes]]" = queue.Queue(maxsize=100_000)
        self.worker = TrainerWorker(cfg.trainer.idle_exit_s)
        self.current: dict | None = None
        self.done = 0
        self.refused = 0  # messages that could not be taken: refused, or failed in their handler (logged)
        self._memory = StateLayout(cfg.state_path).trainer_memory(name)
        kept = read_json_object(self._memory).get("seen", {})  # job id -> when it was taken; a replay window's worth
        self.seen: "OrderedDict[str, float]" = OrderedDict(
            (k, v) for k, v in kept.items() if isinstance(v, (int, float)) and time.time() - v <= 2 * JOB_MAX_AGE_S)

    def _status(self) -> dict:
        status = {"state": "online", "role": "trainer", "name": self.name, "version": __version__,
                  "ts": round(time.time(), 3), "job": self.current, "jobs_done": self.done,
                  "messages_refused": self.refused,
                  "fleet": self.trust.describe()}
        if self.identity.enrolled:  # its liveness is signed: a saved status replayed later is stale
            status["announce"] = self.identity.sign({"name": self.name, "role": "trainer", "ts": status["ts"],
                                                     "state": "online"})
        return status

    def _command(self, incoming: IncomingCommand) -> None:
        answer_status_only(incoming.name, incoming.payload, MqttResponder(self.link, incoming), self._status,
                           "a trainer node")

    def _queue(self, topic: str, payload: bytes, retained: bool) -> None:
        try:
            self.inbox.put_nowait((topic, bytes(payload)))
        except queue.Full:
            log.warning("trainer inbox full; dropped a message on %s", topic[:200])

    def run(self) -> None:
        """Serve jobs until the stop event is set."""
        if self.trust.signed and not self.identity.enrolled:
            log.warning("trainer %r is not enrolled: every job is refused until `edged fleet enroll` certifies it "
                        "(or fleet.trust = \"broker\")", self.name)
        fleet = FleetTopics(self.prefix)
        self.link.route(fleet.every_share("job", self.name), self._queue)
        self.link.route(fleet.revoked, lambda t, p, r: self.trust.take_revocation(bytes(p)))
        self.link.start()
        heartbeat = threading.Thread(target=self._heartbeat, name="trainer-heartbeat", daemon=True)
        heartbeat.start()
        log.info("trainer %r taking jobs on %s:%s", self.name, self.cfg.mqtt.host, self.cfg.mqtt.port)
        try:
            while not self.stop.is_set():
                try:
                    topic, payload = self.inbox.get(timeout=0.25)
                except queue.Empty:
                    continue
                try:
                    parcel = self.assembler.feed(topic, payload)
                    if parcel is not None:
                        self._handle(parcel)
                except (ShareError, TrustError) as e:
                    self.refused += 1
                    log.warning("job refused: %s", e)
                except Exception:  # nothing from the wire stops the trainer
                    self.refused += 1
                    log.exception("a message on %s could not be handled", topic[:200])
        finally:
            self.worker.close()
            self.link.stop()

    def _heartbeat(self) -> None:
        """The signed status again every HEARTBEAT_S, also while a job runs (the job loop is busy then)."""
        while not self.stop.wait(HEARTBEAT_S):
            self.link.publish_status()

    def _reply(self, kind: str, device: str, body: dict) -> None:
        self.link.publish(FleetTopics(self.prefix).trainer_message(self.name, kind, device), self.trust.sign(body), qos=1)

    def _accept(self, parcel: Parcel) -> dict:
        """The job's manifest once it is fresh, meant for this trainer, and names a job and head this trainer has."""
        m = parcel.manifest
        job_id = str(m.get("job_id", ""))
        if parcel.name != self.name or m.get("trainer") != self.name:
            raise EdgedError(f"job for trainer {str(m.get('trainer'))[:64]!r} on this trainer's topic")
        if not NAME_RE.fullmatch(job_id) or job_id in self.seen:
            raise EdgedError(f"job id {job_id[:64]!r} is not valid or was run before")
        if not isinstance(m.get("ts"), (int, float)) or abs(time.time() - m["ts"]) > JOB_MAX_AGE_S:
            raise EdgedError(f"job {job_id} was signed more than {JOB_MAX_AGE_S:g} s ago: a replay is not run")
        if m.get("job") not in JOBS:
            raise EdgedError(f"job {str(m.get('job'))[:64]!r} is not one of {JOBS}")
        if m.get("head") not in self.heads:
            raise EdgedError(f"head {str(m.get('head'))[:64]!r} is not installed on this trainer ({self.heads})")
        if not isinstance(m.get("params") or {}, dict) or not isinstance(m.get("backbone_config"), dict):
            raise EdgedError("job params and backbone settings must be objects")
        self.seen[job_id] = time.time()
        while len(self.seen) > SEEN_JOBS:
            self.seen.popitem(last=False)
        now = time.time()  # on disk before the job runs: after a restart, the same job sent again is refused
        write_atomic(self._memory, json.dumps({"seen": {k: v for k, v in self.seen.items()
                                                        if now - v <= 2 * JOB_MAX_AGE_S}}).encode())
        return m

    def _handle(self, parcel: Parcel) -> None:
        device = parcel.publisher
        try:
            m = self._accept(parcel)
        except EdgedError as e:
            log.warning("job from %s refused: %s", device, e)
            return
        job_id = m["job_id"]
        self.current = {"device": device, "job": m["job"], "head": m["head"], "job_id": job_id}
        self.link.publish_status()
        started = time.monotonic()
        try:
            context = job_context(device, self.name, job_id)
            data = self.trust.unseal(parcel.data, m, context)
            result, folder = self._run(m, data, device, job_id)
            payload, sealed = self.trust.seal_for(pack_folder(folder), m.get("_cert"), context)
            messages = pack(FleetTopics(self.prefix).publisher(self.name, "trainer"), "result", device, payload,
                            {"job_id": job_id, "trainer": self.name, **sealed}, self.cfg.fleet.chunk_bytes,
                            self.cfg.fleet.max_share_bytes, self.trust.sign_manifest)
            for topic, body in messages:
                self.link.publish(topic, body, qos=1)
            sha = hashlib.sha256(payload).hexdigest()
            self._reply("done", device, {"job_id": job_id, "ok": True, "result": result, "sha256": sha,
                                         "seconds": round(time.monotonic() - started, 1)})
            log.info("%s of %s for %s done in %.1f s", m["job"], m["head"], device, time.monotonic() - started)
        except (EdgedError, ValidationError, OSError) as e:
            log.warning("job %s from %s failed: %s", job_id, device, e)
            self._reply("done", device, {"job_id": job_id, "ok": False, "error": str(e)})
        finally:
            self.current = None
            self.done += 1
            self.link.publish_status()

    def _device_config(self, m: dict, device: str) -> Config:
        """The device's backbone and head settings, with this trainer's own weights and model files: a job never
        names a file on this machine."""
        sent = dict(m["backbone_config"])
        sent.update(weights=self.cfg.backbone.weights, path=self.cfg.backbone.path)
        cfg = Config.model_validate({"device": device, "state_dir": str(StateLayout(self.cfg.state_path).device(device)),
                                     "backbone": sent, "heads": m.get("heads_config") or {},
                                     "trainer": self.cfg.trainer.model_dump(), "mqtt": {"enabled": False},
                                     "log_level": self.cfg.log_level})
        bid = backbone_id(cfg.backbone)
        if bid != m.get("backbone"):
            raise EdgedError(f"this trainer builds backbone {bid!r} with its own weights; the device serves "
                             f"{str(m.get('backbone'))[:100]!r}: give the trainer the same weights file")
        return cfg

    def _run(self, m: dict, data: bytes, device: str, job_id: str) -> tuple[dict, Path]:
        job, head = m["job"], m["head"]
        cfg = self._device_config(m, device)
        cfg.state_path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cfg.state_path) as tmp:
            try:
                unpack_into(data, Path(tmp), self.cfg.fleet.max_share_bytes)
            except BundleError as e:
                raise EdgedError(f"job from {device}: {e}") from None
            self._fill_state(cfg, Path(tmp), head, m["backbone"], device)
        progress = lambda p: self._reply("progress", device, {"job_id": job_id, "progress": p})  # noqa: E731
        result = self.worker.run(cfg, job, head, dict(m.get("params") or {}), progress, self.stop)
        version = result.get("version") if job == "train" else result.get("model_version")
        versions = StateLayout(cfg.state_path).versions("heads" if job == "train" else "models", head)
        if version not in versions.versions():
            raise EdgedError(f"{job} of {head} gave no version")
        versions.prune(self.cfg.fleet.keep_versions)
        return result, versions.root / version

    @staticmethod
    def _fill_state(cfg: Config, job_dir: Path, head: str, bid: str, device: str) -> None:
        """The device's examples (as sent, replacing those of its last job) and its current head version."""
        store_dir = StateLayout(cfg.state_path).store
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
            versions = StateLayout(cfg.state_path).heads(head)
            with versions.draft() as draft:
                shutil.copytree(sent_head, draft.folder, dirs_exist_ok=True)
