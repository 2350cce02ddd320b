"""The `edged` command line: run, collect, import, predict, train, export, versions, heads, doctor, config, bench."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Optional

import cv2

from pydantic import ValidationError

from .. import __version__
from ..config import Config, dump_config, format_validation_error, load_config, read_config_data, redact_uri
from ..errors import NO_TENSORFLOW, ConfigError, EdgedError
from ..heads.base import TrainRequest
from ..heads.options import check_head_config
from ..heads.registry import head_classes, plugin_manager, plugin_sources
from ..mqtt.requests import BrokerClient, parse_cli_payload
from ..serve.backbone import embed_image, open_backbone, reembed_missing
from ..serve.capture import CaptureJob
from ..serve.daemon import Daemon
from ..serve.trainer_node import TrainerNode
from ..serve.worker import tensorflow_available
from ..serve.headset import HeadSet
from ..serve.learning import Learning
from ..sources import FrameGrabber, open_source
from ..sources.preprocess import FrameView, to_pixels
from ..state import importer
from ..serve.commands import parse
from ..state.review import ReviewQueue
from ..state.store import Store
from .checks import check_meaning
from .demo import Demo
from .fleet import add_fleet_parser
from .install import install
from .doctor import run_doctor
from ..state.layout import StateLayout

log = logging.getLogger("edged")


def _setup_logging(level: str) -> None:
    """edged's own log at `level`; TensorFlow, absl and OpenCV chatter only at DEBUG."""
    logging.basicConfig(level=getattr(logging, level), format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    if level != "DEBUG":
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # inherited by the worker and the backbone builder
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


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
    if cfg is not None:
        errors, warnings = check_meaning(cfg)
        problems += [f"{origin}: {p}" for p in errors]
        for w in warnings:
            print(f"warning: {origin}: {w}", file=sys.stderr)
    if problems:
        raise ConfigError("\n".join(problems))
    print(f"{args.file}: ok (device {cfg.device!r}, source {redact_uri(cfg.source.uri)!r}, backbone {cfg.backbone.family})")
    if args.show:
        print(dump_config(cfg))  # secrets shown as ***
    return 0


def _install_signal_handlers(stop: threading.Event) -> None:
    def handler(signum, frame):
        stop.set()  # only this: the loops notice and unwind

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _web_components(cfg: Config) -> tuple:
    if not cfg.web.enabled:
        return ()
    try:
        from ..web.server import web_component  # optional: aiohttp is the `web` extra
    except ImportError as e:
        raise ConfigError(f"web.enabled needs aiohttp, which is not installed: pip install 'edged[web]' ({e})") from None
    return (("web", web_component(cfg.web)),)


def cmd_run(args) -> int:
    demo = None
    if args.demo:
        demo = Demo(args)
        cfg = demo.config()
    else:
        cfg = _load(args)
    errors, warnings = check_meaning(cfg)
    if errors:
        raise ConfigError("\n".join(errors))
    if args.print:
        cfg.serve.print_predictions = True
    _setup_logging(cfg.log_level)
    for w in warnings:
        log.warning("%s", w)
    stop = threading.Event()
    _install_signal_handlers(stop)
    daemon = Daemon(cfg, stop, _web_components(cfg))
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
    store = Store(StateLayout(cfg.state_path).store)
    objects = [(args.label, tuple(b)) for b in args.box] if args.box else None
    job = CaptureJob(store, info.id, args.label, args.count, args.interval_ms / 1000.0, objects, dedupe=cfg.capture.dedupe)
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


def _path_or_none(value: Optional[str]) -> Optional[Path]:
    return Path(value) if value else None


def cmd_import(args) -> int:
    cfg = _load(args)
    _setup_logging(cfg.log_level)
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
    cfg = _load(args)
    _setup_logging(cfg.log_level)
    info, engine = open_backbone(cfg)
    store = Store(StateLayout(cfg.state_path).store)
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
        self.store = Store(StateLayout(cfg.state_path).store)
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


def cmd_command(args) -> int:
    """Send a command to a running daemon over the broker and wait for its final reply."""
    cfg = _load(args)
    payload = parse_cli_payload(args.payload)
    device = args.device or cfg.device
    base = f"{cfg.mqtt.prefix}/{device}"
    with BrokerClient(cfg.mqtt) as client:
        reply = client.request(f"{base}/cmd/{args.name}", f"{base}/reply/{args.name}", payload, args.timeout,
                               _progress_printer())
    if reply.get("ok"):
        print(json.dumps(reply.get("result"), default=str))
        return 0
    print(f"error: {reply.get('error')}", file=sys.stderr)
    return 1


def cmd_status(args) -> int:
    """The daemon's retained status (its last word, or the broker's `offline` will)."""
    cfg = _load(args)
    device = args.device or cfg.device
    with BrokerClient(cfg.mqtt) as client:
        status = client.retained(f"{cfg.mqtt.prefix}/{device}/status", args.timeout)
    if status is None:
        print(f"error: no status for device {device!r} on {cfg.mqtt.host}:{cfg.mqtt.port}: has it ever run here?",
              file=sys.stderr)
        return 1
    print(json.dumps(status, indent=2 if args.pretty else None, default=str))
    return 0 if status.get("state") == "online" else 3


def cmd_trainer(args) -> int:
    """Train and export for the fleet's devices that have no TensorFlow, until stopped."""
    cfg = _load(args)
    _setup_logging(cfg.log_level)
    if not args.fleet:
        raise EdgedError("edged trainer serves devices over the broker: give --fleet")
    if not tensorflow_available():
        raise EdgedError(NO_TENSORFLOW.format(job="a trainer node"))
    stop = threading.Event()
    _install_signal_handlers(stop)
    TrainerNode(cfg, args.name or cfg.device, stop).run()
    return 0


def cmd_install_service(args) -> int:
    for line in install(Path(args.root), args.user, chown=not args.no_chown):
        print(line)
    if Path(args.root) == Path("/"):
        print("next: sudo systemctl daemon-reload && sudo systemctl enable --now edged   (or edged@<camera> per camera)")
    return 0


def cmd_examples(args) -> int:
    """Stored examples on disk: list, delete, relabel (a running daemon picks the change up)."""
    cfg = _load(args)
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
    cfg = _load(args)
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
    cfg = _load(args)
    versions = StateLayout(cfg.state_path).models(args.model)
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
    "detect": "box heads (single box, objects grid) on raccoon photos and multi-shape synthetic scenes vs the mean box",
    "fleet": "fleet ls / fleet send against N simulated devices on one broker, next to the raw round trip",
    "soak": "a long run with a command every few seconds: RSS, open files and threads sampled, must stay flat",
}


