"""Shared fixtures: a real mosquitto broker, cached tiny backbones, an MQTT probe, a daemon subprocess."""

from __future__ import annotations

import fcntl
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from edged.config import MqttConfig
from edged.mqtt.client import make_client
from edged.mqtt.requests import BrokerClient
from edged.mqtt.topics import Topics

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SIGN_DIGITS = SHARED / "data" / "sign-digits"
RACCOON = SHARED / "data" / "raccoon"
WEIGHTS_025 = SHARED / "models" / "mobilenet_v1_0.25_128_imagenet_no_top.weights.h5"
EXTRACTOR_U8 = SHARED / "models" / "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"

needs_sign_digits = pytest.mark.skipif(not SIGN_DIGITS.is_dir(), reason="../shared/data/sign-digits absent")
needs_weights = pytest.mark.skipif(not WEIGHTS_025.is_file(), reason="../shared/models weights absent")


@pytest.fixture(scope="module")
def broker():
    from edged.mqtt.broker import MosquittoBroker

    b = MosquittoBroker().start()
    yield b
    b.close()


# -- backbones: converted once per test session, copied into each state dir -------------------
_BACKBONE_CACHE: dict = {}


def backbone_settings(weights: str = "none", input_size: int = 96, **extra) -> dict:
    return {"family": "mobilenet_v1", "alpha": 0.25, "input_size": input_size, "weights": weights, **extra}


# what a converted backbone depends on besides its settings: when any of these changes, it is converted again
_CONVERSION_CODE = ("edged/learn/backbones.py", "edged/learn/keras_backbone.py", "edged/learn/convert.py",
                    "edged/state/backbones.py", "edged/runtime/scaling.py")


def _disk_cache() -> Path:
    """Converted test backbones kept across runs (`EDGED_TEST_CACHE`, default ~/.cache/edged/test-backbones)."""
    return Path(os.environ.get("EDGED_TEST_CACHE", Path.home() / ".cache" / "edged" / "test-backbones"))


