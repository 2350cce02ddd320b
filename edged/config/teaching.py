"""[capture], [review] and [trainer]: how examples are taken and heads trained."""

from __future__ import annotations

from pydantic import Field, model_validator

from .base import Strict


class CaptureConfig(Strict):
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


class ReviewConfig(Strict):
    enabled: bool = Field(True, description="keep uncertain or novel frames for labelling (edged/<device>/review)")
    novelty: float = Field(0.98, ge=0, le=1, description="keep a frame whose novelty is at least this")
    min_score: float = Field(0.5, ge=0, le=1, description="keep a frame whose best score is under this")
    min_interval_s: float = Field(10.0, ge=0, description="at most one frame kept per this many seconds")
    max_items: int = Field(200, ge=1, le=100_000, description="oldest items are dropped beyond this")


class TrainerConfig(Strict):
    preload: bool = Field(False, description="start the TensorFlow worker with the daemon (fast first train, ~600 MB)")
    idle_exit_s: float = Field(600.0, gt=0, description="stop the worker after this long without jobs")
    job_timeout_s: float = Field(3600.0, gt=0, description="a train or export job with no result by then is "
                                                          "killed and answered with an error")
