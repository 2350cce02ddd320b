"""Validated configuration, one module per concern: a TOML file plus ``--set key.path=value`` overrides.

Sections: `sources` ([source] / [[sources]], [serve]), `backbone` ([backbone], [runtime], [heads]), `scene`
([states], [events], [gate], regions), `outputs` ([mqtt], [publish], [homeassistant], [web]), `teaching`
([capture], [review], [trainer]), `fleet` ([fleet]); `root` holds the whole `Config`, `loading` reads it.
"""

from .backbone import BackboneConfig, HeadsConfig, RuntimeConfig
from .base import NAME_RE
from .fleet import FleetConfig
from .loading import (apply_overrides, dump_config, format_validation_error, load_config, read_config_data,
                      redact_uri, redacted_dump)
from .outputs import HomeAssistantConfig, MqttConfig, PublishConfig, TlsConfig, WebConfig
from .root import Config
from .scene import BACKGROUND, SOUND_ENTER, EventsConfig, GateConfig, RegionConfig, StatesConfig
from .sources import AudioConfig, Camera, CameraConfig, ServeConfig, SourceConfig
from .teaching import CaptureConfig, ReviewConfig, TrainerConfig, refuse_dedupe

__all__ = [
    "NAME_RE", "BACKGROUND", "SOUND_ENTER", "AudioConfig", "BackboneConfig", "Camera", "CameraConfig", "CaptureConfig",
    "Config", "EventsConfig", "FleetConfig", "GateConfig", "HeadsConfig", "HomeAssistantConfig", "MqttConfig",
    "PublishConfig", "RegionConfig", "ReviewConfig", "RuntimeConfig", "ServeConfig", "SourceConfig", "StatesConfig",
    "TlsConfig", "TrainerConfig", "WebConfig", "apply_overrides", "dump_config", "format_validation_error",
    "load_config", "read_config_data", "redact_uri", "redacted_dump", "refuse_dedupe",
]
