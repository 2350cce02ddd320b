"""Validated configuration: a TOML file plus ``--set key.path=value`` overrides."""

from __future__ import annotations

import json
import re
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError
from .source_kinds import hears

# a device, trainer or head name: one topic level, one path component
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class AudioConfig(_Strict):
    """Sound sources (`audio:`, `audio:<device>`, a .wav file): windows and when a window is a sound."""

    window_s: float = Field(1.5, ge=0.2, le=10, description="seconds of sound in each window")
    hop_s: float = Field(0.125, ge=0.02, le=10, description="seconds between windows: a sound is known this long "
                                                            "(or two hops) after it ends")
    loud_db: float = Field(10.0, ge=0, le=60, description="a window this many dB above the room's noise floor is a "
                                                          "sound: the gate infers it, a capture stores it")
    image_size: int = Field(128, ge=32, le=512, description="pixels of the spectrogram picture the backbone sees")


class SourceConfig(_Strict):
    uri: str = Field(
        "synthetic",
        description="camera index ('0'), rtsp:// or http:// URL, video file, image folder, or 'synthetic'",
    )
    loop: bool = Field(True, description="restart a video file or folder at its end")
    realtime: bool = Field(True, description="pace files and synthetic scenes at `fps`")
    fps: float = Field(15.0, gt=0, le=1000)
    width: int = Field(640, ge=16, le=8192, description="capture width for cameras, canvas for synthetic, least "
                                                          "decoded width for JPEGs (folders, MJPEG cameras)")
    height: int = Field(480, ge=16, le=8192)
    reconnect_min_s: float = Field(0.5, gt=0)
    reconnect_max_s: float = Field(30.0, gt=0)
    read_timeout_s: float = Field(10.0, gt=0, le=600, description="a stream that sends nothing this long is lost "
                                                                   "(and reopened)")
    stall_after_s: float = Field(3.0, gt=0, description="a live source with no frame for this long is reported "
                                                        "'stalled' (the watchdog is not fed either)")
    reduced_decoding: bool = Field(True, description="image folders and MJPEG cameras: decode a JPEG at 1/2, 1/4 "
                                                      "or 1/8 scale when the result still covers width x height (a "
                                                      "large frame then costs a fraction of a full decode)")
    seed: int = 0
    decode_threads: int = Field(1, ge=0, le=64, description="threads OpenCV may use to decode and resize frames; 1 "
                                "leaves the cores to the interpreter (measured by `edged bench pipeline`); 0 = OpenCV's "
                                "default, all cores")
    nice: int = Field(0, ge=0, le=19, description="scheduling niceness of the thread that decodes frames (Linux): "
                      "above 0 it yields the cores to the interpreter's threads")
    audio: AudioConfig = Field(default_factory=AudioConfig, description="sound sources: windows and loudness")


class BackboneConfig(_Strict):
    family: Literal["mobilenet_v1", "mobilenet_v2", "mobilenet_v3_small", "keras", "tflite",
                    "speech_embedding"] = "mobilenet_v1"
    alpha: float = Field(0.25, gt=0, le=1.4)
    input_size: int = Field(128, ge=32, le=1024)
    cut_layer: Optional[str] = Field(None, description="layer to cut at; default per family")
    weights: str = Field("imagenet", description="'imagenet', 'none' (random, seeded) or a weights file path")
    pooling: Literal["avg", "flatten"] = "avg"
    path: Optional[str] = Field(None, description="model file for family 'keras' (.keras) or 'tflite'; for "
                                                  "'speech_embedding' the folder of its two models (default "
                                                  "$EDGED_SPEECH_MODELS, or the workspace's shared models)")
    seed: int = 0
    choose: Literal["auto", "fixed"] = Field(
        "auto", description="auto: with family mobilenet_v1, ImageNet weights and neither alpha nor input_size set, "
                            "serve the largest MobileNet v1 whose backbone runs at least `min_fps` here (measured once "
                            "at the first start)")
    min_fps: float = Field(30.0, gt=0, le=10_000, description="auto: backbone runs a second the chosen one must reach "
                                                               "on this machine")

    @property
    def auto(self) -> bool:
        """The backbone is chosen from measurements (edged.serve.choice), not taken from alpha and input_size."""
        return (self.choose == "auto" and self.family == "mobilenet_v1" and self.weights == "imagenet"
                and not {"alpha", "input_size"} & self.model_fields_set)


