"""`edged bench cameras`: the cost of a camera. One daemon with N sources against N separate daemons, side by side
in one run, through the real daemon and broker: RSS per added source, total inferences a second, fairness between
sources, and what a camera that dies costs the others. Sources are mp4 files of real photos (sign-digits), read
as fast as the daemon takes them (uncapped), every frame inferred; the dying camera is an MJPEG HTTP camera.

It also times a batch of N frames in one invoke against N single invokes of the backbone, which decides whether
the daemon batches (it takes frames in turn, one invoke each).
"""

from __future__ import annotations

import argparse
import http.server
import json
import shutil
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from ..mqtt.broker import local_broker
from ..runtime.engine import interpreter_module
from .common import bench_backbone, table
from .daemonrun import Probe, prepare_state, rss_mb, start_daemon, stop_daemon
from .pipeline import _bench_frames, _labelled, make_video


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sources", default="1,2,4,8", help="source counts to compare")
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--settle", type=float, default=4.0, help="seconds of serving before measuring")
    p.add_argument("--measure", type=float, default=8.0, help="seconds each rate is measured over")


# -- a camera that can die ---------------------------------------------------------------------------
class MjpegCamera:
    """An MJPEG HTTP camera on loopback at `fps`; `kill()` drops its connections and refuses new ones."""

    def __init__(self, fps: float = 15.0):
        frame = next(_bench_frames(640, 480, 1))
        self.jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()
        self.alive = threading.Event()
        self.alive.set()
        camera = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                try:
                    while camera.alive.is_set():
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                         + str(len(camera.jpeg)).encode() + b"\r\n\r\n" + camera.jpeg + b"\r\n")
                        time.sleep(1.0 / fps)
                except OSError:
                    pass

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.uri = f"http://127.0.0.1:{self.server.server_address[1]}/stream.mjpg"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def kill(self) -> None:
        self.alive.clear()
        self.server.shutdown()
        self.server.server_close()


# -- daemons ------------------------------------------------------------------------------------------
def _config(state: Path, port: int, device: str, backbone: dict, sources: list[tuple[str, str]]) -> Path:
    bb = "\n".join(f"{k} = {json.dumps(v)}" for k, v in backbone.items() if v is not None)
    cameras = "".join(f'[[sources]]\nname = "{name}"\nuri = "{uri}"\nrealtime = false\nfps = 30\n'
                      f'reconnect_min_s = 0.5\nreconnect_max_s = 2\n' for name, uri in sources)
    path = state / "edged.toml"
    path.write_text(f'device = "{device}"\nstate_dir = "{state}"\nlog_level = "WARNING"\n{cameras}[backbone]\n{bb}\n'
                    f'[runtime]\nprecision = "float32"\n[gate]\nmode = "always"\n'
                    f'[mqtt]\nport = {port}\nstats_interval_s = 1\n')
    return path


