"""`edged bench fewshot`: sign-digits at 5/10/20 shots per class — textbook baselines beside edged's classifier.

Variants: `photos` (independent photos), `camera` (taught from consecutive frames of a jittery
video made of the photos, tested on other photos), `openset` (3 of 10 classes never taught),
and `--modes` (frozen / fine_tune / from_scratch through the real train path, side by side).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from edged_plugins.classifier import UNKNOWN, ClassifierHead, ClassifierOptions
from edged_plugins.knn import KnnHead, KnnOptions

from ..config import Config
from ..heads.base import FitContext, TrainRequest
from ..heads.fewshot import distinct_count, l2, logistic_regression, nearest_mean
from ..heads.registry import head_classes, plugin_manager
from ..learn.jobs import run_train
from ..runtime.engine import Engine, EngineOptions
from ..serve.capture import CaptureJob, CaptureRequest, CaptureTarget
from ..serve.headset import HeadSet
from ..serve.worker_client import tensorflow_available
from ..sources.opencv import OpenCVSource
from ..sources.augment import augmenter
from ..sources.preprocess import to_pixels
from ..state.store import Examples, NewExample, Store
from .common import CACHE, DATA, Timer, load_sign_digits, models, table


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=str(DATA / "sign-digits"))
    p.add_argument("--models", default="1.0:224,0.25:128", help="alpha:size pairs (real weights from ../shared/models)")
    p.add_argument("--shots", default="5,10,20")
    p.add_argument("--draws", type=int, default=5, help="random draws of the training photos per shot count")
    p.add_argument("--variants", default="photos,camera,openset", help="photos, camera, openset")
    p.add_argument("--no-fine-tune", action="store_true",
                   help="photos: the frozen numpy head only (train's default also fine-tunes where TensorFlow is)")
    p.add_argument("--modes", action="store_true", help="also frozen / fine_tune / from_scratch side by side (slow)")
    p.add_argument("--modes-shots", type=int, default=10)
    p.add_argument("--modes-epochs", type=int, default=20)


# -- textbook baselines, on the same embeddings ------------------------------------------------
def knn_baseline(x, y, xt, k=5):
    sims = l2(xt) @ l2(x).T
    top = np.argsort(-sims, axis=1)[:, :k]
    votes = np.zeros((len(xt), y.max() + 1))
    for j in range(k):
        np.add.at(votes, (np.arange(len(xt)), y[top[:, j]]), np.maximum(sims[np.arange(len(xt)), top[:, j]], 0))
    return votes.argmax(1)


def instant_head(data, rows: np.ndarray, xt: np.ndarray) -> list[str]:
    """What the user sees while teaching, before any `train`: edged's kNN head with its defaults, fed the taught
    rows one by one as captures feed it; its best class (an 'unknown' answer is scored by the class under it)."""
    head = KnnHead(KnnOptions())
    for i in rows:
        head.add(data.emb[i], data.classes[data.y[i]], None)
    out = []
    for q in xt:
        pred = head.predict(q)
        out.append(max(pred.scores, key=pred.scores.get) if pred.scores else pred.label)
    return out


def ncm_baseline(x, y, xt):
    return np.argmax(nearest_mean(l2(x), y, y.max() + 1).logits(l2(xt)), 1)


def logistic_baseline(x, y, xt):
    """Multinomial logistic regression on standardised raw embeddings, L2 penalty 1/(C n) with C = 1."""
    mu, sd = x.mean(0), x.std(0) + 1e-6
    model = logistic_regression((x - mu) / sd, y, y.max() + 1, l2_penalty=1.0 / len(x), steps=400, scale=1.0)
    return np.argmax(model.logits((xt - mu) / sd), 1)


class Data:
    """Photos, their model inputs and embeddings for one backbone."""

    def __init__(self, images, labels, info, engine):
        self.images, self.info, self.engine = images, info, engine
        self.classes = sorted(set(labels.tolist()))
        self.y = np.array([self.classes.index(l) for l in labels])
        self.pixels = np.stack([to_pixels(img, info.input_size) for img in images])
        self.emb = np.stack([engine.embed(p) for p in self.pixels])

    def draw(self, shots: int, seed: int, classes=None):
        rng = np.random.default_rng(seed)
        classes = range(len(self.classes)) if classes is None else classes
        train = np.concatenate([rng.permutation(np.flatnonzero(self.y == c))[:shots] for c in classes])
        return train, np.setdiff1d(np.arange(len(self.y)), train)

    def context(self, rows: np.ndarray) -> FitContext:
        """What `train` gives the head: stored frames and the serving backbone (here: these photos)."""
        pixels = lambda ids: self.pixels[np.asarray(ids)]  # noqa: E731
        return FitContext(TrainRequest(), self.info.input_size, frames=lambda ids: [self.images[i] for i in ids],
                          pixels=pixels, embed=self.engine.embed, augmented=augmenter(pixels, self.engine.embed))

    def edged(self, rows: np.ndarray, embeddings=None, labels=None) -> ClassifierHead:
        """edged's classifier as a user gets it from `train` defaults."""
        emb = self.emb[rows] if embeddings is None else embeddings
        labs = np.array([self.classes[i] for i in self.y[rows]]) if labels is None else labels
        head = ClassifierHead(ClassifierOptions())
        head.fit(Examples(rows, labs, emb, [None] * len(rows)), self.context(rows))
        return head


