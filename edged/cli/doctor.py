"""`edged doctor`: what this machine can serve with, checked for real."""

from __future__ import annotations

import importlib.util
import socket
import time

import numpy as np

from ..config import Config
from ..errors import BackboneError, SourceError
from ..runtime.engine import EDGETPU_LIBRARY, interpreter_module, interpreter_version, load_delegate
from ..serve.choice import candidate, remembered, tflite_candidate
from ..serve.worker_client import tensorflow_available
from ..sources import open_source
from ..state.backbones import backbone_id, local_tflite_extractors
from ..state.layout import StateLayout


def _check_source(camera) -> int:
    """Open a source and read one frame; 1 when that fails."""
    source = open_source(camera.source)
    name = f"source {camera.name}" if camera.name else "source"
    try:
        source.open()
        t0 = time.monotonic()
        frame = source.read()
        if frame is None:
            _line(False, name, f"{source.description}: opened but gave no frame")
            return 1
        h, w = frame.image.shape[:2]
        _line(True, name, f"{source.description}: {w}x{h} frame in {(time.monotonic() - t0) * 1000:.0f} ms")
        return 0
    except SourceError as e:
        _line(False, name, str(e))
        return 1
    finally:
        source.close()


def _line(ok: bool | None, what: str, detail: str) -> None:
    mark = {True: "ok  ", False: "FAIL", None: "warn"}[ok]
    print(f"[{mark}] {what:12s} {detail}")


def run_doctor(cfg: Config, timeout: float = 5.0) -> int:
    failures = 0
    try:
        name, mod = interpreter_module(cfg.runtime.interpreter)
        version = interpreter_version(name)
        _line(True, "interpreter", f"{name} {version}")
        if name == "tflite_runtime":
            _line(None, "interpreter", "legacy tflite-runtime runs int8 models far slower than LiteRT: pip install ai-edge-litert")
        if name == "tensorflow":
            _line(None, "interpreter", "serving through tf.lite imports all of TensorFlow (~500 MB): pip install ai-edge-litert")
    except Exception as e:
        _line(False, "interpreter", str(e))
        failures += 1
        mod = None
    if mod is not None:
        try:
            load_delegate(mod, EDGETPU_LIBRARY)
            _line(True, "edgetpu", f"{EDGETPU_LIBRARY} loaded")
        except Exception as e:
            level = False if cfg.runtime.delegate == "edgetpu" else None
            _line(level, "edgetpu", f"not available ({str(e)[:80]}); CPU with XNNPACK will be used")
            failures += level is False
    has_tf = importlib.util.find_spec("tensorflow") is not None
    _line(True if has_tf else None, "tensorflow",
          "installed: fine-tuning, box heads and export available here" if has_tf else
          "not installed: serving, capture and numpy training (kNN, the classifier's `train`) work here; fine-tuning, "
          "box heads and export need pip install 'edged[train]' or a trainer node (edged trainer --fleet)")
    print(f"[info] numpy        {np.__version__}")

    for camera in cfg.cameras:
        failures += _check_source(camera)

    if cfg.mqtt.enabled:
        try:
            with socket.create_connection((cfg.mqtt.host, cfg.mqtt.port), timeout=timeout):
                _line(True, "broker", f"{cfg.mqtt.host}:{cfg.mqtt.port} reachable")
        except OSError as e:
            _line(False, "broker", f"{cfg.mqtt.host}:{cfg.mqtt.port}: {e}")
            failures += 1

    if cfg.backbone.auto:
        memory = remembered(cfg)
        if memory and memory.get("tflite"):
            _line(True, "backbone", f"chosen for this machine: the TFLite feature extractor {memory['tflite']}, "
                                    f"{memory.get('reason', '')} (backbone.choose = \"auto\"; "
                                    f"{StateLayout(cfg.state_path).backbone_choice})")
            cfg = cfg.model_copy(update={"backbone": tflite_candidate(memory["tflite"])})
        elif memory:
            _line(True, "backbone", f"chosen for this machine: MobileNet v1 {memory['alpha']:g}/{memory['input_size']}, "
                                    f"{memory['reason']} (backbone.choose = \"auto\"; {StateLayout(cfg.state_path).backbone_choice})")
            cfg = cfg.model_copy(update={"backbone": candidate(cfg.backbone, memory["alpha"], memory["input_size"])})
        elif not tensorflow_available():
            extractors = sorted({f.name for f in local_tflite_extractors()})
            _line(None if extractors else False, "backbone",
                  f"chosen at the first start: without TensorFlow, a converted MobileNet v1 from state_dir/backbones/ "
                  f"or the TFLite feature extractor {', '.join(extractors)}" if extractors else
                  "chosen at the first start, but TensorFlow is not installed and no TFLite feature extractor is in "
                  "$EDGED_WEIGHTS_DIR: unless state_dir/backbones/ holds a converted backbone there is none "
                  "(docs/raspberry-pi.md)")
            return 1 if failures or not extractors else 0
        else:
            _line(None, "backbone", f"chosen at the first start: the largest MobileNet v1 running >= "
                                    f"{cfg.backbone.min_fps:g} fps here (backbone.choose = \"auto\")")
            return 1 if failures else 0
    try:
        bid = backbone_id(cfg.backbone)
        cached = (StateLayout(cfg.state_path).backbones / bid / "backbone.tflite").is_file() or cfg.backbone.family in ("tflite", "speech_embedding")
        _line(True if cached else None, "backbone",
              f"{bid} {'cached' if cached else 'not cached yet: the first start converts it (needs TensorFlow)'}")
    except BackboneError as e:
        _line(False, "backbone", str(e))
        failures += 1
    return 1 if failures else 0
