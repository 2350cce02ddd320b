"""A trainer node takes only fresh jobs for itself, for heads it has, with its own weights files; a device takes
trainers, progress and results only from the certified trainer its job went to. In process, no broker."""

from __future__ import annotations

import json
import threading
import time

import pytest
from conftest import enrol, wait_until

from edged.config import Config
from edged.errors import EdgedError
from edged.fleet.remote_trainer import RemoteTrainer
from edged.fleet.trainer_node import TrainerNode
from edged.fleet.parcels import Parcel
from edged.fleet.signing import FleetTrust


def _node(tmp_path, fleet_admin) -> TrainerNode:
    cfg = Config.model_validate({"device": "big", "state_dir": str(tmp_path / "trainer"),
                                 "backbone": {"weights": "none", "input_size": 96, "alpha": 0.25}})
    enrol(fleet_admin, cfg.state_path, "big", "trainer")
    return TrainerNode(cfg, "big", threading.Event())


def _job(**changes) -> dict:
    job = {"job_id": "a1b2c3d4e5f6", "job": "train", "head": "classifier", "params": {}, "trainer": "big",
           "backbone": "x", "backbone_config": {"alpha": 0.25, "input_size": 96}, "heads_config": {}, "ts": time.time()}
    return {**job, **changes}


@pytest.mark.parametrize("changes,why", [
    ({"head": "/tmp/x"}, "head '/tmp/x' is not installed"),
    ({"head": "../../etc"}, "is not installed"),
    ({"job": "shell"}, "job 'shell' is not one of"),
    ({"ts": time.time() - 3600}, "a replay is not run"),
    ({"trainer": "other"}, "job for trainer 'other'"),
    ({"job_id": "../x"}, "job id '../x' is not valid"),
    ({"backbone_config": "weights=/etc/shadow"}, "must be objects"),
])
def test_a_trainer_refuses_jobs_it_should_not_run(tmp_path, fleet_admin, changes, why):
    node = _node(tmp_path, fleet_admin)
    with pytest.raises(EdgedError, match=why):
        node._accept(Parcel("door", "device", "job", "big", _job(**changes), b""))
    assert not (tmp_path / "x").exists()


def test_a_job_id_runs_once(tmp_path, fleet_admin):
    node = _node(tmp_path, fleet_admin)
    node._accept(Parcel("door", "device", "job", "big", _job(), b""))
    with pytest.raises(EdgedError, match="was run before"):
        node._accept(Parcel("door", "device", "job", "big", _job(), b""))
    # issue 34, 11: a restarted trainer remembers it too (the job, sent again within its age, is not run twice)
    restarted = TrainerNode(node.cfg, "big", threading.Event())
    with pytest.raises(EdgedError, match="was run before"):
        restarted._accept(Parcel("door", "device", "job", "big", _job(), b""))


def test_a_job_never_names_a_file_on_the_trainer(tmp_path, fleet_admin):
    """The device's `weights` and `path` are replaced by the trainer's own; the refusal says nothing of the file."""
    node = _node(tmp_path, fleet_admin)
    secret = tmp_path / "secret.weights.h5"
    secret.write_bytes(b"not for you")
    sent = _job(backbone_config={"alpha": 0.25, "input_size": 96, "weights": str(secret), "family": "keras",
                                 "path": str(secret)})
    with pytest.raises(EdgedError) as refused:
        node._device_config(sent, "door")
    assert str(secret) not in str(refused.value)  # the trainer has no keras model file of its own: refused
    cfg_sent = _job(backbone_config={"alpha": 0.25, "input_size": 96, "weights": str(secret)})
    with pytest.raises(EdgedError) as again:
        node._device_config(cfg_sent, "door")
    assert str(secret) not in str(again.value) and "its own weights" in str(again.value)


def _remote(tmp_path, fleet_admin) -> RemoteTrainer:
    cfg = Config.model_validate({"device": "door", "state_dir": str(tmp_path / "door")})
    return RemoteTrainer(cfg, None, None, None, FleetTrust("signed", enrol(fleet_admin, cfg.state_path, "door")))


