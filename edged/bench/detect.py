"""`edged bench detect`: the box heads as a user gets them, on raccoon photos and multi-shape synthetic scenes.

Frames are fitted exactly as `train` fits them (each head's `frame_fit`), the heads are trained by
the same functions with their default options (loss, epochs and fine-tuning chosen on validation
inside the training data), and the test split is touched once, after training. IoU and mAP are
measured in the original frame's coordinates, on what `predict` would report.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from edged_plugins.boxes import BoxHead, BoxOptions
from edged_plugins.boxes_train import train_box_head
from edged_plugins.objects import ObjectsHead, ObjectsOptions
from edged_plugins.objects_train import decode_options, train_objects_head

from ..heads.geometry import iou_numpy, mean_average_precision
from ..learn import keras_backbone
from ..learn.context import BoxFrames
from ..sources.preprocess import Placement, fit_frame
from ..sources.synthetic import scene_at
from ..state.importer import voc, voc_folders
from .common import DATA, Timer, backbone_config, table


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=str(DATA / "raccoon"), help="a Pascal VOC folder")
    p.add_argument("--alpha", type=float, default=0.25)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--weights")
    p.add_argument("--synthetic-train", type=int, default=1000)
    p.add_argument("--synthetic-test", type=int, default=200)
    p.add_argument("--only", choices=["raccoon", "synthetic"], help="run one data set")
    p.add_argument("--test-folds", type=int, default=1,
                   help="VOC set: 1 = one held-out fifth; K > 1 = K-fold cross-testing, every photo tested once "
                        "by heads trained without it (figures pooled over all photos)")
    p.add_argument("--heads", default="boxes,objects", help="heads compared (default both)")
    p.add_argument("--epochs", type=int, help="override both heads' default epochs (quick runs)")
    p.add_argument("--options", type=json.loads, default={},
                   help='head options instead of the defaults, e.g. \'{"boxes": {"fine_tune_layers": 12}}\'')


class Split:
    """Frames of one data set as the heads see them, with what maps their boxes back to each frame."""

    def __init__(self, images: list[np.ndarray], objects: list[list[tuple[str, tuple]]], size: int, fit: str):
        self.truths = objects  # frame coordinates
        pixels, placements, fitted = [], [], []
        for img, objs in zip(images, objects):
            px, placement = fit_frame(img, size, fit)
            pixels.append(px)
            placements.append(placement)
            fitted.append(([l for l, _ in objs], np.stack([placement.to_model(b) for _, b in objs]).astype(np.float32)))
        self.placements: list[Placement] = placements
        self.frames = BoxFrames(np.arange(len(images)), np.stack(pixels), [o[0][0] for o in objects], fitted)
        self.single = [i for i, objs in enumerate(objects) if len(objs) == 1]

    def subset(self, rows: list[int]) -> BoxFrames:
        f = self.frames
        return BoxFrames(f.ids[rows], f.pixels[rows], [f.labels[i] for i in rows], [f.objects[i] for i in rows])


def load_voc(folder: Path) -> tuple[list[np.ndarray], list[list[tuple[str, tuple]]]]:
    images, objects = [], []
    annotations, image_dir = voc_folders(folder)
    for path, _, objs in voc(annotations, image_dir):
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is not None:
            images.append(img)
            objects.append(objs)
    return images, objects


def synthetic(seed: int, n: int) -> tuple[list[np.ndarray], list[list[tuple[str, tuple]]]]:
    scenes = [scene_at(seed, i, 160, 120, clutter=10, objects=(1, 3)) for i in range(n)]
    return [s.image for s in scenes], [list(s.objects) for s in scenes]


def _frame_detections(head, outputs, meta, placements):
    out = []
    for row, placement in zip(outputs, placements):
        pred = head.decode([row], meta)
        out.append([(b["label"], b["score"], tuple(placement.to_frame(b["box"]))) for b in pred.boxes])
    return out


def evaluate(name: str, cfg, train_set, test_set, args, t: Timer) -> tuple[list, dict]:
    """Mean box, boxes head, objects head on one data set ((images, objects) each); the table row and the figures."""
    scaled = lambda px: px.astype(np.float32) / 127.5 - 1.0
    splits = {}

    def fitted(fit: str) -> tuple[Split, Split]:  # frames fitted as the head's `frame_fit` says, once per fit
        if fit not in splits:
            splits[fit] = (Split(*train_set, args.size, fit), Split(*test_set, args.size, fit))
        return splits[fit]

    train, test = fitted(BoxHead.frame_fit)
    truth_boxes = np.array([test.truths[i][0][1] for i in test.single])
    mean_box = np.stack([train.truths[i][0][1] for i in train.single]).mean(0)
    figures = {"mean box IoU": float(iou_numpy(np.tile(mean_box, (len(truth_boxes), 1)), truth_boxes).mean())}
    heads = args.heads.split(",")
    progress = lambda p: print(f"    {name} {p['phase']} {p['epoch']}/{p['epochs']} val {p.get('val', '')}", flush=True) \
        if p.get("epoch", 0) % 10 == 0 and "val" in p else None
    extra = {"epochs": args.epochs} if args.epochs else {}
    if "boxes" in heads:
        opts = BoxOptions(**{**extra, **args.options.get("boxes", {})})
        features = lambda: keras_backbone.feature_map_at(cfg, opts.feature_layer)
        model, classes, metrics = train_box_head(features, train.subset(train.single), 1 / 127.5, -1.0, opts, progress)
        meta = {"labels": classes}
        out = model.predict(scaled(test.frames.pixels), verbose=0, batch_size=32)
        found = _frame_detections(BoxHead, out, meta, test.placements)
        figures["boxes IoU"] = float(iou_numpy(np.array([found[i][0][2] for i in test.single]), truth_boxes).mean())
        figures["boxes mAP50"] = mean_average_precision(found, test.truths)
        print(f"  {name} boxes head: {metrics['validation']} validation chose {metrics['loss']}, "
              f"fine-tuned {metrics['fine_tuned']}, {metrics['epochs']} epochs; val IoU {metrics['val_iou']} vs mean box "
              f"{metrics['mean_box_iou']}  ({t():.0f} s)", flush=True)
    if "objects" in heads:
        train, test = fitted(ObjectsHead.frame_fit)
        opts = ObjectsOptions(**{**extra, **args.options.get("objects", {})})
        features = lambda: keras_backbone.feature_map_at(cfg, opts.feature_layer)
        model, classes, metrics = train_objects_head(features, train.frames, 1 / 127.5, -1.0, opts, progress)
        meta = {"labels": classes, "decode": {**decode_options(opts, metrics["grid"]), "score_threshold": 0.05}}
        out = model.predict(scaled(test.frames.pixels), verbose=0, batch_size=32)
        found = _frame_detections(ObjectsHead, out, meta, test.placements)
        top = [found[i][0][2] if found[i] else (0.0, 0.0, 1e-3, 1e-3) for i in test.single]
        figures["objects IoU"] = float(iou_numpy(np.array(top), truth_boxes).mean())
        figures["objects mAP50"] = mean_average_precision(found, test.truths)
        print(f"  {name} objects head: {metrics['validation']} validation, fine-tuned {metrics['fine_tuned']}, "
              f"{metrics['epochs']} epochs; val mAP@0.5 {metrics['val_map50']}  ({t():.0f} s)", flush=True)
    row = [name, len(train_set[1]), len(test_set[1]), len(test.single), f"{figures['mean box IoU']:.3f}"]
    for key in ("boxes IoU", "boxes mAP50", "objects IoU", "objects mAP50"):
        row.append(f"{figures[key]:.3f}" if key in figures else "-")
    return row, figures


def run(args) -> int:
    cfg, note = backbone_config(args.alpha, args.size, args.weights)
    if note:
        print(note)
    if args.options:
        print(f"head options changed from the defaults: {args.options}")
    print(f"backbone mobilenet_v1 alpha={args.alpha:g} {args.size}px, features at 1/16 of the input; frames fitted "
          f"as `train` fits them (boxes: {BoxHead.frame_fit}, objects: {ObjectsHead.frame_fit}); heads with default "
          f"options (validation inside the training data chooses loss, epochs, fine-tuning); test split used once; "
          f"IoU and mAP in the original frame's coordinates")
    t = Timer()
    rows, lines = [], []
    if args.only in (None, "raccoon"):
        folder = Path(args.data)
        if not folder.is_dir():
            print(f"skipped raccoon: {folder} not found")
        else:
            images, objects = load_voc(folder)
            order = np.random.default_rng(0).permutation(len(images))
            folds = np.array_split(order, args.test_folds) if args.test_folds > 1 else [order[:len(images) // 5]]
            pick = lambda rows: ([images[i] for i in rows], [objects[i] for i in rows])
            pooled = []
            for k, test_rows in enumerate(folds):
                train_rows = order[~np.isin(order, test_rows)]
                name = folder.name if len(folds) == 1 else f"{folder.name} fold {k + 1}/{len(folds)}"
                row, fig = evaluate(name, cfg, pick(train_rows), pick(test_rows), args, t)
                rows.append(row)
                pooled.append((len(test_rows), sum(len(o) == 1 for o in pick(test_rows)[1]), fig))
            if len(folds) > 1:  # fold means weighted by photos (mAP) or one-object photos (IoU)
                fig = {key: float(np.average([f[key] for _, _, f in pooled],
                                             weights=[n if "mAP" in key else n1 for n, n1, _ in pooled]))
                       for key in pooled[0][2]}
                rows.append([f"{folder.name} (all folds)", len(images) - len(folds[0]), len(images),
                             sum(n1 for _, n1, _ in pooled), f"{fig['mean box IoU']:.3f}"]
                            + [f"{fig[k]:.3f}" if k in fig else "-" for k in ("boxes IoU", "boxes mAP50", "objects IoU",
                                                                           "objects mAP50")])
            lines.append((folder.name, fig))
    if args.only in (None, "synthetic"):
        row, fig = evaluate("synthetic 1-3 shapes", cfg, synthetic(1, args.synthetic_train),
                            synthetic(2, args.synthetic_test), args, t)
        rows.append(row)
        lines.append(("synthetic", fig))
    print()
    print(table(rows, ["data", "train", "test", "test 1-object", "mean box IoU", "boxes IoU", "boxes mAP50",
                       "objects IoU", "objects mAP50"]))
    for name, fig in lines:
        if "boxes IoU" in fig:
            target = " and >= 0.75" if name == "raccoon" else ""
            print(f"detect {name} boxes: IoU {fig['boxes IoU']:.3f} vs mean box {fig['mean box IoU']:.3f} "
                  f"(target >= mean box + 0.10{target})")
    for name, fig in lines:
        if "objects mAP50" in fig:
            target = 0.60 if name == "raccoon" else 0.85
            print(f"detect {name} objects: mAP@0.5 {fig['objects mAP50']:.3f} (target >= {target:.2f})")
    return 0
