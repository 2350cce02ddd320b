"""`edged bench soak --minutes N`: a daemon on a looping video, a command every few seconds; RSS, open files and
threads sampled every 10 s must stay flat."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2

from ..mqtt.broker import local_broker
from .common import bench_backbone, table
from .daemonrun import Probe, prepare_state, rss_mb, start_daemon, stop_daemon, write_config

COMMANDS = [("status", {}), ("capture", {"label": "soak", "count": 3, "interval_ms": 50}), ("examples", {"limit": 5}),
            ("heads", {}), ("train", {"head": "classifier"}), ("forget", {"label": "soak"}), ("snapshot", {}),
            ("capture", {"label": "bad label/+", "count": 1})]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--minutes", type=float, default=20.0)
    p.add_argument("--alpha", type=float, default=0.25)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--every", type=float, default=3.0, help="seconds between commands")
    p.add_argument("--sample", type=float, default=10.0, help="seconds between samples")


def _sample(pid: int) -> tuple[float, int, int]:
    fds = len(list(Path(f"/proc/{pid}/fd").iterdir()))
    threads = int(next(l.split()[1] for l in open(f"/proc/{pid}/status") if l.startswith("Threads:")))
    return rss_mb(pid), fds, threads


def _floor(warm: list[tuple], sample_s: float, window_s: float = 300.0) -> str:
    """The lowest RSS of the last `window_s` against that of the first, after the first minute: what stays between
    commands (an interpreter that a train opens for a while, or a fine-tuned model served, rises above it)."""
    n = max(1, int(window_s / sample_s))
    if len(warm) < 2 * n:
        return ""
    first, last = min(s[1] for s in warm[:n]), min(s[1] for s in warm[-n:])
    return f" (its floor, the lowest of 5 minutes: {first:.1f} -> {last:.1f} MB, {last - first:+.1f})"


def run(args) -> int:
    from .pipeline import make_video

    cfg, info = bench_backbone(args.alpha, args.size)
    broker = local_broker()
    video = make_video(640, 480)
    samples, answered, sent = [], 0, 0
    try:
        with tempfile.TemporaryDirectory() as tmp:
            state = Path(tmp)
            cap = cv2.VideoCapture(str(video))
            prepare_state(state, info, [(cap.read()[1], f"c{i % 4}") for i in range(40)])
            config = write_config(state, broker.port, str(video), cfg.model_dump(), "soak",
                                  extra='[heads]\nactive = ["knn", "classifier"]\n')
            probe = Probe(broker.port, "soak")
            proc = start_daemon(config, state / "daemon.log")
            try:
                probe.wait(lambda t, m: t == "edged/soak/prediction/knn", 120)
                started = time.monotonic()
                next_command, next_sample = started, started
                print(f"soak: {args.minutes:g} min, a command every {args.every:g} s, sampling every {args.sample:g} s")
                while time.monotonic() - started < args.minutes * 60:
                    now = time.monotonic()
                    if now >= next_sample:
                        rss, fds, threads = _sample(proc.pid)
                        samples.append((now - started, rss, fds, threads))
                        print(f"  {now - started:6.0f} s  RSS {rss:6.1f} MB  fds {fds:3d}  threads {threads:3d}", flush=True)
                        next_sample += args.sample
                    if now >= next_command:
                        name, payload = COMMANDS[sent % len(COMMANDS)]
                        probe.send(name, payload)
                        sent += 1
                        next_command += args.every
                    while not probe.q.empty():
                        _, topic, _ = probe.q.get()
                        answered += "/reply/" in topic
                    time.sleep(0.05)
                if proc.poll() is not None:
                    print(f"the daemon died: exit {proc.returncode}")
                    return 1
            finally:
                stop_daemon(proc)
                probe.close()
    finally:
        broker.close()
    warm = [s for s in samples if s[0] >= 60] or samples
    rows = []
    for i, name in ((1, "RSS MB"), (2, "open fds"), (3, "threads")):
        rows.append([name, f"{samples[0][i]:.1f}", f"{warm[0][i]:.1f}", f"{samples[-1][i]:.1f}",
                     f"{max(s[i] for s in samples):.1f}"])
    print()
    print(table(rows, ["", "first", "after 1 min", "last", "max"]))
    print(f"{sent} commands sent, {answered} replies (progress included)")
    growth = samples[-1][1] - warm[0][1]
    floor = _floor(warm, args.sample)
    print(f"soak: RSS growth {growth:+.1f} MB after the first minute over {args.minutes:g} min{floor}, fds "
          f"{warm[0][2]}->{samples[-1][2]}, threads {warm[0][3]}->{samples[-1][3]} (target: flat, growth <= 5 MB)")
    return 0
