"""Interpreter choice, input (de)quantization, a real uint8 extractor, and sd_notify."""

import os
import socket
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
from conftest import EXTRACTOR_U8, SIGN_DIGITS, backbone_settings, needs_weights

from edged.runtime.engine import Engine, EngineOptions, InputAdapter, interpreter_module
from edged.runtime.scaling import Scaling
from edged.sources.preprocess import to_pixels


def test_litert_is_the_default_interpreter():
    name, _ = interpreter_module("auto")
    assert name == "litert"


def test_input_adapter_float_and_quantized():
    px = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, axis=3)[0]
    fl = InputAdapter({"dtype": np.float32, "shape": [1, 16, 16, 3], "quantization": (0.0, 0)}, Scaling(1 / 127.5, -1))
    out = fl(px)
    assert out.dtype == np.float32 and out.min() == pytest.approx(-1) and out.max() == pytest.approx(1)
    q = InputAdapter({"dtype": np.uint8, "shape": [1, 16, 16, 3], "quantization": (1 / 128, 128)}, Scaling(1 / 127.5, -1))
    assert not q.identity
    deq = (q(px).astype(np.float32) - 128) / 128
    assert np.abs(deq - out).max() <= 1 / 128 + 1e-6
    ident = InputAdapter({"dtype": np.uint8, "shape": [1, 16, 16, 3], "quantization": (1 / 127.5, 127.5)}, Scaling(1 / 127.5, -1))
    assert ident.identity and np.array_equal(ident(px)[0], px)


def test_float_backbone_matches_keras(make_state):
    """The converted TFLite backbone gives the Keras model's embedding."""
    import keras  # noqa: F401

    from edged.config import BackboneConfig
    from edged.learn.backbones import build_backbone
    from edged.learn.keras_backbone import build

    settings = backbone_settings("none")
    state = make_state(settings)
    info = build_backbone(BackboneConfig(**settings), state)
    engine = Engine(EngineOptions(info.path, scaling=info.scaling))
    model = build(BackboneConfig(**settings))
    px = to_pixels(np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8), 96)
    keras_out = model(px[None].astype(np.float32) / 127.5 - 1, training=False).numpy()[0]
    tfl = engine.embed(px)
    assert tfl.shape == keras_out.shape == (info.output_dim,)
    assert np.abs(tfl - keras_out).max() < 1e-3 * max(1.0, np.abs(keras_out).max())


@pytest.mark.skipif(not EXTRACTOR_U8.is_file(), reason="../shared/models absent")
def test_uint8_extractor_backbone_dequantizes(tmp_path):
    from edged.config import BackboneConfig
    from edged.learn.backbones import build_backbone

    info = build_backbone(BackboneConfig(family="tflite", path=str(EXTRACTOR_U8)), tmp_path)
    assert info.input_size == 224 and info.output_dim == 1024
    engine = Engine(EngineOptions(info.path, scaling=info.scaling))
    assert engine.adapter.dtype == np.uint8
    imgs = [cv2.imread(str(sorted((SIGN_DIGITS / d).glob("*"))[i])) for d in ("0", "5") for i in range(3)]
    embs = np.stack([engine.embed(to_pixels(im, 224)) for im in imgs])
    assert embs.dtype == np.float32 and embs.min() >= 0 and embs.max() > 0.1  # dequantized ReLU6 features
    unit = embs / np.linalg.norm(embs, axis=1, keepdims=True)
    sims = unit @ unit.T
    same = (sims[0, 1] + sims[0, 2] + sims[3, 4] + sims[3, 5]) / 4
    cross = sims[:3, 3:].mean()
    assert same > cross  # real features: same hand sign closer than different ones

    # issue 38, 6: the status named it float32; it says what serves (the file as shipped, uint8 input)
    from edged.config import Config
    from edged.serve.precision import choose_precision

    cfg = Config.model_validate({"state_dir": str(tmp_path), "backbone": {"family": "tflite", "path": str(EXTRACTOR_U8)}})
    served, report = choose_precision(cfg, info, engine, None, None)
    assert served is engine and report["precision"] == "uint8" and "as shipped" in report["reason"], report


def test_edgetpu_missing_falls_back_to_cpu(make_state, caplog):
    from edged.config import BackboneConfig
    from edged.learn.backbones import build_backbone

    settings = backbone_settings("none")
    info = build_backbone(BackboneConfig(**settings), make_state(settings))
    engine = Engine(EngineOptions(info.path, delegate="edgetpu", scaling=info.scaling))
    assert engine.delegate == "cpu"
    assert "Edge TPU delegate unavailable" in caplog.text
    assert engine.embed(np.zeros((96, 96, 3), np.uint8)).shape == (info.output_dim,)


