"""Backbones for boards without TensorFlow, built by a fleet machine that has it (`edged backbone build`).

Each rung of the automatic choice is converted there once and sent as a signed, retained parcel
`<publisher>/share/backbone/<name>`: the converted TFLite model (and its int8 twin when built), its metadata, and
in the manifest the backbone ids it serves as (the builder's own, and the one a board without the weight file
computes: the ImageNet weights are the same either way). A board whose cache lacks every rung takes the parcels
whose ids it wants, once their origin checks out (edged.fleet.signing), and stores them in its backbone cache,
where they serve like a backbone it converted itself (edged.serve.choice).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from ..config import BackboneConfig, Config
from ..errors import EdgedError, EngineError
from ..files import read_json_object, write_atomic
from ..mqtt.requests import BrokerClient
from ..mqtt.topics import FleetTopics
from ..runtime.engine import Engine, EngineOptions
from ..state.backbones import INT8_FILE, BackboneInfo, backbone_id, cache_folder, lookup_backbone
from .bundles import BundleError, pack_folder, unpack_into
from .parcels import Assembler, ShareError
from .parcels import pack as pack_parcel
from .signing import FleetTrust

log = logging.getLogger(__name__)

KIND = "backbone"
MODEL, META = "backbone.tflite", "backbone.json"
FILES = (MODEL, META, INT8_FILE)
QUIET_S = 1.0  # retained parcels come at once on subscribing: this long without a message, and all are in
FIRST_S = 3.0  # ... and the first of them within this


def served_as(bb: BackboneConfig) -> list[str]:
    """The ids a converted backbone serves as: its own, and (for ImageNet weights read from a file on this disk) the
    one computed where that file is absent, as on a board that takes it from the fleet."""
    own = backbone_id(bb)
    if bb.family.startswith("mobilenet") and bb.weights != "imagenet" and Path(bb.weights).name.endswith(
            "_imagenet_no_top.weights.h5"):
        return [own, backbone_id(bb.model_copy(update={"weights": "imagenet"}))]
    return [own]


def bundle(info: BackboneInfo) -> bytes:
    """A converted backbone's files as one bundle: the model, its int8 twin when there is one, its metadata."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        shutil.copyfile(info.path, folder / MODEL)
        twin = Path(info.path).with_name(INT8_FILE)
        if twin.is_file():
            shutil.copyfile(twin, folder / INT8_FILE)
        write_atomic(folder / META, json.dumps({**asdict(info), "path": MODEL}).encode())
        return pack_folder(folder)


def publish(cfg: Config, trust: FleetTrust, built: list[tuple[BackboneConfig, BackboneInfo]],
            progress=print) -> list[dict]:
    """Publish each built backbone retained in this device's tree; what went out, per backbone."""
    fleet, topics = cfg.fleet, FleetTopics(cfg.mqtt.prefix)
    base = topics.publisher(cfg.device)
    out = []
    with BrokerClient(cfg.mqtt, "backbone") as client:
        for bb, info in built:
            ids = served_as(bb)
            data = bundle(info)
            manifest = {"device": cfg.device, "ids": ids, "family": bb.family, "alpha": bb.alpha,
                        "input_size": info.input_size, "output_dim": info.output_dim, "description": info.description}
            messages = pack_parcel(base, KIND, ids[-1], data, manifest, fleet.chunk_bytes, fleet.max_share_bytes,
                                   trust.sign_manifest)
            for i, (topic, payload) in enumerate(messages):
                client.client.publish(topic, payload, qos=1, retain=True).wait_for_publish(60)
                if i % 16 == 0:
                    progress(f"  {ids[-1]}: chunk {i}/{len(messages) - 1}")
            out.append({"backbone": ids[-1], "ids": ids, "bytes": len(data), "chunks": len(messages) - 1,
                        "topic": messages[0][0], "signed": trust.signed})
    return out