def path_frozen(head: ClassifierHead, embeddings: np.ndarray) -> list[str]:
    """The best class for each embedding (also where the head would answer 'unknown')."""
    return [max(s, key=s.get) for s in (head.predict(e).scores for e in embeddings)]


def _accuracy(pred_labels, truth) -> float:
    return float(np.mean(np.asarray(pred_labels) == np.asarray(truth)))


def photos_variant(data: Data, shots_list, draws, t, path: Optional[TrainPath]) -> tuple[list, dict]:
    """Mean over draws; `path` set: also `train` with its defaults (mode auto: fine-tuning where it wins)."""
    rows, summary = [], {}
    for shots in shots_list:
        acc = {k: [] for k in ("knn", "instant", "ncm", "logistic", "frozen", "edged", "cv")}
        chosen, tuned = [], 0
        for draw in range(draws):
            tr, te = data.draw(shots, 1000 * shots + draw)
            x, y, xt, yt = data.emb[tr], data.y[tr], data.emb[te], data.y[te]
            acc["knn"].append(_accuracy(knn_baseline(x, y, xt), yt))
            acc["instant"].append(_accuracy(instant_head(data, tr, xt), [data.classes[i] for i in yt]))
            acc["ncm"].append(_accuracy(ncm_baseline(x, y, xt), yt))
            acc["logistic"].append(_accuracy(logistic_baseline(x, y, xt), yt))
            head = data.edged(tr)
            truth = [data.classes[i] for i in yt]
            acc["frozen"].append(_accuracy(path_frozen(head, xt), truth))
            acc["cv"].append(head.metrics["cv_accuracy"])
            chosen.append(head.metrics["chosen"])
            if path is None:
                acc["edged"].append(acc["frozen"][-1])
                continue
            pred, metrics, served = path.train(tr, TrainRequest(), head)
            acc["edged"].append(_accuracy(pred, truth))
            tuned += served == "fine-tuned model"
            print(f"    {shots} shots draw {draw + 1}: frozen {acc['frozen'][-1]:.3f}, train defaults "
                  f"{acc['edged'][-1]:.3f} ({served}; {metrics.get('fine_tune', '')})  ({t():.0f}s)", flush=True)
        m = {k: float(np.mean(v)) for k, v in acc.items()}
        summary[shots] = m
        common = max(set(chosen), key=chosen.count)
        rows.append([shots, f"{m['knn']:.3f}", f"{m['instant']:.3f}", f"{m['ncm']:.3f}", f"{m['logistic']:.3f}", f"{m['frozen']:.3f}",
                     f"{m['edged']:.3f}", f"{100 * (m['edged'] - m['logistic']):+.1f}", f"{m['cv']:.3f}", common,
                     f"{tuned}/{draws}" if path is not None else "-"])
        print(f"  {shots} shots x {draws} draws done ({t():.0f}s)", flush=True)
    return rows, summary