def prebuilt_backbones(tmp_root: Path, settings: dict) -> Path:
    """Folder holding `backbones/<id>/` for `settings`: converted with Keras once, then kept on disk across test
    runs (keyed by the settings, the conversion code and the TensorFlow version)."""
    key = json.dumps(settings, sort_keys=True)
    if key not in _BACKBONE_CACHE:
        import hashlib

        import tensorflow as tf

        digest = hashlib.sha256(key.encode() + tf.__version__.encode())
        for name in _CONVERSION_CODE:
            digest.update((ROOT / name).read_bytes())
        folder = _disk_cache() / digest.hexdigest()[:20]
        folder.parent.mkdir(parents=True, exist_ok=True)
        with open(folder.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # test processes running side by side (pytest -n) build it once
            _build_once(folder, key, settings, tmp_root / f"bb-{len(_BACKBONE_CACHE)}")
        _BACKBONE_CACHE[key] = folder
    return _BACKBONE_CACHE[key]


def _build_once(folder: Path, key: str, settings: dict, building: Path) -> None:
    if (folder / "complete").is_file():
        return
    from edged.config import BackboneConfig, Config
    from edged.learn.backbones import build_backbone, build_int8

    build_backbone(BackboneConfig(**settings), building)
    # the int8 twin too (calibrated on synthetic scenes), so that daemons do not each build it at start
    build_int8(Config.model_validate({"state_dir": str(building), "backbone": settings,
                                      "runtime": {"calibration_frames": 100}}))
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(building, folder)
    (folder / "complete").write_text(key)


@pytest.fixture(scope="session")
def backbone_root(tmp_path_factory):
    return tmp_path_factory.mktemp("backbones")


@pytest.fixture
def make_state(backbone_root, tmp_path):
    """make_state(settings) -> a fresh state dir that already has the converted backbone."""

    def make(settings: dict, name: str = "state") -> Path:
        state = tmp_path / name
        src = prebuilt_backbones(backbone_root, settings) / "backbones"
        shutil.copytree(src, state / "backbones", dirs_exist_ok=True)
        return state

    return make


@pytest.fixture(scope="session")
def fleet_admin(tmp_path_factory):
    """The test run's fleet key (`edged fleet init`), kept off the devices as an admin would."""
    from edged.fleet.trust import FleetAuthority

    return FleetAuthority.create(tmp_path_factory.mktemp("fleet-admin"))


def enrol(authority, state: Path, name: str, role: str = "device"):
    """What `edged fleet enroll --config` does: keys in the state folder, certified by the fleet key."""
    from edged.fleet.trust import Identity

    folder = state / "keys" if role == "device" else state / "keys" / f"trainer-{name}"
    identity = Identity(folder, name, role)
    identity.install(authority.certify(identity.request(), role))
    return identity


BLOCK_TF = textwrap.dedent('''
    import sys

    class _NoTensorFlow:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("tensorflow", "keras"):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, _NoTensorFlow())
''')

def without_tensorflow(folder: Path) -> dict:
    """Environment for a subprocess in which TensorFlow and Keras cannot be imported (a board without them)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(BLOCK_TF)
    return {"PYTHONPATH": str(folder)}


def state_config(state: Path, settings: dict, *overrides: str):
    """A Config for `state` with these backbone settings and `KEY=VALUE` overrides (no file)."""
    from edged.config import load_config

    return load_config(None, [f"state_dir='{state}'", *(f"backbone.{k}={json.dumps(v)}" for k, v in settings.items()),
                              *overrides])


def fill_store(cfg, items) -> tuple:
    """Open the backbone and store `items`, (image, label, box or [(label, box), ...] or None), embedded by it:
    (backbone info, engine, store)."""
    from edged.serve.backbone import embed_image, open_backbone
    from edged.state.store import NewExample, Store

    info, engine = open_backbone(cfg)
    store = Store(cfg.state_path / "store")
    store.add_many([NewExample(img, label, embed_image(engine, img),
                               **({"objects": list(where)} if isinstance(where, list) else {"box": where}))
                    for img, label, where in items], info.id)
    return info, engine, store


def teach(state: Path, settings: dict, items) -> None:
    """Store `items` (as fill_store) in `state` for a daemon about to start there, closing what fill_store opened."""
    _, engine, store = fill_store(state_config(state, settings), items)
    store.close()
    engine.close()


def write_video(path: Path, frames, fps: float = 25.0) -> str:
    """A real mp4 (mp4v) of BGR frames, for OpenCV to decode."""
    import cv2

    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert writer.isOpened(), "OpenCV cannot write mp4v here"
    for f in frames:
        writer.write(cv2.resize(f, (w, h)))
    writer.release()
    return str(path)


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def toml_config(state: Path, port: int, source: str, backbone: dict, device: str = "cam1", extra: str = "",
                realtime: bool = True, every_frame: bool = True, fps: float = 60) -> str:
    """A daemon's config; `realtime = False` paces a file or synthetic source by the frame loop (no frame dropped
    under load), for captures that must see every scene. Every frame is inferred and published (the tests of the
    motion gate and of states set their own)."""
    bb = "\n".join(f"{k} = {json.dumps(v)}" for k, v in backbone.items())
    per_frame = '[publish]\npredictions = "every"\n\n[gate]\nmode = "always"\n' if every_frame else ""
    return f"""
device = "{device}"
state_dir = "{state}"
log_level = "INFO"

[source]
uri = "{source}"
realtime = {str(realtime).lower()}
fps = {fps}
loop = true

[backbone]
{bb}

{per_frame}
[mqtt]
host = "127.0.0.1"
port = {port}
stats_interval_s = 1.0
reconnect_min_s = 1
reconnect_max_s = 2
{extra}
"""


def daemon_config(tmp_path: Path, make_state, port: int, device: str, source: str = "synthetic:clutter=2",
                  extra: str = "", settings: dict | None = None) -> Path:
    """A daemon's config file `<device>.toml` with a state folder of its own (`state-<device>`, the test backbone
    built in): what most daemon tests start."""
    settings = settings or backbone_settings("none")
    state = make_state(settings, name=f"state-{device}")
    return write_config(tmp_path / f"{device}.toml", toml_config(state, port, source, settings, device, extra))


def edged_cli(*args: str, timeout: float = 300, cwd: Path | str = ROOT, env: dict | None = None,
              ) -> subprocess.CompletedProcess:
    """`edged <args>` in a subprocess, as a user types it; output captured as text."""
    return subprocess.run([sys.executable, "-m", "edged", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env=env)


def wait_until(predicate, timeout: float = 20.0, what="the condition", interval: float = 0.05):
    """Poll `predicate()` until it returns something truthy (returned) or `timeout` passes (AssertionError naming
    `what`, or what `what()` says then): the one way a test waits on something that happens elsewhere."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what() if callable(what) else what}")
        time.sleep(interval)


