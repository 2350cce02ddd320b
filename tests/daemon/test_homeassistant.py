"""Home Assistant MQTT discovery against a real broker and a daemon subprocess."""

from __future__ import annotations

import json

import pytest
from conftest import daemon_config, wait_until

from edged.config import MqttConfig
from edged.mqtt.client import make_client

TOPIC = "homeassistant/device/edged_ha1/config"


def _config(tmp_path, make_state, port, enabled: bool):
    extra = f"\n[homeassistant]\nenabled = {'true' if enabled else 'false'}\ncapture_count = 2\nsnapshot_interval_s = 1\n"
    return daemon_config(tmp_path, make_state, port, "ha1", extra=extra)


def _check_payload(config: dict) -> dict:
    """The fields Home Assistant requires of a device-based discovery payload; returns the components."""
    assert config["device"]["identifiers"] == ["edged_ha1"] and config["device"]["name"] == "ha1"
    assert config["device"]["sw_version"] and config["device"]["model"]
    assert config["origin"]["name"] == "edged"
    availability = config["availability"][0]
    assert availability["topic"] == "edged/ha1/status" and availability["payload_available"] == "online"
    components = config["components"]
    for cid, c in components.items():
        assert c["platform"] in ("sensor", "binary_sensor", "event", "button", "image")
        assert c["unique_id"] == cid
        topic = {"button": "command_topic", "image": "image_topic"}.get(c["platform"], "state_topic")
        assert c[topic].startswith("edged/ha1/"), c
    return components


@pytest.mark.heavy
def test_discovery_buttons_teach_and_removal(broker, probe, tmp_path, make_state, daemons):
    probe.client.subscribe("homeassistant/#", qos=1)
    d = daemons(_config(tmp_path, make_state, broker.port, True), tmp_path / "ha.log")
    first = json.loads(probe.wait_for(lambda t, p, r: t == TOPIC and p, 60)[1])
    components = _check_payload(first)
    # the head's entities read its state (retained, only on change), never the per-frame predictions
    assert components["edged_ha1_head_knn"]["state_topic"] == "edged/ha1/state/knn"
    assert components["edged_ha1_event_knn"]["state_topic"] == "edged/ha1/event/knn"
    assert not [c for c in components.values() if "prediction" in json.dumps(c)]
    assert components["edged_ha1_snapshot"]["image_topic"] == "edged/ha1/snapshot"
    buttons = [c for c in components.values() if c["platform"] == "button"]
    assert [c["name"] for c in buttons] == ["Wrong (knn)"]  # nothing taught yet: no teach button, "wrong" per head
    probe.wait_for(lambda t, p, r: t == "edged/ha1/snapshot" and p[:2] == b"\xff\xd8", 20)  # a JPEG for the image entity

    # a label appears (taught by command): the payload gains its button
    assert probe.request("ha1", "capture", {"label": "mug", "count": 1, "interval_ms": 0})["ok"]
    updated = json.loads(probe.wait_for(lambda t, p, r: t == TOPIC and b"teach_mug" in p, 20)[1])
    button = _check_payload(updated)["edged_ha1_teach_mug"]
    assert _check_payload(updated)["edged_ha1_present_knn_mug"]["state_topic"] == "edged/ha1/state/knn"

    # pressing it in Home Assistant publishes payload_press on command_topic: examples are stored
    probe.client.publish(button["command_topic"], button["payload_press"], qos=1).wait_for_publish(5)
    probe.wait_for(lambda t, p, r: t == "edged/ha1/status" and json.loads(p).get("examples", {}).get("mug") == 3, 30)

    # Home Assistant restarts: its birth message brings the discovery again
    probe.drain()
    probe.client.publish("homeassistant/status", b"online", qos=1).wait_for_publish(5)
    again = json.loads(probe.wait_for(lambda t, p, r: t == TOPIC and not r, 30)[1])
    assert again["components"].keys() == updated["components"].keys()

    # 200 births in a burst (any client can publish them) bring one discovery, not 200, and none is lost
    for _ in range(200):
        probe.client.publish("homeassistant/status", b"online", qos=0)
    burst = [m for m in probe.collect(TOPIC, 3.0)]
    assert len(burst) <= 1, len(burst)
    probe.wait_for(lambda t, p, r: t == TOPIC and not r, 20)  # the deferred re-send still comes

    # disabled: the retained discovery is removed
    assert d.stop() == 0
    d = daemons(_config(tmp_path, make_state, broker.port, False), tmp_path / "ha2.log")
    probe.wait_for(lambda t, p, r: t == TOPIC and p == b"", 60)
    assert d.stop() == 0
    check = make_client(MqttConfig(port=broker.port, protocol="3.1.1"), "ha-check")
    got = []
    check.on_message = lambda c, u, m: got.append(m.topic)
    check.connect("127.0.0.1", broker.port)
    check.subscribe("homeassistant/#")
    check.loop_start()
    # retained messages come on subscribing, before anything published after it: a marker of our own ends them
    wait_until(lambda: check.publish("homeassistant/edged-test/marker", b"m") and "homeassistant/edged-test/marker" in got,
               10, interval=0.2)
    check.loop_stop()
    assert TOPIC not in got  # no retained discovery left on the broker
