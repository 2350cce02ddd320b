"""The broker as a second wall: deploy/mosquitto-acl.conf on a real mosquitto, one account per device; an account
cannot publish in another device's or a trainer's tree, nor the fleet's revocation list, nor answer for another;
Home Assistant's account presses capture buttons only; no device reads another's frames, states or replies."""

from __future__ import annotations

import queue
import shutil
import subprocess
import uuid

import paho.mqtt.client as mqtt
import pytest
from conftest import ROOT

from edged.config import MqttConfig
from edged.mqtt.broker import MosquittoBroker, find_mosquitto
from edged.mqtt.client import make_client

pytestmark = pytest.mark.skipif(find_mosquitto() is None or shutil.which("mosquitto_passwd") is None,
                                reason="mosquitto and mosquitto_passwd needed")
ACCOUNTS = {"door": "door-Secret-1", "yard": "yard-Secret-2", "big": "big-Secret-3", "admin": "admin-Secret-4",
            "homeassistant": "ha-Secret-5"}


def _client(port: int, user: str, inbox: "queue.Queue | None" = None) -> mqtt.Client:
    client = make_client(MqttConfig(port=port, username=user, password=ACCOUNTS[user]), f"{user}-{uuid.uuid4().hex[:6]}")
    connected = queue.Queue()
    client.on_connect = lambda c, u, f, rc, p=None: connected.put(rc)
    if inbox is not None:
        client.on_message = lambda c, u, m: inbox.put((m.topic, m.payload.decode()))
    client.connect("127.0.0.1", port)
    client.loop_start()
    assert not connected.get(timeout=10).is_failure
    return client


def _broker(tmp_path) -> MosquittoBroker:
    passwd = tmp_path / "passwd"
    for i, (user, password) in enumerate(ACCOUNTS.items()):
        subprocess.run(["mosquitto_passwd", "-b"] + (["-c"] if i == 0 else []) + [str(passwd), user, password], check=True)
    passwd.chmod(0o600)
    broker = MosquittoBroker(extra_config=f"password_file {passwd}\nacl_file {ROOT / 'deploy' / 'mosquitto-acl.conf'}\n")
    broker.conf.write_text(broker.conf.read_text().replace("allow_anonymous true", "allow_anonymous false"))
    return broker.start()


def test_each_account_writes_only_its_own_tree(tmp_path):
    broker = _broker(tmp_path)
    seen: "queue.Queue[tuple[str, str]]" = queue.Queue()
    admin = _client(broker.port, "admin", seen)
    admin.subscribe([("edged/#", 1), ("homeassistant/#", 1)])
    door, big, ha = _client(broker.port, "door"), _client(broker.port, "big"), _client(broker.port, "homeassistant")
    try:
        allowed = {(door, "edged/door/share/head/classifier/manifest"), (door, "edged/door/status"),
                   (door, "homeassistant/device/edged_door/config"), (big, "edged/fleet/trainers/big"),
                   (door, "homeassistant/binary_sensor/edged_door/present_knn_cat/config"),
                   (ha, "edged/door/cmd/wrong"),
                   (big, "edged/fleet/trainers/big/share/result/door/manifest"),
                   (door, "edged/clients/s1/reply/door"), (ha, "edged/door/cmd/capture")}
        denied = {(door, "edged/yard/share/head/classifier/manifest"), (door, "edged/yard/status"),
                  (door, "edged/fleet/trainers/big"), (door, "edged/fleet/trainers/0-rogue"),
                  (door, "edged/fleet/revoked"), (door, "homeassistant/device/edged_yard/config"),
                  (door, "homeassistant/binary_sensor/edged_yard/present_knn_cat/config"),
                  (big, "edged/door/share/job/big/manifest"), (big, "edged/fleet/trainers/other/done/door"),
                  (door, "edged/clients/s1/reply/yard"), (door, "edged/clients/s1/reply"),  # a forged answer
                  (ha, "edged/door/cmd/forget"), (ha, "edged/fleet/cmd/forget"), (ha, "edged/door/cmd/delete")}
        # left: `edged/+/cmd/capture` matches the fleet's capture topic too (an ACL wildcard cannot leave one level out)
        name = {door: "door", big: "big", ha: "homeassistant"}
        for client, topic in sorted(allowed | denied, key=lambda ct: ct[1]):
            client.publish(topic, name[client].encode(), qos=1).wait_for_publish(5)
        for client in (door, big, ha):  # the last message of each: everything before it is in
            client.publish(f"edged/{name[client]}/end", name[client].encode(), qos=1).wait_for_publish(5)
        got, ends = set(), 0
        while ends < 3:
            topic, sender = seen.get(timeout=10)
            ends += topic.endswith("/end")
            got.add((topic, sender))
        assert {(t, name[c]) for c, t in allowed} <= got
        assert not got & {(t, name[c]) for c, t in denied}, got & {(t, name[c]) for c, t in denied}
    finally:
        for client in (admin, door, big, ha):
            client.loop_stop()
            client.disconnect()
        broker.close()


def test_a_device_reads_no_other_devices_frames_states_or_replies(tmp_path):
    """Issue 34, 6: `edged/<device>/snapshot` and `event_snapshot` (retained JPEGs) were readable by every account.
    Another device reads a device's status, stats and shares only; Home Assistant's account reads the frames its
    image entities show."""
    broker = _broker(tmp_path)
    door_sees: "queue.Queue[tuple[str, str]]" = queue.Queue()
    ha_sees: "queue.Queue[tuple[str, str]]" = queue.Queue()
    door, ha = _client(broker.port, "door", door_sees), _client(broker.port, "homeassistant", ha_sees)
    yard = _client(broker.port, "yard")
    try:
        for client, inbox, user in ((door, door_sees, "door"), (ha, ha_sees, "homeassistant")):
            client.subscribe("edged/#", qos=1)
            while True:  # the subscription holds once a message of its own comes back through it
                client.publish(f"edged/{user}/ready", b"", qos=1).wait_for_publish(5)
                try:
                    if inbox.get(timeout=1)[0] == f"edged/{user}/ready":
                        break
                except queue.Empty:
                    continue
        published = ["edged/yard/snapshot", "edged/yard/event_snapshot", "edged/yard/state/knn",
                     "edged/yard/event/knn", "edged/yard/reply/snapshot", "edged/yard/prediction/knn",
                     "edged/yard/status", "edged/yard/stats", "edged/yard/share/examples/yard/manifest",
                     "edged/yard/end"]
        for topic in published:
            yard.publish(topic, b"yard", qos=1).wait_for_publish(5)
        for inbox, last in ((door_sees, "edged/yard/share/examples/yard/manifest"), (ha_sees, "edged/yard/end")):
            got = []
            while not got or got[-1] != last:
                topic = inbox.get(timeout=10)[0]
                if not topic.endswith("/ready"):
                    got.append(topic)
            if inbox is door_sees:
                assert got == ["edged/yard/status", "edged/yard/stats", last], got
            else:
                assert got == published, got
    finally:
        for client in (door, ha, yard):
            client.loop_stop()
            client.disconnect()
        broker.close()
