"""The fleet as the broker sees it: devices from their retained status and stats, commands sent to many and answered
per device. Nothing here is a registry: every answer is read from the broker at the time of asking."""

from __future__ import annotations

import json
import queue
import time
import uuid
from dataclasses import dataclass, field
from typing import Iterable, Optional

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from .. import wire
from ..config import Config
from ..mqtt.requests import BrokerClient
from ..mqtt.topics import FleetTopics


@dataclass
class Device:
    """One row of `edged fleet ls`, built from `<prefix>/<device>/status` and `<prefix>/<device>/stats`."""

    name: str
    status: dict = field(default_factory=dict)
    stats: dict = field(default_factory=dict)

    @property
    def online(self) -> bool:
        return self.status.get("state") == "online"

    @property
    def last_seen(self) -> Optional[float]:
        seen = [v for v in (self.status.get("ts"), self.stats.get("ts")) if isinstance(v, (int, float))]
        return max(seen) if seen else None

    def row(self) -> dict:
        heads = self.status.get("heads") or {}
        models = {name: {k: h["model"].get(k) for k in ("version", "sha256", "quantization")}
                  for name, h in heads.items() if isinstance(h, dict) and isinstance(h.get("model"), dict)}
        versions = {name: h.get("version") for name, h in heads.items() if isinstance(h, dict) and h.get("version")}
        examples = self.status.get("examples") or {}
        latency = self.stats.get("latency_ms") or {}
        return {
            "device": self.name,
            "state": self.status.get("state", "unknown"),
            "version": self.status.get("version"),
            "source": (self.status.get("source") or {}).get("state"),
            "sources": {str(k): v.get("state") for k, v in (self.status.get("sources") or {}).items()
                        if isinstance(v, dict)},
            "active": self.status.get("active") or [],
            "backbone": self.status.get("model"),
            "model_sha": self.status.get("model_sha"),
            "models": models,
            "head_versions": versions,
            "examples": examples,
            "fps": self.stats.get("fps_out"),
            "p99_ms": latency.get("p99"),
            "last_seen": self.last_seen,
        }


def _json(data: bytes) -> Optional[dict]:
    try:
        value = wire.loads(data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def device_of(prefix: str, topic: str, leaf: str) -> Optional[str]:
    """`<prefix>/<device>/<leaf>` -> device, else None."""
    parts = topic.split("/")
    head = prefix.split("/")
    if len(parts) != len(head) + 2 or parts[:len(head)] != head or parts[-1] != leaf or parts[len(head)] == "fleet":
        return None
    return parts[len(head)]


def list_devices(client: BrokerClient, prefix: str, quiet_s: float = 0.3, max_wait_s: float = 5.0,
                 trainers: Optional[dict] = None) -> dict[str, Device]:
    """Every device with a retained status (and its retained stats); trainer nodes' statuses go into `trainers`.

    The broker sends retained messages when it takes the subscription; a message we then publish to a topic of our
    own comes after them, so its arrival ends the listing. Where it cannot come (an ACL), the listing ends `quiet_s`
    after the last message, at `max_wait_s` in any case.
    """
    devices: dict[str, Device] = {}
    fleet = FleetTopics(prefix)
    sync = fleet.client_sync(client.session)
    client.subscribe(fleet.every_status)
    client.subscribe(fleet.every_stats)
    trainer_topic = fleet.trainer_status()
    if trainers is not None:
        client.subscribe(trainer_topic)
    client.subscribe(sync)
    client.client.publish(sync, b"", qos=1)
    start = last = time.monotonic()
    while True:
        now = time.monotonic()
        if now - start >= max_wait_s or (now - last >= quiet_s and now - start >= 1.0):
            break
        try:
            topic, data, _ = client.inbox.get(timeout=0.02)
        except queue.Empty:
            continue
        if topic == sync:
            break
        last = time.monotonic()
        if trainers is not None and topic.startswith(trainer_topic[:-1]) and "/" not in topic[len(trainer_topic) - 1:]:
            body = _json(data)
            if body is not None:
                trainers[topic.rsplit("/", 1)[-1]] = body
            continue
        for leaf in ("status", "stats"):
            name = device_of(prefix, topic, leaf)
            body = _json(data) if name is not None else None
            if body is not None:
                setattr(devices.setdefault(name, Device(name)), leaf, body)
    client.client.unsubscribe([fleet.every_status, fleet.every_stats, sync, trainer_topic])
    return devices


@dataclass
class Outcome:
    device: str
    ok: Optional[bool] = None  # None: no reply by the deadline
    result: object = None
    error: Optional[str] = None
    ms: Optional[float] = None

    @property
    def state(self) -> str:
        return "no reply" if self.ok is None else ("ok" if self.ok else "error")


def send(client: BrokerClient, prefix: str, command: str, payload: dict, devices: Optional[Iterable[str]],
         timeout: float, known: Optional[Iterable[str]] = None) -> dict[str, Outcome]:
    """Send `command` to `devices` (None: the fleet topic, expecting `known` devices) and collect one final reply per
    device by `timeout` seconds. Replies are matched by correlation id; they come on the MQTT 5 response topic, or on
    `<prefix>/<device>/reply/<command>` from devices or bridges speaking MQTT 3.1.1."""
    corr = str(payload.setdefault("id", f"fleet-{uuid.uuid4().hex[:12]}"))
    fleet = FleetTopics(prefix)
    response_topic = fleet.client_reply(client.session)
    client.subscribe(response_topic + "/#")  # each device answers under its own name (an older one: bare)
    client.subscribe(fleet.every_reply(command))
    targets = list(devices) if devices else None
    outcomes = {d: Outcome(d) for d in (targets or known or [])}
    data = json.dumps(payload)
    props = None
    if client.v5:
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = response_topic
        props.CorrelationData = corr.encode()
    sent = time.monotonic()
    topics = [fleet.device(d).command(command) for d in targets] if targets else [fleet.fleet_command(command)]
    for topic in topics:
        client.client.publish(topic, data, qos=1, properties=props)
    deadline = sent + timeout
    for topic, body, _ in client.messages(deadline):
        reply = _json(body)
        if reply is None or str(reply.get("id")) != corr or not reply.get("final", True):
            continue
        name = fleet.replier(topic, client.session, reply.get("device"))  # who replied: its topic says
        if not name or (targets is not None and name not in outcomes) or reply.get("device", name) != name:
            continue
        out = outcomes.setdefault(name, Outcome(name))
        if out.ok is not None:
            continue
        out.ok = bool(reply.get("ok"))
        out.result, out.error = reply.get("result"), reply.get("error")
        out.ms = (time.monotonic() - sent) * 1000
        if outcomes and all(o.ok is not None for o in outcomes.values()) and (targets or known):
            break
    return outcomes


def fleet_statuses(cfg: Config) -> dict[str, dict]:
    """The retained statuses of the devices on this daemon's broker (empty without MQTT)."""
    if not cfg.mqtt.enabled:
        return {}
    with BrokerClient(cfg.mqtt, "choice") as client:
        return {name: device.status for name, device in list_devices(client, cfg.mqtt.prefix, max_wait_s=3.0).items()}
