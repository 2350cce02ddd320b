"""Serving an exported model (backbone + head in one TFLite file) from its metadata. No TensorFlow."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .backbone import file_sha256
from .heads import HeadError, Prediction
from .preprocess import Scaling
from .runtime import Engine, EngineError, EngineOptions


def decode(kind: str, labels: list[str], outputs: list[np.ndarray], extra: dict) -> Prediction:
    """Model outputs -> Prediction, for the three kinds of exported head."""
    out = outputs[0].reshape(-1)
    if kind == "classes":
        best = int(np.argmax(out))
        return Prediction(labels[best], float(out[best]), {l: float(v) for l, v in zip(labels, out)})
    if kind == "similarities":  # kNN exported as a dense layer: the vote stays in numpy
        row_labels = extra["row_labels"]
        k = min(int(extra.get("k", 5)), len(out))
        top = np.argpartition(-out, k - 1)[:k]
        votes: dict[str, float] = {}
        for i in top:
            votes[row_labels[i]] = votes.get(row_labels[i], 0.0) + max(float(out[i]), 0.0)
        total = sum(votes.values()) or 1.0
        scores = {l: v / total for l, v in votes.items()}
        winner = max(scores, key=scores.get)
        if float(out[top].max()) < float(extra.get("threshold", 0.0)):
            return Prediction("unknown", float(out[top].max()), scores)
        return Prediction(winner, scores[winner], scores)
    if kind == "boxes":
        probs, box = out[: len(labels)], np.clip(out[len(labels):len(labels) + 4], 0.0, 1.0)
        best = int(np.argmax(probs)) if len(labels) > 1 else 0
        score = float(probs[best]) if len(labels) > 1 else 1.0
        x1, y1, x2, y2 = (float(v) for v in box)
        return Prediction(labels[best], score, {l: float(v) for l, v in zip(labels, probs)},
                          [{"label": labels[best], "score": score, "box": [min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)]}])
    raise HeadError(f"unknown model kind {kind!r}")


class FusedModel:
    """One exported model folder (`model.tflite` + `metadata.json`); checks the file's sha256 before use."""

    def __init__(self, folder: Path, num_threads: int = 2, interpreter: str = "auto", delegate: str = "none"):
        self.folder = Path(folder)
        meta_path, model_path = self.folder / "metadata.json", self.folder / "model.tflite"
        try:
            self.meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as e:
            raise HeadError(f"{meta_path}: missing or unreadable metadata: {e}") from None
        if not model_path.is_file():
            raise HeadError(f"{model_path}: missing")
        sha = file_sha256(model_path)
        if sha != self.meta.get("sha256"):
            raise HeadError(f"{model_path}: sha256 {sha[:12]} does not match metadata {str(self.meta.get('sha256'))[:12]}: refusing a corrupt or swapped model")
        pre = self.meta["preprocessing"]
        try:
            self.engine = Engine(EngineOptions(str(model_path), num_threads=num_threads, interpreter=interpreter,
                                               delegate=delegate, scaling=Scaling(pre["scale"], pre["offset"])))
        except EngineError as e:
            raise HeadError(str(e)) from None
        if self.engine.input_size != self.meta["input_size"]:
            raise HeadError(f"{model_path}: input {self.engine.input_size}px, metadata says {self.meta['input_size']}px")
        self.sha = sha
        self.kind = self.meta["kind"]
        self.labels = self.meta["labels"]
        self.input_size = self.meta["input_size"]

    def predict(self, pixels: np.ndarray) -> Prediction:
        pred = decode(self.kind, self.labels, self.engine.run(pixels), self.meta.get("decode", {}))
        pred.model_sha = self.sha[:16]
        return pred

    def close(self) -> None:
        self.engine.close()