class RuntimeConfig(_Strict):
    num_threads: int = Field(2, ge=1, le=64)
    delegate: Literal["none", "edgetpu"] = "none"
    interpreter: Literal["auto", "litert", "tflite_runtime", "tensorflow"] = "auto"
    precision: Literal["auto", "float32", "int8"] = Field(
        "auto", description="auto: serve the int8 backbone when it is faster here and its embeddings match float's")
    int8_calibration: Literal["store", "blank"] = Field(
        "store", description="representative frames for int8: stored frames topped up from the source; "
                             "'blank' (black frames) only to see the parity check refuse a bad calibration")
    calibration_frames: int = Field(200, ge=10, le=5000)


class HeadsConfig(BaseModel):
    """`active` heads, plus one table of options per head: `[heads.knn]`, `[heads.classifier]`, ...

    The tables are checked against each head's own options model when the heads are loaded
    (and by `edged config check`); `[heads.options.<name>]` is the older spelling of the same.
    """

    model_config = ConfigDict(extra="allow", validate_assignment=True)
    active: list[str] = Field(default_factory=lambda: ["knn"], description="heads that predict on every frame")
    options: dict[str, dict] = Field(default_factory=dict, description="options by head name (older spelling)")

    @model_validator(mode="after")
    def _tables_only(self):
        for name, value in (self.model_extra or {}).items():
            if not isinstance(value, dict):
                raise ValueError(f"heads.{name} must be a table of options for head {name!r}")
        return self

    def options_for(self, name: str) -> tuple[dict, str]:
        """A head's option values and the key path they came from."""
        table = (self.model_extra or {}).get(name)
        if table is not None:
            return dict(table), f"heads.{name}"
        return dict(self.options.get(name, {})), f"heads.options.{name}"


class TlsConfig(_Strict):
    ca_certs: Optional[str] = None
    certfile: Optional[str] = None
    keyfile: Optional[str] = None
    insecure: bool = False


class MqttConfig(_Strict):
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


class ServeConfig(_Strict):
    max_fps: float = Field(0.0, ge=0, description="cap on inferences per second; 0 = as fast as frames come")
    queue_size: int = Field(2, ge=1, le=100, description="frames buffered between source and inference")
    print_predictions: bool = False


class CaptureConfig(_Strict):
    near_copy: float = Field(0.99, ge=0.5, le=1.0, description="a frame at least this similar (cosine of "
                             "embeddings) to an earlier one of the capture counts as a near-copy: kept (a still "
                             "scene is what was shown), counted apart from the distinct frames in the reply")
    timeout_s: float = Field(120.0, gt=0, description="a capture ends with what it has after count x interval + this")
    max_per_label: int = Field(0, ge=0, description="keep at most this many examples of a label, the oldest pruned "
                                                    "after each capture; 0 = no cap")
    max_total: int = Field(0, ge=0, description="keep at most this many examples in all; 0 = no cap")

    @model_validator(mode="before")
    @classmethod
    def _no_dedupe(cls, data):
        return refuse_dedupe(data)


def refuse_dedupe(data):
    """`dedupe` (a capture's or [capture]'s) named by its successor, for configs and scripts from before."""
    if isinstance(data, dict) and "dedupe" in data:
        raise ValueError("dedupe is gone: a capture keeps near-copies now (a still scene is what was shown) and "
                         "counts them; near_copy sets what counts as one")
    return data


