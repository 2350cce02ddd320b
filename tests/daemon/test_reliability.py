"""Defects found by reading the code (issue 11), each reproduced against a real mosquitto and a daemon subprocess."""

from __future__ import annotations

import json
import time

import pytest
from conftest import backbone_settings, edged_cli, toml_config, wait_until, write_config
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edged.config import MqttConfig
from edged.mqtt.client import make_client


def _daemon(broker, daemons, make_state, tmp_path, device, source="synthetic:shape=triangle,clutter=2", extra=""):
    settings = backbone_settings("none")
    state = make_state(settings, name=f"state-{device}")
    cfg = write_config(tmp_path / f"{device}.toml", toml_config(state, broker.port, source, settings, device, extra))
    return daemons(cfg, tmp_path / f"{device}.log"), cfg


def _reply_id(payload: bytes):
    try:
        body = json.loads(payload)
    except ValueError:  # a JPEG, a parcel chunk
        return None
    return body.get("id") if isinstance(body, dict) else None


def test_a_wildcard_response_topic_does_not_silence_the_daemon(broker, probe, daemons, make_state, tmp_path):
    d, _ = _daemon(broker, daemons, make_state, tmp_path, "rel1")
    probe.wait_online("rel1")
    assert probe.request("rel1", "capture", {"label": "tri", "count": 2, "interval_ms": 0})["ok"]
    v5 = make_client(MqttConfig(port=broker.port), "wild-response")
    v5.connect("127.0.0.1", broker.port)
    v5.loop_start()
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = "a/+/b"  # mosquitto forwards it; paho refuses to publish to it
    props.CorrelationData = b"x"
    v5.publish("edged/rel1/cmd/status", json.dumps({"id": "wild"}), qos=1, properties=props).wait_for_publish(5)
    # the reply falls back to the device's reply topic, and the daemon keeps publishing and answering
    reply = json.loads(probe.wait_for(lambda t, p, r: t == "edged/rel1/reply/status" and json.loads(p)["id"] == "wild", 20)[1])
    assert reply["ok"]
    # issue 34, 13: a reply never lands where the requester points it outside the clients' tree (another device's
    # command topic), and in that tree it names its sender, as the ACL template lets each account write
    probe.client.subscribe("edged/clients/#", qos=1)
    for topic, wanted, corr in (("edged/yard/cmd/forget", "edged/rel1/reply/status", "aimed"),
                                ("edged/clients/s1/reply", "edged/clients/s1/reply/rel1", "named")):
        props.ResponseTopic = topic
        v5.publish("edged/rel1/cmd/status", json.dumps({"id": corr}), qos=1, properties=props).wait_for_publish(5)
        got = probe.wait_for(lambda t, p, r: "/cmd/" not in t and _reply_id(p) == corr, 20)
        assert got[0] == wanted, got[0]
    v5.loop_stop()
    v5.disconnect()
    probe.drain()
    probe.wait_for(lambda t, p, r: t == "edged/rel1/prediction/knn", 10)
    assert probe.request("rel1", "status", {})["ok"]
    # issue 34, 6: without Home Assistant no frame goes on the broker; the snapshot is the requester's alone
    shot = probe.request("rel1", "snapshot", {})["result"]
    assert shot["topic"] is None and shot["jpeg_base64"], shot
    probe.drain()
    assert not [t for t, p, r in probe.seen if t in ("edged/rel1/snapshot", "edged/rel1/event_snapshot")]
    assert d.stop() == 0


def test_retained_commands_are_ignored_and_ids_make_commands_idempotent(broker, probe, daemons, make_state, tmp_path):
    d, cfg = _daemon(broker, daemons, make_state, tmp_path, "rel2")
    probe.wait_online("rel2")
    first = probe.request("rel2", "capture", {"label": "tri", "count": 1, "interval_ms": 0, "id": "dup-1"})
    again = probe.request("rel2", "capture", {"label": "tri", "count": 1, "interval_ms": 0, "id": "dup-1"})
    assert first["ok"] and again == first  # the same reply, and nothing captured twice
    assert probe.request("rel2", "status", {})["result"]["examples"] == {"tri": 1}
    # a retained forget on the fleet topic runs once for the devices online (the broker delivers it to them
    # as a live message), but never again when they reconnect
    probe.client.publish("edged/fleet/cmd/forget", json.dumps({"label": "tri"}), qos=1, retain=True).wait_for_publish(5)
    probe.wait_for(lambda t, p, r: t == "edged/rel2/reply/forget", 10)
    assert probe.request("rel2", "capture", {"label": "tri", "count": 1, "interval_ms": 0})["ok"]
    assert d.stop() == 0
    probe.drain()
    d2 = daemons(cfg, tmp_path / "again.log")
    assert probe.wait_online("rel2")["examples"] == {"tri": 1}
    probe.client.publish("edged/fleet/cmd/forget", b"", qos=1, retain=True).wait_for_publish(5)  # clear it
    assert d2.stop() == 0
    assert "ignored a retained command" in d2.output()