# -- MQTT probe ----------------------------------------------------------------------
class Probe:
    """A paho client collecting messages per topic; `request` sends a command and waits for its final reply."""

    def __init__(self, port: int, prefix: str = "edged"):
        self.prefix = prefix
        self.messages: "queue.Queue[tuple[str, bytes, bool]]" = queue.Queue()
        self.seen: list[tuple[str, bytes, bool]] = []
        self.client = make_client(MqttConfig(port=port, protocol="3.1.1"), f"probe-{uuid.uuid4().hex[:8]}")
        self.client.on_message = lambda c, u, m: self.messages.put((m.topic, m.payload, m.retain))
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(f"{prefix}/#", qos=1)
        self.client.loop_start()
        self.requests = BrokerClient(MqttConfig(port=port, protocol="3.1.1", prefix=prefix), "probe").__enter__()

    def close(self):
        self.requests.__exit__(None, None, None)
        self.client.loop_stop()
        self.client.disconnect()

    def drain(self):
        while True:
            try:
                self.seen.append(self.messages.get_nowait())
            except queue.Empty:
                return

    def wait_for(self, predicate, timeout: float = 30.0):
        """Return the first (topic, payload, retain) satisfying predicate, from now on."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                item = self.messages.get(timeout=0.2)
            except queue.Empty:
                continue
            self.seen.append(item)
            if predicate(*item):
                return item
        raise AssertionError(f"no matching message within {timeout}s")

    def collect(self, topic: str, seconds: float) -> list[dict]:
        out = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                t, p, _ = self.messages.get(timeout=0.1)
            except queue.Empty:
                continue
            if t == topic:
                out.append(json.loads(p))
        return out

    def wait_online(self, device: str, timeout: float = 60.0) -> dict:
        """Wait for the daemon's retained online status (it has subscribed to commands by then)."""
        topic = f"{self.prefix}/{device}/status"
        item = self.wait_for(lambda t, p, r: t == topic and json.loads(p).get("state") == "online", timeout)
        return json.loads(item[1])

    def send(self, device: str, command: str, payload, qos: int = 1):
        data = payload if isinstance(payload, (bytes, bytearray)) else json.dumps(payload).encode()
        self.client.publish(f"{self.prefix}/{device}/cmd/{command}", data, qos=qos).wait_for_publish(5)

    def request(self, device: str, command: str, payload: dict, timeout: float = 60.0) -> dict:
        """The command's final reply, through the same request helper as `edged cmd` (edged.mqtt.requests)."""
        topics = Topics(self.prefix, device)
        reply = self.requests.request(topics.command(command), topics.reply(command), payload, timeout)

        def the_reply(t, p, r):  # what came before the reply is taken from the queue, as a watcher saw it
            try:
                got = json.loads(p)
            except ValueError:
                return False
            return t == topics.reply(command) and got.get("id") == reply.get("id") and got.get("final", True)

        self.wait_for(the_reply, 10)
        return reply


@pytest.fixture
def probe(broker):
    p = Probe(broker.port)
    yield p
    p.close()


# -- daemon subprocess -------------------------------------------------------------------
class DaemonProcess:
    def __init__(self, config: Path, log: Path, env_extra: dict | None = None):
        env = dict(os.environ)
        env.update(env_extra or {})
        env["PYTHONUNBUFFERED"] = "1"
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edged", "run", "--config", str(config)],
            stdout=open(log, "ab"), stderr=subprocess.STDOUT, env=env, cwd=ROOT,
        )

    def stop(self, sig=signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"daemon did not stop on {sig}; log:\n{self.output()}")
        return self.proc.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]

    def alive(self) -> bool:
        return self.proc.poll() is None


@pytest.fixture
def daemons():
    started: list[DaemonProcess] = []

    def start(config: Path, log: Path, env_extra: dict | None = None) -> DaemonProcess:
        d = DaemonProcess(config, log, env_extra)
        started.append(d)
        return d

    yield start
    for d in started:
        if d.alive():
            d.proc.kill()
            d.proc.wait()


def headless_browser(download_dir: Path):
    """Debian's chromium through its chromedriver (skips when either is missing); nothing is downloaded."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("Debian's chromium and chromium-driver are not installed")
    options = Options()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,1000", f"--user-data-dir={download_dir / 'profile'}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=options)