class Running:
    """Daemons started on one broker; their stats read from the retained/periodic stats messages."""

    def __init__(self, port: int, tmp: Path, info, backbone: dict, examples):
        self.port, self.tmp, self.info, self.backbone, self.examples = port, tmp, info, backbone, examples
        self.procs: dict[str, object] = {}
        self.latest: dict[str, dict] = {}
        self._lock = threading.Lock()
        self.probe = Probe(port, "+")
        self.probe.client.on_message = self._on_message

    def _on_message(self, client, userdata, message) -> None:
        if message.topic.endswith("/stats"):
            try:
                stats = json.loads(message.payload)
            except ValueError:
                return
            with self._lock:
                self.latest[message.topic.split("/")[1]] = stats

    def start(self, device: str, sources: list[tuple[str, str]]) -> None:
        state = self.tmp / device
        state.mkdir()
        prepare_state(state, self.info, self.examples)
        self.procs[device] = start_daemon(_config(state, self.port, device, self.backbone, sources), state / "log")

    def stats(self, device: str) -> dict:
        with self._lock:
            return dict(self.latest.get(device, {}))

    def wait(self, predicate, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.1)
        raise TimeoutError("the daemons did not get there: " + ", ".join(
            f"{d}: {(self.tmp / d / 'log').read_text()[-400:]}" for d in self.procs))

    def rates(self, seconds: float) -> dict[str, dict[str, float]]:
        """Inferences a second per device and per source over `seconds`, from two stats messages of each."""
        first = {d: self.stats(d) for d in self.procs}
        time.sleep(seconds)
        self.wait(lambda: all(self.stats(d).get("ts", 0) >= first[d]["ts"] + seconds for d in self.procs), 30)
        out = {}
        for device in self.procs:
            a, b = first[device], self.stats(device)
            dt = b["ts"] - a["ts"]
            per_source = {name: (s["inferences"] - a.get("sources", {}).get(name, {}).get("inferences", 0)) / dt
                          for name, s in b.get("sources", {}).items()}
            out[device] = {"total": (b["inferences"] - a["inferences"]) / dt, **per_source}
        return out

    def rss(self) -> float:
        return sum(rss_mb(p.pid) for p in self.procs.values())

    def stop(self) -> None:
        for proc in self.procs.values():
            stop_daemon(proc)
        self.procs.clear()
        with self._lock:
            self.latest.clear()

    def close(self) -> None:
        self.stop()
        self.probe.close()


def _serving(run: Running, settle: float) -> None:
    run.wait(lambda: all(run.stats(d).get("inferences", 0) > 0 for d in run.procs))
    time.sleep(settle)


def _one_daemon(run: Running, n: int, video: str, args) -> dict:
    run.start(f"one{n}", [(f"cam{i}", video) for i in range(n)])
    try:
        _serving(run, args.settle)
        rates = run.rates(args.measure)[f"one{n}"]
        rss = run.rss()
    finally:
        run.stop()
    per_source = [v for k, v in rates.items() if k != "total"] or [rates["total"]]
    return {"rss": rss, "total": rates["total"], "min": min(per_source), "max": max(per_source)}


def _separate_daemons(run: Running, n: int, video: str, args) -> dict:
    for i in range(n):
        run.start(f"sep{n}x{i}", [(f"cam{i}", video)])
    try:
        _serving(run, args.settle)
        rates = run.rates(args.measure)
        rss = run.rss()
    finally:
        run.stop()
    totals = [r["total"] for r in rates.values()]
    return {"rss": rss, "total": sum(totals), "min": min(totals), "max": max(totals)}


def _dying_camera(run: Running, video: str, args) -> tuple[float, float, int]:
    """Four sources, one an MJPEG camera that dies: the other three's inferences a second before and during its
    reconnect loop, and how many reconnect attempts the window saw."""
    camera = MjpegCamera()
    run.start("dying", [("cam0", video), ("cam1", video), ("cam2", video), ("door", camera.uri)])
    try:
        _serving(run, args.settle)
        others = lambda r: sum(v for k, v in r["dying"].items() if k.startswith("cam"))  # noqa: E731
        before = others(run.rates(args.measure))
        camera.kill()
        run.wait(lambda: run.stats("dying").get("sources", {}).get("door", {}).get("state") == "camera_lost", 30)
        during = others(run.rates(args.measure))
        log = (run.tmp / "dying" / "log").read_text()
    finally:
        run.stop()
    return before, during, log.count("retrying in")


# -- batching -------------------------------------------------------------------------------------------
def batch_against_singles(model_path: str, size: int, n: int, reps: int = 30) -> tuple[float, float]:
    """Milliseconds for N frames as one batch of N and as N single invokes (2 threads, float32)."""
    _, mod = interpreter_module()

    def timed(batch: int, invokes: int) -> float:
        it = mod.Interpreter(model_path=model_path, num_threads=2)
        detail = it.get_input_details()[0]
        it.resize_tensor_input(detail["index"], [batch, size, size, 3])
        it.allocate_tensors()
        x = np.random.default_rng(0).random((batch, size, size, 3), np.float32).astype(detail["dtype"])
        it.set_tensor(detail["index"], x)
        for _ in range(3):
            it.invoke()
        t0 = time.perf_counter()
        for _ in range(reps):
            for _ in range(invokes):
                it.invoke()
        return (time.perf_counter() - t0) / reps * 1000

    return timed(n, 1), timed(1, n)