def fetch(cfg: Config, trust: FleetTrust, wanted: dict[str, BackboneConfig], wait_s: float = 10.0) -> dict[str, str]:
    """Take the fleet's parcels of the backbones `wanted` (id -> config) into this state folder's cache; {id: who
    built it} for each stored. Refused parcels are logged with the reason."""
    if not cfg.mqtt.enabled or not wanted:
        return {}
    topics = FleetTopics(cfg.mqtt.prefix)
    assembler = Assembler(cfg.mqtt.prefix, cfg.fleet.max_share_bytes, trust.open_manifest, kinds=(KIND,))
    stored: dict[str, str] = {}
    with BrokerClient(cfg.mqtt, "backbone") as client:
        for role in ("device", "trainer"):
            client.subscribe(topics.every_share(KIND, role=role))
        for topic, payload in _until_quiet(client, time.monotonic() + wait_s):
            try:
                parcel = assembler.feed(topic, payload)
                if parcel is None:
                    continue
                bid = next((i for i in parcel.manifest.get("ids") or [] if i in wanted and i not in stored), None)
                if bid is None:
                    continue
                take(parcel.data, wanted[bid], bid, cfg.state_path, cfg.fleet.max_share_bytes)
                stored[bid] = parcel.publisher
                log.info("backbone %s taken from %s of the fleet", bid, parcel.publisher)
            except EdgedError as e:
                log.warning("a fleet backbone on %s was refused: %s", topic[:200], e)
            if set(stored) == set(wanted):
                break
    return stored


def _until_quiet(client: BrokerClient, deadline: float):
    """(topic, payload) as they come, until `deadline` or QUIET_S without one (FIRST_S before the first: the
    subscription's retained messages are on their way)."""
    quiet = FIRST_S
    while True:
        got = next(client.messages(min(deadline, time.monotonic() + quiet)), None)
        if got is None:
            return
        quiet = QUIET_S
        yield got[0], got[1]


def take(data: bytes, bb: BackboneConfig, bid: str, state_dir: Path, max_bytes: int) -> BackboneInfo:
    """Check a backbone bundle (only the files a converted backbone holds; metadata that matches `bb`; a model that
    opens with the input and output it claims) and move it into the cache as `bid`."""
    target = cache_folder(bb, state_dir)
    if target.name != bid:
        raise ShareError(f"backbone {bid}: this board computes {target.name} for it")
    target.parent.mkdir(parents=True, exist_ok=True)
    incoming = Path(tempfile.mkdtemp(prefix=".incoming-", dir=target.parent))
    try:
        names = unpack_into(data, incoming, max_bytes, max_files=len(FILES))
        if not {MODEL, META} <= set(names) or not set(names) <= set(FILES):
            raise ShareError(f"backbone {bid}: holds {sorted(names)}, not {MODEL} and {META} (and {INT8_FILE})")
        meta = read_json_object(incoming / META)
        try:
            info = BackboneInfo(**{**meta, "id": bid, "path": str(target / MODEL)})
            expected = (bb.family, bb.input_size)
            claimed = (info.family, int(info.input_size))
            dim = int(info.output_dim)
            float(info.scale), float(info.offset)
        except (TypeError, ValueError) as e:
            raise ShareError(f"backbone {bid}: unreadable metadata ({str(e)[:200]})") from None
        if claimed != expected:
            raise ShareError(f"backbone {bid}: is {claimed}, not the {expected} this board asked for")
        engine = Engine(EngineOptions(model_path=str(incoming / MODEL)))
        try:
            if (engine.input_size, engine.output_dim) != (info.input_size, dim):
                raise ShareError(f"backbone {bid}: the model takes {engine.input_size} px and gives "
                                 f"{engine.output_dim} values, not the {info.input_size} and {dim} it claims")
        finally:
            engine.close()
        write_atomic(incoming / META, json.dumps(asdict(info), indent=2).encode())
        if lookup_backbone(bb, state_dir) is None:
            if target.exists():
                shutil.rmtree(target)
            os.replace(incoming, target)
        return lookup_backbone(bb, state_dir) or info
    except (BundleError, EngineError, ValueError, RuntimeError) as e:  # a bundle of other files; a model LiteRT cannot open
        raise ShareError(f"backbone {bid}: {str(e)[:300]}") from None
    finally:
        shutil.rmtree(incoming, ignore_errors=True)