def _jitter_video(photos: list[np.ndarray], frames_per_photo: int, rng, path: Path) -> str:
    """A 15 fps 320x240 video: each photo held for a while by an unsteady hand (shift, zoom, light drift)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 15.0, (320, 240))
    dx = dy = 0.0
    zoom, light = 1.0, 1.0
    for photo in photos:
        base = cv2.resize(photo, (320, 240))
        for _ in range(frames_per_photo):
            dx = float(np.clip(dx + rng.normal(0, 2), -20, 20))
            dy = float(np.clip(dy + rng.normal(0, 2), -15, 15))
            zoom = float(np.clip(zoom + rng.normal(0, 0.01), 0.9, 1.15))
            light = float(np.clip(light + rng.normal(0, 0.02), 0.8, 1.2))
            m = cv2.getRotationMatrix2D((160, 120), 0, zoom)
            m[:, 2] += (dx, dy)
            frame = cv2.warpAffine(base, m, (320, 240), borderMode=cv2.BORDER_REFLECT)
            writer.write(np.clip(frame.astype(np.float32) * light, 0, 255).astype(np.uint8))
    writer.release()
    return str(path)


def camera_variant(data: Data, shots_list, draws, t, tmp: Path) -> tuple[list, dict]:
    """Taught by `capture` from camera-like videos: each shot photo held before the camera in a capture of its own
    (4 frames, every 3rd of a 15 fps jittery video), tested on the other photos. Beside the held-out accuracy, the
    head's own cross-validated estimate as it is now (folds keep each capture whole) and as it was (folds by example,
    a frame's near-copies on both sides); and how many stored frames were distinct at 0.97 and 0.99."""
    rows, gaps = [], {}
    for shots in shots_list:
        acc = {"photos": [], "frames": [], "cv by capture": [], "cv by example": []}
        kept = {"stored": [], "distinct at 0.97": [], "distinct at 0.99": []}
        for draw in range(min(draws, 3)):
            rng = np.random.default_rng(7000 + 1000 * shots + draw)
            tr, te = data.draw(shots, 1000 * shots + draw)
            truth = [data.classes[i] for i in data.y[te]]
            head = data.edged(tr)
            acc["photos"].append(_accuracy(path_frozen(head, data.emb[te]), truth))
            store = Store(tmp / f"store-{shots}-{draw}")
            for i in tr:
                video = _jitter_video([data.images[i]], 12, rng, tmp / "v.mp4")
                source = OpenCVSource(video, Config().source.model_copy(update={"uri": video, "loop": False}))
                source.open()
                job = CaptureJob(CaptureRequest(data.classes[data.y[i]], 4), CaptureTarget(store, data.info.id))
                n = 0
                while not job.done and (frame := source.read()) is not None:
                    n += 1
                    if n % 3 == 0:
                        job.offer(frame.image, data.engine.embed(to_pixels(frame.image, data.info.input_size)))
                source.close()
            ex = store.examples(data.info.id)
            frames = {int(i): store.load_frame(int(i)) for i in ex.ids}
            pixels = lambda ids: np.stack([to_pixels(frames[int(i)], data.info.input_size) for i in ids])  # noqa: E731
            ctx = FitContext(TrainRequest(), data.info.input_size, frames=lambda ids: [frames[int(i)] for i in ids],
                             pixels=pixels, embed=data.engine.embed, augmented=augmenter(pixels, data.engine.embed))
            h = ClassifierHead(ClassifierOptions())
            h.fit(ex, ctx)
            acc["frames"].append(_accuracy(path_frozen(h, data.emb[te]), truth))
            acc["cv by capture"].append(h.metrics["cv_accuracy"])
            by_example = ClassifierHead(ClassifierOptions())
            by_example.fit(Examples(ex.ids, ex.labels, ex.embeddings, ex.boxes), ctx)  # each frame its own capture
            acc["cv by example"].append(by_example.metrics["cv_accuracy"])
            kept["stored"].append(len(ex))
            for near in (0.97, 0.99):
                kept[f"distinct at {near}"].append(sum(distinct_count(ex.embeddings[ex.labels == c], near)
                                                       for c in ex.classes))
            store.close()
        m = {k: float(np.mean(v)) for k, v in acc.items()}
        gaps[shots] = (m["cv by example"] - m["frames"], m["cv by capture"] - m["frames"])
        rows.append([shots] + [f"{v:.3f}" for v in m.values()]
                    + [f"{100 * gaps[shots][0]:+.1f}", f"{100 * gaps[shots][1]:+.1f}"]
                    + [f"{np.mean(v):.0f}" for v in kept.values()])
        print(f"  camera {shots} shots done ({t():.0f}s)", flush=True)
    return rows, gaps


def _auroc(known_scores, unknown_scores) -> float:
    """P(an unknown frame is more novel than a known one)."""
    a, b = np.asarray(known_scores), np.asarray(unknown_scores)
    ranks = np.concatenate([a, b]).argsort().argsort() + 1
    return float((ranks[len(a):].sum() - len(b) * (len(b) + 1) / 2) / (len(a) * len(b)))


