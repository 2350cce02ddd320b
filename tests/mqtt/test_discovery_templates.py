"""Every template Home Assistant is given renders against every payload its topic can carry (issue 35, 2: the
examples sensor raised "'dict object' has no attribute 'examples'" at every stop, on the status topic's last will).
Rendered with Jinja2's sandbox and strict undefined names, as Home Assistant reports them."""

from __future__ import annotations

import json

import pytest

from edged.config import BackboneConfig
from edged.mqtt.discovery import DeviceFacts, discovery_payload
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
