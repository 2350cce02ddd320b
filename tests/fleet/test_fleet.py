"""The fleet on a real broker: `edged fleet ls/send` against daemon subprocesses, and sharing models and examples."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
import uuid

import pytest
from conftest import ROOT, backbone_settings, daemon_config, edged_cli, enrol, toml_config, wait_until, without_tensorflow, write_config

from edged.config import load_config
from edged.fleet.parcels import pack
from edged.fleet.signing import FleetTrust
from edged.mqtt.topics import FleetTopics
from edged.serve.backbone import embed_image, open_backbone
from edged.sources.synthetic import scene_at
from edged.fleet.bundles import pack_examples, pack_folder
from edged.state.store import NewExample, Store
from edged.fleet.trust import Identity, TrustError


def _config(tmp_path, make_state, port, device, extra="", source="synthetic:clutter=2"):
    config = daemon_config(tmp_path, make_state, port, device, source, extra)
    return config, load_config(config).state_path


def _cli_config(tmp_path, port) -> str:
    return str(write_config(tmp_path / "cli.toml", f'device = "cli"\n[mqtt]\nhost = "127.0.0.1"\nport = {port}\n'))


def _wait_stats(probe, devices, timeout=60):
    seen = set()

    def all_in(t, p, r):
        parts = t.split("/")
        if len(parts) == 3 and parts[2] == "stats":
            seen.add(parts[1])
        return seen >= set(devices)

    probe.wait_for(all_in, timeout)


@pytest.mark.heavy
def test_fleet_ls_and_send_against_two_daemons(broker, probe, tmp_path, make_state, daemons):
    ds = {dev: daemons(_config(tmp_path, make_state, broker.port, dev)[0], tmp_path / f"{dev}.log") for dev in ("fa", "fb")}
    _wait_stats(probe, ds)
    cli = _cli_config(tmp_path, broker.port)

    listed = edged_cli("fleet", "ls", "--json", "--config", cli)
    assert listed.returncode == 0, listed.stderr
    rows = {r["device"]: r for r in json.loads(listed.stdout)}
    assert {"fa", "fb"} <= set(rows)
    for dev in ("fa", "fb"):
        assert rows[dev]["state"] == "online" and rows[dev]["active"] == ["knn"] and rows[dev]["fps"] is not None
        assert rows[dev]["backbone"] and rows[dev]["last_seen"] > time.time() - 30
    table = edged_cli("fleet", "ls", "--config", cli)
    assert table.returncode == 0 and "DEVICE" in table.stdout and "fa" in table.stdout and "online" in table.stdout

    every = edged_cli("fleet", "send", "--json", "--config", cli, "--timeout", "5", "status")
    assert every.returncode == 0, every.stdout + every.stderr
    results = {r["device"]: r for r in json.loads(every.stdout)}
    assert results["fa"]["result"] == "ok" and results["fb"]["result"] == "ok"
    assert results["fa"]["reply"]["device"] == "fa"

    named = edged_cli("fleet", "send", "--device", "fa", "--device", "fb", "--device", "ghost",
                  "--config", cli, "--timeout", "3", "status")
    assert named.returncode == 1, named.stdout
    lines = {line.split()[0]: line for line in named.stdout.splitlines()[1:]}
    assert "no reply" in lines["ghost"] and " ok " in lines["fa"] + " " and " ok " in lines["fb"] + " "

    bad = edged_cli("fleet", "send", "--device", "fa", "--config", cli, "--timeout", "5", "capture", '{"label": "!!"}')
    assert bad.returncode == 1 and "error" in bad.stdout and "capture.label" in bad.stdout

    ds["fb"].stop(signal.SIGKILL)  # no goodbye: the broker's will marks it offline
    def fb_offline():
        rows = {r["device"]: r for r in json.loads(edged_cli("fleet", "ls", "--json", "--config", cli).stdout)}
        return rows if rows["fb"]["state"] == "offline" else None

    rows = wait_until(fb_offline, 60, what="fb offline in `edged fleet ls`", interval=0.5)
    assert rows["fa"]["state"] == "online"
    assert ds["fa"].stop() == 0


def _prefill(state, seed: int = 0):
    settings = backbone_settings("none")
    cfg = load_config(None, [f"state_dir='{state}'"] + [f"backbone.{k}={json.dumps(v)}" for k, v in settings.items()])
    info, engine = open_backbone(cfg)
    store = Store(cfg.state_path / "store")
    items = [NewExample(img, shape, embed_image(engine, img))
             for shape in ("triangle", "rectangle")
             for img in (scene_at(seed, i, 640, 480, shape, clutter=2).image for i in range(12))]
    store.add_many(items, info.id)
    store.close()
    engine.close()
    return info.id


@pytest.mark.heavy
def test_a_model_and_examples_taught_on_one_device_serve_on_another(broker, probe, tmp_path, make_state, daemons,
                                                                    fleet_admin):
    cfg_a, state_a = _config(tmp_path, make_state, broker.port, "sha", source="synthetic:clutter=2")
    backbone_id = _prefill(state_a)
    # random-weight backbone: the classifier is weak, and B checks it on frames of its own
    follow = '\n[fleet]\nfollow = ["classifier"]\ntake_examples = true\nmin_accuracy = 0.3\n'
    cfg_b, state_b = _config(tmp_path, make_state, broker.port, "shb", follow, source="synthetic:clutter=2")
    _prefill(state_b, seed=1)
    enrol(fleet_admin, state_a, "sha")
    enrol(fleet_admin, state_b, "shb")
    a = daemons(cfg_a, tmp_path / "a.log")
    b = daemons(cfg_b, tmp_path / "b.log")
    _wait_stats(probe, ["sha", "shb"])

    # examples first, signed and without frames: stored on B with their origin
    shared = probe.request("sha", "share", {}, timeout=30)
    assert shared["ok"], shared
    assert shared["result"]["kind"] == "examples" and shared["result"]["bytes"] > 0 and shared["result"]["signed"]
    assert shared["result"]["topic"] == "edged/sha/share/examples/sha/manifest"

    def b_stored(t, p, r):
        got = json.loads(p).get("fleet", {}).get("received", {}).get("examples/sha", {}) if t == "edged/shb/status" else {}
        return got.get("state") in ("stored", "refused")

    assert json.loads(probe.wait_for(b_stored, 30)[1])["fleet"]["received"]["examples/sha"]["added"] == 24
    listed = probe.request("shb", "examples", {"limit": 100})["result"]
    rows = [r for r in listed["examples"] if r["origin"] == "sha"]
    assert len(rows) == 24 and len(listed["examples"]) == 48
    again = probe.request("sha", "share", {}, timeout=30)  # the same examples once more: stored once
    assert again["ok"]

    nothing = probe.request("sha", "publish", {"model": "classifier"}, timeout=30)
    assert not nothing["ok"] and "no model version" in nothing["error"] and "export it first" in nothing["error"]
    unknown = probe.request("sha", "publish", {"model": "nope"}, timeout=30)
    assert not unknown["ok"] and "unknown head 'nope'" in unknown["error"]

    # a head version trained on embeddings (numpy, a few KB) is shared the same way and predicts on B
    assert probe.request("sha", "train", {"head": "classifier", "mode": "frozen"}, timeout=120)["ok"]
    head_share = probe.request("sha", "publish", {"model": "classifier", "kind": "head"}, timeout=60)
    assert head_share["ok"] and head_share["result"]["bytes"] < 200_000, head_share

    def b_took_head(t, p, r):
        got = json.loads(p).get("fleet", {}).get("received", {}).get("head/classifier", {}) if t == "edged/shb/status" else {}
        return got.get("state") in ("active", "staged", "refused")

    got = json.loads(probe.wait_for(b_took_head, 60)[1])["fleet"]["received"]["head/classifier"]
    assert got["state"] == "active" and got["check"]["examples"] == 48, got
    pred = json.loads(probe.wait_for(lambda t, p, r: t == "edged/shb/prediction/classifier", 30)[1])
    assert set(pred["scores"]) == {"triangle", "rectangle"}
    _crafted_heads_are_not_served(probe, tmp_path, state_a, state_b, backbone_id)

    # a model: exported (TensorFlow worker) on A, published, fetched, checked and served by B
    exported = probe.request("sha", "export", {"head": "classifier", "quantize": "float32"}, timeout=300)
    assert exported["ok"], exported
    assert probe.request("sha", "activate", {"model": "classifier"})["ok"]
    published = probe.request("sha", "publish", {"model": "classifier"}, timeout=60)
    assert published["ok"], published
    sha = published["result"]["sha256"]

    def b_serves(t, p, r):
        if t != "edged/shb/status":
            return False
        got = json.loads(p).get("fleet", {}).get("received", {}).get("model/classifier", {})
        return got.get("state") in ("active", "staged", "refused")

    status = json.loads(probe.wait_for(b_serves, 60)[1])
    got = status["fleet"]["received"]["model/classifier"]
    assert got["state"] == "active", got
    assert got["from"] == "sha" and got["sha256"] == sha[:16]
    assert got["check"]["examples"] == 24 and got["check"]["accuracy"] >= 0.3  # B's own frames (shared ones have none)
    model_sha = status["heads"]["classifier"]["model"]["sha256"]
    assert "classifier" in status["active"]

    # the same frames give the same labels on both devices (same scene seed, same model file)
    both: dict[int, dict] = {}

    def ten_in_common(t, p, r):
        if t in ("edged/sha/prediction/classifier", "edged/shb/prediction/classifier"):
            msg = json.loads(p)
            both.setdefault(msg["pos"], {})[t.split("/")[1]] = (msg["label"], msg["model_sha"])
        return sum(len(v) == 2 for v in both.values()) >= 10

    probe.wait_for(ten_in_common, 30)
    pairs = [v for v in both.values() if len(v) == 2]
    assert all(v["sha"] == v["shb"] for v in pairs), pairs
    assert all(v["shb"][1] == model_sha for v in pairs)

    # unsigned, signed by another device than the topic names, tampered, made for another backbone, replayed,
    # and from a revoked device: each refused, and B keeps serving what it had
    model_file = (state_a / "models" / "classifier" / "v1" / "model.tflite").read_bytes()
    good = {"backbone": backbone_id, "input_size": 96}
    sha_signs = FleetTrust("signed", Identity(state_a / "keys", "sha", "device")).sign_manifest
    signed_before = pack(FleetTopics("edged").publisher("sha"), "model", "classifier", model_file, good, 64 * 1024, 1 << 30,
                         sha_signs)
    cases = [
        ("evil", model_file + b"a", good, None, "from evil: not signed"),
        ("sha", model_file + b"b", good, None, "from sha: not signed"),
        ("evil", model_file + b"c", good, sha_signs, "signed by 'sha', not by 'evil'"),
        ("sha", model_file + b"d", good, "tamper", "sha256 mismatch"),
        ("sha", model_file + b"e", {**good, "backbone": "mobilenet_v9-x"}, sha_signs, "backbone"),
    ]
    for publisher, data, manifest, sign, why in cases:
        signer = sha_signs if sign == "tamper" else sign
        messages = pack(FleetTopics("edged").publisher(publisher), "model", "classifier", data, manifest, 64 * 1024, 1 << 30,
                        **({"sign": signer} if signer else {}))
        if sign == "tamper":
            topic, chunk = messages[1]
            messages[1] = (topic, b"X" + chunk[1:])
        _publish_and_expect_refusal(probe, messages, why, model_sha)
    # issue 34, 5: the kind comes from B's own head, never from the parcel: a classifier model whose metadata says
    # "boxes" (a box model is served unchecked) is refused
    boxes_like = tmp_path / "boxes-like"
    shutil.copytree(state_a / "models" / "classifier" / "v1", boxes_like)
    meta = json.loads((boxes_like / "metadata.json").read_text())
    (boxes_like / "metadata.json").write_text(json.dumps({**meta, "kind": "boxes"}))
    messages = pack(FleetTopics("edged").publisher("sha"), "model", "classifier", pack_folder(boxes_like), good,
                    64 * 1024, 1 << 30, sha_signs)
    _publish_and_expect_refusal(probe, messages, "head 'classifier' here is of kind 'classes'", model_sha)
    with pytest.raises(TrustError, match="not enrolled"):
        Identity(tmp_path / "rogue-keys", "sha", "device").sign({})  # a key pair alone cannot sign for the fleet
    # a signed parcel of sha's older than the last one taken from it (a replay) is refused as not newer
    _publish_and_expect_refusal(probe, signed_before, "not newer", model_sha, clear=False)

    # issue 36, 1: a head version taken from the fleet while an exported model serves retires the model, as a
    # local train does (it was reported active while the old model kept answering)
    assert probe.request("sha", "train", {"head": "classifier", "mode": "frozen"}, timeout=120)["ok"]
    head_sha = probe.request("sha", "publish", {"model": "classifier", "kind": "head"}, timeout=60)["result"]["sha256"]

    def b_head_serves(t, p, r):
        got = json.loads(p).get("fleet", {}).get("received", {}).get("head/classifier", {}) if t == "edged/shb/status" else {}
        return got.get("state") in ("active", "staged", "refused") and got.get("sha256") == head_sha[:16]

    taken = json.loads(probe.wait_for(b_head_serves, 60)[1])
    assert taken["fleet"]["received"]["head/classifier"]["state"] == "active", taken["fleet"]["received"]
    status = probe.request("shb", "status", {})["result"]
    assert "model" not in status["heads"]["classifier"], status["heads"]["classifier"]  # the model no longer serves

    # revoked: sha's next parcel is refused
    cli = _cli_config(tmp_path, broker.port)
    revoked = edged_cli("fleet", "revoke", "--dir", str(fleet_admin.folder), "--config", cli, "sha")
    assert revoked.returncode == 0 and "revoked: sha" in revoked.stdout, revoked.stderr
    probe.wait_for(lambda t, p, r: t == "edged/shb/status" and "sha" in json.loads(p).get("fleet", {}).get("revoked", []), 30)
    assert probe.request("sha", "train", {"head": "classifier", "mode": "frozen"}, timeout=120)["ok"]
    assert probe.request("sha", "publish", {"model": "classifier", "kind": "head"}, timeout=60)["ok"]

    def head_refused(t, p, r):
        got = json.loads(p).get("fleet", {}).get("received", {}).get("head/classifier", {}) if t == "edged/shb/status" else {}
        return got.get("state") == "refused" and "'sha' is revoked" in got.get("reason", "")

    probe.wait_for(head_refused, 30)

    # issue 34, 3: the list erased on the broker is put back by a device that holds it, and a device enrolled after
    # the revocation gets it with its certificate
    probe.client.subscribe("edged/fleet/revoked", qos=1)
    probe.drain()
    probe.client.publish("edged/fleet/revoked", b"", qos=1, retain=True)
    back = probe.wait_for(lambda t, p, r: t == "edged/fleet/revoked" and not r and b"sha" in p, 30)  # put back live
    assert json.loads(json.loads(back[1])["signed"])["names"] == ["sha"]
    late = Identity(tmp_path / "late-keys", "late", "device")
    (tmp_path / "late.json").write_text(json.dumps(late.request()))
    cert = edged_cli("fleet", "enroll", "--dir", str(fleet_admin.folder), "--role", "device", str(tmp_path / "late.json"))
    assert cert.returncode == 0, cert.stderr
    assert json.loads(json.loads(cert.stdout)["revocation"]["signed"])["names"] == ["sha"]

    assert a.stop() == 0 and b.stop() == 0, b.output()
    for t in [t for t, _ in messages]:
        probe.client.publish(t, b"", qos=1, retain=True)
    probe.client.publish("edged/fleet/revoked", b"", qos=1, retain=True)


def _crafted_heads_are_not_served(probe, tmp_path, state_a, state_b, backbone_id) -> None:
    """Head versions signed by a member but crafted: a Keras archive inside, labels that are markup, 1,500 labels,
    labels this device never saw — none is served, and only the last can be kept for review."""
    import io
    import shutil
    import tarfile

    sha_signs = FleetTrust("signed", Identity(state_a / "keys", "sha", "device")).sign_manifest
    source = state_a / "heads" / "classifier" / json.loads((state_a / "heads" / "classifier" / "current").read_text())["current"]
    heads_b = state_b / "heads" / "classifier"
    before = sorted(p.name for p in heads_b.iterdir() if p.name.startswith("v"))
    serving = json.loads((heads_b / "current").read_text())["current"]

    def parcel(folder, labels, extra: dict[str, bytes] = {}):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            files = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
            for name, data in {**files, **extra}.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return pack(FleetTopics("edged").publisher("sha"), "head", "classifier", buf.getvalue(),
                    {"backbone": backbone_id, "input_size": 96, "labels": labels}, 64 * 1024, 1 << 30, sha_signs)

    def outcome(why_state, why):
        def seen(t, p, r):
            got = json.loads(p).get("fleet", {}).get("received", {}).get("head/classifier", {}) if t == "edged/shb/status" else {}
            return got.get("state") == why_state and why in str(got)
        return json.loads(probe.wait_for(seen, 30)[1])["fleet"]["received"]["head/classifier"]

    trap = parcel(source, ["triangle", "rectangle"], {"fused.keras": b"PK\x03\x04 a Lambda layer would be here"})
    for topic, payload in trap:
        probe.client.publish(topic, payload, qos=1, retain=True)
    outcome("refused", "not one of the data files")

    markup = [f"{{{{ states('lock.front_door') }}}} <img src=x onerror=alert({i})>" for i in range(300)]
    for topic, payload in parcel(source, markup):
        probe.client.publish(topic, payload, qos=1, retain=True)
    outcome("refused", "is not a valid label")
    for topic, payload in parcel(source, [f"c{i}" for i in range(1500)], {"notes.txt": b"other bytes"}):
        probe.client.publish(topic, payload, qos=1, retain=True)
    outcome("refused", "fleet.max_classes")

    strangers = tmp_path / "strangers"
    shutil.copytree(source, strangers)
    meta = json.loads((strangers / "head.json").read_text())
    meta["classes"] = ["zebra", "yak"]
    (strangers / "head.json").write_text(json.dumps(meta))
    for topic, payload in parcel(strangers, ["zebra", "yak"]):
        probe.client.publish(topic, payload, qos=1, retain=True)
    staged = outcome("staged", "no stored examples of its labels")
    after = sorted(p.name for p in heads_b.iterdir() if p.name.startswith("v"))
    assert after == before + [staged["version"]]  # the refused ones left nothing; this one is kept, not served
    assert json.loads((heads_b / "current").read_text())["current"] == serving
    assert not list(heads_b.glob(".staging-*"))

    # issue 33, 6: the staged version is checked again once shared examples of its labels arrive, and then serves
    store_a = Store(state_a / "store")
    rows = store_a.own_examples(backbone_id)
    store_a.close()
    renamed = {"rectangle": "zebra", "triangle": "yak"}  # the order of the head's classes, renamed above
    rows = [{**r, "uid": uuid.uuid4().hex, "label": renamed[r["label"]]} for r in rows if r["label"] in renamed]
    for topic, payload in pack(FleetTopics("edged").publisher("sha"), "examples", "sha", pack_examples(rows, 0),
                               {"backbone": backbone_id, "input_size": 96, "labels": ["yak", "zebra"],
                                "examples": len(rows)}, 64 * 1024, 1 << 30, sha_signs):
        probe.client.publish(topic, payload, qos=1, retain=True)
    checked = outcome("active", "checked once stored examples of its labels arrived")
    assert checked["version"] == staged["version"] and checked["check"]["examples"] == len(rows), checked
    assert json.loads((heads_b / "current").read_text())["current"] == staged["version"]


def _publish_and_expect_refusal(probe, messages, why: str, model_sha: str, clear: bool = True) -> None:
    for topic, payload in messages:
        probe.client.publish(topic, payload, qos=1, retain=True).wait_for_publish(5)

    def refused(t, p, r):
        got = json.loads(p).get("fleet", {}).get("received", {}).get("model/classifier", {}) if t == "edged/shb/status" else {}
        return got.get("state") == "refused" and why in got.get("reason", "")

    status = json.loads(probe.wait_for(refused, 30)[1])
    assert status["heads"]["classifier"]["model"]["sha256"] == model_sha
    if clear:
        for topic, _ in messages:
            probe.client.publish(topic, b"", qos=1, retain=True)


@pytest.mark.heavy
def test_bench_fleet_runs_small():
    done = edged_cli("bench", "fleet", "--devices", "5", "--rounds", "1", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("fleet send: ") and "collect 5 replies (target <= 1 s)" in last


@pytest.mark.heavy
def test_a_device_without_tensorflow_trains_and_exports_on_a_trainer_node(broker, probe, tmp_path, make_state, daemons,
                                                                         fleet_admin):
    """A signed fleet: the device's jobs go sealed to the certified trainer only (not to a rogue one announcing
    itself first), and an eavesdropper on the broker sees no frame of them."""
    cfg, state = _config(tmp_path, make_state, broker.port, "bare")
    _prefill(state)
    enrol(fleet_admin, state, "bare")
    # a client that is no trainer announces itself retained, sorting ahead of the real one
    probe.client.publish("edged/fleet/trainers/0-rogue", json.dumps({"state": "online", "role": "trainer"}), qos=1,
                         retain=True).wait_for_publish(5)

    d = daemons(cfg, tmp_path / "bare.log", without_tensorflow(tmp_path / "site"))
    _wait_stats(probe, ["bare"])
    alone = probe.request("bare", "export", {"head": "classifier"}, timeout=30)
    assert not alone["ok"] and "no trainer node is online" in alone["error"]

    settings = backbone_settings("none")
    trainer_state = make_state(settings, name="trainer-state")
    enrol(fleet_admin, trainer_state, "big", "trainer")
    trainer_cfg = write_config(tmp_path / "trainer.toml", toml_config(trainer_state, broker.port, "synthetic:", settings, "big"))
    trainer = subprocess.Popen([sys.executable, "-m", "edged", "trainer", "--fleet", "--config", str(trainer_cfg)],
                               cwd=ROOT, stdout=open(tmp_path / "trainer.log", "wb"), stderr=subprocess.STDOUT)
    try:
        probe.wait_for(lambda t, p, r: t == "edged/fleet/trainers/big" and json.loads(p).get("state") == "online", 60)
        def both_trainers_seen():  # the status command reads the trainers as the device sees them now
            status = probe.request("bare", "status", {})["result"]
            return status if status["trainers"].get("big") == "online" and "0-rogue" in status["trainers"] else None

        status = wait_until(both_trainers_seen, 30, what="trainers big (online) and 0-rogue seen", interval=0.2)
        assert status["trainers"]["0-rogue"].startswith("refused: trainer '0-rogue': not signed"), status["trainers"]
        assert status["tensorflow_imported"] is False
        listed = edged_cli("fleet", "ls", "--config", _cli_config(tmp_path, broker.port))
        assert "big (online, 0 jobs done)" in listed.stdout, listed.stdout
        assert "0-rogue (online, 0 jobs done, unsigned)" in listed.stdout

        # fine-tuning (backbone layers too) runs on the trainer; the device commits and serves the version it gets
        probe.drain()
        tuned = probe.request("bare", "train", {"head": "classifier", "mode": "fine_tune", "epochs": 1}, timeout=300)
        assert tuned["ok"], tuned
        probe.drain()
        sent = [(t, p) for t, p, _ in probe.seen if "/share/job/big/" in t or "/share/result/bare/" in t]
        assert any(t.startswith("edged/bare/share/job/big/") for t, _ in sent)
        assert any(t.startswith("edged/fleet/trainers/big/share/result/bare/") for t, _ in sent)
        # no JPEG frame readable on the broker: a JPEG's start as OpenCV writes it (SOI + JFIF header; the three-byte
        # SOI alone turns up in sealed, random-looking bytes about once in 5 MiB)
        assert not any(b"\xff\xd8\xff\xe0\x00\x10JFIF" in p for _, p in sent)
        manifests = [json.loads(json.loads(p)["signed"]) for t, p in sent if t.endswith("/manifest")]
        assert manifests and all("sealed" in m for m in manifests)
        assert tuned["result"]["trainer"] == "big" and tuned["result"]["version"] == "v1"
        assert (state / "heads" / "classifier" / "v1").is_dir()

        exported = probe.request("bare", "export", {"head": "classifier", "quantize": "float32"}, timeout=300)
        assert exported["ok"], exported
        assert exported["result"]["trainer"] == "big" and exported["result"]["parity"]["passed"]
        used = probe.request("bare", "activate", {"model": "classifier"})
        assert used["ok"], used
        pred = json.loads(probe.wait_for(lambda t, p, r: t == "edged/bare/prediction/classifier", 30)[1])
        assert pred["model_sha"] == used["result"]["sha256"] and pred["label"] in ("triangle", "rectangle", "unknown")
        assert probe.request("bare", "status", {})["result"]["tensorflow_imported"] is False
    finally:
        trainer.send_signal(signal.SIGTERM)
        assert trainer.wait(30) == 0, (tmp_path / "trainer.log").read_text()[-3000:]
    probe.wait_for(lambda t, p, r: t == "edged/fleet/trainers/big" and json.loads(p).get("state") == "offline", 20)
    probe.client.publish("edged/fleet/trainers/0-rogue", b"", qos=1, retain=True)
    assert d.stop() == 0
