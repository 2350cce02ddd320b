"""What one device learned, for the others: models, head versions and examples as retained parcels on the broker.

Publishing packs a version folder (or this device's own examples) and hands the chunks and manifest to the MQTT
link. Following takes parcels of the names in `[fleet] follow` (and examples when `take_examples`) from the
publishers' own topic trees, checks that they are signed by a certified, unrevoked device whose name is the
publisher's (edged.fleet.signing), newer than the last one taken from it, and fit this device (backbone id, input
size, valid labels); unpacks them into a staging folder, checks them there on this device's own examples, and
only then commits them through the same versioned path as a local train or export and serves them — or keeps
them staged and says why in the status. A refused parcel leaves nothing on disk. Parcels are applied on a thread
of their own, never in the MQTT thread.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import threading
import time
from pathlib import Path
from typing import Callable, Optional

from ..config import Config
from ..errors import EdgedError, HeadError
from ..files import read_json_object, write_atomic
from .parcels import Assembler, Parcel, ShareError, pack
from .signing import FleetTrust
from ..mqtt.topics import FleetTopics
from ..serve.headset import HeadSet
from ..serve.learning import Learning
from ..sources.preprocess import FrameView
from ..state.backbones import BackboneInfo
from .bundles import BundleError, pack_examples, pack_folder, unpack_examples, unpack_into
from ..state.layout import StateLayout
from ..state.labels import label_problem
from ..state.store import Store

log = logging.getLogger(__name__)

CHECK_EXAMPLES = 200
MAX_CLOCK_SKEW_S = 3600.0  # a parcel signed further ahead of this device's clock is refused (and never remembered)
MAX_RECEIVED = 50  # outcomes kept for the status


class Sharing:
    def __init__(self, cfg: Config, store: Store, backbone: BackboneInfo, heads: HeadSet, learning: Learning,
                 link: Callable[[], object], changed: Callable[[], None], stop: threading.Event, trust: FleetTrust):
        self.cfg, self.store, self.backbone, self.heads, self.learning = cfg, store, backbone, heads, learning
        self.link, self.changed, self.stop, self.trust = link, changed, stop, trust
        self.fleet = cfg.fleet
        self.prefix = cfg.mqtt.prefix
        self.topics = FleetTopics(self.prefix)
        self.assembler = Assembler(self.prefix, self.fleet.max_share_bytes, trust.open_manifest,
                                   kinds=("model", "head", "examples"))
        self.inbox: "queue.Queue[tuple[str, bytes]]" = queue.Queue(maxsize=100_000)
        self.received: dict[str, dict] = {}  # "kind/name" -> what became of the last parcel
        self._unchecked: dict[str, dict] = {}  # "kind/name" -> a version staged for want of examples to check it on
        # parcels handled (a reconnect does not apply them again; an older one is a replay) and published (their
        # chunks are cleared when a newer one replaces them, also after a restart)
        self._memory = StateLayout(cfg.state_path).fleet_memory
        self._memory_lock = threading.Lock()
        memory = read_json_object(self._memory)
        self._seen: dict[str, dict] = {k: v for k, v in dict(memory.get("seen", {})).items() if isinstance(v, dict)}
        self.published: dict[str, dict] = dict(memory.get("published", {}))
        self._thread = threading.Thread(target=self._run, name="fleet-share", daemon=True)

    # -- status ----------------------------------------------------------------------------
    def describe(self) -> dict:
        return {"follow": list(self.fleet.follow), "take_examples": self.fleet.take_examples,
                "received": dict(self.received), "published": dict(self.published), **self.trust.describe()}

    def _note(self, table: dict, key: str, value) -> None:
        """Record a handled or published parcel on disk (publish and follow run on different threads)."""
        with self._memory_lock:
            table[key] = value
            write_atomic(self._memory, json.dumps({"seen": self._seen, "published": self.published}).encode())

    def _remember(self, key: str, manifest: dict) -> None:
        self._note(self._seen, key, {"sha256": manifest["sha256"], "ts": manifest.get("ts")})

    # -- following -------------------------------------------------------------------------
    def subscriptions(self) -> list[str]:
        filters = []
        for name in self.fleet.follow:
            filters += [self.topics.every_share("model", name), self.topics.every_share("head", name)]
        if self.fleet.take_examples:
            filters.append(self.topics.every_share("examples"))
        return filters

    def start(self, route: Callable[[str, Callable[[str, bytes, bool], None]], None]) -> None:
        route(self.topics.revoked, self._revoked)
        for topic_filter in self.subscriptions():
            route(topic_filter, self._arrived)
        self._thread.start()

    def join(self, timeout: float = 5.0) -> None:
        self.inbox.put(("", b""))
        self._thread.join(timeout)

    def _revoked(self, topic: str, payload: bytes, retained: bool) -> None:
        if self.trust.take_revocation(bytes(payload)):
            self.changed()
            return
        newest = self.trust.revocation_answer(bytes(payload))
        if newest is not None and self.link is not None:  # erased or rolled back on the broker: put the newest back
            log.warning("the fleet's revocation list on %s was erased or replaced by an older one: put back", topic)
            self.link.publish(topic, newest, retain=True, qos=1)

    def _arrived(self, topic: str, payload: bytes, retained: bool) -> None:
        try:
            self.inbox.put_nowait((topic, payload))
        except queue.Full:
            log.warning("fleet share inbox full; dropped a message on %s", topic[:200])

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                topic, payload = self.inbox.get(timeout=0.25)
            except queue.Empty:
                continue
            if not topic:
                return
            where = topic.split("/share/", 1)
            publisher = where[0].rsplit("/", 1)[-1]
            kind, name = (where[-1].split("/") + ["", ""])[:2]
            if publisher == self.cfg.device:
                continue  # our own publication coming back
            try:
                parcel = self.assembler.feed(topic, payload)
                if parcel is not None:
                    self.apply(parcel)
            except EdgedError as e:
                self._report(kind, name, {"state": "refused", "from": publisher[:64], "reason": str(e)[:500]})
            except Exception as e:
                log.exception("fleet share on %s failed", topic[:200])
                self._report(kind, name, {"state": "refused", "from": publisher[:64], "reason": f"internal error: {e}"})

    def _report(self, kind: str, name: str, outcome: dict) -> None:
        key = f"{kind}/{name[:64]}"
        self.received.pop(key, None)
        self.received[key] = {**outcome, "ts": round(time.time(), 3)}
        while len(self.received) > MAX_RECEIVED:
            self.received.pop(next(iter(self.received)))
        level = logging.WARNING if outcome.get("state") == "refused" else logging.INFO
        log.log(level, "fleet %s: %s", key, outcome)
        self.changed()

    def apply(self, parcel: Parcel) -> None:
        """Take a verified parcel: check that it fits, check it in staging, commit it as a version, serve it."""
        m = parcel.manifest
        key = f"{parcel.publisher}/{parcel.kind}/{parcel.name}"
        seen = self._seen.get(key, {})
        if seen.get("sha256") == m["sha256"]:
            return  # handled before this restart or reconnect
        ts, ahead = m.get("ts"), time.time() + MAX_CLOCK_SKEW_S
        if not isinstance(ts, (int, float)) or ts > ahead:
            # remembered, a time far ahead would lock the publisher's later parcels out
            raise ShareError(f"{parcel.kind}/{parcel.name} from {parcel.publisher!r} is signed at {ts!r}, more than "
                             f"{MAX_CLOCK_SKEW_S:g} s ahead of this device's clock: refused")
        held = seen.get("ts")
        if isinstance(held, (int, float)) and held <= ahead and ts <= held:  # one held from a clock that jumped: none
            raise ShareError(f"{parcel.kind}/{parcel.name} from {parcel.publisher!r} is not newer than the one taken "
                             f"before (a replay): refused")
        origin = {"from": parcel.publisher, "sha256": m["sha256"][:16], "source_version": str(m.get("version"))[:16]}
        self._remember(key, m)
        if m.get("backbone") != self.backbone.id:
            raise ShareError(f"{parcel.kind}/{parcel.name} from {parcel.publisher!r} was made for backbone "
                             f"{str(m.get('backbone'))[:100]!r}; this device serves {self.backbone.id!r}: refused")
        if "labels" in m:
            self._labels(m["labels"], f"{parcel.kind}/{parcel.name} from {parcel.publisher!r}")
        if parcel.kind == "examples":
            outcome = self._take_examples(parcel)
        else:
            if parcel.name not in self.heads.classes:
                raise ShareError(f"{parcel.kind}/{parcel.name}: head {parcel.name!r} is not installed here "
                                 f"({sorted(self.heads.classes)})")
            if m.get("input_size") != self.backbone.input_size:
                raise ShareError(f"{parcel.kind}/{parcel.name} takes {m.get('input_size')}px frames; this device's "
                                 f"backbone takes {self.backbone.input_size}px: refused")
            outcome = self._take_version(parcel, origin)
        self._report(parcel.kind, parcel.name, {**origin, **outcome})

    def _labels(self, labels, what: str) -> list[str]:
        """Labels from another machine, validated like the ones taught here, at most fleet.max_classes."""
        if not isinstance(labels, list) or not labels or len(labels) > self.fleet.max_classes:
            raise ShareError(f"{what}: {len(labels) if isinstance(labels, list) else 'no'} labels; a shared head "
                             f"or model carries 1 to fleet.max_classes ({self.fleet.max_classes})")
        bad = [str(l)[:40] for l in labels if label_problem(l) is not None]
        if bad:
            raise ShareError(f"{what}: label {bad[0]!r} is not a valid label")
        return labels

    def _take_version(self, parcel: Parcel, origin: dict) -> dict:
        what = f"{parcel.kind}/{parcel.name} from {parcel.publisher!r}"
        versions = StateLayout(self.cfg.state_path).versions("models" if parcel.kind == "model" else "heads", parcel.name)
        with versions.draft(activate=False) as draft:  # checked before it is committed; a refusal leaves nothing
            unpack_into(parcel.data, draft.folder, self.fleet.max_share_bytes)
            check = self._check(parcel.kind, parcel.name, draft.folder, what)
        version = draft.version
        pruned = versions.prune(self.fleet.keep_versions)
        key = f"{parcel.kind}/{parcel.name}"
        self._unchecked.pop(key, None)
        if not self._passes(check):
            if check.get("examples") == 0:  # checked again when examples of its labels arrive (_take_examples)
                self._unchecked[key] = {"kind": parcel.kind, "name": parcel.name, "version": version,
                                        "what": what, "origin": origin}
            return {"state": "staged", "version": version, "check": check, "pruned": pruned,
                    "reason": self._why_staged(check, parcel.name, version)}
        self._serve(parcel.kind, parcel.name, version)
        return {"state": "active", "version": version, "check": check, "pruned": pruned}

    def _passes(self, check: dict) -> bool:
        if check.get("accuracy") is not None:
            return check["accuracy"] >= self.fleet.min_accuracy
        return check.get("kind") == "boxes" and self.trust.signed

    def _why_staged(self, check: dict, name: str, version: str) -> str:
        reason = check.get("note") or (f"accuracy {check['accuracy']:.3f} on {check['examples']} stored examples "
                                       f"is under fleet.min_accuracy {self.fleet.min_accuracy}")
        return f"{reason}; `activate {{\"model\": \"{name}\", \"version\": \"{version}\"}}` serves it"

    def _serve(self, kind: str, name: str, version: str) -> None:
        if kind == "model":
            self.learning.use_model(name, version)
            return
        retired = self.learning.serve_version(name, version)  # as a local train: an older exported model retires
        if retired is not None:
            log.info("fleet head %s %s serves; model %s (exported from an older version) no longer does",
                     name, version, retired)

    def _check_staged(self) -> None:
        """Versions staged for want of examples to check them on are checked again (examples have arrived)."""
        for key, entry in list(self._unchecked.items()):
            kind, name, version = entry["kind"], entry["name"], entry["version"]
            versions = StateLayout(self.cfg.state_path).versions("models" if kind == "model" else "heads", name)
            if version not in versions.versions():
                self._unchecked.pop(key, None)
                continue
            try:
                check = self._check(kind, name, versions.root / version, entry["what"])
            except EdgedError as e:
                self._unchecked.pop(key, None)
                self._report(kind, name, {**entry["origin"], "state": "refused", "reason": str(e)[:500]})
                continue
            if check.get("examples") == 0:
                continue  # still nothing to check it on
            self._unchecked.pop(key, None)
            if self._passes(check):
                self._serve(kind, name, version)
                self._report(kind, name, {**entry["origin"], "state": "active", "version": version, "check": check,
                                          "note": "checked once stored examples of its labels arrived"})
            else:
                self._report(kind, name, {**entry["origin"], "state": "staged", "version": version, "check": check,
                                          "reason": self._why_staged(check, name, version)})

    def _check(self, kind: str, name: str, folder: Path, what: str) -> dict:
        """Accuracy on this device's stored examples of the labels the version knows (classifiers); a box model
        cannot be checked here. Labels are validated first; a version that cannot be opened is refused."""
        if kind == "model":
            model = self.heads.open_model(folder, name)
            try:
                kind = self.heads.classes[name].kind  # this device's own head says what it is, never the parcel
                if model.meta.get("kind") != kind:
                    raise ShareError(f"{what}: its metadata says kind {str(model.meta.get('kind'))[:32]!r}, but head "
                                     f"{name!r} here is of kind {kind!r}")
                self._labels(model.labels, what)
                if kind == "boxes":
                    return {"accuracy": None, "kind": "boxes",
                            "note": "a box model cannot be checked on stored examples" + (
                                "" if self.trust.signed else ", and this fleet takes parcels on the broker's word")}

                def label_of(examples, i: int) -> Optional[str]:
                    try:
                        image = self.store.load_frame(int(examples.ids[i]))
                    except EdgedError:
                        return None  # an example shared without its frame: nothing to check a model on
                    return model.predict(*FrameView(image, model.input_size).fitted(model.fit)).label

                return self._accuracy(model.labels, label_of)
            finally:
                model.close()
        head, fused = self.heads.open_head(name, folder)
        try:
            if fused is not None or head.kind != "classes":
                return {"accuracy": None, "kind": head.kind, "note": "this head cannot be checked on stored examples"}
            self._labels(list(head.classes), what)
            return self._accuracy(head.classes, lambda examples, i: head.predict(examples.embeddings[i]).label)
        finally:
            if fused is not None:
                fused.close()
            head.close()

    def _accuracy(self, labels: list[str], label_of: Callable[[object, int], Optional[str]]) -> dict:
        """How often `label_of(examples, i)` names stored example i right, over at most CHECK_EXAMPLES of `labels`
        (examples it cannot answer for, None, do not count)."""
        examples = self.store.examples(self.backbone.id)
        known = set(labels)
        answers = []
        for i, truth in enumerate(examples.labels):
            got = label_of(examples, i) if truth in known and len(answers) < CHECK_EXAMPLES else None
            if got is not None:
                answers.append(got == truth)
        if not answers:
            return {"accuracy": None, "examples": 0, "note": "no stored examples of its labels to check it on"}
        unknown = sorted(known - set(examples.labels.tolist()))
        out = {"accuracy": round(sum(answers) / len(answers), 4), "examples": len(answers)}
        if unknown:
            out["unchecked_labels"] = unknown[:20]
        return out

    def _take_examples(self, parcel: Parcel) -> dict:
        try:
            examples = unpack_examples(parcel.data, self.backbone.output_dim)
        except BundleError as e:
            raise ShareError(f"examples/{parcel.name}: {e}") from None
        uids = [r["uid"] for r in examples.rows]
        known = self.store.known_uids(uids)
        items = examples.new_examples(parcel.publisher, known)
        if items:
            self.store.add_many(items, self.backbone.id)
            self.heads.refit_incremental()
            self._check_staged()
        return {"state": "stored", "added": len(items), "already_known": len(known),
                "labels": sorted({r["label"] for r in examples.rows})[:50]}

    # -- publishing ------------------------------------------------------------------------
    def _send(self, kind: str, name: str, data: bytes, manifest: dict, progress) -> dict:
        link = self.link
        if link is None:
            raise EdgedError("publish: MQTT is disabled here ([mqtt] enabled = false); nothing to share on")
        base = self.topics.publisher(self.cfg.device)
        messages = pack(base, kind, name, data, {**manifest, "device": self.cfg.device, "backbone": self.backbone.id,
                                                 "input_size": self.backbone.input_size},
                        self.fleet.chunk_bytes, self.fleet.max_share_bytes, self.trust.sign_manifest)
        for i, (topic, payload) in enumerate(messages):
            link.publish(topic, payload, retain=True, qos=1)
            if progress and i % 16 == 0:
                progress({"stage": "publishing", "chunk": i, "chunks": len(messages) - 1})
        sha, chunks = hashlib.sha256(data).hexdigest(), len(messages) - 1
        previous = self.published.get(f"{kind}/{name}")
        if previous and previous["sha256"] != sha:
            for i in range(previous["chunks"]):  # the older parcel's chunks are no longer needed by anyone
                link.publish(f"{self.topics.share(base, kind, name)}/{previous['sha256'][:16]}/{i}", b"", retain=True, qos=1)
        summary = {"kind": kind, "name": name, "topic": messages[0][0], "sha256": sha, "bytes": len(data),
                   "chunks": chunks, "version": manifest.get("version"), "signed": self.trust.signed}
        self._note(self.published, f"{kind}/{name}", summary)
        self.changed()
        return summary

    def publish(self, name: str, kind: str = "model", version: Optional[str] = None, progress=None) -> dict:
        """Share a model (exported TFLite) or a head version (trained on embeddings) with the fleet."""
        if name not in self.heads.classes:
            raise HeadError(f"publish.model: unknown head {name!r}; installed: {sorted(self.heads.classes)}")
        versions = StateLayout(self.cfg.state_path).versions("models" if kind == "model" else "heads", name)
        version = version or versions.current()
        if version is None or version not in versions.versions():
            have = versions.versions()
            raise HeadError(f"publish.version: no {kind} version {version or '(current)'} of {name!r}; have {have or 'none'}"
                            + ("; export it first" if kind == "model" and not have else ""))
        folder = versions.root / version
        manifest = {"version": version}
        meta_path = folder / "metadata.json"
        if meta_path.is_file():
            meta = json.loads(meta_path.read_text())
            manifest.update({"labels": meta.get("labels"), "quantization": meta.get("quantization"),
                             "metrics": meta.get("parity")})
        else:
            manifest["labels"] = self.heads.describe().get(name, {}).get("classes")
        return self._send(kind, name, pack_folder(folder), manifest, progress)

    def share_examples(self, label: Optional[str] = None, progress=None) -> dict:
        """Share the examples taught on this device (embeddings, labels, boxes; small frames only where the fleet
        runs on the broker's word) with the fleet."""
        rows = self.store.own_examples(self.backbone.id, label)
        if not rows:
            raise EdgedError("share: no examples taught on this device" + (f" with label {label!r}" if label else ""))
        # a signed fleet's broker is shared with others who may read it: no camera frame goes out in the clear
        data = pack_examples(rows, 0 if self.trust.signed else self.fleet.thumbnail_px)
        labels = sorted({r["label"] for r in rows})
        return self._send("examples", self.cfg.device, data, {"labels": labels, "examples": len(rows)}, progress)
