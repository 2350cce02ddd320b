"""paho 2.x link: topics, LWT, retained status, QoS, TLS, reconnect, bounded offline queue, command intake.

One queue for what must arrive: QoS 1/2 messages go straight to paho, which keeps them (in order,
resent after a reconnect) until the broker acknowledges them — bounded by `offline_queue` messages
and `offline_queue_bytes` bytes, drops counted. QoS 0 messages are sent when connected and dropped
(counted) otherwise: that is what QoS 0 means. `published` counts acknowledged messages (QoS 0:
written to the socket).
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Optional

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ..config import MqttConfig
from ..errors import ConfigError
from .client import make_client, no_delay
from .topics import FleetTopics, Topics

log = logging.getLogger(__name__)

OFFLINE = {"state": "offline"}


@dataclass
class IncomingCommand:
    name: str
    payload: bytes
    fleet: bool
    response_topic: Optional[str] = None
    correlation_data: Optional[bytes] = None


def valid_level(name: str) -> bool:
    return bool(name) and not any(c in name for c in "+#/\0") and len(name) <= 64


def check_broker_certificate(cfg: MqttConfig, timeout_s: float = 5.0) -> None:
    """With TLS, verify the broker's certificate and host name once before serving.

    A broker that cannot be reached is not an error here (it may come later; the link retries), but
    a certificate that does not verify will not fix itself: ConfigError, so the daemon says why and
    does not start.
    """
    tls = cfg.tls
    if tls is None or tls.insecure:
        return
    context = ssl.create_default_context(cafile=tls.ca_certs) if tls.ca_certs else ssl.create_default_context()
    if tls.certfile:
        context.load_cert_chain(tls.certfile, tls.keyfile)
    try:
        with socket.create_connection((cfg.host, cfg.port), timeout=timeout_s) as raw:
            with context.wrap_socket(raw, server_hostname=cfg.host):
                return
    except ssl.SSLCertVerificationError as e:
        raise ConfigError(f"mqtt.tls: the broker at {cfg.host}:{cfg.port} presented a certificate that does not verify "
                          f"({e.verify_message}); not connecting. Fix mqtt.host / mqtt.tls.ca_certs or the broker's "
                          f"certificate") from None
    except ssl.SSLError as e:
        log.warning("MQTT TLS check with %s:%s failed: %s (the link keeps trying)", cfg.host, cfg.port, e)
    except OSError as e:
        log.warning("MQTT broker %s:%s not reachable yet: %s (the link keeps trying)", cfg.host, cfg.port, e)


def dumps(payload) -> bytes:
    return json.dumps(payload, separators=(",", ":"), default=str).encode()


class MqttLink:
    """Publishes without blocking the caller; queues (bounded) while the broker is away."""

    def __init__(self, cfg: MqttConfig, device: str, on_command: Callable[[IncomingCommand], None],
                 online_status: Callable[[], dict], topics: Optional[Topics] = None):
        self.cfg = cfg
        self.device = device
        self.topics = topics or Topics(cfg.prefix, device)
        self._routes: list[tuple[str, int, Callable[[str, bytes, bool], None]]] = []  # filter, qos, callback
        self.on_command = on_command
        self.online_status = online_status
        self.connected = threading.Event()
        self.queue_dropped = 0  # QoS 1/2 messages refused: offline queue full (messages or bytes), or a bad topic
        self.dropped_offline = 0  # QoS 0 messages while the broker was away
        self.published = 0
        self._pending: dict[int, int] = {}  # mid -> bytes, QoS 1/2 messages not yet acknowledged
        self._pending_bytes = 0
        self._early_acks: set[int] = set()
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._v5 = cfg.protocol == "5"
        self.client = make_client(cfg, f"edged-{device}", will=(self.topics.status, dumps(OFFLINE)))
        self.client.reconnect_delay_set(int(max(1, cfg.reconnect_min_s)), int(max(1, cfg.reconnect_max_s)))
        self.client.max_queued_messages_set(max(cfg.offline_queue, 1))
        self.client.max_inflight_messages_set(cfg.max_inflight)
        self.client.on_connect = self._on_connect
        self.client.on_publish = self._on_publish
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self._outbox: deque = deque()
        self._outbox_max = max(cfg.offline_queue, 1000)  # between callers and the sender thread
        self._outbox_lock = threading.Lock()
        self._outbox_ready = threading.Event()
        self._sender_thread = threading.Thread(target=self._sender, name="mqtt-send", daemon=True)

    def route(self, topic_filter: str, callback: Callable[[str, bytes, bool], None],
              qos: int = 1) -> Callable[[], None]:
        """Subscribe `topic_filter` (at every connect) and hand its messages to `callback(topic, payload, retained)`
        instead of the command intake. The callback runs in paho's thread: it must only queue work. Returns the
        function that undoes it (unsubscribes, and the filter is not subscribed again at the next connect)."""
        route = (topic_filter, qos, callback)
        self._routes.append(route)
        if self.connected.is_set():
            self.client.subscribe(topic_filter, qos=qos)

        def undo() -> None:
            if route in self._routes:
                self._routes.remove(route)
                if not any(f == topic_filter for f, _, _ in self._routes):
                    self.client.unsubscribe(topic_filter)

        return undo

    def start(self) -> None:
        self._sender_thread.start()
        kwargs = {}
        if self._v5:
            kwargs["clean_start"] = self.cfg.session_expiry_s == 0
            if self.cfg.session_expiry_s:
                props = Properties(PacketTypes.CONNECT)
                props.SessionExpiryInterval = self.cfg.session_expiry_s
                kwargs["properties"] = props
        self.client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive, **kwargs)
        self.client.loop_start()

    def stop(self, timeout: float = 3.0) -> None:
        with self._outbox_lock:
            self._outbox.append(None)  # sender drains what is queued, then exits
        self._outbox_ready.set()
        self._sender_thread.join(timeout)
        if self.connected.is_set():
            info = self.client.publish(self.topics.status, dumps(OFFLINE), qos=1, retain=True)
            try:
                info.wait_for_publish(timeout)
            except Exception as e:
                log.warning("offline status not confirmed: %s", e)
        self.client.disconnect()
        self.client.loop_stop()

    # paho callbacks run in paho's network thread: keep them short.
    def _on_connect(self, client, userdata, flags, reason_code, properties=None):
        # Runs in paho's network thread: an exception here would end that thread, and with it every reconnect.
        try:
            if reason_code.is_failure:
                log.error("MQTT connection refused by %s:%s: %s", self.cfg.host, self.cfg.port, reason_code)
                return
            log.info("MQTT connected to %s:%s", self.cfg.host, self.cfg.port)
            no_delay(client)
            client.subscribe([(self.topics.commands, 1), (self.topics.fleet_commands, 1)]
                             + [(f, qos) for f, qos, _ in self._routes])
            self.connected.set()
            self.publish_status()
        except Exception:
            log.exception("MQTT connect handling failed (the link stays up)")

    def _on_disconnect(self, client, userdata, flags, reason_code, properties=None):
        self.connected.clear()
        if reason_code != 0:
            log.warning("MQTT disconnected (%s); reconnecting", reason_code)

    def _on_message(self, client, userdata, msg):
        for topic_filter, _, callback in list(self._routes):
            if mqtt.topic_matches_sub(topic_filter, msg.topic):
                try:
                    callback(msg.topic, msg.payload, bool(msg.retain))
                except Exception:
                    log.exception("message on %s not handled", msg.topic[:200])
                return
        if msg.retain:
            # A retained command would run again at every reconnect of every device: commands are events.
            log.warning("ignored a retained command on %s (publish commands without retain)", msg.topic[:200])
            return
        name = msg.topic.rsplit("/", 1)[-1]
        props = getattr(msg, "properties", None)
        try:
            self._deliver(name, msg, props)
        except Exception:
            log.exception("command on %s not handled", msg.topic[:200])

    def _deliver(self, name, msg, props) -> None:
        self.on_command(
            IncomingCommand(
                name=name,
                payload=msg.payload,
                fleet=FleetTopics(self.cfg.prefix).is_fleet_command(msg.topic),
                response_topic=getattr(props, "ResponseTopic", None) if props else None,
                correlation_data=getattr(props, "CorrelationData", None) if props else None,
            )
        )

    def publish(self, topic: str, payload, retain: bool = False, qos: Optional[int] = None, properties=None) -> None:
        """Hand the message to the sender thread: the caller (the frame loop) never waits on the network."""
        qos = self.cfg.qos if qos is None else qos
        with self._outbox_lock:
            if len(self._outbox) >= self._outbox_max:
                self._outbox.popleft()
                self.queue_dropped += 1
            self._outbox.append((topic, payload, qos, retain, properties))
        self._outbox_ready.set()

    def _sender(self) -> None:
        while True:
            self._outbox_ready.wait()
            with self._outbox_lock:
                batch = list(self._outbox)
                self._outbox.clear()
                self._outbox_ready.clear()
            for item in batch:
                if item is None:
                    return
                self._send(*item)

    def _send(self, topic: str, payload, qos: int, retain: bool, properties) -> None:
        data = payload if isinstance(payload, (bytes, bytearray)) else dumps(payload)
        if qos == 0 and not self.connected.is_set():
            self.dropped_offline += 1
            return
        if qos > 0 and not self._room_for(len(data)):
            self.queue_dropped += 1
            return
        try:
            info = self.client.publish(topic, data, qos=qos, retain=retain, properties=properties)
        except (ValueError, TypeError) as e:  # a topic paho refuses (wildcards, empty, too long): never raised
            self.queue_dropped += 1
            log.warning("not published to %r: %s", topic[:200], e)
            return
        if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
            self.queue_dropped += 1
            return
        if qos == 0:
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                self.dropped_offline += 1
            return
        with self._lock:  # kept by paho (also when not connected: NO_CONN) until acknowledged
            if info.mid in self._early_acks:
                self._early_acks.discard(info.mid)
            else:
                self._pending[info.mid] = len(data)
                self._pending_bytes += len(data)

    def _room_for(self, size: int, wait_s: float = 1.0) -> bool:
        """Is there room in the offline queue? While connected, wait a little for acknowledgements to make some
        (a burst drains at the broker's pace); while away, answer at once."""
        deadline = time.monotonic() + wait_s
        with self._room:
            while (len(self._pending) >= max(self.cfg.offline_queue, 1)
                   or self._pending_bytes + size > self.cfg.offline_queue_bytes):
                left = deadline - time.monotonic()
                if not self.connected.is_set() or left <= 0:
                    return False
                self._room.wait(min(left, 0.1))
            return True

    def _on_publish(self, client, userdata, mid, reason_code=None, properties=None):
        with self._room:
            self._room.notify_all()
            self.published += 1
            size = self._pending.pop(mid, None)
            if size is None:
                self._early_acks.add(mid)  # acknowledged before `_send` recorded it (or QoS 0, harmless)
                if len(self._early_acks) > 10_000:
                    self._early_acks.clear()
            else:
                self._pending_bytes -= size

    @property
    def queued(self) -> int:
        """QoS 1/2 messages handed to paho and not yet acknowledged."""
        with self._lock:
            return len(self._pending)

    def figures(self) -> dict:
        """For the stats: QoS 1 messages in flight, and what was dropped (queue full; QoS 0 while away)."""
        return {"mqtt_queued": self.queued, "mqtt_dropped": self.queue_dropped,
                "mqtt_dropped_offline_qos0": self.dropped_offline}

    def publish_status(self) -> None:
        self.publish(self.topics.status, self.online_status(), retain=True, qos=1)

    def reply(self, command: IncomingCommand, payload: dict) -> None:
        """Reply on the MQTT 5 response topic under this device's name (`<prefix>/clients/<session>/reply/<device>`)
        when it is one of the clients' tree, else on <base>/reply/<command>: a reply never lands on a topic the
        requester chose freely (another device's command topic), and names its sender in its topic."""
        props = None
        if self._v5 and command.correlation_data is not None:
            props = Properties(PacketTypes.PUBLISH)
            props.CorrelationData = command.correlation_data
        topic = command.response_topic
        if topic and not any(c in topic for c in "+#\0") and FleetTopics(self.cfg.prefix).is_client_reply(topic):
            topic = f"{topic}/{self.device}"
        else:
            topic = self.topics.reply(command.name if valid_level(command.name) else "invalid")
        self.publish(topic, payload, qos=1, properties=props)
