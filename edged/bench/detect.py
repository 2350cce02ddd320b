"""`edged bench detect`: box regression mean IoU on held-out raccoon photos and synthetic scenes, beside the mean-box baseline."""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from edged_plugins.boxes import BoxOptions, iou_numpy
from edged_plugins.boxes_train import train_boxes

from ..learn import keras_backbone
from ..sources.synthetic import scene_at
from ..state.importer import voc
from .common import DATA, Timer, backbone_config, table


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=str(DATA / "raccoon"))
    p.add_argument("--alpha", type=float, default=0.25)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--weights")
    p.add_argument("--cut", help="feature layer for both data sets (default: raccoon conv_pw_11_relu, an 8x8 grid "
                                 "at 128 px; synthetic conv_pw_13_relu)")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--fine-tune-layers", type=int, default=14)
    p.add_argument("--fine-tune-epochs", type=int, default=40)
    p.add_argument("--losses", default="mse,giou", help="losses compared side by side")
    p.add_argument("--synthetic-train", type=int, default=3000)
    p.add_argument("--synthetic-test", type=int, default=200)
    p.add_argument("--only", choices=["raccoon", "synthetic"], help="run one data set")


def load_voc(folder: Path, size: int):
    """Photos with exactly one box (read as `edged import voc` reads them), squashed to size x size (no crop)."""
    images, boxes = [], []
    for path, _, box in voc(folder):
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            continue
        boxes.append(box)
        images.append(cv2.cvtColor(cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB))
    return np.stack(images), np.array(boxes, np.float32)


def _synthetic(seed: int, n: int, size: int):
    scenes = [scene_at(seed, i, size, size, None, clutter=10) for i in range(n)]
    return (np.stack([s.image[..., ::-1] for s in scenes]), [s.label for s in scenes],
            np.array([s.box for s in scenes], np.float32))


def _evaluate(name, cfg, x, labels, boxes, tx, tlabels, tboxes, args, t):
    """Train on (x, boxes) with a validation fifth for epoch selection; report IoU on the untouched test set."""
    baseline = float(iou_numpy(np.tile(boxes.mean(0), (len(tboxes), 1)), tboxes).mean())
    order = np.random.default_rng(1).permutation(len(x))
    n_val = max(1, len(x) // 5)
    val, train = order[:n_val], order[n_val:]
    row = [name, len(train), len(val), len(tx), f"{baseline:.3f}"]
    best = 0.0
    for loss in args.losses.split(","):
        opts = BoxOptions(loss=loss, epochs=args.epochs, fine_tune_layers=args.fine_tune_layers,
                                fine_tune_epochs=args.fine_tune_epochs, augment=True)
        progress = lambda p: print(f"    {name} {loss} {p['phase']} {p['epoch']}/{p['epochs']} loss {p['loss']} val IoU {p['val_iou']}", flush=True) \
            if p["epoch"] % 10 == 0 else None
        model, classes, metrics = train_boxes(
            keras_backbone.feature_map(cfg), x[train], [labels[i] for i in train], boxes[train], x[val],
            [labels[i] for i in val], boxes[val], 1 / 127.5, -1.0, opts, progress)
        pred = model.predict(tx.astype(np.float32) / 127.5 - 1.0, verbose=0, batch_size=32)
        iou = float(iou_numpy(np.clip(pred[:, len(classes) if len(classes) > 1 else 1:][:, :4], 0, 1), tboxes).mean())
        print(f"  {name} [{loss}] test mean IoU {iou:.3f} (val {metrics['val_iou']:.3f}, mean box {baseline:.3f})  {t():.0f}s", flush=True)
        row.append(f"{iou:.3f}")
        best = max(best, iou)
    return row, best, baseline


def run(args) -> int:
    cuts = {"raccoon": args.cut or "conv_pw_11_relu", "synthetic": args.cut or "conv_pw_13_relu"}
    configs = {}
    for name, cut in cuts.items():
        configs[name], note = backbone_config(args.alpha, args.size, args.weights, cut=cut)
    if note:
        print(note)
    print(f"backbone mobilenet_v1 alpha={args.alpha:g} {args.size}px, features at {cuts}; head: 1x1 conv, dense, "
          f"[class | box]; {args.epochs} frozen + {args.fine_tune_epochs} fine-tune epochs (top {args.fine_tune_layers} layers); "
          f"augmentation: crop/scale jitter keeping the box, flip, brightness")
    t = Timer()
    rows, lines = [], []
    if args.only in (None, "raccoon"):
        x, boxes = load_voc(Path(args.data), args.size)
        rng = np.random.default_rng(0)
        order = rng.permutation(len(x))
        n_test = len(x) // 5
        test, train = order[:n_test], order[n_test:]
        row, best, base = _evaluate("raccoon", configs["raccoon"], x[train], ["raccoon"] * len(train), boxes[train], x[test],
                                    ["raccoon"] * len(test), boxes[test], args, t)
        rows.append(row)
        lines.append(f"detect raccoon: mean IoU {best:.3f} vs mean box {base:.3f} (target >= 0.70)")
    if args.only in (None, "synthetic"):
        x, labels, boxes = _synthetic(1, args.synthetic_train, args.size)
        vx, vlabels, vboxes = _synthetic(2, args.synthetic_test, args.size)
        row, best, base = _evaluate("synthetic", configs["synthetic"], x, labels, boxes, vx, vlabels, vboxes, args, t)
        rows.append(row)
        lines.append(f"detect synthetic: mean IoU {best:.3f} vs mean box {base:.3f} (target >= 0.85)")
    print()
    print(table(rows, ["data", "train", "val", "test", "mean box"] + [f"test IoU {l}" for l in args.losses.split(",")]))
    for line in lines:
        print(line)
    return 0
