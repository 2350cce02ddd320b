"""Teaching without a running daemon: collect, import, predict, train, export, examples, review, versions."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Optional

import cv2

from ..commands.schema import parse
from ..errors import EdgedError
from ..heads.base import TrainRequest
from ..serve.backbone import embed_image, open_backbone
from ..serve.capture import CaptureJob, CaptureRequest, CaptureTarget
from ..serve.stack import ServingStack
from ..sources import FrameGrabber, open_source
from ..sources.preprocess import FrameView, to_pixels
from ..state import importer
from ..state.layout import StateLayout
from ..state.review import ReviewQueue
from ..state.store import Store
from .common import add_config_args, install_signal_handlers, load, progress_printer, setup_logging, subcommand


def cmd_collect(args) -> int:
    cfg = load(args)
    setup_logging(cfg.log_level)
    stop = threading.Event()
    install_signal_handlers(stop)
    camera = cfg.camera(args.source)  # an unknown --source is named before anything is opened
    info, engine = open_backbone(cfg)
    store = Store(StateLayout(cfg.state_path).store)
    objects = [(args.label, tuple(b)) for b in args.box] if args.box else None
    job = CaptureJob(CaptureRequest(args.label, args.count, args.interval_ms / 1000.0, objects, camera.name,
                                    near_copy=cfg.capture.near_copy), CaptureTarget(store, info.id))
    source = open_source(camera.source)
    grabber = FrameGrabber(source, camera.source, stop, lambda img: to_pixels(img, info.input_size), cfg.serve.queue_size,
                           camera.name)
    grabber.start()
    deadline = time.monotonic() + args.timeout
    error = None
    try:
        while not job.done and not stop.is_set():
            frame = grabber.get(timeout=0.5)
            if frame is None:
                if grabber.state == "ended" and grabber.frames.empty():
                    error = f"{source.description} ended after {job.stored} of {job.count} examples"
                    break
                if time.monotonic() > deadline:
                    error = f"timed out with {job.stored} of {job.count} examples ({grabber.state}: {grabber.error})"
                    break
                continue
            # a sound window is embedded from its sound by the speech backbone, from its picture by an image one
            embedding = engine.embed_frame(frame, frame.pixels)
            if frame.sound is not None:
                job.offer_window(frame.image, embedding, frame.sound)
            else:
                job.offer(frame.image, embedding)
            print(f"\r{args.label}: {job.stored}/{job.count}", end="", file=sys.stderr, flush=True)
        job.flush()
        job.set_aside_odd_sounds()
        print(file=sys.stderr)
        result = {**job.progress(), "examples": store.counts().get(args.label, 0)}
        warnings = job.warnings(result["examples"])
        if warnings:
            result["warnings"] = warnings
        print(json.dumps(result))
        if error is not None:
            print(f"error: {error}", file=sys.stderr)
        return 0 if job.done else 1
    finally:
        stop.set()
        grabber.join()
        store.close()
        engine.close()


def _path_or_none(value: Optional[str]) -> Optional[Path]:
    return Path(value) if value else None


def cmd_import(args) -> int:
    cfg = load(args)
    setup_logging(cfg.log_level)
    info, engine = open_backbone(cfg)
    store = Store(StateLayout(cfg.state_path).store)
    root = Path(args.folder)
    if not root.is_dir():
        print(f"error: not a folder: {root}", file=sys.stderr)
        return 1
    skipped = importer.Skipped()
    try:
        if args.format == "voc":
            annotations, images = importer.voc_folders(root, _path_or_none(args.annotations), _path_or_none(args.images))
            items = importer.voc(annotations, images, args.label, skipped)
        else:
            items = importer.class_folders(root)
    except EdgedError as e:
        store.close()
        print(f"error: {e}", file=sys.stderr)
        return 1
    batch, total = [], 0
    try:
        for example in importer.examples(items, lambda img: embed_image(engine, img), args.limit, skipped):
            batch.append(example)
            if len(batch) == 50:
                total += len(store.add_many(batch, info.id))
                batch = []
                print(f"\rimported {total}", end="", file=sys.stderr, flush=True)
        if batch:
            total += len(store.add_many(batch, info.id))
        print(file=sys.stderr)
        print(json.dumps({"imported": total, "examples": store.counts(), "skipped": skipped.report()}))
    finally:
        store.close()
        engine.close()
    return 0 if total else 1


def cmd_predict(args) -> int:
    cfg = load(args)
    setup_logging(cfg.log_level)
    stack = ServingStack(cfg)
    heads, engine = stack.heads, stack.engine
    if args.head:
        heads.activate(args.head, persist=False)  # looking at predictions changes nothing the daemon serves
    status = 0
    try:
        for path in args.images:
            img = cv2.imread(path, cv2.IMREAD_COLOR)
            if img is None:
                print(json.dumps({"image": path, "error": "cannot read image"}))
                status = 1
                continue
            t0 = time.perf_counter()
            view = FrameView(img, engine.input_size)
            emb = engine.embed(view.pixels) if heads.needs_embedding else None
            for name, pred in heads.predict(emb, view):
                print(json.dumps({"image": path, "head": name, "label": pred.label, "score": round(pred.score, 4),
                                  "scores": {k: round(v, 4) for k, v in pred.scores.items()}, "boxes": pred.boxes,
                                  "latency_ms": round((time.perf_counter() - t0) * 1000, 2)}))
        if not any(h.ready for h in heads.instances.values()) and not heads.models:
            print("error: no active head is ready: capture examples first (edged collect)", file=sys.stderr)
            status = 1
    finally:
        stack.close()
    return status


def cmd_train(args) -> int:
    cfg = load(args)
    setup_logging("WARNING")
    offline = ServingStack(cfg).with_learning()
    try:
        request = TrainRequest(mode=args.mode, epochs=args.epochs, fine_tune_layers=args.fine_tune_layers)
        result = offline.learning.train(args.head, request, progress_printer())
    finally:
        offline.close()
    print(file=sys.stderr)
    print(json.dumps(result, default=str))
    return 0


def cmd_export(args) -> int:
    cfg = load(args)
    setup_logging("WARNING")
    offline = ServingStack(cfg).with_learning()
    try:
        result = offline.learning.export(args.head, args.quantize, args.force, progress_printer())
    finally:
        offline.close()
    print(json.dumps(result, default=str))
    return 0


def cmd_examples(args) -> int:
    """Stored examples on disk: list, delete, relabel (a running daemon picks the change up)."""
    cfg = load(args)
    store = Store(StateLayout(cfg.state_path).store)
    try:
        if args.examples_command == "list":
            for row in store.list(args.label, args.limit):
                print(json.dumps(row))
        elif args.examples_command == "delete":
            print(json.dumps({"deleted": store.delete(args.ids), "counts": store.counts()}))
        else:
            parse("relabel", json.dumps({"ids": args.ids, "label": args.label}).encode())  # as the MQTT command
            print(json.dumps({"relabelled": store.relabel(args.ids, args.label), "counts": store.counts()}))
    finally:
        store.close()
    return 0


def cmd_review(args) -> int:
    """The review queue on disk: list, label (stored as an example; a running daemon picks it up), discard."""
    cfg = load(args)
    queue = ReviewQueue(StateLayout(cfg.state_path).review, cfg.review.max_items)
    if args.review_command == "list":
        for item in queue.list():
            print(json.dumps(item))
        return 0
    if args.review_command == "discard":
        queue.discard(args.id)
        print(json.dumps({"review_id": args.id, "discarded": True}))
        return 0
    parse("label", json.dumps({"review_id": args.id, "label": args.label}).encode())  # as the MQTT command
    info, engine = open_backbone(cfg)
    store = Store(StateLayout(cfg.state_path).store)
    try:
        example, _ = queue.label(args.id, args.label, store, info.id, lambda img: embed_image(engine, img))
        print(json.dumps({"review_id": args.id, "label": args.label, "example": example,
                          "examples": store.counts().get(args.label, 0)}))
    finally:
        store.close()
        engine.close()
    return 0


def cmd_versions(args) -> int:
    cfg = load(args)
    versions = StateLayout(cfg.state_path).models(args.model)
    if args.versions_command == "rollback":
        print(json.dumps({"model": args.model, "current": versions.rollback()}))
    else:
        versions.activate(args.version)
        print(json.dumps({"model": args.model, "current": args.version}))
    print("a running daemon switches on the MQTT activate/rollback command", file=sys.stderr)
    return 0


def add_parsers(sub) -> None:
    p = subcommand(sub, "collect", cmd_collect, help="store N labelled frames from the source")
    p.add_argument("--label", required=True, help="label of the frames stored")
    p.add_argument("--count", type=int, default=10, help="frames to store")
    p.add_argument("--interval-ms", type=int, default=200, help="time between stored frames")
    p.add_argument("--box", type=float, nargs=4, metavar=("X1", "Y1", "X2", "Y2"), action="append",
                   help="an object's box in [0, 1] frame coordinates, for the box heads (repeat for several)")
    p.add_argument("--timeout", type=float, default=60.0, help="give up when no frame arrives for this long")
    p.add_argument("--source", help="with [[sources]]: the source's name (default the first)")
    p = subcommand(sub, "import", cmd_import, help="store a labelled data set: class folders or Pascal VOC boxes")
    p.add_argument("format", choices=["folders", "voc"], help="folders: FOLDER/<label>/*.jpg; voc: Pascal VOC boxes")
    p.add_argument("folder", help="the data set's folder")
    p.add_argument("--label", help="voc: store every box under this label instead of the object name")
    p.add_argument("--annotations", help="voc: the XML folder (default FOLDER/annotations or FOLDER/Annotations)")
    p.add_argument("--images", help="voc: the image folder (default FOLDER/images or FOLDER/JPEGImages)")
    p.add_argument("--limit", type=int, default=0, help="stop after this many images (0: all)")
    p = subcommand(sub, "predict", cmd_predict, help="print predictions for image files")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--head", action="append", help="head(s) to use instead of heads.active (changes nothing on disk)")
    p = subcommand(sub, "train", cmd_train, help="train a head on the stored examples (numpy; fine-tuning where TensorFlow is there)")
    p.add_argument("--head", default="classifier", help="head to train")
    p.add_argument("--mode", choices=["auto", "frozen", "fine_tune", "from_scratch"], default="auto",
                   help="frozen: numpy on stored embeddings (no TensorFlow); fine_tune / from_scratch: the backbone "
                        "too, in the TensorFlow worker, kept only if cross-validation says it beats frozen; auto: "
                        "frozen, then fine-tuned where TensorFlow (or a trainer node) is there and the head asks")
    p.add_argument("--epochs", type=int, help="fine-tuning epochs (default: the head's option)")
    p.add_argument("--fine-tune-layers", type=int, help="unfreeze this many top backbone layers (0: all)")
    p = subcommand(sub, "export", cmd_export, help="export backbone + head as one TFLite model, parity-checked")
    p.add_argument("--head", default="classifier", help="head to export")
    p.add_argument("--quantize", choices=["float32", "float16", "int8"], default="float32", help="TFLite precision")
    p.add_argument("--force", action="store_true", help="keep the model even if the parity check fails")
    p = subcommand(sub, "examples", cmd_examples, help="stored examples: list, delete, relabel", config=False)
    esub = p.add_subparsers(dest="examples_command", required=True)
    e = esub.add_parser("list", help="one JSON line per example, newest first")
    add_config_args(e)
    e.add_argument("--label", help="only this label")
    e.add_argument("--limit", type=int, default=100, help="at most this many")
    e = esub.add_parser("delete", help="remove examples by id")
    add_config_args(e)
    e.add_argument("ids", type=int, nargs="+", help="example ids (edged examples list)")
    e = esub.add_parser("relabel", help="give examples another label")
    add_config_args(e)
    e.add_argument("label", help="the right label")
    e.add_argument("ids", type=int, nargs="+", help="example ids (edged examples list)")
    p = subcommand(sub, "review", cmd_review, help="frames kept because a head was unsure: list, label, discard", config=False)
    rsub = p.add_subparsers(dest="review_command", required=True)
    r = rsub.add_parser("list", help="one JSON line per kept frame")
    add_config_args(r)
    r = rsub.add_parser("label", help="store a kept frame as an example of LABEL")
    add_config_args(r)
    r.add_argument("id", help="review item id (edged review list)")
    r.add_argument("label", help="label to store the frame under")
    r = rsub.add_parser("discard", help="drop a kept frame")
    add_config_args(r)
    r.add_argument("id", help="review item id (edged review list)")
    for verb, helptext in (("activate", "make a model version current"), ("rollback", "return to the previous model version")):
        p = sub.add_parser(verb, help=helptext)
        add_config_args(p)
        p.add_argument("--model", required=True, help="head name whose exported models to switch")
        if verb == "activate":
            p.add_argument("--version", required=True, help="version to make current, e.g. v3")
        p.set_defaults(func=cmd_versions, versions_command=verb)
