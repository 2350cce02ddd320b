"""Every template Home Assistant is given renders against every payload its topic can carry (issue 35, 2: the
examples sensor raised "'dict object' has no attribute 'examples'" at every stop, on the status topic's last will).
Rendered with Jinja2's sandbox and strict undefined names, as Home Assistant reports them."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from edged.config import BackboneConfig
from edged.mqtt.discovery import DeviceFacts, components, discovery_payload, entity_payloads
from edged.mqtt.link import OFFLINE
from edged.mqtt.topics import Topics
from edged.scene.events import Event
from edged.state.backbones import short_name

jinja2 = pytest.importorskip("jinja2")
from jinja2.sandbox import ImmutableSandboxedEnvironment  # noqa: E402  (after the skip)


def _payloads(topics: Topics, heads: list[str]) -> dict[str, list[dict]]:
    """What each topic carries: the messages edged builds, and the last will."""
    out = {topics.status: [{"state": "online", "examples": {"mug": 3, "keys": 4}}, dict(OFFLINE)],
           topics.stats: [{"fps_out": 9.5, "fps_in": 10.0}]}
    for head in heads:
        event = Event("20261207-101010-abcdef", head, "", "mug", 1.7e9, 0.9, 0.95)
        state = {"head": head, "label": "mug", "since": 1.7e9, "score": 0.9, "frame": 12, "event": None}
        out[topics.state(head)] = [state, {**state, "label": "none", "event": event.id}]
        out[topics.event(head)] = [event.message(kind) for kind in ("start", "update", "end")]
    return out


def test_every_template_renders_on_every_payload_of_its_topic():
    topics = Topics("edged", "desk")
    facts = DeviceFacts("desk", "0.1.0", "MobileNet v1 0.25/128", ["knn", "classifier"], ["mug", "keys"], 5)
    config = discovery_payload(topics, facts)
    env = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined)
    # Home Assistant's own filter of that name: a UNIX timestamp as an ISO date and time in UTC
    env.filters["timestamp_utc"] = lambda v: datetime.fromtimestamp(v, timezone.utc).isoformat()
    carried = _payloads(topics, facts.heads)
    rendered = 0
    for cid, component in config["components"].items():
        for key, topic_key in (("value_template", "state_topic"), ("json_attributes_template", "json_attributes_topic")):
            if key not in component:
                continue
            for payload in carried[component[topic_key]]:
                value = env.from_string(component[key]).render(value_json=payload, value=json.dumps(payload))
                assert value is not None, (cid, key, payload)
                rendered += 1
    for availability in config["availability"]:
        for payload in carried[availability["topic"]]:
            assert env.from_string(availability["value_template"]).render(value_json=payload) in ("online", "offline")
    assert rendered > 10


def test_the_device_model_is_a_short_name():
    """Issue 35, 3: the model read `... weights <the folder it was read from>/mobilenet_v1_0.25_128_...h5`."""
    assert short_name(BackboneConfig(weights="/home/me/models/mobilenet_v1_0.25_128_imagenet_no_top.weights.h5")) \
        == "MobileNet v1 0.25/128"
    assert short_name(BackboneConfig(family="tflite", path="/opt/m/extractor.tflite")) == "tflite extractor.tflite"


def test_entity_ids_do_not_change_when_a_head_is_added():
    """Issue 35, 4: the kNN's binary sensors were renamed "(knn)" when the classifier came, and their entity ids
    followed. An entity's unique and default entity id, and its name, depend on what it is, not on the other heads."""
    topics = Topics("edged", "desk")
    one = components(topics, DeviceFacts("desk", "0.1.0", "m", ["knn"], ["mug"], 5))
    two = components(topics, DeviceFacts("desk", "0.1.0", "m", ["knn", "classifier"], ["mug"], 5))
    for cid, entity in one.items():
        assert {k: entity[k] for k in ("name", "object_id", "default_entity_id")} == \
            {k: two[cid][k] for k in ("name", "object_id", "default_entity_id")}, cid
    assert one["edged_desk_present_knn_mug"]["default_entity_id"] == "binary_sensor.desk_present_knn_mug"
    assert len({e["default_entity_id"] for e in two.values()}) == len(two)


def test_names_categories_and_units_follow_home_assistant():
    """Issue 35, 5: names read as code, no device class on the event entity, teach buttons among the controls, an
    fps unit Home Assistant does not know, a count without a unit."""
    found = components(Topics("edged", "desk"), DeviceFacts("desk", "0.1.0", "m", ["knn"], ["mug"], 5))
    by_platform = {}
    for entity in found.values():
        by_platform.setdefault(entity["platform"], []).append(entity)
        assert not entity["name"].lower().startswith("desk"), entity["name"]  # the device's name is shown before it
    assert by_platform["event"][0]["device_class"] == "motion"
    teach = [b for b in by_platform["button"] if b["command_topic"].endswith("/capture")]
    assert [(b["name"], b["entity_category"]) for b in teach] == [("Teach mug", "config")]
    wrong = [b for b in by_platform["button"] if b["command_topic"].endswith("/wrong")]  # issue 37, 4
    assert [(b["name"], json.loads(b["payload_press"])) for b in wrong] == [("Wrong (knn)", {"head": "knn"})]
    fps = found["edged_desk_fps"]
    assert fps["device_class"] == "frequency" and fps["unit_of_measurement"] == "Hz"
    assert fps["entity_category"] == found["edged_desk_examples"]["entity_category"] == "diagnostic"
    assert found["edged_desk_examples"]["unit_of_measurement"]
    without = components(Topics("edged", "desk"), DeviceFacts("desk", "0.1.0", "m", ["knn"], ["mug"], 5,
                                                              event_image=False))
    assert "edged_desk_event_snapshot" in found and "edged_desk_event_snapshot" not in without


def test_per_entity_discovery_carries_the_device_in_each_entity():
    """Issue 35, 1: Home Assistant before 2024.11 logged `Integration device is not supported` and made nothing of
    the device payload; `[homeassistant] discovery = "entity"` announces each entity on its own topic."""
    topics = Topics("edged", "desk")
    facts = DeviceFacts("desk", "0.1.0", "m", ["knn"], ["mug"], 5)
    payloads = entity_payloads(topics, facts, "homeassistant")
    assert len(payloads) == len(components(topics, facts))
    assert "homeassistant/binary_sensor/edged_desk/present_knn_mug/config" in payloads
    for topic, payload in payloads.items():
        platform = topic.split("/")[1]
        assert payload["device"]["identifiers"] == ["edged_desk"] and "platform" not in payload
        assert payload["default_entity_id"].startswith(platform + ".") and payload["availability"]
