"""[source] / [[sources]] and [serve]: where frames and sound come from, and how fast they are taken."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from pydantic import Field, field_validator

from .base import Strict, topic_level, unique_names
from .scene import GateConfig, RegionConfig


class AudioConfig(Strict):
    """Sound sources (`audio:`, `audio:<device>`, a .wav file): windows and when a window is a sound."""

    window_s: float = Field(1.5, ge=0.2, le=10, description="seconds of sound in each window")
    hop_s: float = Field(0.125, ge=0.02, le=10, description="seconds between windows: a sound is known this long "
                                                            "(or two hops) after it ends")
    loud_db: float = Field(10.0, ge=0, le=60, description="a window this many dB above the room's noise floor is a "
                                                          "sound: the gate infers it, a capture stores it")
    image_size: int = Field(128, ge=32, le=512, description="pixels of the spectrogram picture the backbone sees")


class SourceConfig(Strict):
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


class ServeConfig(Strict):
    max_fps: float = Field(0.0, ge=0, description="cap on inferences per second; 0 = as fast as frames come")
    queue_size: int = Field(2, ge=1, le=100, description="frames buffered between source and inference")
    print_predictions: bool = False


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
        return topic_level(v, "source name")

    @field_validator("regions")
    @classmethod
    def _unique_regions(cls, v):
        return unique_names(v, "region")


@dataclass(frozen=True)
class Camera:
    """A source as the daemon serves it: `name` is "" for the single `[source]`."""

    name: str
    source: SourceConfig
    regions: tuple[RegionConfig, ...] = ()
    heads: Optional[tuple[str, ...]] = None
    max_fps: float = 0.0
    gate: Optional[GateConfig] = None  # None: the daemon's [gate]