def test_a_device_listens_only_to_certified_trainers(tmp_path, fleet_admin):
    remote = _remote(tmp_path, fleet_admin)
    big = enrol(fleet_admin, tmp_path / "big", "big", "trainer")
    other = enrol(fleet_admin, tmp_path / "other", "other", "trainer")
    device = enrol(fleet_admin, tmp_path / "gate", "gate")
    status = lambda identity, name, ts=None: json.dumps({"state": "online", "announce": identity.sign(  # noqa: E731
        {"name": name, "ts": time.time() if ts is None else ts, "state": "online"})}).encode()
    remote._on_trainer("edged/fleet/trainers/0-rogue", b'{"state": "online"}', True)
    remote._on_trainer("edged/fleet/trainers/big", status(big, "big"), True)
    remote._on_trainer("edged/fleet/trainers/0-copy", status(big, "big"), True)  # big's announcement, another name
    remote._on_trainer("edged/fleet/trainers/gate", status(device, "gate"), True)  # a device posing as a trainer
    described = remote.describe()
    assert described["big"] == "online" and remote.available() == "big"
    assert described["0-rogue"].startswith("refused") and described["0-copy"].startswith("refused")
    assert "certified as a device" in described["gate"]

    while not remote.events.empty():
        remote.events.get_nowait()
    done = {"job_id": "j1", "ok": True, "result": {}, "sha256": "0" * 64}
    remote._on_event("edged/fleet/trainers/big/done/door", json.dumps(done).encode(), False)  # unsigned
    remote._on_event("edged/fleet/trainers/big/done/door", json.dumps(other.sign(done)).encode(), False)  # not big
    assert remote.events.empty()
    remote._on_event("edged/fleet/trainers/other/done/door", json.dumps(other.sign(done)).encode(), False)
    remote._on_event("edged/fleet/trainers/big/done/door", json.dumps(big.sign({**done, "ok": False})).encode(), False)
    got = [remote.events.get_nowait() for _ in range(2)]
    assert [(k, b["trainer"]) for k, b in got] == [("done", "other"), ("done", "big")]
    for item in got:
        remote.events.put(item)
    # the job went to big: other's answer to the same job id (signed, valid) is passed over
    answer, parcel = remote._wait("j1", "big", None, None)
    assert answer["trainer"] == "big" and answer["ok"] is False and parcel is None

    # issue 34, 2: revoked after it was heard of, big gets no job at once, and a job waiting on it ends; nothing of
    # its is taken any more
    remote._on_trainer("edged/fleet/trainers/other", status(other, "other"), True)
    assert remote.available() == "big"
    assert remote.trust.take_revocation(json.dumps(fleet_admin.revocation(["big"], seq=1)).encode())
    assert remote.available() == "other" and remote.describe()["big"] == "revoked"
    remote.events.put(("progress", {"job_id": "j2", "trainer": "big", "progress": {}}))
    with pytest.raises(EdgedError, match="trainer big was revoked during the job"):
        remote._wait("j2", "big", None, None)
    remote._drain()
    remote._on_event("edged/fleet/trainers/big/done/door", json.dumps(big.sign(done)).encode(), False)
    assert remote.events.empty()


def test_a_trainer_is_alive_only_while_its_signed_heartbeat_comes(tmp_path, fleet_admin, monkeypatch):
    """Issue 34, 9: a saved status replayed after the trainer died drew every job, the device waited 3,600 s, and
    `cancel` did not end a remote job."""
    import edged.fleet.remote_trainer as remote_trainer

    remote = _remote(tmp_path, fleet_admin)
    big = enrol(fleet_admin, tmp_path / "big", "big", "trainer")

    def status(ts):
        return json.dumps({"state": "online", "announce": big.sign({"name": "big", "ts": ts, "state": "online"})}).encode()

    remote._on_trainer("edged/fleet/trainers/big", status(time.time() - 3600), True)  # an hour-old status, replayed
    assert remote.available() is None and "not within" in remote.describe()["big"]
    remote._on_trainer("edged/fleet/trainers/big", status(time.time()), True)
    assert remote.available() == "big"
    monkeypatch.setattr(remote_trainer, "FRESH_S", 0.5)
    time.sleep(0.6)  # the heartbeat's age is what is tested: no heartbeat comes in this much time
    assert remote.available() is None  # its heartbeats stopped
    started = time.monotonic()
    with pytest.raises(EdgedError, match="no word from trainer big for 0.5 s"):
        remote._wait("j3", "big", None, None)  # a job whose trainer went silent ends, not after job_timeout_s
    assert time.monotonic() - started < 5
    monkeypatch.setattr(remote_trainer, "FRESH_S", 60.0)
    def cancel_once_waiting():
        wait_until(lambda: remote.waiting, 10, interval=0.01)
        assert remote.cancel()

    threading.Thread(target=cancel_once_waiting, daemon=True).start()
    with pytest.raises(EdgedError, match="cancelled"):
        remote._wait("j4", "big", None, None)


def test_no_message_stops_the_trainer(broker, tmp_path, fleet_admin):
    """Issue 34, 1: one anonymous retained message (a chunk index '²', or a manifest nested 30,000 deep) stopped
    `edged trainer`, and again at every start. Each is refused and counted; the trainer keeps taking messages."""
    from edged.mqtt.client import make_client

    cfg = Config.model_validate({"device": "big", "state_dir": str(tmp_path / "trainer"),
                                 "backbone": {"weights": "none", "input_size": 96, "alpha": 0.25},
                                 "mqtt": {"port": broker.port}})
    enrol(fleet_admin, cfg.state_path, "big", "trainer")
    node = TrainerNode(cfg, "big", threading.Event())
    runner = threading.Thread(target=node.run, daemon=True)
    runner.start()
    sender = make_client(cfg.mqtt, "stranger")
    sender.connect("127.0.0.1", broker.port)
    sender.loop_start()
    try:
        assert node.link.connected.wait(10)
        base = "edged/door/share/job/big"
        bad = [(f"{base}/{'ab' * 8}/²", b"chunk"), (f"{base}/manifest", b"[" * 30_000 + b"]" * 30_000),
               (f"{base}/manifest", json.dumps({"signed": "{}", "sig": "x"}).encode())]
        for topic, payload in bad:
            sender.publish(topic, payload, qos=1, retain=True).wait_for_publish(5)
        wait_until(lambda: node.refused >= 2, 15, what=lambda: f"{node.refused} refused")
        assert runner.is_alive()
        assert node._status()["messages_refused"] == node.refused
    finally:
        for topic, _ in bad:
            sender.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)
        sender.loop_stop()
        sender.disconnect()
        node.stop.set()
        runner.join(10)
