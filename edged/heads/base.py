"""The head interface: numpy in, numpy out. No camera, no MQTT, no TensorFlow.

The head contract
-----------------
A head is a class registered through the ``register_heads(register)`` hook. It declares:

``name``
    Unique name: the MQTT topic ``<device>/prediction/<name>``, the config table ``[heads.<name>]``.
``kind``
    ``"classes"`` (a label per frame) or ``"boxes"`` (labelled boxes per frame).
``Options``
    A :class:`HeadOptions` model (or a dataclass). Built from ``[heads.<name>]`` with types checked
    and unknown keys refused; the instance is passed to ``__init__``.
``incremental``
    True when :meth:`Head.add` learns one example at once (the kNN head). Such heads are rebuilt from
    the store with :meth:`Head.fit` at start and after another process changed the store.
``frame_fit``
    How a frame fits the model input: ``"crop"`` (the centre square; the default),
    ``"letterbox"`` (the whole frame, padded) or ``"stretch"`` (the whole frame, aspect ratio not
    kept); the last two are for box heads, so objects near the edges are seen. Boxes in predictions
    are mapped back to the frame's coordinates. A trained model records its fit and input size, and
    is served with those.
``trainer``
    ``None``, or the dotted name of a sibling module with the head's Keras training. Only the
    TensorFlow worker process imports it (see :mod:`edged.learn.context` for what it receives), so
    the serving process never imports TensorFlow. It defines ``train(context, progress) -> dict``
    (fine-tuning, training on frames) and/or ``export_model(context) -> ExportSpec``.

Methods and when they are called:

``fit(examples, context, progress) -> dict``
    Learn from every stored example (``examples``: ids, labels, embeddings, boxes) in the serving
    process, in numpy, on a job thread — never on the frame loop. It is called on a fresh instance
    that replaces the serving one only when ``fit`` returns. ``context`` (:class:`FitContext`) gives
    the train request, stored frames and the serving backbone's ``embed``; ``progress(dict)`` reports
    per-epoch figures. Returns metrics. Raise :class:`HeadError` with an actionable message.
``trains_in_worker(request) -> bool``
    True when this request must go to the TensorFlow worker (``trainer.train``) instead of ``fit``.
``add(embedding, label, box)`` / ``forget(label)``
    Called from the frame loop (add) and the command thread (forget); must be safe against
    concurrent ``predict``.
``predict(embedding) -> Prediction``
    Called on the frame loop for every frame: numpy only, no I/O, fast.
``save(folder)`` / ``load(folder) -> bool``
    ``save`` writes everything needed to serve into a fresh staging folder; the daemon fsyncs it and
    commits it as a new version (``heads/<name>/vN``) only after ``save`` returns. ``load`` restores
    from such a folder and returns False when there is nothing to restore; it raises HeadError for a
    corrupt folder (the head is then reported not ready, and the daemon keeps serving the others).
    A version folder holding ``model.tflite`` + ``metadata.json`` is served as one fused model.
``decode(outputs, meta) -> Prediction`` (classmethod)
    Turns the outputs of this head's TFLite model (exported, or a fused version) into a prediction.
``agreement(a, b) -> float`` (classmethod)
    The parity measure between two lists of predictions (default: top-1 label agreement).
``close()``
    Release resources.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict

from ..errors import HeadError
from ..state.store import Examples

Progress = Optional[Callable[[dict], None]]


@dataclass
class Prediction:
    label: str
    score: float
    scores: dict[str, float] = field(default_factory=dict)
    boxes: list[dict] = field(default_factory=list)
    model_sha: Optional[str] = None  # set when an exported or fused model (not backbone + head) answered
    novelty: Optional[float] = None  # 0..1: how unlike the stored examples this frame is (heads that know)

    def message(self, head: str, frame_index: int, pos: int, latency_ms: float, backbone_id: str,
                backbone_sha: str) -> dict:
        """The prediction as published on `<device>/prediction/<head>`."""
        payload = {"ts": round(time.time(), 3), "frame": frame_index, "pos": pos, "head": head, "label": self.label,
                   "score": round(self.score, 4), "scores": {k: round(v, 4) for k, v in self.scores.items()},
                   "boxes": self.boxes, "latency_ms": round(latency_ms, 2), "model": backbone_id,
                   "model_sha": self.model_sha or backbone_sha}
        if self.novelty is not None:
            payload["novelty"] = self.novelty
        return payload


class HeadOptions(BaseModel):
    """Base for head options: types checked, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class NoOptions(HeadOptions):
    pass