@pytest.mark.heavy
def test_camera_credentials_stay_out_of_status_logs_and_config_show(broker, probe, daemons, make_state, tmp_path):
    secret = "s3cret-pw"
    d, cfg = _daemon(broker, daemons, make_state, tmp_path, "rel3", source=f"rtsp://admin:{secret}@127.0.0.1:9/stream",
                     extra=f'password = "{secret}"\nusername = "u"\n')
    status = probe.wait_online("rel3")  # anonymous broker: the password is sent but not needed
    assert status["source"]["uri"] == "rtsp://admin:***@127.0.0.1:9/stream"
    # until the daemon has tried the camera (and logged what it tried)
    wait_until(lambda: "camera_lost" in json.dumps(probe.request("rel3", "status", {})["result"]["source"]), 20,
               interval=0.2)
    assert d.stop() == 0
    assert secret not in d.output()
    show = edged_cli("config", "check", str(cfg), "--show")
    assert show.returncode == 0 and secret not in show.stdout + show.stderr and '"password": "***"' in show.stdout


def _worker_children(pid: int) -> list[int]:
    out = []
    for status in __import__("pathlib").Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
            cmdline = (status.parent / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(next(l.split()[1] for l in text.splitlines() if l.startswith("PPid:")))
        if ppid == pid and b"edged.learn.worker" in cmdline and "State:\tZ" not in text:
            out.append(int(status.parent.name))
    return out


@pytest.mark.heavy
def test_a_hung_or_cancelled_training_job_is_answered_and_the_worker_is_reaped(broker, probe, daemons, make_state,
                                                                                   tmp_path):
    from edged.config import load_config
    from edged.serve.backbone import embed_image, open_backbone
    from edged.sources.synthetic import scene_at
    from edged.state.store import NewExample, Store

    settings = backbone_settings("none")
    state = make_state(settings, name="state-hang")
    cfg = load_config(None, [f"state_dir='{state}'"] + [f"backbone.{k}={json.dumps(v)}" for k, v in settings.items()])
    info, engine = open_backbone(cfg)
    store = Store(state / "store")
    store.add_many([NewExample(img, shape, embed_image(engine, img)) for shape in ("triangle", "rectangle")
                    for img in (scene_at(2, i, 160, 120, shape, 2).image for i in range(10))], info.id)
    store.close()
    text = toml_config(state, broker.port, "synthetic:clutter=2", settings, "hang") + "\n[trainer]\njob_timeout_s = 3\n"
    d = daemons(write_config(tmp_path / "hang.toml", text), tmp_path / "hang.log")
    probe.wait_online("hang")
    t0 = time.monotonic()
    reply = probe.request("hang", "train", {"head": "classifier", "mode": "fine_tune", "epochs": 500}, timeout=90)
    assert not reply["ok"] and "no result after trainer.job_timeout_s = 3 s" in reply["error"], reply
    assert time.monotonic() - t0 < 60
    probe.wait_for(lambda t, p, r: t == "edged/hang/prediction/knn", 10)  # serving went on
    assert _worker_children(d.proc.pid) == []  # killed and reaped: no zombie, no orphan
    # cancel: the next job starts a fresh worker; `cancel` stops it
    probe.send("hang", "train", {"head": "classifier", "mode": "fine_tune", "epochs": 500, "id": "long"})
    probe.wait_for(lambda t, p, r: t == "edged/hang/reply/train" and json.loads(p).get("id") == "long", 20)  # started
    cancelled = probe.request("hang", "cancel", {})
    assert cancelled["ok"] and cancelled["result"]["job"] == "train classifier"
    final = probe.wait_for(lambda t, p, r: t == "edged/hang/reply/train" and json.loads(p).get("id") == "long"
                           and json.loads(p)["final"], 20)
    assert "stopped: cancelled" in json.loads(final[1])["error"]
    assert probe.request("hang", "status", {})["result"]["job"] is None
    assert d.stop() == 0


def test_stale_staging_folders_and_orphan_frames_are_cleaned(tmp_path):
    import os

    import numpy as np

    from edged.state.store import NewExample, Store
    from edged.state.versions import Versions

    versions = Versions(tmp_path / "heads" / "knn")
    stale, fresh = versions.staging(), versions.staging()
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    assert versions.clean_staging() == 1 and not stale.exists() and fresh.exists() and versions.versions() == []
    store = Store(tmp_path / "store")
    store.add(NewExample(np.zeros((8, 8, 3), np.uint8), "a", np.ones(3)), "bb")
    orphan = store.frames / "deadbeef.jpg"
    orphan.write_bytes(b"x")
    os.utime(orphan, (time.time() - 7200, time.time() - 7200))
    young = store.frames / "young.jpg"
    young.write_bytes(b"x")
    assert store.collect_orphans() == 1 and not orphan.exists() and young.exists()
    assert store.counts() == {"a": 1} and len(list(store.frames.glob("*.jpg"))) == 2
    store.close()
