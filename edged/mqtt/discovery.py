"""Home Assistant MQTT discovery: one device-based discovery payload describing a daemon's entities.

The payload goes retained to `<discovery_prefix>/device/<node>/config`; it names the daemon's own topics, so
Home Assistant reads states (retained, sent only on change: the recorder writes a row per change, not per frame),
events, stats, status and snapshots, and presses buttons by publishing `capture` commands. Built from plain values
(no MQTT client here).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from .topics import Topics

ORIGIN = {"name": "edged", "support_url": "https://github.com/edged/edged"}


def node_id(device: str) -> str:
    return "edged_" + re.sub(r"[^a-zA-Z0-9_-]", "_", device)


def discovery_topic(discovery_prefix: str, device: str) -> str:
    return f"{discovery_prefix}/device/{node_id(device)}/config"


def birth_topic(discovery_prefix: str) -> str:
    """Where Home Assistant says `online` when it (re)starts."""
    return f"{discovery_prefix}/status"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9_]", "_", text.lower())[:48] or "x"


@dataclass
class DeviceFacts:
    device: str
    version: str
    model: str  # the backbone's description
    heads: list[str]  # active heads: one sensor each
    labels: list[str]  # known labels: one capture button each, one "present" binary sensor per head and region
    capture_count: int
    regions: tuple[str, ...] = ("",)  # the places states are kept for: "" the whole frame, "[source/]region"
    sources: tuple[str, ...] = ("",)  # "" the one source; else a capture button per label and source


EVENT_TEMPLATE = ("{{ {'event_type': value_json.type, 'label': value_json.label, 'id': value_json.id, "
                  "'top_score': value_json.top_score} | tojson }}")


def _state_entities(topics: Topics, node: str, head: str, region: str, labels: list[str], several: bool) -> dict:
    """A head's (or a head's in a region) state sensor, one 'present' binary sensor per label, its event entity."""
    key = _slug(head) + (f"_{_slug(region)}" if region else "")
    where = f"{region} " if region else ""
    suffix = f" ({head})" if several else ""
    state = topics.state(head, region)
    out = {f"{node}_head_{key}": {
        "platform": "sensor", "name": f"{where}{head}", "unique_id": f"{node}_head_{key}",
        "state_topic": state, "value_template": "{{ value_json.label }}", "json_attributes_topic": state,
        "json_attributes_template": "{{ {'since': value_json.since, 'score': value_json.score, "
                                    "'event': value_json.event} | tojson }}",
        "icon": "mdi:eye"}}
    for label in labels:
        if label in ("none", "unknown"):
            continue
        cid = f"{node}_present_{key}_{_slug(label)}"
        out[cid] = {"platform": "binary_sensor", "name": f"{where}{label} present{suffix}", "unique_id": cid,
                    "state_topic": state, "value_template": "{{ 'ON' if value_json.label == %s else 'OFF' }}"
                    % json.dumps(label), "device_class": "occupancy"}
    out[f"{node}_event_{key}"] = {"platform": "event", "name": f"{where}{head} event", "unique_id": f"{node}_event_{key}",
                                  "state_topic": topics.event(head, region), "event_types": ["start", "update", "end"],
                                  "value_template": EVENT_TEMPLATE}
    return out


def discovery_payload(topics: Topics, facts: DeviceFacts, removed: dict[str, str] | None = None) -> dict:
    """The device-based discovery config. `removed` (component id -> platform) are sent with only their platform,
    which is how Home Assistant is told to drop an entity of a device payload."""
    node = node_id(facts.device)
    components: dict[str, dict] = {}
    several = len(facts.heads) > 1
    for head in facts.heads:
        for region in facts.regions:
            components.update(_state_entities(topics, node, head, region, facts.labels, several))
    for label in facts.labels:
        for source in facts.sources:
            cid = f"{node}_teach_{_slug(label)}" + (f"_{_slug(source)}" if source else "")
            components[cid] = {
                "platform": "button", "name": f"this is {label}" + (f" at {source}" if source else ""), "unique_id": cid,
                "command_topic": topics.command("capture"), "icon": "mdi:school",
                "payload_press": json.dumps({"label": label, "count": facts.capture_count,
                                             **({"source": source} if source else {})}),
            }
    components[f"{node}_snapshot"] = {"platform": "image", "name": "snapshot", "unique_id": f"{node}_snapshot",
                                       "image_topic": topics.snapshot, "content_type": "image/jpeg"}
    components[f"{node}_event_snapshot"] = {"platform": "image", "name": "last event", "unique_id": f"{node}_event_snapshot",
                                             "image_topic": topics.event_snapshot, "content_type": "image/jpeg"}
    components[f"{node}_fps"] = {"platform": "sensor", "name": "fps", "unique_id": f"{node}_fps",
                                  "state_topic": topics.stats, "value_template": "{{ value_json.fps_out }}",
                                  "unit_of_measurement": "fps", "state_class": "measurement", "entity_category": "diagnostic"}
    components[f"{node}_examples"] = {"platform": "sensor", "name": "examples", "unique_id": f"{node}_examples",
                                       "state_topic": topics.status,
                                       # the status topic also carries the last will, {"state": "offline"}
                                       "value_template": "{{ (value_json.examples | default({})).values() | sum }}",
                                       "state_class": "measurement", "entity_category": "diagnostic"}
    for cid, platform in (removed or {}).items():
        components.setdefault(cid, {"platform": platform})
    return {
        "device": {"identifiers": [node], "name": facts.device, "manufacturer": "edged", "model": facts.model,
                   "sw_version": facts.version},
        "origin": {**ORIGIN, "sw_version": facts.version},
        "availability": [{"topic": topics.status, "value_template": "{{ value_json.state }}",
                          "payload_available": "online", "payload_not_available": "offline"}],
        "qos": 1,
        "components": components,
    }
