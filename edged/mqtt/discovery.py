"""Home Assistant MQTT discovery: a daemon's entities, announced one of two ways.

* `device` (Home Assistant 2024.11 and later): one retained payload at `<prefix>/device/<node>/config` listing every
  entity as a component.
* `entity` (any Home Assistant since 2023.8, when MQTT entity names became relative to their device): one retained
  payload per entity at `<prefix>/<platform>/<node>/<object>/config`, each carrying the device.

Both name the daemon's own topics, so Home Assistant reads states (retained, sent only on change: the recorder writes
a row per change, not per frame), events, stats, status and snapshots, and presses buttons by publishing `capture`
commands. An entity's unique id and its default entity id are fixed by what it is (device, head, place, label),
never by how many heads or places there are, so automations keep working when a head is added. Built from plain
values (no MQTT client here).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from .topics import Topics

ORIGIN = {"name": "edged", "support_url": "https://github.com/edged/edged"}
MODES = ("device", "entity")


def node_id(device: str) -> str:
    return "edged_" + re.sub(r"[^a-zA-Z0-9_-]", "_", device)


def discovery_topic(discovery_prefix: str, device: str) -> str:
    """Where the device-based payload goes."""
    return f"{discovery_prefix}/device/{node_id(device)}/config"


def entity_topic(discovery_prefix: str, device: str, platform: str, unique_id: str) -> str:
    """Where one entity's payload goes in per-entity discovery."""
    node = node_id(device)
    return f"{discovery_prefix}/{platform}/{node}/{unique_id.removeprefix(node + '_')}/config"


def birth_topic(discovery_prefix: str) -> str:
    """Where Home Assistant says `online` when it (re)starts."""
    return f"{discovery_prefix}/status"


def _first_upper(text: str) -> str:
    return text[:1].upper() + text[1:]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9_]", "_", text.lower())[:48] or "x"


@dataclass
class DeviceFacts:
    device: str
    version: str
    model: str  # the backbone's short name
    heads: list[str]  # active heads: one sensor each
    labels: list[str]  # known labels: one teach button each, one "present" binary sensor per head and place
    capture_count: int
    regions: tuple[str, ...] = ("",)  # the places states are kept for: "" the whole frame, "[source/]region"
    sources: tuple[str, ...] = ("",)  # "" the one source; else a teach button per label and source
    event_image: bool = True  # the last event's best frame as an image entity (one recorder row per event)


EVENT_TEMPLATE = ("{{ {'event_type': value_json.type, 'label': value_json.label, 'id': value_json.id, "
                  "'top_score': value_json.top_score} | tojson }}")
# `since` is epoch seconds on the wire; Home Assistant shows an ISO timestamp (UTC)
STATE_ATTRIBUTES = ("{{ {'since': (value_json.since | timestamp_utc) if value_json.since else none, "
                    "'score': value_json.score, 'event': value_json.event} | tojson }}")


def _entity(node: str, device: str, key: str, platform: str, name: str, **fields) -> tuple[str, dict]:
    """One entity: its unique id `<node>_<key>`, and a default entity id `<platform>.<device>_<key>` that does not
    depend on its name."""
    unique = f"{node}_{key}"
    object_id = f"{_slug(device)}_{key}"
    return unique, {"platform": platform, "name": name, "unique_id": unique, "object_id": object_id,
                    "default_entity_id": f"{platform}.{object_id}", **fields}


def _state_entities(topics: Topics, node: str, device: str, head: str, region: str, labels: list[str]) -> dict:
    """A head's (or a head's in a place) state sensor, one 'present' binary sensor per label, its event entity."""
    key = _slug(head) + (f"_{_slug(region)}" if region else "")
    where = f"{region} " if region else ""
    state = topics.state(head, region)
    out = dict([
        _entity(node, device, f"head_{key}", "sensor", _first_upper(f"{where}label ({head})"), state_topic=state,
                value_template="{{ value_json.label }}", json_attributes_topic=state,
                json_attributes_template=STATE_ATTRIBUTES, icon="mdi:eye"),
        _entity(node, device, f"event_{key}", "event", _first_upper(f"{where}event ({head})"),
                state_topic=topics.event(head, region), event_types=["start", "update", "end"],
                value_template=EVENT_TEMPLATE, device_class="motion"),
    ])

    for label in labels:
        if label in ("none", "unknown"):
            continue
        out.update([_entity(node, device, f"present_{key}_{_slug(label)}", "binary_sensor", f"{where}{label} ({head})",
                            state_topic=state, device_class="occupancy",
                            value_template="{{ 'ON' if value_json.label == %s else 'OFF' }}" % json.dumps(label))])
    return out