def cmd_bench(args) -> int:
    """Import only the benchmark asked for (benchmarks import TensorFlow), then parse its own options."""
    module = importlib.import_module(f"edged.bench.{args.bench_name}")
    parser = argparse.ArgumentParser(prog=f"edged bench {args.bench_name}", description=BENCHES[args.bench_name])
    module.add_arguments(parser)
    return module.run(parser.parse_args(args.bench_args))


def cmd_doctor(args) -> int:
    return run_doctor(_load(args), args.timeout)


class HelpfulParser(argparse.ArgumentParser):
    """Every `edged` (sub)command shows each option's default in its help."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = HelpfulParser(prog="edged", description=__doc__)
    parser.add_argument("--version", action="version", version=f"edged {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="serve: camera -> backbone -> heads -> MQTT")
    _add_config_args(p)
    p.add_argument("--demo", action="store_true", help="synthetic scenes, embedded broker, two taught shapes")
    p.add_argument("--print", action="store_true", help="also print predictions to stdout")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("collect", help="store N labelled frames from the source")
    _add_config_args(p)
    p.add_argument("--label", required=True, help="label of the frames stored")
    p.add_argument("--count", type=int, default=10, help="frames to store")
    p.add_argument("--interval-ms", type=int, default=200, help="time between stored frames")
    p.add_argument("--box", type=float, nargs=4, metavar=("X1", "Y1", "X2", "Y2"), action="append",
                   help="an object's box in [0, 1] frame coordinates, for the box heads (repeat for several)")
    p.add_argument("--timeout", type=float, default=60.0, help="give up when no frame arrives for this long")
    p.set_defaults(func=cmd_collect)

    p = sub.add_parser("import", help="store a labelled data set: class folders or Pascal VOC boxes")
    _add_config_args(p)
    p.add_argument("format", choices=["folders", "voc"], help="folders: FOLDER/<label>/*.jpg; voc: Pascal VOC boxes")
    p.add_argument("folder", help="the data set's folder")
    p.add_argument("--label", help="voc: store every box under this label instead of the object name")
    p.add_argument("--annotations", help="voc: the XML folder (default FOLDER/annotations or FOLDER/Annotations)")
    p.add_argument("--images", help="voc: the image folder (default FOLDER/images or FOLDER/JPEGImages)")
    p.add_argument("--limit", type=int, default=0, help="stop after this many images (0: all)")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("predict", help="print predictions for image files")
    _add_config_args(p)
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--head", action="append", help="head(s) to use instead of heads.active (changes nothing on disk)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("train", help="train a head on the stored examples (numpy; fine-tuning where TensorFlow is there)")
    _add_config_args(p)
    p.add_argument("--head", default="classifier", help="head to train")
    p.add_argument("--mode", choices=["auto", "frozen", "fine_tune", "from_scratch"], default="auto",
                   help="frozen: numpy on stored embeddings (no TensorFlow); fine_tune / from_scratch: the backbone "
                        "too, in the TensorFlow worker, kept only if cross-validation says it beats frozen; auto: "
                        "frozen, then fine-tuned where TensorFlow (or a trainer node) is there and the head asks")
    p.add_argument("--epochs", type=int, help="fine-tuning epochs (default: the head's option)")
    p.add_argument("--fine-tune-layers", type=int, help="unfreeze this many top backbone layers (0: all)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("export", help="export backbone + head as one TFLite model, parity-checked")
    _add_config_args(p)
    p.add_argument("--head", default="classifier", help="head to export")
    p.add_argument("--quantize", choices=["float32", "float16", "int8"], default="float32", help="TFLite precision")
    p.add_argument("--force", action="store_true", help="keep the model even if the parity check fails")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("cmd", help="send a command to a running daemon and wait for its reply",
                       description="edged cmd [--config F] NAME [JSON | --key value ...], e.g. "
                                   "edged cmd capture --label mug --count 20, or edged cmd train '{\"head\": \"classifier\"}'")
    _add_config_args(p)
    p.add_argument("--device", help="device to command (default: the config's device)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the final reply")
    p.add_argument("name", help="capture, train, export, activate, rollback, forget, status, heads, review, label, ...")
    p.add_argument("payload", nargs=argparse.REMAINDER, help="a JSON object, or --key value pairs")
    p.set_defaults(func=cmd_command)

    add_fleet_parser(sub, _add_config_args, _load)

    p = sub.add_parser("trainer", help="train and export for devices without TensorFlow, over the broker")
    _add_config_args(p)
    p.add_argument("--fleet", action="store_true", help="take jobs from the devices on the configured broker")
    p.add_argument("--name", help="this trainer's name (default: the config's device name)")
    p.set_defaults(func=cmd_trainer)

    p = sub.add_parser("install-service", help="systemd units for this installation, /etc/edged, /var/lib/edged")
    p.add_argument("--root", default="/", help="install under this folder instead of / (for packaging or a look)")
    p.add_argument("--user", default="edged", help="the service's user and group")
    p.add_argument("--no-chown", action="store_true", help="leave owners alone (modes are still set)")
    p.set_defaults(func=cmd_install_service)

    p = sub.add_parser("status", help="a running daemon's retained status")
    _add_config_args(p)
    p.add_argument("--device", help="device (default: the config's device)")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the retained status")
    p.add_argument("--pretty", action="store_true", help="indent the JSON")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("examples", help="stored examples: list, delete, relabel")
    esub = p.add_subparsers(dest="examples_command", required=True)
    e = esub.add_parser("list", help="one JSON line per example, newest first")
    _add_config_args(e)
    e.add_argument("--label", help="only this label")
    e.add_argument("--limit", type=int, default=100, help="at most this many")
    e = esub.add_parser("delete", help="remove examples by id")
    _add_config_args(e)
    e.add_argument("ids", type=int, nargs="+", help="example ids (edged examples list)")
    e = esub.add_parser("relabel", help="give examples another label")
    _add_config_args(e)
    e.add_argument("label", help="the right label")
    e.add_argument("ids", type=int, nargs="+", help="example ids (edged examples list)")
    p.set_defaults(func=cmd_examples)

    p = sub.add_parser("review", help="frames kept because a head was unsure: list, label, discard")
    rsub = p.add_subparsers(dest="review_command", required=True)
    r = rsub.add_parser("list", help="one JSON line per kept frame")
    _add_config_args(r)
    r = rsub.add_parser("label", help="store a kept frame as an example of LABEL")
    _add_config_args(r)
    r.add_argument("id", help="review item id (edged review list)")
    r.add_argument("label", help="label to store the frame under")
    r = rsub.add_parser("discard", help="drop a kept frame")
    _add_config_args(r)
    r.add_argument("id", help="review item id (edged review list)")
    p.set_defaults(func=cmd_review)

    for verb, helptext in (("activate", "make a model version current"), ("rollback", "return to the previous model version")):
        p = sub.add_parser(verb, help=helptext)
        _add_config_args(p)
        p.add_argument("--model", required=True, help="head name whose exported models to switch")
        if verb == "activate":
            p.add_argument("--version", required=True, help="version to make current, e.g. v3")
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
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the broker")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("config", help="config tools")
    csub = p.add_subparsers(dest="config_command", required=True)
    c = csub.add_parser("check", help="validate a config file")
    c.add_argument("file", help="TOML config file")
    c.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key, e.g. mqtt.port=1884")
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