def openset_variant(data: Data, shots_list, draws, t) -> list:
    rows = []
    for shots in shots_list:
        res = {h: {"auroc": [], "known": [], "caught": [], "false": []} for h in ("classifier", "knn")}
        for draw in range(draws):
            rng = np.random.default_rng(500 + draw)
            never = rng.choice(len(data.classes), 3, replace=False)
            known = [c for c in range(len(data.classes)) if c not in never]
            tr, _ = data.draw(shots, 1000 * shots + draw, known)
            te_known = np.setdiff1d(np.flatnonzero(np.isin(data.y, known)), tr)
            te_never = np.flatnonzero(np.isin(data.y, never))
            labels = np.array([data.classes[i] for i in data.y[tr]])
            knn = KnnHead(KnnOptions())
            knn.fit(Examples(tr, labels, data.emb[tr], [None] * len(tr)))
            for name, head in (("classifier", data.edged(tr)), ("knn", knn)):
                pk = [head.predict(e) for e in data.emb[te_known]]
                pn = [head.predict(e) for e in data.emb[te_never]]
                res[name]["auroc"].append(_auroc([p.novelty for p in pk], [p.novelty for p in pn]))
                res[name]["known"].append(_accuracy([p.label for p in pk], [data.classes[i] for i in data.y[te_known]]))
                res[name]["caught"].append(float(np.mean([p.label == UNKNOWN for p in pn])))
                res[name]["false"].append(float(np.mean([p.label == UNKNOWN for p in pk])))
        for name, r in res.items():
            rows.append([shots, name] + [f"{np.mean(v):.3f}" for v in r.values()])
        print(f"  openset {shots} shots done ({t():.0f}s)", flush=True)
    return rows


class TrainPath:
    """`train` as the daemon runs it, on a fresh state folder per run: the store, the worker code, versions."""

    def __init__(self, cfg_backbone, data: Data, tmp: Path, options: dict):
        self.cfg_backbone, self.data, self.tmp, self.options = cfg_backbone, data, tmp, options
        self.runs = 0

    def train(self, rows: np.ndarray, request: TrainRequest, frozen: ClassifierHead) -> tuple[list[str], dict, str]:
        """Predicted labels on the rest of the photos, the train metrics, and what served them."""
        data = self.data
        self.runs += 1
        state = self.tmp / f"train-{self.runs}"
        shutil.copytree(CACHE / "backbones" / data.info.id, state / "backbones" / data.info.id, dirs_exist_ok=True)
        cfg = Config.model_validate({"state_dir": str(state), "backbone": self.cfg_backbone.model_dump(),
                                     "heads": {"active": ["classifier"], "classifier": self.options}})
        store = Store(state / "store")
        store.add_many([NewExample(data.images[i], data.classes[data.y[i]], data.emb[i]) for i in rows], data.info.id)
        test = np.setdiff1d(np.arange(len(data.y)), rows)
        try:
            result = run_train(cfg, "classifier", request)
            if not result.get("activated", True):  # auto mode: fine-tuning lost, the frozen head keeps serving
                return path_frozen(frozen, data.emb[test]), result["metrics"], "frozen head"
            heads = HeadSet.for_config(cfg, store, data.info, head_classes(plugin_manager()))
            try:
                predictor, fused = heads.open_head("classifier", state / "heads" / "classifier" / result["version"])
                if fused is not None:
                    return [fused.predict(p).label for p in data.pixels[test]], result["metrics"], "fine-tuned model"
                return path_frozen(predictor, data.emb[test]), result["metrics"], "frozen head (fine-tuning skipped)"
            finally:
                heads.close()
        finally:
            store.close()
            shutil.rmtree(state, ignore_errors=True)


def modes_variant(path: TrainPath, data: Data, shots: int, epochs: int) -> list:
    """frozen / fine_tune / from_scratch through the real train path, side by side."""
    tr, te = data.draw(shots, 42)
    truth = [data.classes[i] for i in data.y[te]]
    rows = []
    for mode in ("frozen", "fine_tune", "from_scratch"):
        timer = Timer()
        frozen = data.edged(tr)
        if mode == "frozen":
            pred, metrics, served = path_frozen(frozen, data.emb[te]), frozen.metrics, "frozen head"
        else:
            pred, metrics, served = path.train(tr, TrainRequest(mode=mode, epochs=epochs), frozen)
        tuned = metrics.get("fine_tune_cv_accuracy")
        rows.append([mode, f"{_accuracy(pred, truth):.3f}", served, "-" if tuned is None else f"{tuned:.3f}",
                     f"{timer():.0f}"])
    return rows


