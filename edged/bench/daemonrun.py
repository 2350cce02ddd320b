"""A daemon subprocess plus an MQTT probe, for the memory and adapt benchmarks."""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Optional

from ..config import MqttConfig
from ..mqtt.client import make_client
from ..runtime.engine import Engine, EngineOptions
from ..serve.backbone import embed_image
from ..state.store import NewExample, Store
from .common import CACHE


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """VmRSS, or RssAnon (private memory) / RssFile (mapped library pages), in MB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Probe:
    def __init__(self, port: int, device: str):
        self.device = device
        self.q: "queue.Queue[tuple[float, str, dict]]" = queue.Queue()
        self.client = make_client(MqttConfig(host="127.0.0.1", port=port, protocol="3.1.1"), f"bench-{uuid.uuid4().hex[:6]}")
        self.client.on_message = lambda c, u, m: self.q.put((time.perf_counter(), m.topic, self._json(m.payload)))
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(f"edged/{device}/#", qos=1)
        self.client.loop_start()

    @staticmethod
    def _json(payload: bytes):
        try:
            return json.loads(payload)
        except ValueError:
            return {}

    def wait(self, predicate, timeout: float = 120.0):
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            try:
                t, topic, msg = self.q.get(timeout=0.1)
            except queue.Empty:
                continue
            if predicate(topic, msg):
                return t, msg
        raise TimeoutError("no matching message")

    def send(self, command: str, payload: dict) -> float:
        self.client.publish(f"edged/{self.device}/cmd/{command}", json.dumps(payload), qos=1).wait_for_publish(5)
        return time.perf_counter()

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


def write_config(state: Path, port: int, source: str, backbone: dict, device: str, extra: str = "",
                 every_frame: bool = True, fps: float = 30, loop: bool = True) -> Path:
    """A bench daemon's config; `every_frame`: no motion gate, every prediction published (what the serving benches
    measure); `loop`: the video starts again at its end (else it is played once)."""
    bb = "\n".join(f"{k} = {json.dumps(v)}" for k, v in backbone.items() if v is not None)
    per_frame = '[publish]\npredictions = "every"\n[gate]\nmode = "always"\n' if every_frame else ""
    path = state / "edged.toml"
    path.write_text(f'device = "{device}"\nstate_dir = "{state}"\nlog_level = "WARNING"\n'
                    f'[source]\nuri = "{source}"\nrealtime = true\nloop = {str(loop).lower()}\nfps = {fps:g}\n[backbone]\n{bb}\n'
                    f'[mqtt]\nport = {port}\nstats_interval_s = 5\n{per_frame}{extra}')
    return path


def prepare_state(state: Path, info, examples) -> None:
    """A state dir with the cached backbone and `examples` ((BGR image, label) pairs) in its store."""
    shutil.copytree(CACHE / "backbones" / info.id, state / "backbones" / info.id, dirs_exist_ok=True)
    engine = Engine(EngineOptions(info.path, scaling=info.scaling))
    store = Store(state / "store")
    store.add_many([NewExample(img, label, embed_image(engine, img)) for img, label in examples], info.id)
    store.close()
    engine.close()


def start_daemon(config: Path, log: Path, cpus: Optional[set[int]] = None) -> subprocess.Popen:
    """`edged run` on `config`; with `cpus`, held to those cores (a starved board)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    return subprocess.Popen([sys.executable, "-m", "edged", "run", "--config", str(config)],
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT, env=env, preexec_fn=pin)


def stop_daemon(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
