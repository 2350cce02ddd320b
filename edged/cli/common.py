"""What every `edged` subcommand shares: config loading, logging, signals, progress, the parser class."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from typing import Callable

from ..config import Config, load_config

log = logging.getLogger("edged")


def setup_logging(level: str) -> None:
    """edged's own log at `level`; TensorFlow, absl and OpenCV chatter only at DEBUG."""
    logging.basicConfig(level=getattr(logging, level), format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    if level != "DEBUG":
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # inherited by the worker and the backbone builder
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
        os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")  # read when OpenCV is imported (this module does not)
        opencv = sys.modules.get("cv2")
        if opencv is not None:  # imported already
            opencv.utils.logging.setLogLevel(opencv.utils.logging.LOG_LEVEL_ERROR)


def load(args) -> Config:
    overrides = list(getattr(args, "set", None) or [])
    return load_config(getattr(args, "config", None), overrides)


def add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", help="TOML config file")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key, e.g. mqtt.port=1884")


def install_signal_handlers(stop: threading.Event) -> None:
    def handler(signum, frame):
        stop.set()  # only this: the loops notice and unwind

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def progress_line(p: dict) -> str:
    """One progress reply as a person reads it: `capture: mug 10/20 (4 distinct)`, `auto: fine-tune ...`."""
    if "phase" in p or "step" in p:
        return f"{p.get('phase', 'progress')}: {p.get('step', '')}".rstrip(": ")
    if "label" in p and "stored" in p:
        distinct = f" ({p['distinct']} distinct)" if "distinct" in p else ""
        return f"capture: {p['label']} {p['stored']}/{p.get('count', '?')}{distinct}"
    return ", ".join(f"{k} {v}" for k, v in p.items())


def progress_printer():
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
            print(f"\n{progress_line(p)}", file=sys.stderr, flush=True)

    return show


class HelpfulParser(argparse.ArgumentParser):
    """Every `edged` (sub)command shows each option's default in its help."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(*args, **kwargs)


def subcommand(sub, name: str, func: Callable, help: str, config: bool = True, **kwargs) -> argparse.ArgumentParser:
    """One `edged NAME` subcommand running `func(args)`; with `config`, it takes --config and --set."""
    p = sub.add_parser(name, help=help, **kwargs)
    if config:
        add_config_args(p)
    p.set_defaults(func=func)
    return p