class ReviewConfig(_Strict):
    enabled: bool = Field(True, description="keep uncertain or novel frames for labelling (edged/<device>/review)")
    novelty: float = Field(0.98, ge=0, le=1, description="keep a frame whose novelty is at least this")
    min_score: float = Field(0.5, ge=0, le=1, description="keep a frame whose best score is under this")
    min_interval_s: float = Field(10.0, ge=0, description="at most one frame kept per this many seconds")
    max_items: int = Field(200, ge=1, le=100_000, description="oldest items are dropped beyond this")


class WebConfig(_Strict):
    enabled: bool = Field(False, description="serve the teach page (live view, capture, train, models) over HTTP")
    host: str = Field("127.0.0.1", description="address to listen on; any other than loopback needs a token")
    port: int = Field(8080, ge=1, le=65535)
    token: Optional[str] = Field(None, min_length=8, description="required from every client (header, cookie or ?token=)")
    fps: float = Field(5.0, gt=0, le=30, description="live view frames per second (encoded off the frame loop)")
    allowed_hosts: list[str] = Field(default_factory=list, description="host names the page may be opened as, "
                                     "besides loopback names, IP addresses, this machine's host name (and .local) "
                                     "and web.host: any other Host header is refused (DNS rebinding)")


class TrainerConfig(_Strict):
    preload: bool = Field(False, description="start the TensorFlow worker with the daemon (fast first train, ~600 MB)")
    idle_exit_s: float = Field(600.0, gt=0, description="stop the worker after this long without jobs")
    job_timeout_s: float = Field(3600.0, gt=0, description="a train or export job with no result by then is "
                                                          "killed and answered with an error")


class FleetConfig(_Strict):
    follow: list[str] = Field(default_factory=list, description="model (head) names to fetch when another device "
                              "publishes them, check on this device's examples and serve")
    trainer: Literal["auto", "local", "remote"] = Field("auto", description="where fine-tuning and export run: "
                                                        "auto = here with TensorFlow, else on a trainer node "
                                                        "(edged trainer --fleet); local; remote")
    take_examples: bool = Field(False, description="store examples other devices share (same backbone only)")
    min_accuracy: float = Field(0.6, ge=0, le=1, description="a fetched classifier must score at least this on this "
                                "device's stored examples of its labels to be served; else it is kept staged")
    chunk_bytes: int = Field(256 * 1024, ge=1024, le=64 << 20, description="size of one retained chunk of a share")
    max_share_bytes: int = Field(64 << 20, ge=1024, description="largest model, head or example set sent or taken")
    thumbnail_px: int = Field(160, ge=32, le=1024, description="longest side of the frames sent with shared examples "
                              "(fleet.trust = \"broker\" only: signed fleets share examples without frames)")
    trust: Literal["signed", "broker"] = Field("signed", description="signed: take parcels, jobs, results and "
                                               "trainers only when signed by an enrolled, unrevoked member of this "
                                               "fleet; broker: anyone who can publish on the broker (not safe on a "
                                               "shared broker)")
    keep_versions: int = Field(5, ge=2, le=1000, description="versions kept per head and model; older ones are "
                               "pruned (never the serving one or the one before it)")
    max_classes: int = Field(1000, ge=2, le=100_000, description="most labels a shared head or model may carry")


class HomeAssistantConfig(_Strict):
    enabled: bool = Field(False, description="announce this device to Home Assistant (MQTT discovery)")
    discovery_prefix: str = Field("homeassistant", description="Home Assistant's discovery prefix")
    capture_count: int = Field(5, ge=1, le=1000, description="frames a label button captures")
    snapshot_interval_s: float = Field(30.0, ge=0, description="publish a retained snapshot for the image entity this "
                                       "often; 0 = only on the snapshot command")


def _check_unit_box(box: tuple[float, float, float, float], what: str) -> None:
    x1, y1, x2, y2 = box
    if not (0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1):
        raise ValueError(f"{what} must be [x1, y1, x2, y2] with x1 < x2 and y1 < y2, all within [0, 1] of the frame")


