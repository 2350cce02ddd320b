"""Tools: config check, backbone build, heads, doctor, bench, install-service."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from pydantic import ValidationError

from ..config import Config, dump_config, format_validation_error, read_config_data, redact_uri
from ..errors import ConfigError, EdgedError
from ..heads.options import check_head_config
from ..heads.registry import head_classes, plugin_manager, plugin_sources
from ..fleet.backbones import publish as publish_backbones
from ..fleet.signing import device_trust
from ..serve.backbone import open_backbone, resolve
from ..serve.choice import LADDER, candidate
from .checks import check_meaning
from .common import add_config_args, load, setup_logging, subcommand
from .doctor import run_doctor
from .install import install


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
    print(f"{args.file}: ok (device {cfg.device!r}, source {', '.join(redact_uri(c.source.uri) for c in cfg.cameras)!r}, backbone {cfg.backbone.family})")
    if args.show:
        print(dump_config(cfg))  # secrets shown as ***
    return 0


def cmd_heads(args) -> int:
    cfg = load(args)
    pm = plugin_manager(cfg.plugins_dir)
    sources = plugin_sources(pm)
    for name, cls in sorted(head_classes(pm).items()):
        origin = sources.get(cls.__module__, cls.__module__)
        active = "active" if name in cfg.heads.active else ""
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        print(f"{name:12s} {cls.kind:8s} {active:7s} {origin}  {doc}")
    return 0


def cmd_backbone_build(args) -> int:
    cfg = load(args)
    setup_logging(cfg.log_level)
    if args.fleet or args.rung:
        return _build_for_the_fleet(cfg, args.rung or LADDER)
    info, engine = open_backbone(cfg)
    engine.close()
    print(json.dumps({"id": info.id, "path": info.path, "input_size": info.input_size, "output_dim": info.output_dim}))
    return 0


def _rung(text: str) -> tuple[float, int]:
    try:
        alpha, size = text.split("/")
        rung = (float(alpha), int(size))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not ALPHA/SIZE, e.g. 0.25/128") from None
    if rung not in LADDER:
        raise argparse.ArgumentTypeError(f"{text!r} is not a rung of the automatic choice: "
                                         f"{', '.join(f'{a:g}/{s}' for a, s in LADDER)}")
    return rung


def _build_for_the_fleet(cfg, rungs) -> int:
    """Convert each rung here (once: the cache keeps it) and publish it, signed and retained, for the fleet's boards
    that have no TensorFlow (edged.fleet.backbones)."""
    if cfg.backbone.family != "mobilenet_v1":
        raise EdgedError(f"backbone.family = {cfg.backbone.family!r}: --fleet sends the automatic choice's MobileNet "
                         "v1 rungs")
    if not cfg.mqtt.enabled:
        raise EdgedError("[mqtt] enabled = false: there is no broker to send the backbones on")
    trust = device_trust(cfg)
    built = []
    for alpha, size in rungs:
        bb = candidate(cfg.backbone, alpha, size)
        print(f"MobileNet v1 {alpha:g}/{size}: converting (once: the cache keeps it)", flush=True)
        built.append((bb, resolve(cfg.model_copy(update={"backbone": bb}))))
    for sent in publish_backbones(cfg, trust, built, progress=lambda line: print(line, flush=True)):
        print(f"published {sent['backbone']}: {sent['bytes'] / 2**20:.1f} MB in {sent['chunks']} chunks on "
              f"{sent['topic']} ({'signed' if sent['signed'] else 'unsigned: fleet.trust = broker'})", flush=True)
    return 0


def cmd_install_service(args) -> int:
    done, problems = install(Path(args.root), args.user, chown=not args.no_chown)
    for line in done:
        print(line)
    for line in problems:
        print(f"error: {line}", file=sys.stderr)
    if problems:
        return 1
    if Path(args.root) == Path("/"):
        print("next: sudo systemctl daemon-reload && sudo systemctl enable --now edged   (or edged@<camera> per camera)")
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
    "events": "a scripted scene through a motion-gated and an always-on daemon: inferences, CPU, events, latency",
    "mistakes": "look-alikes nobody taught, before and after a few 'wrong' marks: false events an hour, recall",
    "cameras": "one daemon with N sources vs N daemons: RSS per source, inferences/s, fairness, a camera dying",
    "audio": "words and sounds from 5-10 clips (espeak-ng voices, synthetic sounds): heads and backbones side by side",
    "soak": "a long run with a command every few seconds: RSS, open files and threads sampled, must stay flat",
}


def cmd_bench(args) -> int:
    """Import only the benchmark asked for (benchmarks import TensorFlow), then parse its own options."""
    module = importlib.import_module(f"edged.bench.{args.bench_name}")
    parser = argparse.ArgumentParser(prog=f"edged bench {args.bench_name}", description=BENCHES[args.bench_name])
    module.add_arguments(parser)
    return module.run(parser.parse_args(args.bench_args))


def cmd_doctor(args) -> int:
    return run_doctor(load(args), args.timeout)


def add_parsers(sub) -> None:
    p = subcommand(sub, "install-service", cmd_install_service, help="systemd units for this installation, /etc/edged, /var/lib/edged", config=False)
    p.add_argument("--root", default="/", help="install under this folder instead of / (for packaging or a look)")
    p.add_argument("--user", default="edged", help="the service's user and group")
    p.add_argument("--no-chown", action="store_true", help="leave owners alone (modes are still set)")
    p = subcommand(sub, "bench", cmd_bench, help="benchmarks printing side-by-side ratios",
                       description="; ".join(f"{k}: {v}" for k, v in BENCHES.items()), config=False)
    p.add_argument("bench_name", choices=sorted(BENCHES), help="which benchmark")
    p.add_argument("bench_args", nargs=argparse.REMAINDER, help="its options (edged bench NAME --help)")
    p = subcommand(sub, "heads", cmd_heads, help="list installed heads")
    p = subcommand(sub, "doctor", cmd_doctor, help="check interpreter, delegate, camera, broker, TensorFlow")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the broker")
    p = sub.add_parser("config", help="config tools")
    csub = p.add_subparsers(dest="config_command", required=True)
    c = csub.add_parser("check", help="validate a config file")
    c.add_argument("file", help="TOML config file")
    c.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key, e.g. mqtt.port=1884")
    c.add_argument("--show", action="store_true", help="print the resolved config")
    c.set_defaults(func=cmd_config_check)
    p = sub.add_parser("backbone", help="backbone tools")
    bsub = p.add_subparsers(dest="backbone_command", required=True)
    b = bsub.add_parser("build", help="convert and cache the configured backbone now; with --fleet, every rung of the "
                                      "automatic choice, published for the fleet's boards without TensorFlow")
    add_config_args(b)
    b.add_argument("--fleet", action="store_true", help="convert the automatic choice's rungs and publish them, signed "
                                                        "and retained, on the config's broker: a board with no "
                                                        "TensorFlow, no converted backbone and no TFLite extractor "
                                                        "takes them at its first start")
    b.add_argument("--rung", action="append", type=_rung, metavar="ALPHA/SIZE",
                   help="with --fleet: a rung to send (repeatable), e.g. 0.25/128; default every rung")
    b.set_defaults(func=cmd_backbone_build)
