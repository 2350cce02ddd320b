"""The one place a paho client is made: the config's protocol, credentials, TLS and (optionally) a will."""

from __future__ import annotations

import socket
import ssl
from typing import Optional

import paho.mqtt.client as mqtt

from ..config import MqttConfig


def make_client(cfg: MqttConfig, client_id: str, will: Optional[tuple[str, bytes]] = None) -> mqtt.Client:
    """A paho 2.x client for `cfg` (callback API 2); `will` = (topic, payload), published retained at QoS 1."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=mqtt.MQTTv5 if cfg.protocol == "5" else mqtt.MQTTv311)
    if cfg.username:
        client.username_pw_set(cfg.username, cfg.password)
    if cfg.tls is not None:
        client.tls_set(ca_certs=cfg.tls.ca_certs, certfile=cfg.tls.certfile, keyfile=cfg.tls.keyfile,
                       cert_reqs=ssl.CERT_NONE if cfg.tls.insecure else ssl.CERT_REQUIRED)
        client.tls_insecure_set(cfg.tls.insecure)
    if will is not None:
        client.will_set(will[0], will[1], qos=1, retain=True)
    return client


def no_delay(client: mqtt.Client) -> None:
    """Small packets go out at once: with Nagle's algorithm a reply written right after an acknowledgement waits
    for the broker's delayed ACK (about 40 ms a hop, measured by `edged bench fleet`)."""
    sock = client.socket()
    if sock is not None and getattr(sock, "family", None) in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
