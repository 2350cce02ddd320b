"""[fleet]: sharing with other devices, and where TensorFlow jobs run."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Strict


class FleetConfig(Strict):
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
