"""Heads: the Head interface (numpy in, numpy out), hook specifications, the plugin manager."""

from .base import FitContext, Head, HeadOptions, NoOptions, Prediction, Progress, TrainRequest
from .hookspecs import hookimpl

__all__ = ["FitContext", "Head", "HeadOptions", "NoOptions", "Prediction", "Progress", "TrainRequest", "hookimpl"]