class PublishConfig(_Strict):
    predictions: Literal["every", "change", "off"] = Field(
        "change", description="per-frame predictions on <device>/prediction/<head>: every inference, only when a "
                              "head's label changes, or none (states and events are published either way)")
    max_rate: float = Field(0.0, ge=0, description="at most this many prediction messages a second per head and "
                                                   "region; 0 = no cap")


SOUND_ENTER = 2  # states.enter when every source is sound
BACKGROUND = "background"  # the label of a room's own sound: taught from quiet windows, never an event


class StatesConfig(_Strict):
    smoothing: float = Field(0.5, gt=0, le=1, description="weight of the newest answer in each label's running "
                                                          "score (1: no smoothing)")
    enter: int = Field(3, ge=1, le=1000, description="a label becomes the state after its running score has led at "
                                                     "or above min_score for this many inferences in a row (unset "
                                                     "with only sound sources: 2, since a short sound is whole in "
                                                     "two or three windows)")
    enter_s: float = Field(0.0, ge=0, description="... and for at least this long (0: the count alone decides)")
    min_score: float = Field(0.5, ge=0, le=1, description="score a win needs to count towards entering")
    exit_score: float = Field(0.35, ge=0, le=1, description="the state goes to 'none' when the leading running "
                                                            "score stays under this for exit_s")
    exit_s: float = Field(3.0, ge=0)

    @model_validator(mode="after")
    def _hysteresis(self):
        if self.exit_score > self.min_score:
            raise ValueError("states.exit_score must be at most states.min_score (hysteresis)")
        return self


class EventsConfig(_Strict):
    enabled: bool = Field(True, description="events (start/update/end) with a best-frame snapshot on disk")
    labels: Optional[list[str]] = Field(None, description="state labels that make events; default every label but "
                                                          "'none', 'unknown' and 'background'")
    update_s: float = Field(5.0, gt=0, description="an ongoing event sends an update at most this often")
    max_mb: float = Field(200.0, gt=0, description="events' snapshots and clips on disk: the oldest are removed "
                                                   "beyond this many megabytes")
    max_age_days: float = Field(14.0, gt=0, description="... and once older than this")
    clip_s: float = Field(0.0, ge=0, le=60, description="keep a video clip of each event with this many seconds "
                                                        "before and after it (0: snapshots only)")
    clip_max_s: float = Field(60.0, gt=0, le=3600, description="longest clip; a longer event's clip is cut there")
    clip_width: int = Field(480, ge=64, le=4096, description="clip frames are scaled down to this width")


class GateConfig(_Strict):
    mode: Literal["motion", "always"] = Field(
        "motion", description="motion: run the backbone only while something moves (and every max_idle_s); always: "
                              "every frame")
    frame_height: int = Field(100, ge=24, le=1080, description="height of the grey copy motion is found on")
    threshold: int = Field(25, ge=1, le=255, description="grey-level change of a pixel that counts as moving")
    min_area: float = Field(0.002, gt=0, le=1, description="a moving blob must cover this fraction of the frame "
                                                           "(or region)")
    alpha: float = Field(0.05, gt=0, le=1, description="how fast the background follows the scene (per frame)")
    lighting_fraction: float = Field(0.6, gt=0, le=1, description="more of the frame than this changing at once is a "
                                                                   "light change: the background is reset")
    hold_s: float = Field(1.0, ge=0, description="keep inferring this long after motion stops (the scene settles)")
    max_idle_s: float = Field(30.0, gt=0, description="infer at least this often even without motion (slow changes)")
    masks: list[tuple[float, float, float, float]] = Field(
        default_factory=list, description="areas to ignore, [x1, y1, x2, y2] in [0, 1] of the frame (a clock, a tree)")

    @field_validator("masks")
    @classmethod
    def _boxes(cls, v):
        for i, box in enumerate(v):
            _check_unit_box(box, f"masks[{i}]")
        return v


