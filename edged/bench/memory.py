"""`edged bench memory`: RSS of a serving daemon vs a process that imports TensorFlow; cold start to first prediction."""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2

from ..mqtt.broker import local_broker
from .common import bench_backbone, table
from .daemonrun import Probe, prepare_state, rss_mb, start_daemon, stop_daemon, write_config

_HOLD = "import sys, time; t = time.perf_counter(); {imports}; print(time.perf_counter() - t, flush=True); sys.stdin.read()"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--settle", type=float, default=5.0, help="seconds of serving before RSS is read")


def _imports_rss(imports: str) -> tuple[float, float]:
    proc = subprocess.Popen([sys.executable, "-c", _HOLD.format(imports=imports)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    seconds = float(proc.stdout.readline())
    rss, anon = rss_mb(proc.pid), rss_mb(proc.pid, "RssAnon")
    proc.stdin.close()
    proc.wait()
    return rss, anon, seconds


def run(args) -> int:
    from .pipeline import make_video

    cfg, info = bench_backbone(args.alpha, args.size)
    broker = local_broker()
    video = make_video(640, 480)
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            state = Path(tmp)
            cap = cv2.VideoCapture(str(video))
            prepare_state(state, info, [(cap.read()[1], f"c{i % 5}") for i in range(20)])
            config = write_config(state, broker.port, str(video), cfg.model_dump(), "mem")
            probe = Probe(broker.port, "mem")
            t0 = time.perf_counter()
            proc = start_daemon(config, state / "daemon.log")
            try:
                t_first, _ = probe.wait(lambda t, m: t == "edged/mem/prediction/knn", 60)
                cold = t_first - t0
                time.sleep(args.settle)
                serve_rss, serve_anon = rss_mb(proc.pid), rss_mb(proc.pid, "RssAnon")
            finally:
                stop_daemon(proc)
                probe.close()
    finally:
        broker.close()
    base_rss, base_anon, base_s = _imports_rss("import numpy, cv2, paho.mqtt.client, ai_edge_litert.interpreter")
    tf_rss, tf_anon, tf_s = _imports_rss("import tensorflow")
    rows.append(["edged run (serving, kNN, MQTT)", f"{serve_rss:.0f}", f"{serve_anon:.0f}", f"{cold:.2f} s to first prediction"])
    rows.append(["import numpy+cv2+paho+litert", f"{base_rss:.0f}", f"{base_anon:.0f}", f"{base_s:.2f} s import"])
    rows.append(["import tensorflow", f"{tf_rss:.0f}", f"{tf_anon:.0f}", f"{tf_s:.2f} s import"])
    print(f"daemon: {info.description}, 640x480 mp4 source, kNN head, MQTT to a local broker; RSS after {args.settle:g}s serving. "
          f"RssAnon is private memory; the rest of RSS is mapped library pages, which vary with the page cache "
          f"(the same packages have measured 120 to 170 MB from one environment to another)")
    print(table(rows, ["process", "RSS MB", "RssAnon MB", "time"]))
    print(f"memory: serve RSS {serve_rss:.1f} MB = {serve_rss / tf_rss:.2f} x a TensorFlow import ({tf_rss:.0f} MB) "
          f"(target <= 120 MB); cold start -> first prediction {cold:.2f} s (target <= 1.5 s)")
    return 0
