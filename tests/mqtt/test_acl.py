"""The broker as a second wall: deploy/mosquitto-acl.conf on a real mosquitto, one account per device; an account
cannot publish in another device's or a trainer's tree, nor the fleet's revocation list."""

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
ACCOUNTS = {"door": "door-Secret-1", "yard": "yard-Secret-2", "big": "big-Secret-3", "admin": "admin-Secret-4"}


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


def test_each_account_writes_only_its_own_tree(tmp_path):
    passwd = tmp_path / "passwd"
    for i, (user, password) in enumerate(ACCOUNTS.items()):
        subprocess.run(["mosquitto_passwd", "-b"] + (["-c"] if i == 0 else []) + [str(passwd), user, password], check=True)
    passwd.chmod(0o600)
    broker = MosquittoBroker(extra_config=f"password_file {passwd}\nacl_file {ROOT / 'deploy' / 'mosquitto-acl.conf'}\n")
    broker.conf.write_text(broker.conf.read_text().replace("allow_anonymous true", "allow_anonymous false"))
    broker.start()
    seen: "queue.Queue[tuple[str, str]]" = queue.Queue()
    admin = _client(broker.port, "admin", seen)
    admin.subscribe([("edged/#", 1), ("homeassistant/#", 1)])
    door, big = _client(broker.port, "door"), _client(broker.port, "big")
    try:
        allowed = {(door, "edged/door/share/head/classifier/manifest"), (door, "edged/door/status"),
                   (door, "homeassistant/device/edged_door/config"), (big, "edged/fleet/trainers/big"),
                   (big, "edged/fleet/trainers/big/share/result/door/manifest")}
        denied = {(door, "edged/yard/share/head/classifier/manifest"), (door, "edged/yard/status"),
                  (door, "edged/fleet/trainers/big"), (door, "edged/fleet/trainers/0-rogue"),
                  (door, "edged/fleet/revoked"), (door, "homeassistant/device/edged_yard/config"),
                  (big, "edged/door/share/job/big/manifest"), (big, "edged/fleet/trainers/other/done/door")}
        name = {door: "door", big: "big"}
        for client, topic in sorted(allowed | denied, key=lambda ct: ct[1]):
            client.publish(topic, name[client].encode(), qos=1).wait_for_publish(5)
        for client in (door, big):  # the last message of each: everything before it is in
            client.publish(f"edged/{name[client]}/end", name[client].encode(), qos=1).wait_for_publish(5)
        got, ends = set(), 0
        while ends < 2:
            topic, sender = seen.get(timeout=10)
            ends += topic.endswith("/end")
            got.add((topic, sender))
        assert {(t, name[c]) for c, t in allowed} <= got
        assert not got & {(t, name[c]) for c, t in denied}, got & {(t, name[c]) for c, t in denied}
    finally:
        for client in (admin, door, big):
            client.loop_stop()
            client.disconnect()
        broker.close()
