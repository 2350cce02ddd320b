"""kNN head: cosine similarity on L2-normalised embeddings, similarity-weighted k-vote."""

from __future__ import annotations

import threading

import numpy as np
from pydantic import Field

from edged.errors import HeadError
from edged.heads import FitContext, Head, HeadOptions, Prediction, hookimpl
from edged.state.store import Examples

UNKNOWN = "unknown"


class KnnOptions(HeadOptions):
    k: int = Field(5, ge=1, le=100)
    threshold: float = Field(0.5, ge=-1.0, le=1.0, description="best cosine similarity below this answers 'unknown'")
    compact_min: int = Field(4096, ge=0, description="from this many examples scan a reduced copy, then re-rank exactly")
    compact_dim: int = Field(256, ge=8, le=4096, description="dimensions of the reduced copy (uncentred PCA)")
    rerank: int = Field(64, ge=1, le=10_000, description="candidates re-ranked with the full vectors")


def vote(sims: np.ndarray, label_ids: np.ndarray, labels: list[str], k: int, threshold: float) -> Prediction:
    """Similarity-weighted vote of the k most similar rows; 'unknown' when the best is under `threshold`."""
    k = min(k, len(sims))
    top = np.argpartition(-sims, k - 1)[:k] if k < len(sims) else np.arange(len(sims))
    votes = np.bincount(label_ids[top], weights=np.maximum(sims[top], 0.0), minlength=len(labels))
    total = votes.sum()
    scores = {labels[i]: float(votes[i] / total) for i in np.flatnonzero(votes)} if total > 0 else {}
    best = float(sims[top].max())
    if best < threshold or not scores:
        return Prediction(UNKNOWN, best, scores)
    winner = labels[int(np.argmax(votes))]
    return Prediction(winner, scores[winner], scores)


def normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


class KnnHead(Head):
    """Cosine k-nearest-neighbour vote over every stored example; learns each capture at once."""

    name = "knn"
    kind = "classes"
    Options = KnnOptions
    incremental = True
    trainer = "edged_plugins.knn_train"  # export as one TFLite model

    def __init__(self, options: KnnOptions | None = None):
        super().__init__(options)
        self._lock = threading.Lock()
        self._vectors = np.zeros((0, 0), np.float32)
        self._size = 0
        self._label_ids = np.zeros(0, np.int32)
        self._labels: list[str] = []
        self._basis: np.ndarray | None = None  # (d, compact_dim)
        self._reduced = np.zeros((0, 0), np.float32)
        self._basis_size = 0

    @property
    def ready(self) -> bool:
        return self._size > 0

    @property
    def classes(self) -> list[str]:
        with self._lock:
            present = set(self._label_ids[: self._size].tolist())
            return sorted(self._labels[i] for i in present)

    def fit(self, examples: Examples, context: FitContext | None = None, progress=None) -> dict:
        with self._lock:
            self._labels = examples.classes
            index = {label: i for i, label in enumerate(self._labels)}
            self._vectors = normalise(examples.embeddings) if len(examples) else np.zeros((0, 0), np.float32)
            self._label_ids = np.array([index[label] for label in examples.labels.tolist()], np.int32)
            self._size = len(examples)
            self._basis = None
            self._maybe_compact()
        return {"examples": len(examples), "classes": len(self._labels)}

    def _label_id(self, label: str) -> int:
        if label not in self._labels:
            self._labels.append(label)
        return self._labels.index(label)

    def add(self, embedding: np.ndarray, label: str, box=None) -> None:
        vector = normalise(np.reshape(embedding, -1))
        with self._lock:
            if self._size and vector.shape[0] != self._vectors.shape[1]:
                raise HeadError(f"embedding size {vector.shape[0]} != stored {self._vectors.shape[1]}")
            if self._size == len(self._vectors):  # grow by doubling: amortised O(1) add
                grown = np.zeros((max(64, 2 * self._size), vector.shape[0]), np.float32)
                ids = np.zeros(len(grown), np.int32)
                if self._size:
                    grown[: self._size] = self._vectors[: self._size]
                    ids[: self._size] = self._label_ids[: self._size]
                self._vectors, self._label_ids = grown, ids
            self._vectors[self._size] = vector
            self._label_ids[self._size] = self._label_id(label)
            if self._basis is not None:
                if len(self._reduced) < len(self._vectors):
                    grown_r = np.zeros((len(self._vectors), self._basis.shape[1]), np.float32)
                    grown_r[: self._size] = self._reduced[: self._size]
                    self._reduced = grown_r
                self._reduced[self._size] = vector @ self._basis
            self._size += 1
            self._maybe_compact()

    def _maybe_compact(self) -> None:
        """(Re)build the reduced copy when the store reaches compact_min, and again each time it doubles."""
        n, opts = self._size, self.options
        if n < opts.compact_min or self._vectors.shape[1] <= opts.compact_dim:
            return
        if self._basis is not None and n < 2 * self._basis_size:
            return
        vectors = self._vectors[:n]
        sample = vectors if n <= 20000 else vectors[np.random.default_rng(0).choice(n, 20000, replace=False)]
        _, _, vt = np.linalg.svd(sample, full_matrices=False)
        self._basis = np.ascontiguousarray(vt[: opts.compact_dim].T)
        self._reduced = np.zeros((len(self._vectors), opts.compact_dim), np.float32)
        self._reduced[:n] = vectors @ self._basis
        self._basis_size = n

    @property
    def compact(self) -> bool:
        return self._basis is not None

    def forget(self, label: str) -> None:
        with self._lock:
            if label not in self._labels:
                return
            keep = self._label_ids[: self._size] != self._labels.index(label)
            self._vectors = self._vectors[: self._size][keep].copy()
            self._label_ids = self._label_ids[: self._size][keep].copy()
            if self._basis is not None:
                self._reduced = self._reduced[: self._size][keep].copy()
            self._size = int(keep.sum())
            if self._size < self.options.compact_min:
                self._basis = None

    def predict(self, embedding: np.ndarray) -> Prediction:
        query = normalise(np.reshape(embedding, -1))
        with self._lock:
            if not self._size:
                raise HeadError("knn head has no examples yet: capture some first")
            n = self._size
            if self._basis is not None and n > self.options.rerank:
                approx = self._reduced[:n] @ (query @ self._basis)
                candidates = np.argpartition(-approx, self.options.rerank - 1)[: self.options.rerank]
                sims = self._vectors[candidates] @ query
                label_ids = self._label_ids[candidates]
            else:
                sims = self._vectors[:n] @ query
                label_ids = self._label_ids[:n]
            labels = list(self._labels)
        return vote(sims, label_ids, labels, self.options.k, self.options.threshold)

    @classmethod
    def decode(cls, outputs: list[np.ndarray], meta: dict) -> Prediction:
        """The exported model outputs one similarity per stored example; the vote stays in numpy."""
        extra = meta["decode"]
        row_labels = extra["row_labels"]
        labels = sorted(set(row_labels))
        index = {label: i for i, label in enumerate(labels)}
        label_ids = np.array([index[l] for l in row_labels], np.int64)
        return vote(outputs[0].reshape(-1), label_ids, labels, int(extra.get("k", 5)), float(extra.get("threshold", 0.0)))


@hookimpl
def register_heads(register):
    register(KnnHead)
