"""Talking to running daemons over the broker: send a command and wait for its final reply, read retained topics.

Requests use MQTT 5 request/response (a response topic of our own plus correlation data) when the
config speaks MQTT 5, and the daemon's `<device>/reply/<command>` topic with a correlation id otherwise.
"""

from __future__ import annotations

import json
import queue
import time
import uuid
from typing import Callable, Optional

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ..config import MqttConfig
from ..errors import EdgedError
from .client import make_client, no_delay
from .topics import FleetTopics


class BrokerClient:
    def __init__(self, cfg: MqttConfig, name: str = "cli"):
        self.cfg = cfg
        self.v5 = cfg.protocol == "5"
        self.inbox: "queue.Queue[tuple[str, bytes, object]]" = queue.Queue()
        self.session = uuid.uuid4().hex[:10]
        self.client = make_client(cfg, f"edged-{name}-{self.session}")
        self.client.on_message = lambda c, u, m: self.inbox.put((m.topic, m.payload, getattr(m, "properties", None)))
        self.connected = False
        self._subscribed: set[str] = set()

    def __enter__(self) -> "BrokerClient":
        try:
            self.client.connect(self.cfg.host, self.cfg.port, keepalive=30)
        except OSError as e:
            raise EdgedError(f"cannot reach the broker at {self.cfg.host}:{self.cfg.port} (mqtt.host / mqtt.port): {e}") from None
        no_delay(self.client)
        self.client.loop_start()
        self.connected = True
        return self

    def __exit__(self, *exc) -> None:
        self.client.loop_stop()
        self.client.disconnect()

    def subscribe(self, topic: str, qos: int = 1) -> None:
        result, _ = self.client.subscribe(topic, qos=qos)
        if result != mqtt.MQTT_ERR_SUCCESS:
            raise EdgedError(f"cannot subscribe to {topic}")

    def messages(self, until: float):
        """(topic, payload, properties) as they arrive, until the monotonic deadline."""
        while True:
            left = until - time.monotonic()
            if left <= 0:
                return
            try:
                yield self.inbox.get(timeout=min(left, 0.2))
            except queue.Empty:
                continue

    def request(self, topic: str, reply_topic: str, payload: dict, timeout: float,
                on_progress: Optional[Callable[[dict], None]] = None, device: Optional[str] = None) -> dict:
        """Publish a command and return its final reply. `timeout` counts from the last word of the daemon: every
        progress message starts it again, so a long train on a slow board is waited for while it reports (raises
        EdgedError after `timeout` seconds of silence)."""
        corr = payload.setdefault("id", f"{self.session}-{uuid.uuid4().hex[:8]}")
        props = None
        fleet = FleetTopics(self.cfg.prefix)
        if self.v5:
            props = Properties(PacketTypes.PUBLISH)
            props.ResponseTopic = fleet.client_reply(self.session)
            props.CorrelationData = str(corr).encode()
            reply_topic = props.ResponseTopic + "/#"  # each device answers under its own name (an older one: bare)
        if reply_topic not in self._subscribed:
            self.subscribe(reply_topic)
            self._subscribed.add(reply_topic)
            time.sleep(0.05)  # let the subscription settle before the reply can arrive
        self.client.publish(topic, json.dumps(payload), qos=1, properties=props).wait_for_publish(10)
        heard = time.monotonic()
        while True:
            message = next(self.messages(heard + timeout), None)
            if message is None:
                break
            got, data, properties = message
            try:
                reply = json.loads(data)
            except ValueError:
                continue
            if not isinstance(reply, dict) or not _answers(reply, properties, corr):
                continue
            if device is not None and fleet.replier(got, self.session, reply.get("device")) != device:
                continue  # another account answering in the device's stead
            heard = time.monotonic()
            if not reply.get("final", True):
                if on_progress:
                    result = reply.get("result")
                    on_progress(result.get("progress", result) if isinstance(result, dict) else result)
                continue
            return reply
        raise EdgedError(f"no word from the daemon on {topic} for {timeout:g} s (--timeout counts from its last "
                         f"progress message): is it running and on this broker?")

    def retained(self, topic: str, wait: float = 2.0) -> Optional[dict]:
        """The retained message on `topic` (None when there is none)."""
        self.subscribe(topic)
        for got, data, _ in self.messages(time.monotonic() + wait):
            if got == topic:
                try:
                    return json.loads(data)
                except ValueError:
                    return None
        return None


def _answers(reply: dict, properties, corr) -> bool:
    """A reply to our request: its id is ours, or (MQTT 5) its correlation data is."""
    if reply.get("id") == corr:
        return True
    return getattr(properties, "CorrelationData", None) == str(corr).encode()


def parse_cli_payload(words: list[str]) -> dict:
    """`{"label": "cup"}` or `--label cup --count 20` -> a payload dict (values read as JSON when they parse)."""
    if len(words) == 1 and words[0].lstrip().startswith("{"):
        try:
            value = json.loads(words[0])
        except ValueError as e:
            raise EdgedError(f"payload is not valid JSON: {e}") from None
        return value
    out, key = {}, None
    for word in words:
        if word.startswith("--"):
            if key is not None:
                out[key] = True
            key = word[2:].replace("-", "_")
            if not key:
                raise EdgedError("empty option name '--'")
        elif key is None:
            raise EdgedError(f"unexpected {word!r}: give a JSON object or --key value pairs")
        else:
            try:
                out[key] = json.loads(word)
            except ValueError:
                out[key] = word
            key = None
    if key is not None:
        out[key] = True
    return out
