"""`edged run` and `edged trainer`: the long-running processes."""

from __future__ import annotations

import faulthandler
import threading

from ..config import Config
from ..daemon.daemon import Daemon
from ..errors import NO_TENSORFLOW, ConfigError, EdgedError
from ..fleet.trainer_node import TrainerNode
from ..serve.worker_client import tensorflow_available
from .checks import check_meaning
from .common import install_signal_handlers, load, log, setup_logging, subcommand
from .demo import Demo


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
        cfg = load(args)
    errors, warnings = check_meaning(cfg)
    if errors:
        raise ConfigError("\n".join(errors))
    if args.print:
        cfg.serve.print_predictions = True
    setup_logging(cfg.log_level)
    faulthandler.enable()  # a crash inside LiteRT or OpenCV leaves its stack in the log (journald), not silence
    for w in warnings:
        log.warning("%s", w)
    stop = threading.Event()
    install_signal_handlers(stop)
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


def cmd_trainer(args) -> int:
    """Train and export for the fleet's devices that have no TensorFlow, until stopped."""
    cfg = load(args)
    setup_logging(cfg.log_level)
    if not args.fleet:
        raise EdgedError("edged trainer serves devices over the broker: give --fleet")
    if not tensorflow_available():
        raise EdgedError(NO_TENSORFLOW.format(job="a trainer node"))
    stop = threading.Event()
    install_signal_handlers(stop)
    TrainerNode(cfg, args.name or cfg.device, stop).run()
    return 0


def add_parsers(sub) -> None:
    p = subcommand(sub, "run", cmd_run, help="serve: camera -> backbone -> heads -> MQTT")
    p.add_argument("--demo", action="store_true", help="synthetic scenes, embedded broker, two taught shapes")
    p.add_argument("--print", action="store_true", help="also print predictions to stdout")
    p = subcommand(sub, "trainer", cmd_trainer, help="train and export for devices without TensorFlow, over the broker")
    p.add_argument("--fleet", action="store_true", help="take jobs from the devices on the configured broker")
    p.add_argument("--name", help="this trainer's name (default: the config's device name)")
