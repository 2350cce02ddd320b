"""Defects found by reading the code (issue 11), each reproduced against a real mosquitto and a daemon subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from conftest import backbone_settings, toml_config, write_config


def _daemon(broker, daemons, make_state, tmp_path, device, source="synthetic:shape=triangle,clutter=2", extra=""):
    settings = backbone_settings("none")
    state = make_state(settings, name=f"state-{device}")
    cfg = write_config(tmp_path / f"{device}.toml", toml_config(state, broker.port, source, settings, device, extra))
    return daemons(cfg, tmp_path / f"{device}.log"), cfg


def test_a_wildcard_response_topic_does_not_silence_the_daemon(broker, probe, daemons, make_state, tmp_path):
    d, _ = _daemon(broker, daemons, make_state, tmp_path, "rel1")
    probe.wait_online("rel1")
    assert probe.request("rel1", "capture", {"label": "tri", "count": 2, "interval_ms": 0})["ok"]
    v5 = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    v5.connect("127.0.0.1", broker.port)
    v5.loop_start()
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = "a/+/b"  # mosquitto forwards it; paho refuses to publish to it
    props.CorrelationData = b"x"
    v5.publish("edged/rel1/cmd/status", json.dumps({"id": "wild"}), qos=1, properties=props).wait_for_publish(5)
    # the reply falls back to the device's reply topic, and the daemon keeps publishing and answering
    reply = json.loads(probe.wait_for(lambda t, p, r: t == "edged/rel1/reply/status" and json.loads(p)["id"] == "wild", 20)[1])
    assert reply["ok"]
    v5.loop_stop()
    v5.disconnect()
    probe.drain()
    probe.wait_for(lambda t, p, r: t == "edged/rel1/prediction/knn", 10)
    assert probe.request("rel1", "status", {})["ok"]
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


def test_camera_credentials_stay_out_of_status_logs_and_config_show(broker, probe, daemons, make_state, tmp_path):
    secret = "s3cret-pw"
    d, cfg = _daemon(broker, daemons, make_state, tmp_path, "rel3", source=f"rtsp://admin:{secret}@127.0.0.1:9/stream",
                     extra=f'password = "{secret}"\nusername = "u"\n')
    status = probe.wait_online("rel3")  # anonymous broker: the password is sent but not needed
    assert status["source"]["uri"] == "rtsp://admin:***@127.0.0.1:9/stream"
    time.sleep(2)
    assert d.stop() == 0
    assert secret not in d.output()
    show = subprocess.run([sys.executable, "-m", "edged", "config", "check", str(cfg), "--show"], capture_output=True,
                          text=True)
    assert show.returncode == 0 and secret not in show.stdout + show.stderr and '"password": "***"' in show.stdout