class RegionConfig(_Strict):
    name: str = Field(description="the region's name: a topic level (state/<head>/<name>) and a capture's region")
    box: tuple[float, float, float, float] = Field(description="x1, y1, x2, y2 in [0, 1] of the frame")
    heads: Optional[list[str]] = Field(None, description="heads that predict on this region; default the active heads")

    @field_validator("name")
    @classmethod
    def _name(cls, v):
        return _topic_level(v, "region name")

    @field_validator("box")
    @classmethod
    def _box(cls, v):
        _check_unit_box(v, "box")
        return v


class CameraConfig(SourceConfig):
    """One of several sources (`[[sources]]`): a named source with its own cap, regions and heads."""

    name: str = Field(description="the source's name: a topic level (state/<head>/<name>) and a capture's source")
    max_fps: float = Field(0.0, ge=0, description="cap on this source's inferences per second; 0 = its fair share")
    regions: list[RegionConfig] = Field(default_factory=list, description="this source's regions")
    heads: Optional[list[str]] = Field(None, description="heads that predict on this source; default the active heads")
    gate: Optional[GateConfig] = Field(None, description="this source's motion gate; default [gate]")

    @field_validator("name")
    @classmethod
    def _name(cls, v):
        return _topic_level(v, "source name")

    @field_validator("regions")
    @classmethod
    def _unique_regions(cls, v):
        return _unique_names(v, "region")


def _topic_level(v: str, what: str) -> str:
    if not NAME_RE.fullmatch(v):
        raise ValueError(f"{what} must be 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit")
    return v


def _unique_names(items: list, what: str) -> list:
    names = [item.name for item in items]
    if len(set(names)) != len(names):
        raise ValueError(f"{what} names must be unique: {names}")
    return items


@dataclass(frozen=True)
class Camera:
    """A source as the daemon serves it: `name` is "" for the single `[source]`."""

    name: str
    source: SourceConfig
    regions: tuple[RegionConfig, ...] = ()
    heads: Optional[tuple[str, ...]] = None
    max_fps: float = 0.0
    gate: Optional[GateConfig] = None  # None: the daemon's [gate]


