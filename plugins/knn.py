"""kNN head: learns every example at once; answers with the examples a frame copies, else the nearest prototype.

A frame within a quarter of the distance stored examples keep to their nearest neighbours is a copy of what was
taught: the examples it copies answer (a shown frame is known). Any other frame gets the class whose mean is
most like it after the classifier's feature transform (square root, L2, centred on the mean of every stored
example, L2 again; `vote = "prototype"`, the default): on few examples a class that beats a vote of the k nearest
examples, whose raw cosines all sit near 1 (measured in `edged bench fewshot`). `vote = "neighbours"` keeps the
similarity-weighted k-vote everywhere, for classes whose examples form separate clusters. `background` is the one
class that is many things: its examples that a taught class's prototype explains better than its own mean (a
look-alike marked "wrong") are its misfits. They are left out of the class means and the open-set calibration, so a
mark changes nothing elsewhere, and a frame whose nearest stored example is one of them is `background`: the
look-alike is known by its own frames, a taught thing still by its own examples. Adding an example
stays instant: the prototypes are recomputed with the open-set calibration (at once for a new label, else at
most every 2 s).
"""

from __future__ import annotations

import threading
import time
from typing import Literal, Optional

import numpy as np
from pydantic import Field

from edged.config import BACKGROUND
from edged.errors import HeadError
from edged.heads import FitContext, Head, HeadOptions, Prediction, hookimpl
from edged.heads.fewshot import FeatureTransform, novelty, unknown_threshold
from edged.state.store import Examples

UNKNOWN = "unknown"
PROTOTYPE_POWER = 0.5  # the classifier's default feature power (edged_plugins.classifier)
COPY_DISTANCE = 0.25  # a frame this close (share of the examples' median nearest-neighbour distance) is a copy


class KnnOptions(HeadOptions):
    k: int = Field(5, ge=1, le=100)
    threshold: Optional[float] = Field(None, ge=-1.0, le=1.0, description="best cosine similarity below this answers "
                                       "'unknown'; unset: decided from the stored examples (unknown_quantile)")
    unknown_quantile: float = Field(0.1, ge=0, lt=1, description="with no fixed threshold: 'unknown' when a frame is "
                                                                  "less like its class than this share of the stored "
                                                                  "examples are like theirs; 0 = never")
    compact_min: int = Field(4096, ge=0, description="from this many examples scan a reduced copy, then re-rank exactly")
    compact_dim: int = Field(256, ge=8, le=4096, description="dimensions of the reduced copy (uncentred PCA)")
    rerank: int = Field(64, ge=1, le=10_000, description="candidates re-ranked with the full vectors")
    vote: Literal["prototype", "neighbours"] = Field("prototype", description="prototype: the nearest class mean "
                                                     "(transformed, centred); neighbours: a similarity-weighted vote "
                                                     "of the k nearest examples")
    temperature: float = Field(0.05, gt=0, le=10, description="prototype scores: softmax of similarities over this")


def vote(sims: np.ndarray, label_ids: np.ndarray, labels: list[str], k: int, threshold: float) -> Prediction:
    """Similarity-weighted vote of the k most similar rows; 'unknown' when the best is under `threshold`."""
    # Runs on every frame: plain numpy methods, no helpers that wrap them.
    top = (-sims).argpartition(k - 1)[:k] if k < len(sims) else slice(None)
    near = sims[top]
    votes = np.bincount(label_ids[top], weights=near.clip(0.0, None), minlength=len(labels))
    total = float(votes.sum())
    best = float(near.max())
    if total <= 0:
        return Prediction(UNKNOWN, best, {})
    scores = {labels[i]: float(votes[i]) / total for i in votes.nonzero()[0]}
    if best < threshold:
        return Prediction(UNKNOWN, best, scores)
    winner = labels[int(votes.argmax())]
    return Prediction(winner, scores[winner], scores)


def prototypes_of(transformed: np.ndarray, ids: np.ndarray, classes: int) -> np.ndarray:
    """Each class's mean of its (transformed) rows, normalised; zeros for a class without rows."""
    sums = np.zeros((classes, transformed.shape[1]), np.float32)
    np.add.at(sums, ids, transformed)
    return normalise(sums / np.maximum(np.bincount(ids, minlength=classes), 1)[:, None])


def normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    if x.ndim == 1:  # one query per frame: a dot product is several times cheaper than linalg.norm
        return x / max(float(np.sqrt(x @ x)), 1e-12)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


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
        self._reference: Optional[np.ndarray] = None  # LOO similarity of each stored example to its class mean
        self._stale = False
        self._calibrated = 0.0
        self._calibrated_labels: tuple[str, ...] = ()
        self._between = 0.0  # how alike the classes are (0.9 quantile of examples' similarity to other classes, >= 0)
        self._prototypes = np.zeros((0, 0), np.float32)  # class means after the classifier's transform (normalised)
        self._transform = FeatureTransform(PROTOTYPE_POWER)
        self._present = np.zeros(0, bool)
        self._misfits = np.zeros(0, bool)  # background's examples its mean does not explain (see _find_misfits)
        self._memory = np.inf  # a frame at least this like a stored example is a copy of it (median nearest-neighbour)

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
            self._reference = None
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
            self._stale = True
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
            self._reference = None
            if self._size < self.options.compact_min:
                self._basis = None

    def _calibration(self):
        """What decides 'unknown', from the stored examples themselves (recomputed at most every 2 s while they change):

        * each example's similarity to the mean of the others of its class, centred on the mean of all
          stored examples (uncentred cosines of ReLU features all sit near 1);
        * each example's similarity to the nearest mean of another class (how alike the classes are; at least 0,
          where a frame like none of them lies);
        * each example's similarity to its nearest other example (on a sample of up to 256 rows).
        A frame is unknown when it is farther from its class than the `unknown_quantile` of the first — but never
        for being closer to its class than halfway between how alike the examples of a class are and how alike
        the classes are (near-copies taught of two distinct things must not make every other frame unknown) —
        and farther from any stored example than the median of the third: a frame the head was shown (its nearest
        neighbour is itself) is not called unknown.
        """
        now = time.monotonic()
        # a new (or forgotten) label recalibrates at once: the class means must cover every label a vote can pick
        relabelled = self._calibrated_labels != tuple(self._labels)
        if self._reference is None or relabelled or (self._stale and now - self._calibrated > 2.0):
            self._misfits = self._find_misfits(self._vectors[:self._size], self._label_ids[:self._size])
            keep = ~self._misfits
            vectors, ids = self._vectors[:self._size][keep], self._label_ids[:self._size][keep]
            n = len(ids)
            sums = np.zeros((len(self._labels), vectors.shape[1]), np.float32)
            np.add.at(sums, ids, vectors)
            counts = np.bincount(ids, minlength=len(self._labels)).astype(np.float32)
            centre = vectors.mean(axis=0)
            rest = (sums[ids] - vectors) / np.maximum(counts[ids] - 1, 1)[:, None] - centre
            mine = normalise(vectors - centre)
            sims = np.einsum("ij,ij->i", mine, rest) / np.maximum(np.linalg.norm(rest, axis=1), 1e-12)
            sims[counts[ids] < 2] = 1.0
            self._means = normalise(sums / np.maximum(counts, 1)[:, None] - centre)
            others = mine @ self._means.T
            others[np.arange(n), ids] = -np.inf
            between = others.max(axis=1) if (counts > 0).sum() > 1 else np.full(n, -np.inf, np.float32)
            sample = np.arange(n) if n <= 256 else np.random.default_rng(n).choice(n, 256, replace=False)
            nn = vectors[sample] @ vectors.T
            nn[np.arange(len(sample)), sample] = -np.inf
            nearest = nn.max(axis=1) if n > 1 else np.ones(1, np.float32)
            q = self.options.unknown_quantile
            self._reference = np.sort(sims)
            self._centre = centre
            # a frame unrelated to every class sits near 0 (centred); classes more alike than that raise the floor
            self._threshold, self._between = unknown_threshold(self._reference, between, q)
            median_nearest = float(np.median(nearest))
            self._nn_threshold = median_nearest if q > 0 else -np.inf
            # a copy: within a quarter of the distance stored examples keep to their nearest neighbours
            self._memory = 1.0 - COPY_DISTANCE * (1.0 - median_nearest) if n > 1 else np.inf
            self._transform = FeatureTransform(PROTOTYPE_POWER).fit(vectors)
            self._prototypes = prototypes_of(self._transform(vectors), ids, len(self._labels))
            self._present = counts > 0
            self._calibrated, self._stale = now, False
            self._calibrated_labels = tuple(self._labels)
        return self._means, self._centre, self._reference, self._threshold, self._nn_threshold

    def _find_misfits(self, vectors: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Which rows are background's misfits: nearer a taught class's prototype than background's own, under the
        prototype transform."""
        misfits = np.zeros(len(ids), bool)
        if BACKGROUND not in self._labels:
            return misfits
        b = self._labels.index(BACKGROUND)
        background = ids == b
        counts = np.bincount(ids, minlength=len(self._labels))
        taught = counts > 0
        taught[b] = False
        if not background.any() or not taught.any():
            return misfits
        transformed = FeatureTransform(PROTOTYPE_POWER).fit(vectors)(vectors)
        prototypes = prototypes_of(transformed, ids, len(self._labels))
        rows = transformed[background]
        misfits[background] = (rows @ prototypes[taught].T).max(axis=1) > rows @ prototypes[b]
        return misfits

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
                candidates = None
                sims = self._vectors[:n] @ query
                label_ids = self._label_ids[:n]
            labels = list(self._labels)
            auto = self.options.threshold is None
            means, centre, reference, threshold, nn_threshold = self._calibration()
            between, prototypes, transform, present = self._between, self._prototypes, self._transform, self._present
            memory, misfits = self._memory, self._misfits
        fixed = -1.0 if auto else self.options.threshold
        close = sims >= memory if self.options.vote == "prototype" else None
        if close is not None and not close.any():
            nearest = int(sims.argmax())
            row = nearest if candidates is None else int(candidates[nearest])
            if row < len(misfits) and misfits[row]:  # a look-alike marked wrong: known by its own frames
                return Prediction(BACKGROUND, float(sims[nearest]), {BACKGROUND: 1.0})
            pred = self._nearest_prototype(query, prototypes, transform, present, labels, float(sims.max()), fixed)
        elif close is not None:  # a copy of what was taught: the examples it copies answer (a shown frame is known)
            pred = vote(sims[close], label_ids[close], labels, self.options.k, fixed)
        else:
            pred = vote(sims, label_ids, labels, self.options.k, fixed)
        if auto and pred.label != UNKNOWN:
            similarity = float(means[labels.index(pred.label)] @ normalise(query - centre))
            pred.novelty = round(novelty(similarity, reference), 4)
            if similarity < threshold and float(sims.max()) < nn_threshold:
                # its own confidence: 0 at the threshold, 1 once as unlike its class as the classes are to each other
                pred.label = UNKNOWN
                pred.score = float(np.clip((threshold - similarity) / max(threshold - between, 1e-6), 0.0, 1.0))
        return pred

    def _nearest_prototype(self, query: np.ndarray, prototypes: np.ndarray, transform: FeatureTransform,
                           present: np.ndarray, labels: list[str], best: float, threshold: float) -> Prediction:
        sims = prototypes @ transform(query[None, :])[0]
        sims = np.where(present, sims, -np.inf)
        logits = (sims - sims.max()) / self.options.temperature
        weights = np.exp(logits)
        weights /= weights.sum()
        scores = {labels[i]: float(weights[i]) for i in np.nonzero(weights > 1e-4)[0]}
        if best < threshold:
            return Prediction(UNKNOWN, best, scores)
        winner = labels[int(sims.argmax())]
        return Prediction(winner, scores[winner], scores)

    @classmethod
    def decode(cls, outputs: list[np.ndarray], meta: dict) -> Prediction:
        """The exported model outputs one similarity per stored example; the vote stays in numpy."""
        extra = meta["decode"]
        row_labels = extra["row_labels"]
        labels = sorted(set(row_labels))
        index = {label: i for i, label in enumerate(labels)}
        label_ids = np.array([index[l] for l in row_labels], np.int64)
        return vote(outputs[0].reshape(-1), label_ids, labels, int(extra.get("k", 5)), float(extra.get("threshold") if extra.get("threshold") is not None else -1.0))


@hookimpl
def register_heads(register):
    register(KnnHead)
