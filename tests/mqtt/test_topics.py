"""The topic tree from one place, and subscriptions that can be undone (a real mosquitto)."""

from __future__ import annotations

import queue

from edged.config import MqttConfig
from edged.mqtt.link import MqttLink
from edged.mqtt.topics import FleetTopics, Topics


def test_every_topic_carries_its_writers_name():
    fleet = FleetTopics("edged")
    door = Topics("edged", "door")
    assert door.command("capture") == "edged/door/cmd/capture" and door.reply("capture") == "edged/door/reply/capture"
    assert fleet.publisher("door") == "edged/door" and fleet.publisher("big", "trainer") == "edged/fleet/trainers/big"
    assert fleet.share(fleet.publisher("door"), "head", "knn") == "edged/door/share/head/knn"
    assert fleet.every_share("job", "big") == "edged/+/share/job/big/#"
    assert fleet.every_share("result", "door", role="trainer") == "edged/fleet/trainers/+/share/result/door/#"
    assert fleet.trainer_message("big", "done", "door") == "edged/fleet/trainers/big/done/door"
    trainer = fleet.trainer("big")
    assert trainer.status == "edged/fleet/trainers/big" and trainer.commands == "edged/fleet/trainers/big/cmd/+"
    assert fleet.is_fleet_command("edged/fleet/cmd/status") and not fleet.is_fleet_command("edged/door/cmd/status")


def test_a_route_can_be_undone(broker, probe):
    got: "queue.Queue[str]" = queue.Queue()
    link = MqttLink(MqttConfig(port=broker.port), "routes", lambda c: None, lambda: {"state": "online"})
    undo = link.route("edged/elsewhere/#", lambda t, p, r: got.put(bytes(p).decode()))
    link.route("edged/marker", lambda t, p, r: got.put("marker"))
    link.start()
    try:
        assert link.connected.wait(10)
        probe.wait_online("routes")
        probe.client.publish("edged/elsewhere/x", b"one", qos=1).wait_for_publish(5)
        assert got.get(timeout=10) == "one"
        undo()
        link.publish("edged/routes/synced", {}, qos=1)  # after the unsubscribe on the same connection
        probe.wait_for(lambda t, p, r: t == "edged/routes/synced", 10)
        probe.client.publish("edged/elsewhere/x", b"two", qos=1).wait_for_publish(5)
        probe.client.publish("edged/marker", b"", qos=1).wait_for_publish(5)
        assert got.get(timeout=10) == "marker"  # "two" would have come first
        assert got.empty()
    finally:
        link.stop()


def test_a_reply_names_its_sender_in_its_topic():
    """Issue 34, 13: who answered is read from the reply's topic, which the ACL template lets each account write
    under its own name only; what a reply claims counts only on the bare topic of an edged from before."""
    from edged.mqtt.topics import FleetTopics

    fleet = FleetTopics("edged")
    base = fleet.client_reply("s1")
    assert fleet.is_client_reply(base) and not fleet.is_client_reply("edged/yard/cmd/forget")
    assert not fleet.is_client_reply("edged/clients//reply") and not fleet.is_client_reply(base + "/door")
    assert fleet.replier(base + "/door", "s1", claimed="yard") == "door"
    assert fleet.replier("edged/door/reply/status", "s1", claimed="yard") == "door"
    assert fleet.replier(base, "s1", claimed="yard") == "yard"  # bare: an older daemon's answer
    assert fleet.replier(base + "/door/x", "s1") is None and fleet.replier("edged/clients/s2/reply/door", "s1") is None
    assert fleet.replier("edged/fleet/reply/status", "s1") is None