def components(topics: Topics, facts: DeviceFacts) -> dict[str, dict]:
    """Every entity of the device by unique id, each with its `platform`."""
    node, device = node_id(facts.device), facts.device
    out: dict[str, dict] = {}
    for head in facts.heads:
        for region in facts.regions:
            out.update(_state_entities(topics, node, device, head, region, facts.labels))
        # "that was wrong": the head's newest event, wherever it was, becomes an example of background
        out.update([_entity(node, device, f"wrong_{_slug(head)}", "button", f"Wrong ({head})",
                            command_topic=topics.command("wrong"), payload_press=json.dumps({"head": head}),
                            icon="mdi:thumb-down")])
    for label in facts.labels:
        for source in facts.sources:
            payload = json.dumps({"label": label, "count": facts.capture_count, **({"source": source} if source else {})})
            out.update([_entity(node, device, f"teach_{_slug(label)}" + (f"_{_slug(source)}" if source else ""),
                                "button", f"Teach {label}" + (f" at {source}" if source else ""),
                                command_topic=topics.command("capture"), payload_press=payload, icon="mdi:school",
                                entity_category="config")])
    out.update([_entity(node, device, "snapshot", "image", "Snapshot", image_topic=topics.snapshot,
                        content_type="image/jpeg")])
    if facts.event_image:
        out.update([_entity(node, device, "event_snapshot", "image", "Last event", image_topic=topics.event_snapshot,
                            content_type="image/jpeg")])
    out.update([
        _entity(node, device, "fps", "sensor", "Inference rate", state_topic=topics.stats,
                value_template="{{ value_json.fps_out }}", device_class="frequency", unit_of_measurement="Hz",
                state_class="measurement", suggested_display_precision=1, entity_category="diagnostic"),
        # the status topic also carries the last will, {"state": "offline"}
        _entity(node, device, "examples", "sensor", "Examples", state_topic=topics.status,
                value_template="{{ (value_json.examples | default({})).values() | sum }}",
                unit_of_measurement="examples", state_class="measurement", icon="mdi:image-multiple",
                entity_category="diagnostic"),
    ])
    return out


def _shared(topics: Topics, facts: DeviceFacts) -> dict:
    return {
        "device": {"identifiers": [node_id(facts.device)], "name": facts.device, "manufacturer": "edged",
                   "model": facts.model, "sw_version": facts.version},
        "origin": {**ORIGIN, "sw_version": facts.version},
        "availability": [{"topic": topics.status, "value_template": "{{ value_json.state }}",
                          "payload_available": "online", "payload_not_available": "offline"}],
        "qos": 1,
    }


def discovery_payload(topics: Topics, facts: DeviceFacts, removed: dict[str, str] | None = None) -> dict:
    """The device-based discovery config. `removed` (component id -> platform) are sent with only their platform,
    which is how Home Assistant is told to drop an entity of a device payload."""
    found = components(topics, facts)
    for cid, platform in (removed or {}).items():
        found.setdefault(cid, {"platform": platform})
    return {**_shared(topics, facts), "components": found}


def entity_payloads(topics: Topics, facts: DeviceFacts, discovery_prefix: str) -> dict[str, dict]:
    """Per-entity discovery: each entity's config topic and payload (the device's shared fields in each)."""
    shared = _shared(topics, facts)
    out = {}
    for cid, component in components(topics, facts).items():
        fields = {k: v for k, v in component.items() if k != "platform"}
        out[entity_topic(discovery_prefix, facts.device, component["platform"], cid)] = {**fields, **shared}
    return out
