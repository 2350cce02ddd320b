"""`edged bench pipeline`: the full daemon loop (decode -> preprocess -> invoke -> kNN -> MQTT) vs bare invoke.

The source is an mp4 (default) or a folder of large JPEG photos (`--source jpegs`), where
`--reduced 0,1` compares full against reduced JPEG decoding side by side.
"""

from __future__ import annotations

import argparse
import itertools
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from ..config import Config, SourceConfig
from ..daemon.daemon import Daemon
from ..learn.backbones import build_int8
from ..mqtt.broker import free_port, local_broker
from ..runtime.engine import Engine, EngineOptions
from ..sources import open_source
from ..sources.synthetic import scene_at
from ..state.backbones import int8_path
from ..web.server import web_component
from .common import CACHE, DATA, models, table
from .daemonrun import prepare_state


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", default="1.0:224,0.25:128", help="alpha:size pairs")
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--nice", default="0", help="grabber thread niceness values to compare, e.g. 0,10,19")
    p.add_argument("--precisions", default="float32,int8")
    p.add_argument("--decode-threads", default="1", help="source.decode_threads values to compare, e.g. 1,2")
    p.add_argument("--source", choices=["video", "jpegs"], default="video",
                   help="an mp4, or a folder of JPEG photos of --width x --height")
    p.add_argument("--reduced", default="1", help="source.reduced_decoding values to compare (jpegs), e.g. 0,1")
    p.add_argument("--width", type=int, default=640, help="frame width of the mp4 or the JPEGs")
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--web", action="store_true", help="also run the first model with the teach page open in a client "
                                                      "(MJPEG live view + event stream) and compare")


def _bench_frames(width: int, height: int, frames: int):
    """Sign-digits photos (synthetic scenes when ../shared is absent) at width x height."""
    folder = DATA / "sign-digits"
    files = sorted(folder.glob("*/*"))[::7][:frames] if folder.is_dir() else []
    for i in range(frames):
        yield cv2.resize(cv2.imread(str(files[i % len(files)])), (width, height)) if files else \
            scene_at(0, i, width, height).image


def make_video(width: int, height: int, frames: int = 300) -> Path:
    """A real mp4 of the bench frames, cached."""
    path = CACHE / f"bench-{width}x{height}-{frames}.mp4"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (width, height))
    for img in _bench_frames(width, height, frames):
        writer.write(img)
    writer.release()
    return path