@pytest.mark.heavy
def test_sd_notify_ready_watchdog_stopping(make_state, tmp_path, broker):
    from conftest import toml_config, write_config

    sock_path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(30)
    settings = backbone_settings("none")
    state = make_state(settings)
    cfg = write_config(tmp_path / "c.toml", toml_config(state, broker.port, "synthetic:clutter=2", settings, "nfy"))
    env = dict(os.environ, NOTIFY_SOCKET=sock_path, WATCHDOG_USEC="400000")
    proc = subprocess.Popen([sys.executable, "-m", "edged", "run", "--config", str(cfg)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        seen = []
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and seen.count("WATCHDOG=1") < 3:
            seen += sock.recv(4096).decode().splitlines()
        assert "READY=1" in seen and seen.count("WATCHDOG=1") >= 3
        assert seen.index("READY=1") < seen.index("WATCHDOG=1")
        proc.terminate()
        assert proc.wait(20) == 0
        rest = []
        try:
            while True:
                sock.settimeout(1)
                rest += sock.recv(4096).decode().splitlines()
        except socket.timeout:
            pass
        assert "STOPPING=1" in rest
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()


@pytest.mark.heavy
@pytest.mark.parametrize("family,alpha,dim", [("mobilenet_v2", 0.35, 1280), ("mobilenet_v3_small", 0.75, 432)])
def test_other_families_build_convert_and_embed(tmp_path, family, alpha, dim):
    from edged.config import BackboneConfig
    from edged.learn.backbones import build_backbone

    info = build_backbone(BackboneConfig(family=family, alpha=alpha, input_size=96, weights="none"), tmp_path)
    assert info.output_dim == dim and info.id.startswith({"mobilenet_v2": "mnv2", "mobilenet_v3_small": "mnv3s"}[family])
    engine = Engine(EngineOptions(info.path, scaling=info.scaling))
    a = engine.embed(to_pixels(np.full((120, 160, 3), 40, np.uint8), 96))
    b = engine.embed(to_pixels(np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8), 96))
    assert a.shape == (dim,) and np.abs(a - b).max() > 1e-3  # calibrated random weights give live features


@pytest.mark.heavy
def test_keras_file_backbone_cut_at_named_layer(tmp_path):
    import keras

    from edged.config import BackboneConfig
    from edged.errors import BackboneError
    from edged.learn.backbones import build_backbone

    keras.applications.MobileNet(alpha=0.25, include_top=False, weights=None, input_shape=(96, 96, 3)).save(tmp_path / "m.keras")
    cfg = BackboneConfig(family="keras", path=str(tmp_path / "m.keras"), cut_layer="conv_pw_11_relu", input_size=96)
    assert build_backbone(cfg, tmp_path).output_dim == 128
    bad = cfg.model_copy(update={"cut_layer": "conv_pw_99_relu"})
    with pytest.raises(BackboneError, match="cut_layer.*conv_pw_99_relu"):
        build_backbone(bad, tmp_path)


@pytest.mark.heavy
@needs_weights
@pytest.mark.skipif(not SIGN_DIGITS.is_dir(), reason="../shared/data absent")
def test_daemon_serves_int8_when_faster_and_falls_back_on_bad_calibration(broker, probe, daemons, make_state, tmp_path):
    """runtime.precision = auto: int8 when it is faster here and matches float; a blank calibration fails parity."""
    import json

    from conftest import WEIGHTS_025, toml_config, write_config

    settings = backbone_settings(str(WEIGHTS_025), input_size=128)
    for name, extra in (("good", ""), ("bad", '[runtime]\nint8_calibration = "blank"\n')):
        state = make_state(settings, name=f"state-{name}")
        from edged.config import load_config
        from edged.serve.backbone import embed_image, open_backbone
        from edged.sources.synthetic import scene_at
        from edged.state.store import NewExample, Store

        cfg = load_config(None, [f"state_dir='{state}'"] + [f"backbone.{k}={json.dumps(v)}" for k, v in settings.items()])
        info, engine = open_backbone(cfg)
        store = Store(state / "store")
        scenes = [(scene_at(3, i, 320, 240, shape, 0).image, shape) for shape in ("triangle", "rectangle") for i in range(15)]
        store.add_many([NewExample(img, label, embed_image(engine, img)) for img, label in scenes], info.id)
        store.close()
        for f in (state / "backbones").rglob("backbone-int8.*"):
            f.unlink()  # built at start: calibrated on the stored frames (good) or on black frames (bad)
        text = toml_config(state, broker.port, "synthetic:clutter=0", settings, f"p{name}").replace("[mqtt]", extra + "[mqtt]")
        d = daemons(write_config(tmp_path / f"{name}.toml", text), tmp_path / f"{name}.log")
        status = probe.wait_online(f"p{name}", timeout=120)
        bb = status["backbone"]
        parity, speed = bb["parity"], bb["speed_ms"]
        assert set(speed) == {"float32", "int8"} and speed["int8"] > 0 and parity["frames"]
        if name == "good":
            holds = parity["cosine"] >= 0.99 and all(a >= 0.99 for a in parity["agreement"].values())
            faster = speed["int8"] * 1.1 <= speed["float32"]
            assert bb["precision"] == ("int8" if holds and faster else "float32"), bb
            assert holds and set(parity["agreement"]) == {"knn"}, bb  # measured: cosine 0.995, kNN agreement 1.0
        else:
            assert bb["precision"] == "float32" and "parity failed" in bb["reason"], bb
            assert "black frames" in parity["calibration"]
        assert d.stop() == 0
