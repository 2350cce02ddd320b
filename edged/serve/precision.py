"""Which backbone serves: the float one, or its full-integer twin when that is faster here and answers the same.

At start (`runtime.precision = "auto"`) the int8 twin is built once if missing (in a child process,
calibrated on stored frames topped up from the source; not before MIN_CALIBRATION frames are stored, so a
first start on an empty store serves float at once), then measured against float on this
interpreter and on the stored frames: mean cosine of the embeddings >= 0.99 and every active
embedding head's top-1 agreement >= 0.99. Both figures, the timings and the reason for the choice
go into the status. Embeddings stay under the float backbone's id: parity is what makes them
interchangeable, so heads trained on float embeddings keep working.

A refusal in "auto" is remembered beside the backbone for this machine and this int8 file
(`int8-refused.json`): later starts serve float at once instead of measuring again. Deleting the file
(or the int8 twin) measures again.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

from ..config import Config
from ..errors import EdgedError
from ..files import file_sha256, read_json_object, write_atomic
from ..runtime.engine import Engine, EngineOptions
from ..sources.preprocess import to_pixels
from ..sources.synthetic import scene_at
from ..state.backbones import BackboneInfo, int8_path
from ..state.store import Store
from .headset import HeadSet
from .worker_client import tensorflow_available

log = logging.getLogger(__name__)

MIN_COSINE = 0.99
MIN_AGREEMENT = 0.99
MIN_SPEEDUP = 1.1  # int8 must be at least this much faster to be worth a second set of numbers
MIN_CALIBRATION = 20  # stored frames an int8 twin is calibrated on at the least; fewer: not built yet


def build_int8_in_child(cfg: Config) -> None:
    cmd = [sys.executable, "-m", "edged.learn.backbones", "--state-dir", str(cfg.state_path),
           "--int8-config-json", cfg.model_dump_json()]
    log.info("building the int8 backbone once (calibrated on %d representative frames)", cfg.runtime.calibration_frames)
    result = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        said = [line[len("error: "):] for line in result.stderr.splitlines() if line.startswith("error: ")]
        raise EdgedError(said[-1] if said else f"int8 backbone build failed: {result.stderr[-500:]}")


def check_frames(store: Store, info: BackboneInfo, n: int = 60) -> tuple[list[np.ndarray], str]:
    """Stored frames as model inputs; synthetic scenes when the store has too few to say anything."""
    ids = store.examples(info.id).ids
    if len(ids) > n:
        ids = np.random.default_rng(1).choice(ids, n, replace=False)
    frames = [to_pixels(store.load_frame(int(i)), info.input_size) for i in ids]
    if len(frames) >= 20:
        return frames, f"{len(frames)} stored frames"
    scenes = [to_pixels(scene_at(7, i, 160, 120).image, info.input_size) for i in range(40 - len(frames))]
    return frames + scenes, f"{len(frames)} stored frames + {len(scenes)} synthetic scenes"


def _ms(engine: Engine, pixels: np.ndarray, n: int = 10) -> float:
    for _ in range(3):
        engine.run(pixels)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(n):
            engine.run(pixels)
        times.append((time.perf_counter() - t0) / n * 1000)
    return float(np.median(times))


def top1(pred) -> str:
    """The best class (what 'unknown' thresholds sit on top of)."""
    return max(pred.scores, key=pred.scores.get) if pred.scores else pred.label


def parity(float_engine: Engine, int8_engine: Engine, frames: list[np.ndarray], heads: HeadSet) -> dict:
    f = np.stack([float_engine.embed(p) for p in frames])
    q = np.stack([int8_engine.embed(p) for p in frames])
    cos = np.einsum("ij,ij->i", f, q) / np.maximum(np.linalg.norm(f, axis=1) * np.linalg.norm(q, axis=1), 1e-12)
    agreement = {}
    for name, head in heads.embedding_heads().items():
        agreement[name] = round(float(np.mean([top1(head.predict(a)) == top1(head.predict(b)) for a, b in zip(f, q)])), 4)
    return {"cosine": round(float(cos.mean()), 4), "cosine_min": round(float(cos.min()), 4), "agreement": agreement}


def choose_precision(cfg: Config, info: BackboneInfo, float_engine: Engine, store: Store,
                     heads: HeadSet) -> tuple[Engine, dict]:
    """(the engine to serve with, what status says about it)."""
    rt = cfg.runtime
    report = {"precision": "float32", "requested": rt.precision}
    if info.family == "speech_embedding":
        report["reason"] = "the speech embedding is served as shipped (float32)"
        return float_engine, report
    if info.family == "tflite":  # a feature extractor file: served as it is, quantized or not
        report["precision"] = str(float_engine.adapter.dtype)  # e.g. uint8: a quantized extractor
        report["reason"] = f"a TFLite backbone is served as shipped ({report['precision']} input)"
        return float_engine, report
    if rt.precision == "float32" or rt.delegate == "edgetpu":
        report["reason"] = "runtime.precision = float32" if rt.precision == "float32" else "the Edge TPU runs its own model"
        return float_engine, report
    path = int8_path(info)
    if rt.precision == "auto" and path.is_file():
        earlier = remembered_refusal(path, rt.interpreter)
        if earlier is not None:
            report["reason"] = (f"int8 was refused on this machine before ({earlier['reason']}); delete "
                                f"{refusal_path(path)} to measure again")
            return float_engine, report
    try:
        if not path.is_file():
            if not tensorflow_available():
                report["reason"] = "no int8 backbone built yet, and building it needs TensorFlow once"
                return float_engine, report
            stored = len(store.examples(info.id).ids)
            if rt.int8_calibration == "store" and stored < MIN_CALIBRATION:
                report["reason"] = (f"int8 not built yet: it is calibrated on stored frames and {stored} are stored "
                                    f"(at least {MIN_CALIBRATION}); a start after teaching builds and measures it")
                return float_engine, report
            build_int8_in_child(cfg)
        int8 = Engine(EngineOptions(str(path), rt.num_threads, rt.delegate, rt.interpreter, info.scaling))
    except EdgedError as e:
        report["reason"] = f"int8 backbone unavailable: {e}"
        return float_engine, report
    try:
        calibration = json.loads(path.with_suffix(".json").read_text()).get("calibration")
    except (OSError, ValueError):
        calibration = None
    frames, what = check_frames(store, info)
    report["parity"] = {**parity(float_engine, int8, frames, heads), "frames": what, "calibration": calibration}
    report["speed_ms"] = {"float32": round(_ms(float_engine, frames[0]), 3), "int8": round(_ms(int8, frames[0]), 3)}
    p, speed = report["parity"], report["speed_ms"]
    bad = [f"{h} agrees {a}" for h, a in p["agreement"].items() if a < MIN_AGREEMENT]
    if p["cosine"] < MIN_COSINE or bad:
        report["reason"] = f"int8 parity failed (cosine {p['cosine']} vs >= {MIN_COSINE}" + \
                           (f"; {', '.join(bad)} vs >= {MIN_AGREEMENT}" if bad else "") + ")"
    elif rt.precision == "auto" and speed["int8"] * MIN_SPEEDUP > speed["float32"]:
        report["reason"] = f"int8 is not faster here ({speed['int8']} vs {speed['float32']} ms)"
    else:
        report["precision"] = "int8"
        report["reason"] = "runtime.precision = int8" if rt.precision == "int8" else \
            f"int8 is {speed['float32'] / speed['int8']:.2f}x faster here and its parity holds"
        float_engine.close()
        return int8, report
    int8.close()
    if rt.precision == "auto":
        remember_refusal(path, rt.interpreter, report)
    return float_engine, report


def refusal_path(int8: Path) -> Path:
    return int8.with_name("int8-refused.json")


def machine(interpreter: str) -> str:
    """What an int8-or-float verdict depends on besides the model: the CPU and the interpreter asked for."""
    model = ""
    try:
        model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.lower().startswith(("model name", "hardware", "cpu model"))), "")
    except OSError:
        pass
    return f"{platform.machine()} {model} ({os.cpu_count()} cores) interpreter={interpreter}"


def remember_refusal(int8: Path, interpreter: str, report: dict) -> None:
    record = {"machine": machine(interpreter), "int8_sha256": file_sha256(int8), "reason": report["reason"],
              "parity": report.get("parity"), "speed_ms": report.get("speed_ms"), "ts": round(time.time(), 3)}
    try:
        write_atomic(refusal_path(int8), json.dumps(record, default=str).encode())
    except OSError as e:  # a read-only backbone cache: measured again next time
        log.warning("cannot remember the int8 refusal: %s", e)


def remembered_refusal(int8: Path, interpreter: str) -> Optional[dict]:
    """The earlier refusal of this int8 file on this machine, if any."""
    record = read_json_object(refusal_path(int8))
    if record.get("machine") != machine(interpreter) or record.get("int8_sha256") != file_sha256(int8):
        return None
    return record