def make_jpegs(width: int, height: int, frames: int = 100) -> Path:
    """A folder of JPEG photos (quality 90) of the bench frames, cached."""
    folder = CACHE / f"bench-{width}x{height}-{frames}-jpegs"
    if not (folder / f"{frames - 1:04d}.jpg").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(_bench_frames(width, height, frames)):
            cv2.imwrite(str(folder / f"{i:04d}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return folder


def _labelled(uri: Path, n: int = 50) -> list[tuple[np.ndarray, str]]:
    """The source's first `n` frames, labelled c0..c4 in turn: the kNN examples of a bench run."""
    src = open_source(SourceConfig(uri=str(uri), realtime=False))
    src.open()
    try:
        return [(src.read().image, f"c{i % 5}") for i in range(n)]
    finally:
        src.close()


def _bare_fps(path: str, info, threads: int, seconds: float) -> float:
    engine = Engine(EngineOptions(path, num_threads=threads, scaling=info.scaling))
    it = engine.interpreter
    it.set_tensor(engine.input_detail["index"], engine.adapter(np.zeros((info.input_size, info.input_size, 3), np.uint8)))
    for _ in range(5):
        it.invoke()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        it.invoke()
        n += 1
    return n / (time.perf_counter() - t0)


READER = "import sys, urllib.request\nwith urllib.request.urlopen(sys.argv[1], timeout=10) as s:\n    while s.read(65536):\n        pass\n"


def _page_client(port: int) -> list[subprocess.Popen]:
    """What an open page asks for, read by other processes (as a browser would be): the live view and the events."""
    return [subprocess.Popen([sys.executable, "-c", READER, f"http://127.0.0.1:{port}{path}"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for path in ("/api/live.mjpg", "/api/events")]


def _pipeline(info_cfg, video: Path, broker_port: int, threads: int, seconds: float, state: Path, web: bool = False,
              precision: str = "float32", nice: int = 0, decode_threads: int = 1, reduced: bool = True):
    port = free_port()
    cfg = Config.model_validate({
        "device": "bench", "state_dir": str(state), "log_level": "WARNING",
        "source": {"uri": str(video), "realtime": False, "loop": True, "nice": nice,
                   "decode_threads": decode_threads, "reduced_decoding": reduced},
        "backbone": info_cfg.model_dump(), "runtime": {"num_threads": threads, "precision": precision},
        "mqtt": {"port": broker_port, "stats_interval_s": 1000},
        "web": {"enabled": web, "port": port},
    })
    daemon = Daemon(cfg, extra=(("web", web_component(cfg.web)),) if web else ())
    daemon.start()
    runner = threading.Thread(target=daemon.run)
    runner.start()
    readers = _page_client(port) if web else []
    time.sleep(2.0)  # warm-up
    g, t = daemon.cameras, daemon.times
    start = (time.perf_counter(), t.frames, g.captured, g.decode_s, g.preprocess_s, t.invoke, t.head, t.publish)
    time.sleep(seconds)
    end = (time.perf_counter(), t.frames, g.captured, g.decode_s, g.preprocess_s, t.invoke, t.head, t.publish)
    served = daemon.precision
    for reader in readers:
        reader.kill()
        reader.wait()
    daemon.stop.set()
    runner.join()
    daemon.shutdown()
    d = [b - a for a, b in zip(start, end)]
    frames, captured = d[1], max(d[2], 1)
    stages = {"decode": d[3] / captured, "preprocess": d[4] / captured, "invoke": d[5] / frames,
              "head": d[6] / frames, "publish": d[7] / frames}
    return frames / d[0], stages, served


def run(args) -> int:
    broker = local_broker()
    video = make_video(args.width, args.height) if args.source == "video" else make_jpegs(args.width, args.height)
    rows, lines = [], []
    try:
        for alpha, size, cfg, info in models(args.models):
            twin = int8_path(info)
            if not twin.is_file():
                build_int8(Config.model_validate({"state_dir": str(CACHE), "backbone": cfg.model_dump(),
                                                  "source": {"uri": str(video), "loop": False}}))
            paths = {"float32": info.path, "int8": str(twin)}
            for precision in args.precisions.split(","):
                for nice, decoders, reduced in itertools.product(*([int(v) for v in values.split(",")] for values in
                                                                   (args.nice, args.decode_threads, args.reduced))):
                    # bare invoke measured right before each pipeline run: this machine's speed drifts by 10-20 %
                    raw = _bare_fps(paths[precision], info, args.threads, min(args.seconds, 8.0))
                    with tempfile.TemporaryDirectory() as tmp:
                        state = Path(tmp)
                        prepare_state(state, info, _labelled(video))
                        fps, stages, served = _pipeline(cfg, video, broker.port, args.threads, args.seconds, state,
                                                        precision=precision, nice=nice, decode_threads=decoders,
                                                        reduced=bool(reduced))
                    if served["precision"] != precision:
                        lines.append(f"pipeline {alpha}/{size} {precision}: not served ({served['reason']})")
                        break
                    overhead_ms = max(1000 / fps - 1000 / raw, 0.0)
                    rows.append([f"{alpha}/{size}", precision, str(nice), str(decoders), str(reduced),
                                 f"{raw:.1f}", f"{fps:.1f}", f"{fps / raw:.3f}",
                                 *(f"{stages[k] * 1000:.3f}" for k in ("decode", "preprocess", "invoke", "head", "publish")),
                                 f"{overhead_ms:.3f}"])
                    lines.append(f"pipeline {alpha}/{size} {precision} grabber nice {nice}, decode threads {decoders}"
                                 + (f", reduced decoding {reduced}" if args.source == "jpegs" else "") + ": "
                                 f"{fps / raw:.3f} x raw invoke fps (target >= 0.87), non-model cost {overhead_ms:.3f} ms/frame"
                                 + (" (target <= 0.8 ms)" if float(alpha) <= 0.25 else ""))
    finally:
        broker.close()
    kind = "mp4" if args.source == "video" else "JPEG photos in a folder"
    print(f"source: {args.width}x{args.height} {kind} decoded by OpenCV, kNN head (50 examples), MQTT publish to a "
          f"local broker; decode+preprocess run in the grabber thread, overlapped with inference; {args.threads} interpreter threads")
    print(table(rows, ["model", "precision", "nice", "decode thr", "reduced", "raw fps", "pipeline fps", "ratio",
                       "decode ms", "preproc ms", "invoke ms", "head ms", "publish ms", "non-model ms"]))
    for line in lines:
        print(line)
    if args.web:
        alpha, size, cfg, info = next(models(args.models.split(",")[0]))
        broker = local_broker()
        try:
            results = {}
            for web in (False, True, False, True):  # alternated, so that drift on the machine hits both alike (float32)
                with tempfile.TemporaryDirectory() as tmp:
                    prepare_state(Path(tmp), info, _labelled(video))
                    fps, _, _ = _pipeline(cfg, video, broker.port, args.threads, args.seconds, Path(tmp), web)
                results.setdefault(web, []).append(fps)
        finally:
            broker.close()
        without, with_page = np.mean(results[False]), np.mean(results[True])
        print(f"teach page: {alpha}/{size} pipeline {without:.1f} fps without a client, {with_page:.1f} fps with one "
              f"reading the MJPEG live view ({5:g} fps) and the event stream (two runs each, alternated)")
        print(f"pipeline web: {with_page / without:.3f} x the fps without the page open (target >= 0.95)")
    return 0