def run(args) -> int:
    counts = [int(n) for n in args.sources.split(",")]
    cfg, info = bench_backbone(args.alpha, args.size)
    backbone = cfg.model_dump()
    video = str(make_video(640, 480))
    examples = _labelled(Path(video), 20)
    broker = local_broker()
    tmp = Path(tempfile.mkdtemp(prefix="edged-cameras-"))
    rows, one, separate = [], {}, {}
    try:
        run_ = Running(broker.port, tmp, info, backbone, examples)
        try:
            for n in counts:
                one[n] = r = _one_daemon(run_, n, video, args)
                rows.append(["one daemon", n, f"{r['rss']:.0f}", f"{r['total']:.1f}", f"{r['min']:.1f}-{r['max']:.1f}",
                             f"{r['min'] / r['max']:.2f}"])
                print(f"  one daemon, {n} sources: {r['total']:.1f} inferences/s", flush=True)
            for n in counts:
                if n == 1:
                    continue
                separate[n] = r = _separate_daemons(run_, n, video, args)
                rows.append([f"{n} daemons", n, f"{r['rss']:.0f}", f"{r['total']:.1f}", f"{r['min']:.1f}-{r['max']:.1f}",
                             f"{r['min'] / r['max']:.2f}"])
                print(f"  {n} daemons: {r['total']:.1f} inferences/s", flush=True)
            before, during, retries = _dying_camera(run_, video, args)
        finally:
            run_.close()
    finally:
        broker.close()
        shutil.rmtree(tmp, ignore_errors=True)
    batch_n = max(counts)
    batched, singles = batch_against_singles(str(info.path), info.input_size, batch_n)

    print(f"\n{info.description}, float32, 2 interpreter threads; sources: 640x480 mp4 of sign-digits photos, "
          f"uncapped (decoded as fast as taken), every frame inferred, kNN head, MQTT to a local broker; RSS after "
          f"{args.settle:g} s, rates over {args.measure:g} s from the daemons' stats")
    print(table(rows, ["setup", "sources", "RSS MB", "inferences/s", "per source", "slowest/fastest"]))
    base = one[counts[0]]
    added = [(one[n]["rss"] - base["rss"]) / (n - counts[0]) for n in counts if n > counts[0]]
    print(f"RSS per added source (one daemon): {', '.join(f'{a:.1f}' for a in added)} MB (target <= 15)")
    for n in counts[1:]:
        print(f"one daemon with {n} sources / with {counts[0]}: {one[n]['total'] / base['total']:.2f} "
              f"(target >= 0.95)")
    for n, r in separate.items():
        print(f"one daemon with {n} sources / {n} separate daemons: {one[n]['total'] / r['total']:.2f} "
              f"(target >= 1.2 at 4)")
    fairness = min(one[n]["min"] / one[n]["max"] for n in counts)
    print(f"fairness, slowest source / fastest, worst of {','.join(map(str, counts))}: {fairness:.2f} (target >= 0.8)")
    print(f"a camera dies: the other three's inferences/s during its reconnect loop ({retries} retries) / before: "
          f"{during / before:.2f} ({during:.1f} / {before:.1f}; target >= 0.95)")
    print(f"batch of {batch_n} in one invoke: {batched:.1f} ms; {batch_n} single invokes: {singles:.1f} ms -> "
          f"{'batching would help' if batched < 0.95 * singles else 'frames taken in turn, one invoke each'} "
          f"({singles / batched:.2f}x)")
    key = 4 if 4 in separate else max(separate, default=counts[-1])
    ratio = one[key]["total"] / separate[key]["total"] if key in separate else float("nan")
    print(f"cameras: one daemon with {key} sources / {key} daemons {ratio:.2f} (target >= 1.2)")
    return 0
