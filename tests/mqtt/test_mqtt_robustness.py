"""MQTT against a real broker that goes away, demands a password, or addresses the whole fleet."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest
from conftest import Probe, daemon_config, wait_until

from edged.config import MqttConfig
from edged.mqtt.broker import MosquittoBroker
from edged.mqtt.client import make_client

TRIANGLE = "synthetic:shape=triangle,clutter=2"


@pytest.mark.heavy
def test_broker_outage_reconnects_and_resumes(tmp_path, make_state, daemons):
    broker = MosquittoBroker().start()
    try:
        d = daemons(daemon_config(tmp_path, make_state, broker.port, "out1", TRIANGLE), tmp_path / "d.log")
        probe = Probe(broker.port)
        probe.wait_online("out1")
        assert probe.request("out1", "capture", {"label": "tri", "count": 2, "interval_ms": 0})["ok"]
        probe.wait_for(lambda t, p, r: t == "edged/out1/prediction/knn", 20)
        probe.close()
        broker.stop()
        wait_until(lambda: "MQTT disconnected" in d.output(), what="the daemon noticing the broker gone")
        assert d.alive()  # serving on with no broker, queueing (bounded)
        broker.start()
        probe = Probe(broker.port)
        status = probe.wait_online("out1", timeout=60)  # reconnected and re-announced
        assert status["examples"] == {"tri": 2}
        probe.wait_for(lambda t, p, r: t == "edged/out1/prediction/knn", 20)
        stats = json.loads(probe.wait_for(lambda t, p, r: t == "edged/out1/stats", 20)[1])
        assert stats["fps_out"] > 0 and "mqtt_dropped" in stats
        probe.close()
        assert d.stop() == 0
    finally:
        broker.close()


@pytest.mark.heavy
@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="mosquitto_passwd not installed")
def test_username_password_required(tmp_path, make_state, daemons):
    pwfile = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(pwfile), "edged", "s3cret"], check=True)
    pwfile.chmod(0o600)
    broker = MosquittoBroker(extra_config=f"password_file {pwfile}\n")
    broker.conf.write_text(broker.conf.read_text().replace("allow_anonymous true", "allow_anonymous false"))
    broker.start()
    try:
        good = daemon_config(tmp_path, make_state, broker.port, "auth1", TRIANGLE,
                             extra='username = "edged"\npassword = "s3cret"\n')
        bad = daemon_config(tmp_path, make_state, broker.port, "auth2", TRIANGLE,
                            extra='username = "edged"\npassword = "wrong"\n')
        d_good = daemons(good, tmp_path / "good.log")
        d_bad = daemons(bad, tmp_path / "bad.log")
        watcher = make_client(MqttConfig(port=broker.port, protocol="3.1.1", username="edged", password="s3cret"),
                              "watcher")
        seen = []
        watcher.on_message = lambda c, u, m: seen.append(m.topic)
        watcher.connect("127.0.0.1", broker.port)
        watcher.subscribe("edged/#")
        watcher.loop_start()
        wait_until(lambda: "edged/auth1/status" in seen, 30, what="the good daemon's status")
        refused = ("refused", "not authorized", "not authorised")
        wait_until(lambda: any(r in d_bad.output().lower() for r in refused), 30, what=lambda: d_bad.output()[-1500:])
        watcher.loop_stop()
        assert "edged/auth1/status" in seen
        assert "edged/auth2/status" not in seen
        assert d_bad.alive()  # refused by the broker, still serving and retrying
        assert "refused" in d_bad.output() or "Not authorized" in d_bad.output() or "not authorised" in d_bad.output().lower()
        assert d_good.stop() == 0 and d_bad.stop() == 0
    finally:
        broker.close()


def test_fleet_command_reaches_every_device(broker, probe, tmp_path, make_state, daemons):
    ds = [daemons(daemon_config(tmp_path, make_state, broker.port, dev, TRIANGLE), tmp_path / f"{dev}.log") for dev in ("f1", "f2")]
    online = set()

    def both_online(t, p, r):
        if t.endswith("/status") and json.loads(p).get("state") == "online":
            online.add(t.split("/")[1])
        return online >= {"f1", "f2"}

    probe.wait_for(both_online, 60)
    probe.client.publish("edged/fleet/cmd/status", json.dumps({"id": "all"}), qos=1).wait_for_publish(5)
    replies = set()

    def match(t, p, r):
        if t.endswith("/reply/status") and json.loads(p)["id"] == "all":
            replies.add(t.split("/")[1])
        return replies == {"f1", "f2"}

    probe.wait_for(match, 60)
    for d in ds:
        assert d.stop() == 0


@pytest.mark.heavy
def test_watchdog_only_while_frames_flow(tmp_path, make_state, broker, probe):
    sock_path = str(tmp_path / "n.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    cfg = daemon_config(tmp_path, make_state, broker.port, "wd1", "rtsp://127.0.0.1:9/nothing")
    env = dict(os.environ, NOTIFY_SOCKET=sock_path, WATCHDOG_USEC="200000")
    proc = subprocess.Popen([sys.executable, "-m", "edged", "run", "--config", str(cfg)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        status = probe.wait_for(lambda t, p, r: t == "edged/wd1/status" and json.loads(p)["source"]["state"] == "camera_lost", 40)
        assert json.loads(status[1])["state"] == "online"
        seen = []
        sock.settimeout(0.5)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            try:
                seen += sock.recv(4096).decode().splitlines()
            except socket.timeout:
                pass
        assert "WATCHDOG=1" not in seen
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(20)
        sock.close()
