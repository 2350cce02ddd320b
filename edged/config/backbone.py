"""[backbone], [runtime] and [heads]: what embeds a frame and what answers from the embedding."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .base import Strict


class BackboneConfig(Strict):
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


class RuntimeConfig(Strict):
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
