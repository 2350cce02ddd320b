"""The whole config: one validated model of every section, and the sources as the daemon serves them."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Literal, Optional

from pydantic import Field, field_validator, model_validator

from ..errors import ConfigError
from ..source_kinds import hears
from .backbone import BackboneConfig, HeadsConfig, RuntimeConfig
from .base import NAME_RE, Strict, unique_names
from .fleet import FleetConfig
from .outputs import HomeAssistantConfig, MqttConfig, PublishConfig, WebConfig
from .scene import SOUND_ENTER, EventsConfig, GateConfig, RegionConfig, StatesConfig
from .sources import Camera, CameraConfig, ServeConfig, SourceConfig
from .teaching import CaptureConfig, ReviewConfig, TrainerConfig


class Config(Strict):
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
        return unique_names(v, "region")

    @field_validator("sources")
    @classmethod
    def _unique_sources(cls, v):
        return unique_names(v, "source")

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
