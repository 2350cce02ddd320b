"""`edged bench fewshot`: accuracy on sign-digits for 5/10/20 shots per class, methods side by side."""

from __future__ import annotations

import argparse
import os

import numpy as np

from edged_plugins.classifier import ClassifierOptions
from edged_plugins.classifier_train import fine_tune, train_classifier_head

from ..learn.finetune import fused_model
from ..learn.keras_backbone import build
from ..runtime.engine import Engine, EngineOptions
from ..sources.augment import embed_augmented
from ..sources.preprocess import to_pixels
from ..state.store import Examples
from .common import DATA, Timer, backbone, backbone_config, load_sign_digits, table


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=str(DATA / "sign-digits"))
    p.add_argument("--weights", help="backbone weights file (default: ../shared/models for --alpha)")
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--shots", default="5,10,20")
    p.add_argument("--draws", type=int, default=3, help="random draws of the training shots per shot count")
    p.add_argument("--augment-copies", type=int, default=8)
    p.add_argument("--fine-tune-layers", type=int, default=27, help="top conv layers unfrozen (27 = all of MobileNet v1); 0 skips")
    p.add_argument("--fine-tune-epochs", type=int, default=30)
    p.add_argument("--fine-tune-lr", type=float, default=2e-4)
    p.add_argument("--fine-tune-shots", default="20", help="shot counts that get the (slow) fine-tune column")
    p.add_argument("--test-per-class", type=int, default=0, help="0: every photo not drawn for training")


def _knn(train_x, train_y, test_x, k=5):
    from edged_plugins.knn import KnnHead, KnnOptions

    head = KnnHead(KnnOptions(k=k, threshold=-1.0))
    head.fit(Examples(np.arange(len(train_y)), train_y, train_x, [None] * len(train_y)))
    return np.array([head.predict(x).label for x in test_x])


def _linear_probe(train_x, train_y, test_x, classes):
    import keras

    keras.utils.set_random_seed(0)
    y = np.array([classes.index(c) for c in train_y])
    model = keras.Sequential([keras.Input((train_x.shape[1],)), keras.layers.Dense(len(classes), activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    model.fit(train_x, y, epochs=200, batch_size=len(train_x), verbose=0)
    return np.array(classes)[np.argmax(model.predict(test_x, verbose=0), 1)]


def run(args) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    cfg, note = backbone_config(args.alpha, args.size, args.weights)
    if note:
        print(note)
    info = backbone(cfg)
    engine = Engine(EngineOptions(info.path, num_threads=2, scaling=info.scaling))
    images, labels = load_sign_digits(args.data)
    classes = sorted(set(labels.tolist()))
    t = Timer()
    pixels = np.stack([to_pixels(img, info.input_size) for img in images])
    emb = np.stack([engine.embed(p) for p in pixels])
    print(f"{len(images)} photos, {len(classes)} classes; backbone {info.description}; embedded in {t():.1f}s")
    shots_list = [int(s) for s in args.shots.split(",")]
    ft_shots = {int(s) for s in args.fine_tune_shots.split(",") if s}
    methods = ["knn k=5", "linear probe", "classifier", f"classifier+aug x{args.augment_copies}"]
    if args.fine_tune_layers:
        methods.append(f"+fine-tune {args.fine_tune_layers}")
    results = {s: {m: [] for m in methods} for s in shots_list}
    for shots in shots_list:
        for draw in range(args.draws):
            rng = np.random.default_rng(1000 * shots + draw)
            train_idx, test_idx = [], []
            for c in classes:
                idx = rng.permutation(np.flatnonzero(labels == c))
                train_idx.extend(idx[:shots])
                rest = idx[shots:]
                test_idx.extend(rest[: args.test_per_class] if args.test_per_class else rest)
            train_idx, test_idx = np.array(train_idx), np.array(test_idx)
            tx, ty, vx, vy = emb[train_idx], labels[train_idx], emb[test_idx], labels[test_idx]
            acc = lambda pred: float(np.mean(pred == vy))
            r = results[shots]
            r["knn k=5"].append(acc(_knn(tx, ty, vx)))
            r["linear probe"].append(acc(_linear_probe(tx, ty, vx, classes)))
            opts = ClassifierOptions(min_per_class=2, seed=draw)
            plain = train_classifier_head(tx, ty, opts)
            r["classifier"].append(acc(np.array(plain.classes)[np.argmax(plain.model.predict(vx, verbose=0), 1)]))
            aug_rng = np.random.default_rng(draw)
            augmented = lambda rows: (learn_aug(engine, pixels[train_idx[rows]], args.augment_copies, aug_rng),
                                      np.tile(rows, args.augment_copies))
            aug = train_classifier_head(tx, ty, opts, augmented=augmented)
            r[methods[3]].append(acc(np.array(aug.classes)[np.argmax(aug.model.predict(vx, verbose=0), 1)]))
            if args.fine_tune_layers and shots in ft_shots:
                ft_opts = ClassifierOptions(min_per_class=2, seed=draw, fine_tune_layers=args.fine_tune_layers,
                                                  fine_tune_epochs=args.fine_tune_epochs,
                                                  fine_tune_learning_rate=args.fine_tune_lr)
                bb = build(cfg)
                fused = fused_model(bb, aug.model)
                y = np.array([aug.classes.index(c) for c in ty])
                val = aug.val_index
                train_rows = np.setdiff1d(np.arange(len(ty)), val)
                fine_tune(fused, bb, pixels[train_idx[train_rows]], y[train_rows], pixels[train_idx[val]], y[val],
                                ft_opts, info.scale, info.offset)
                probs = fused.predict(pixels[test_idx].astype(np.float32) * info.scale + info.offset, verbose=0, batch_size=64)
                r[methods[4]].append(acc(np.array(aug.classes)[np.argmax(probs, 1)]))
            done = {m: round(v[-1], 3) for m, v in r.items() if v}
            print(f"  {shots:2d} shots, draw {draw + 1}/{args.draws}: {done}  ({t():.0f}s)", flush=True)
    rows = []
    for shots in shots_list:
        rows.append([shots] + [f"{np.mean(results[shots][m]):.3f}" if results[shots][m] else "-" for m in methods])
    print()
    print(table(rows, ["shots"] + methods))
    best20 = max((np.mean(v) for v in results.get(20, {}).values() if v), default=float("nan"))
    print("reference (../shared/data/README.md, MobileNet v1 1.0/224): 20-shot kNN 0.76, logistic regression 0.84")
    print(f"fewshot: 20-shot best {best20:.3f} (target >= 0.93)")
    return 0


def learn_aug(engine: Engine, images: np.ndarray, copies: int, rng: np.random.Generator) -> np.ndarray:
    return embed_augmented(engine.embed, images, copies, rng)