class Config(_Strict):
    device: str = Field(default_factory=lambda: socket.gethostname().split(".")[0] or "edged")
    state_dir: str = "./state"
    plugins_dir: Optional[str] = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    source: SourceConfig = Field(default_factory=SourceConfig)
    backbone: BackboneConfig = Field(default_factory=BackboneConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    heads: HeadsConfig = Field(default_factory=HeadsConfig)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    capture: CaptureConfig = Field(default_factory=CaptureConfig)
    review: ReviewConfig = Field(default_factory=ReviewConfig)
    web: WebConfig = Field(default_factory=WebConfig)
    fleet: FleetConfig = Field(default_factory=FleetConfig)
    homeassistant: HomeAssistantConfig = Field(default_factory=HomeAssistantConfig)
    publish: PublishConfig = Field(default_factory=PublishConfig)
    states: StatesConfig = Field(default_factory=StatesConfig)
    events: EventsConfig = Field(default_factory=EventsConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    regions: list[RegionConfig] = Field(default_factory=list, description="parts of the frame predicted, gated, "
                                        "stated and taught on their own; without regions the whole frame is")

    sources: list[CameraConfig] = Field(default_factory=list, description="several sources served by one daemon "
                                        "and one backbone, each named; instead of [source]")

    @field_validator("regions")
    @classmethod
    def _unique_regions(cls, v):
        return _unique_names(v, "region")

    @field_validator("sources")
    @classmethod
    def _unique_sources(cls, v):
        return _unique_names(v, "source")

    @model_validator(mode="after")
    def _one_way_to_name_sources(self):
        if self.sources and "source" in self.model_fields_set:
            raise ValueError("sources: give [source] (one source) or [[sources]] (several, each named), not both")
        if self.sources and self.regions:
            raise ValueError("regions: with [[sources]], a source's regions go in its own [[sources.regions]]")
        if self.backbone.family == "speech_embedding":
            pictures = [c.source.uri for c in self.cameras if not hears(c.source.uri)]
            if pictures:
                raise ValueError(f"backbone.family: 'speech_embedding' hears sound, and {pictures[0]!r} is not a sound "
                                 f"source (audio:, audio:<device> or a .wav file)")
        if "enter" not in self.states.model_fields_set and all(hears(c.source.uri) for c in self.cameras):
            self.states.enter = SOUND_ENTER
        return self

    @property
    def cameras(self) -> list[Camera]:
        """Every source the daemon serves, in order: the `[[sources]]`, or the one `[source]` (named "")."""
        if not self.sources:
            return [Camera("", self.source, tuple(self.regions), gate=self.gate)]
        return [Camera(s.name, SourceConfig(**s.model_dump(exclude={"name", "max_fps", "regions", "heads", "gate"})),
                       tuple(s.regions), tuple(s.heads) if s.heads is not None else None, s.max_fps,
                       s.gate if s.gate is not None else self.gate)
                for s in self.sources]

    def camera(self, name: Optional[str] = None) -> Camera:
        """One source by name; without a name the only one (or, with several, the first)."""
        cameras = self.cameras
        if name is None:
            return cameras[0]
        for camera in cameras:
            if camera.name == name:
                return camera
        raise ConfigError(f"sources: no source {name!r}; configured: {', '.join(c.name for c in cameras if c.name) or 'one unnamed [source]'}")

    @field_validator("device")
    @classmethod
    def _device_is_topic_safe(cls, v: str) -> str:
        if not NAME_RE.fullmatch(v) or v in ("fleet", "clients"):
            raise ValueError("device must be 1-64 letters, digits, '_', '.' or '-', start with a letter or digit, "
                             "and not be 'fleet' or 'clients' (topic levels of their own)")
        return v

    @property
    def state_path(self) -> Path:
        return Path(self.state_dir).expanduser()


def redact_uri(uri: str) -> str:
    """`rtsp://user:secret@cam/...` -> `rtsp://user:***@cam/...`: for status, logs and printouts."""
    return re.sub(r"(://[^:/@\s]*:)[^@/\s]*@", r"\1***@", uri)


def redacted_dump(cfg: "Config") -> dict:
    """The config as a dict with every secret replaced by '***'."""
    data = cfg.model_dump()
    data["source"]["uri"] = redact_uri(data["source"]["uri"])
    for source in data["sources"]:
        source["uri"] = redact_uri(source["uri"])
    if data["mqtt"].get("password"):
        data["mqtt"]["password"] = "***"
    if data["web"].get("token"):
        data["web"]["token"] = "***"
    return data


def format_validation_error(err: ValidationError, origin: str) -> str:
    lines = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        lines.append(f"{origin}: {path}: {msg}")
    return "\n".join(lines)


def _parse_override(item: str) -> tuple[list[str], object]:
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected key.path=value")
    key, raw = item.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # bare words are strings
    return key.strip().split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    for item in overrides:
        path, value = _parse_override(item)
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part} is not a table")
        node[path[-1]] = value
    return data


def read_config_data(path: str | Path | None = None, overrides: list[str] | None = None) -> tuple[dict, str]:
    """The merged, unvalidated data of a TOML file plus overrides, and where it came from."""
    data: dict = {}
    origin = "defaults"
    if path is not None:
        origin = str(path)
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"{origin}: file not found") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{origin}: not valid TOML: {e}") from None
    if overrides:
        data = apply_overrides(data, overrides)
        origin += " + overrides"
    return data, origin


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read, merge and validate; raise ConfigError naming file and key path."""
    data, origin = read_config_data(path, overrides)
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, origin)) from None


def dump_config(cfg: Config) -> str:
    return json.dumps(redacted_dump(cfg), indent=2)
