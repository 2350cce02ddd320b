"""[mqtt], [publish], [homeassistant] and [web]: where answers go and who may teach."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, field_validator

from .base import Strict


class TlsConfig(Strict):
    ca_certs: Optional[str] = None
    certfile: Optional[str] = None
    keyfile: Optional[str] = None
    insecure: bool = False


class MqttConfig(Strict):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    prefix: str = "edged"
    qos: Literal[0, 1, 2] = 0
    username: Optional[str] = None
    password: Optional[str] = None
    tls: Optional[TlsConfig] = None
    keepalive: int = Field(30, ge=5, le=3600)
    protocol: Literal["3.1.1", "5"] = "5"
    offline_queue: int = Field(10_000, ge=0, le=1_000_000, description="QoS 1/2 messages kept while the broker is away "
                                                                     "or has not acknowledged them")
    offline_queue_bytes: int = Field(8 << 20, ge=0, description="and at most this many bytes of them")
    max_inflight: int = Field(20, ge=1, le=65535, description="unacknowledged QoS 1/2 messages on the wire; keep it at "
                                                              "or under the broker's max_inflight_messages (mosquitto: 20)")
    session_expiry_s: int = Field(0, ge=0, description="MQTT 5: the broker keeps this device's subscriptions (and the "
                                                       "QoS 1 commands sent to it) this long while it is away; 0 = clean")
    stats_interval_s: float = Field(10.0, gt=0)
    reconnect_min_s: float = Field(1.0, gt=0)
    reconnect_max_s: float = Field(2.0, gt=0, description="longest wait between reconnect attempts: the link is back "
                                                          "within this of the broker's return")

    @field_validator("prefix")
    @classmethod
    def _no_wildcards(cls, v: str) -> str:
        if not v or any(c in v for c in "#+") or v.startswith("/") or v.endswith("/"):
            raise ValueError("prefix must be a non-empty topic without wildcards or outer slashes")
        return v


class PublishConfig(Strict):
    predictions: Literal["every", "change", "off"] = Field(
        "change", description="per-frame predictions on <device>/prediction/<head>: every inference, only when a "
                              "head's label changes, or none (states and events are published either way)")
    max_rate: float = Field(0.0, ge=0, description="at most this many prediction messages a second per head and "
                                                   "region; 0 = no cap")


class HomeAssistantConfig(Strict):
    enabled: bool = Field(False, description="announce this device to Home Assistant (MQTT discovery)")
    discovery_prefix: str = Field("homeassistant", description="Home Assistant's discovery prefix")
    capture_count: int = Field(5, ge=1, le=1000, description="frames a label button captures")
    snapshot_interval_s: float = Field(30.0, ge=0, description="publish a retained snapshot for the image entity this "
                                       "often; 0 = only on the snapshot command")
    discovery: Literal["device", "entity"] = Field(
        "device", description="device: one discovery message for the whole device (Home Assistant 2024.11 or later); "
                              "entity: one message per entity, for Home Assistant from 2023.8 to 2024.10")
    event_image: bool = Field(True, description="announce the last event's best frame as an image entity (the "
                              "recorder writes a row for each event's JPEG); false leaves it out")


class WebConfig(Strict):
    enabled: bool = Field(False, description="serve the teach page (live view, capture, train, models) over HTTP")
    host: str = Field("127.0.0.1", description="address to listen on; any other than loopback needs a token")
    port: int = Field(8080, ge=1, le=65535)
    token: Optional[str] = Field(None, min_length=8, description="required from every client (header, cookie or ?token=)")
    fps: float = Field(5.0, gt=0, le=30, description="live view frames per second (encoded off the frame loop)")
    allowed_hosts: list[str] = Field(default_factory=list, description="host names the page may be opened as, "
                                     "besides loopback names, IP addresses, this machine's host name (and .local) "
                                     "and web.host: any other Host header is refused (DNS rebinding)")
