"""The `edged` command line: run, collect, import, predict, train, export, versions, heads, doctor, config, bench."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path

import cv2

from pydantic import ValidationError

from ..config import Config, format_validation_error, load_config, read_config_data
from ..errors import ConfigError, EdgedError
from ..heads.base import TrainRequest
from ..heads.options import check_head_config
from ..heads.registry import head_classes, plugin_manager, plugin_sources
from ..serve.backbone import embed_image, open_backbone, reembed_missing
from ..serve.capture import CaptureJob
from ..serve.daemon import Daemon
from ..serve.headset import HeadSet
from ..serve.learning import Learning
from ..sources import FrameGrabber, open_source
from ..sources.preprocess import to_pixels
from ..state import importer
from ..serve.commands import parse
from ..state.review import ReviewQueue
from ..state.store import Store
from ..state.versions import Versions
from .demo import Demo
from .doctor import run_doctor

log = logging.getLogger("edged")


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level), format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)


def _load(args) -> Config:
    overrides = list(getattr(args, "set", None) or [])
    return load_config(getattr(args, "config", None), overrides)


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", help="TOML config file")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key, e.g. mqtt.port=1884")


def cmd_config_check(args) -> int:
    """Structure (every key and value) and meaning (head names and options against the installed heads)."""
    data, origin = read_config_data(args.file, args.set or [])
    problems, cfg = [], None
    try:
        cfg = Config.model_validate(data)
    except ValidationError as e:
        problems.append(format_validation_error(e, origin))
    try:  # the heads are checked even when another section is wrong
        partial = Config.model_validate({k: data[k] for k in ("heads", "plugins_dir") if k in data})
        problems += [f"{origin}: {p}" for p in check_head_config(partial, head_classes(plugin_manager(partial.plugins_dir)))]
    except (ValidationError, EdgedError):
        pass  # already reported above
    if problems:
        raise ConfigError("\n".join(problems))
    print(f"{args.file}: ok (device {cfg.device!r}, source {cfg.source.uri!r}, backbone {cfg.backbone.family})")
    if args.show:
        print(cfg.model_dump_json(indent=2))
    return 0


def _install_signal_handlers(stop: threading.Event) -> None:
    def handler(signum, frame):
        stop.set()  # only this: the loops notice and unwind

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def cmd_run(args) -> int:
    demo = None
    if args.demo:
        demo = Demo(args)
        cfg = demo.config()
    else:
        cfg = _load(args)
    if args.print:
        cfg.serve.print_predictions = True
    _setup_logging(cfg.log_level)
    stop = threading.Event()
    _install_signal_handlers(stop)
    daemon = Daemon(cfg, stop)
    try:
        if demo is not None:
            demo.start(cfg)
        daemon.start()
        daemon.run()
    finally:
        daemon.shutdown()
        if demo is not None:
            demo.stop()
    return 0


def cmd_collect(args) -> int:
    cfg = _load(args)
    _setup_logging(cfg.log_level)
    stop = threading.Event()
    _install_signal_handlers(stop)
    info, engine = open_backbone(cfg)
    store = Store(cfg.state_path / "store")
    job = CaptureJob(store, info.id, args.label, args.count, args.interval_ms / 1000.0,
                     tuple(args.box) if args.box else None, dedupe=cfg.capture.dedupe)
    source = open_source(cfg.source)
    grabber = FrameGrabber(source, cfg.source, stop, lambda img: to_pixels(img, info.input_size), cfg.serve.queue_size)
    grabber.start()
    deadline = time.monotonic() + args.timeout
    try:
        while not job.done and not stop.is_set():
            frame = grabber.get(timeout=0.5)
            if frame is None:
                if grabber.state == "ended" and grabber.frames.empty():
                    print(f"error: {source.description} ended after {job.stored} of {job.count} examples", file=sys.stderr)
                    return 1
                if time.monotonic() > deadline:
                    print(f"error: timed out with {job.stored} of {job.count} examples ({grabber.state}: {grabber.error})", file=sys.stderr)
                    return 1
                continue
            if job.offer(frame.image, engine.embed(frame.pixels)):
                print(f"\r{args.label}: {job.stored}/{job.count}", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
        print(json.dumps({"label": args.label, "stored": job.stored, "examples": store.counts().get(args.label, 0)}))
        return 0 if job.done else 1
    finally:
        stop.set()
        grabber.join()
        store.close()
        engine.close()


def cmd_import(args) -> int:
    cfg = _load(args)
    _setup_logging(cfg.log_level)
    info, engine = open_backbone(cfg)
    store = Store(cfg.state_path / "store")
    root = Path(args.folder)
    if not root.is_dir():
        print(f"error: not a folder: {root}", file=sys.stderr)
        return 1
    items = importer.voc(root, args.label) if args.format == "voc" else importer.class_folders(root)
    batch, total = [], 0
    try:
        for example in importer.examples(items, lambda img: embed_image(engine, img), args.limit):
            batch.append(example)
            if len(batch) == 50:
                total += len(store.add_many(batch, info.id))
                batch = []
                print(f"\rimported {total}", end="", file=sys.stderr, flush=True)
        if batch:
            total += len(store.add_many(batch, info.id))
        print(file=sys.stderr)
        print(json.dumps({"imported": total, "examples": store.counts()}))
    finally:
        store.close()
        engine.close()
    return 0 if total else 1


def cmd_predict(args) -> int:
    cfg = _load(args)
    _setup_logging(cfg.log_level)
    info, engine = open_backbone(cfg)
    store = Store(cfg.state_path / "store")
    reembed_missing(store, info, engine)
    heads = HeadSet(cfg, store, info, head_classes(plugin_manager(cfg.plugins_dir)))
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
            pixels = to_pixels(img, engine.input_size)
            emb = engine.embed(pixels) if heads.needs_embedding else None
            for name, pred in heads.predict(emb, pixels):
                print(json.dumps({"image": path, "head": name, "label": pred.label, "score": round(pred.score, 4),
                                  "scores": {k: round(v, 4) for k, v in pred.scores.items()}, "boxes": pred.boxes,
                                  "latency_ms": round((time.perf_counter() - t0) * 1000, 2)}))
        if not any(h.ready for h in heads.instances.values()) and not heads.models:
            print("error: no active head is ready: capture examples first (edged collect)", file=sys.stderr)
            status = 1
    finally:
        heads.close()
        store.close()
        engine.close()
    return status


def cmd_heads(args) -> int:
    cfg = _load(args)
    pm = plugin_manager(cfg.plugins_dir)
    sources = plugin_sources(pm)
    for name, cls in sorted(head_classes(pm).items()):
        origin = sources.get(cls.__module__, cls.__module__)
        active = "active" if name in cfg.heads.active else ""
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        print(f"{name:12s} {cls.kind:8s} {active:7s} {origin}  {doc}")
    return 0


def cmd_backbone_build(args) -> int:
    cfg = _load(args)
    _setup_logging(cfg.log_level)
    info, engine = open_backbone(cfg)
    engine.close()
    print(json.dumps({"id": info.id, "path": info.path, "input_size": info.input_size, "output_dim": info.output_dim}))
    return 0


def _progress_printer():
    def show(p: dict) -> None:
        if "epoch" in p:
            width = 24
            done = int(width * p["epoch"] / max(p["epochs"], 1))
            rest = " ".join(f"{k} {v}" for k, v in p.items() if k not in ("phase", "epoch", "epochs"))
            print(f"\r{p['phase']:9s} [{'#' * done}{'.' * (width - done)}] {p['epoch']}/{p['epochs']} {rest}   ",
                  end="", file=sys.stderr, flush=True)
            if p["epoch"] == p["epochs"]:
                print(file=sys.stderr)
        else:
            print(f"\n{p.get('phase', '')}: {p.get('step', p)}", file=sys.stderr, flush=True)

    return show


class _Offline:
    """Store, backbone, heads and learning without a frame loop: what train and export need from the CLI."""

    def __init__(self, cfg: Config):
        self.info, self.engine = open_backbone(cfg)
        self.store = Store(cfg.state_path / "store")
        reembed_missing(self.store, self.info, self.engine)
        self.heads = HeadSet(cfg, self.store, self.info, head_classes(plugin_manager(cfg.plugins_dir)))
        self.learning = Learning(cfg, self.store, self.info, self.heads)

    def close(self) -> None:
        self.learning.close()
        self.heads.close()
        self.store.close()
        self.engine.close()


def cmd_train(args) -> int:
    cfg = _load(args)
    _setup_logging("WARNING")
    offline = _Offline(cfg)
    try:
        request = TrainRequest(mode=args.mode, epochs=args.epochs, fine_tune_layers=args.fine_tune_layers)
        result = offline.learning.train(args.head, request, _progress_printer())
    finally:
        offline.close()
    print(file=sys.stderr)
    print(json.dumps(result, default=str))
    return 0


def cmd_export(args) -> int:
    cfg = _load(args)
    _setup_logging("WARNING")
    offline = _Offline(cfg)
    try:
        result = offline.learning.export(args.head, args.quantize, args.force, _progress_printer())
    finally:
        offline.close()
    print(json.dumps(result, default=str))
    return 0


def cmd_review(args) -> int:
    """The review queue on disk: list, label (stored as an example; a running daemon picks it up), discard."""
    cfg = _load(args)
    queue = ReviewQueue(cfg.state_path / "review", cfg.review.max_items)
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
    store = Store(cfg.state_path / "store")
    try:
        example, _ = queue.label(args.id, args.label, store, info.id, lambda img: embed_image(engine, img))
        print(json.dumps({"review_id": args.id, "label": args.label, "example": example,
                          "examples": store.counts().get(args.label, 0)}))
    finally:
        store.close()
        engine.close()
    return 0


def cmd_versions(args) -> int:
    cfg = _load(args)
    versions = Versions(cfg.state_path / "models" / args.model)
    if args.versions_command == "rollback":
        print(json.dumps({"model": args.model, "current": versions.rollback()}))
    else:
        versions.activate(args.version)
        print(json.dumps({"model": args.model, "current": args.version}))
    print("a running daemon switches on the MQTT activate/rollback command", file=sys.stderr)
    return 0


BENCHES = {
    "fewshot": "sign-digits accuracy at 5/10/20 shots: kNN, linear probe, classifier, augmentation, fine-tune",
    "adapt": "train command -> first prediction from the new head; capture throughput",
    "memory": "serving daemon RSS vs a TensorFlow import; cold start to first prediction",
    "pipeline": "full daemon loop vs bare interpreter invoke, per-stage breakdown",
    "runtime": "Keras eager vs TFLite float32/float16/int8 speed, int8 accuracy on sign-digits",
    "knn": "kNN query time at 1k/10k/100k stored 1024-d examples, exact vs compact, with accuracy",
    "detect": "box regression mean IoU on raccoon photos and synthetic scenes vs the mean-box baseline",
}


def cmd_bench(args) -> int:
    """Import only the benchmark asked for (benchmarks import TensorFlow), then parse its own options."""
    module = importlib.import_module(f"edged.bench.{args.bench_name}")
    parser = argparse.ArgumentParser(prog=f"edged bench {args.bench_name}", description=BENCHES[args.bench_name])
    module.add_arguments(parser)
    return module.run(parser.parse_args(args.bench_args))


def cmd_doctor(args) -> int:
    return run_doctor(_load(args), args.timeout)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edged", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="serve: camera -> backbone -> heads -> MQTT")
    _add_config_args(p)
    p.add_argument("--demo", action="store_true", help="synthetic scenes, embedded broker, two taught shapes")
    p.add_argument("--print", action="store_true", help="also print predictions to stdout")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("collect", help="store N labelled frames from the source")
    _add_config_args(p)
    p.add_argument("--label", required=True)
    p.add_argument("--count", type=int, default=10)
    p.add_argument("--interval-ms", type=int, default=200)
    p.add_argument("--box", type=float, nargs=4, metavar=("X1", "Y1", "X2", "Y2"))
    p.add_argument("--timeout", type=float, default=60.0, help="give up when no frame arrives for this long")
    p.set_defaults(func=cmd_collect)

    p = sub.add_parser("import", help="store a labelled data set: class folders or Pascal VOC boxes")
    _add_config_args(p)
    p.add_argument("format", choices=["folders", "voc"])
    p.add_argument("folder")
    p.add_argument("--label", help="voc: store every box under this label instead of the object name")
    p.add_argument("--limit", type=int, default=0)
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("predict", help="print predictions for image files")
    _add_config_args(p)
    p.add_argument("images", nargs="+")
    p.add_argument("--head", action="append", help="head(s) to use instead of heads.active")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("train", help="train a head on the stored examples (needs TensorFlow)")
    _add_config_args(p)
    p.add_argument("--head", default="classifier")
    p.add_argument("--mode", choices=["frozen", "fine_tune", "from_scratch"], default="frozen",
                   help="frozen: numpy on stored embeddings (no TensorFlow); fine_tune / from_scratch: the backbone "
                        "too, in the TensorFlow worker, kept only if it beats frozen (default: %(default)s)")
    p.add_argument("--epochs", type=int, help="fine-tuning epochs (default: the head's option)")
    p.add_argument("--fine-tune-layers", type=int, help="unfreeze this many top backbone layers (0: all)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("export", help="export backbone + head as one TFLite model, parity-checked")
    _add_config_args(p)
    p.add_argument("--head", default="classifier")
    p.add_argument("--quantize", choices=["float32", "float16", "int8"], default="float32")
    p.add_argument("--force", action="store_true", help="keep the model even if the parity check fails")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("review", help="frames kept because a head was unsure: list, label, discard")
    rsub = p.add_subparsers(dest="review_command", required=True)
    r = rsub.add_parser("list", help="one JSON line per kept frame")
    _add_config_args(r)
    r = rsub.add_parser("label", help="store a kept frame as an example of LABEL")
    _add_config_args(r)
    r.add_argument("id")
    r.add_argument("label")
    r = rsub.add_parser("discard", help="drop a kept frame")
    _add_config_args(r)
    r.add_argument("id")
    p.set_defaults(func=cmd_review)

    for verb, helptext in (("activate", "make a model version current"), ("rollback", "return to the previous model version")):
        p = sub.add_parser(verb, help=helptext)
        _add_config_args(p)
        p.add_argument("--model", required=True, help="head name whose exported models to switch")
        if verb == "activate":
            p.add_argument("--version", required=True)
        p.set_defaults(func=cmd_versions, versions_command=verb)

    p = sub.add_parser("bench", help="benchmarks printing side-by-side ratios",
                       description="; ".join(f"{k}: {v}" for k, v in BENCHES.items()))
    p.add_argument("bench_name", choices=sorted(BENCHES), help="which benchmark")
    p.add_argument("bench_args", nargs=argparse.REMAINDER, help="its options (edged bench NAME --help)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("heads", help="list installed heads")
    _add_config_args(p)
    p.set_defaults(func=cmd_heads)

    p = sub.add_parser("doctor", help="check interpreter, delegate, camera, broker, TensorFlow")
    _add_config_args(p)
    p.add_argument("--timeout", type=float, default=5.0)
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("config", help="config tools")
    csub = p.add_subparsers(dest="config_command", required=True)
    c = csub.add_parser("check", help="validate a config file")
    c.add_argument("file")
    c.add_argument("--set", action="append", metavar="KEY=VALUE")
    c.add_argument("--show", action="store_true", help="print the resolved config")
    c.set_defaults(func=cmd_config_check)

    p = sub.add_parser("backbone", help="backbone tools")
    bsub = p.add_subparsers(dest="backbone_command", required=True)
    b = bsub.add_parser("build", help="convert and cache the configured backbone now")
    _add_config_args(b)
    b.set_defaults(func=cmd_backbone_build)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"config error:\n{e}", file=sys.stderr)
        return 2
    except EdgedError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