@dataclass
class TrainRequest:
    """What a train command asked for; None means the head's own default."""

    # "auto": frozen first, then fine-tuned where the head asks for it and TensorFlow (or a trainer node) is there;
    # "frozen": the backbone as it is; "fine_tune": its top trained too; "from_scratch": re-initialised
    mode: str = "auto"
    epochs: Optional[int] = None
    fine_tune_layers: Optional[int] = None
    params: dict[str, Any] = field(default_factory=dict)
    # False: a cheap, sound fit that serves at once (no augmented copies, no choice among learners); the search
    # over them follows as a job where the head `searches` (edged.serve.learning)
    search: bool = True


@dataclass
class FitContext:
    """What an in-process `fit` may use besides the stored embeddings."""

    request: TrainRequest
    input_size: int
    frames: Callable[[np.ndarray], list[np.ndarray]]  # example ids -> stored BGR frames
    pixels: Callable[[np.ndarray], np.ndarray]  # example ids -> (n, S, S, 3) RGB model inputs
    embed: Callable[[np.ndarray], np.ndarray]  # one (S, S, 3) RGB input -> embedding, by the serving backbone
    # (example ids, copies, rng) -> (copies * n, d) embeddings of altered copies of those examples, copy-major
    # (sounds: faster or slower, louder or softer; pictures: crops, flips, brightness), or None when they cannot
    # be altered (edged.sources.augment.augmenter); a context without it offers no augmented copies
    augmented: Optional[Callable[[np.ndarray, int, np.random.Generator], Optional[np.ndarray]]] = None


class Head:
    """Base class for heads; see the module docstring for the contract."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "classes"  # or "boxes"
    Options: ClassVar[type] = NoOptions
    incremental: ClassVar[bool] = False
    trainer: ClassVar[Optional[str]] = None
    frame_fit: ClassVar[str] = "crop"
    # Least `agreement` between an exported model and its Keras original for the export to pass.
    parity_tolerance: ClassVar[dict[str, float]] = {"float32": 0.99, "float16": 0.98, "int8": 0.9}
    parity_measure: ClassVar[str] = "top-1 agreement"

    def __init__(self, options=None):
        self.options = options if options is not None else self.Options()

    @property
    def ready(self) -> bool:
        raise NotImplementedError

    @property
    def classes(self) -> list[str]:
        return []

    def quality(self) -> dict:
        """What the last training said about the examples (shown in status); {} when there is nothing to say."""
        return {}

    @classmethod
    def trains_in_worker(cls, request: TrainRequest) -> bool:
        return cls.fit is Head.fit and cls.trainer is not None

    @classmethod
    def searches(cls, options) -> bool:
        """Whether `fit` with `request.search` (augmented copies, several learners) costs more than without: then a
        `train` serves the cheap fit first and runs the search as a job."""
        return False

    @classmethod
    def fine_tunes_after_fit(cls, options) -> bool:
        """Whether a `train` in mode "auto" goes on to fine-tune the backbone in the worker after the in-process fit."""
        return False

    def fit(self, examples: Examples, context: Optional[FitContext] = None, progress: Progress = None) -> dict:
        raise HeadError(f"head {self.name!r} does not train in the serving process")

    def add(self, embedding: np.ndarray, label: str, box=None) -> None:
        raise HeadError(f"head {self.name!r} does not learn example by example; train it")

    def forget(self, label: str) -> None:
        """Drop a label; heads that cannot unlearn become not ready until retrained."""

    def predict(self, embedding: np.ndarray) -> Prediction:
        raise HeadError(f"head {self.name!r} serves from its model, not from embeddings")

    def save(self, folder: Path) -> None:
        """Persist learned state to `folder` (may be a no-op when the store is enough)."""

    def load(self, folder: Path) -> bool:
        return False

    @classmethod
    def decode(cls, outputs: list[np.ndarray], meta: dict) -> Prediction:
        """Default: the model's first output is one probability per label."""
        labels = meta["labels"]
        out = outputs[0].reshape(-1)
        best = int(np.argmax(out))
        return Prediction(labels[best], float(out[best]), {l: float(v) for l, v in zip(labels, out)})

    @classmethod
    def agreement(cls, a: list[Prediction], b: list[Prediction]) -> float:
        return float(np.mean([x.label == y.label for x, y in zip(a, b)])) if a else 1.0

    def close(self) -> None:
        pass