def run(args) -> int:
    images, labels = load_sign_digits(args.data)
    shots_list = [int(s) for s in args.shots.split(",")]
    variants = set(args.variants.split(","))
    final = []
    for alpha, size, cfg, info in models(args.models):
        engine = Engine(EngineOptions(info.path, num_threads=2, scaling=info.scaling))
        t = Timer()
        data = Data(images, labels, info, engine)
        print(f"\n== {info.description}: {len(images)} photos, {len(data.classes)} classes, embedded in {t():.0f}s")
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            fine_tune = not args.no_fine_tune and tensorflow_available()
            if "photos" in variants:
                path = TrainPath(cfg, data, tmp, {}) if fine_tune else None
                rows, summary = photos_variant(data, shots_list, args.draws, t, path)
                print(f"photos: mean of {args.draws} draws per shot count; the rest of the set is the test split. "
                      f"'frozen': the numpy head (no TensorFlow); 'train defaults': what `train` gives"
                      + (" (mode auto: fine-tuned when 2-fold cross-validation on the taught photos says it wins)"
                         if fine_tune else " without TensorFlow (the frozen head)"))
                print(table(rows, ["shots", "kNN k=5", "edged kNN (instant)", "class mean", "logistic", "edged frozen", "train defaults",
                                   "vs logistic", "frozen cv", "chosen most", "fine-tuned"]))
                final.append(f"{alpha}/{size} instant head - class mean: " + ", ".join(
                    f"{s}-shot {100 * (summary[s]['instant'] - summary[s]['ncm']):+.1f}" for s in sorted(summary))
                    + " points (target >= 0)")
                for shots in (5, 10):
                    if shots in summary:
                        s = summary[shots]
                        final.append(f"{alpha}/{size} {shots}-shot {s['edged']:.3f} vs logistic {s['logistic']:.3f} "
                                     f"({100 * (s['edged'] - s['logistic']):+.1f} points, target >= +5)")
                if 20 in summary:
                    final.append(f"{alpha}/{size} 20-shot {summary[20]['edged']:.3f} (target >= 0.93)")
            if "camera" in variants:
                rows, gaps = camera_variant(data, shots_list, args.draws, t, tmp)
                print("camera: each shot photo captured from a 15 fps jittery video of it (4 frames, every 3rd), "
                      "tested on the other photos; the head's cross-validated estimate with folds by capture (now) "
                      "and by example (before), and each one's distance from the held-out accuracy; mean of up to 3 "
                      "draws")
                print(table(rows, ["shots", "taught on photos", "taught from frames", "cv by capture", "cv by example",
                                   "by example - held out", "by capture - held out", "stored", "distinct at 0.97",
                                   "distinct at 0.99"]))
                final.append(f"{alpha}/{size} cv - held out: " + ", ".join(
                    f"{s}-shot by capture {100 * g[1]:+.1f} (by example {100 * g[0]:+.1f})" for s, g in sorted(gaps.items()))
                    + " points (target within 3)")
            if "openset" in variants:
                rows = openset_variant(data, shots_list, args.draws, t)
                print("openset: 3 of the 10 classes never taught; AUROC of novelty (known vs never taught), "
                      "accuracy on known classes counting 'unknown' as wrong, never-taught frames answered "
                      "'unknown', known frames answered 'unknown'")
                print(table(rows, ["shots", "head", "AUROC", "known accuracy", "unknown caught", "false unknown"]))
            if args.modes:
                path = TrainPath(cfg, data, tmp, {"fine_tune_epochs": args.modes_epochs})
                rows = modes_variant(path, data, args.modes_shots, args.modes_epochs)
                print(f"modes: {args.modes_shots} shots, one draw, up to {args.modes_epochs} epochs, every weighted "
                      f"layer trainable; a fine-tuned model is served only when cross-validation says it beat frozen")
                print(table(rows, ["mode", "test accuracy", "served", "fine-tune cv", "seconds"]))
        engine.close()
    print()
    print("fewshot: " + "; ".join(final))
    return 0
