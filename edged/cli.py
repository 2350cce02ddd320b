"""Command line: run, collect, predict, heads, doctor, config check, backbone build."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path

from .config import Config, ConfigError, load_config

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
    cfg = load_config(args.file, args.set or [])
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
    from .daemon import Daemon

    demo = None
    if args.demo:
        from .demo import Demo

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
    from .capture import CaptureJob
    from .pipeline import open_backbone
    from .preprocess import to_pixels
    from .sources import FrameGrabber, open_source
    from .store import Store

    cfg = _load(args)
    _setup_logging(cfg.log_level)
    stop = threading.Event()
    _install_signal_handlers(stop)
    info, engine = open_backbone(cfg)
    store = Store(cfg.state_path / "store")
    job = CaptureJob(store, info.id, args.label, args.count, args.interval_ms / 1000.0,
                     tuple(args.box) if args.box else None)
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
    from . import importer
    from .pipeline import embed_image, open_backbone
    from .store import Store

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
    import cv2

    from .pipeline import HeadSet, open_backbone, reembed_missing
    from .preprocess import to_pixels
    from .store import Store

    cfg = _load(args)
    _setup_logging(cfg.log_level)
    info, engine = open_backbone(cfg)
    store = Store(cfg.state_path / "store")
    reembed_missing(store, info, engine)
    heads = HeadSet(cfg, store, info)
    if args.head:
        heads.activate(args.head)
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
    from .plugins import head_classes, plugin_manager, plugin_sources

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
    from .pipeline import open_backbone

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


def cmd_train(args) -> int:
    from .trainer import run_train

    cfg = _load(args)
    _setup_logging("WARNING")
    params = {k: v for k, v in (("epochs", args.epochs), ("fine_tune_layers", args.fine_tune_layers)) if v is not None}
    result = run_train(cfg, args.head, params, _progress_printer())
    print(file=sys.stderr)
    print(json.dumps(result, default=str))
    return 0


def cmd_export(args) -> int:
    from .trainer import run_export

    cfg = _load(args)
    _setup_logging("WARNING")
    result = run_export(cfg, args.head, args.quantize, args.force, _progress_printer())
    print(json.dumps(result, default=str))
    return 0


def cmd_versions(args) -> int:
    from .models import Versions

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


def _bench_module(name: str):
    import importlib

    return importlib.import_module(f"edged.bench.{name}")


def cmd_doctor(args) -> int:
    from .doctor import run_doctor

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
    p.add_argument("--epochs", type=int)
    p.add_argument("--fine-tune-layers", type=int, help="phase 2: unfreeze this many top backbone layers")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("export", help="export backbone + head as one TFLite model, parity-checked")
    _add_config_args(p)
    p.add_argument("--head", default="classifier")
    p.add_argument("--quantize", choices=["float32", "float16", "int8"], default="float32")
    p.add_argument("--force", action="store_true", help="keep the model even if the parity check fails")
    p.set_defaults(func=cmd_export)

    for verb, helptext in (("activate", "make a model version current"), ("rollback", "return to the previous model version")):
        p = sub.add_parser(verb, help=helptext)
        _add_config_args(p)
        p.add_argument("--model", required=True, help="head name whose exported models to switch")
        if verb == "activate":
            p.add_argument("--version", required=True)
        p.set_defaults(func=cmd_versions, versions_command=verb)

    p = sub.add_parser("bench", help="benchmarks printing side-by-side ratios")
    bsub = p.add_subparsers(dest="bench_name", required=True)
    for name, helptext in BENCHES.items():
        b = bsub.add_parser(name, help=helptext)
        _bench_module(name).add_arguments(b)
        b.set_defaults(func=lambda a: _bench_module(a.bench_name).run(a))

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
    except Exception as e:
        from .backbone import BackboneError
        from .heads import HeadError
        from .models import VersionError
        from .runtime import EngineError
        from .sources import SourceError
        from .store import StoreError

        if isinstance(e, (BackboneError, HeadError, EngineError, SourceError, StoreError, VersionError)):
            print(f"error: {e}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
