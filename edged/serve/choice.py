"""The default backbone, chosen from measurements: the largest MobileNet v1 that keeps `backbone.min_fps` here.

With `backbone.choose = "auto"` (the default), family mobilenet_v1, ImageNet weights and neither `alpha` nor
`input_size` set, the first start builds the candidates largest first (1.0/224, 0.75/192, 0.5/160, 0.25/128),
times each backbone alone on this machine's interpreter and threads, and serves the first that runs at least
`min_fps` times a second (the smallest when none does). The choice is kept in `backbones/choice.json` with what
it was measured on; later starts (and the CLI's offline commands) read it, and measure again only on another
machine, interpreter, thread count or `min_fps`. ImageNet weight files found on this disk (edged.state.backbones
.local_imagenet_weights) are used instead of Keras' download.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from typing import Callable, Optional

import numpy as np

from ..config import BackboneConfig, Config
from ..errors import BackboneError
from ..files import read_json_object, write_atomic
from ..runtime.engine import Engine, EngineOptions
from ..state.backbones import local_imagenet_weights
from ..state.layout import StateLayout

log = logging.getLogger(__name__)

LADDER = ((1.0, 224), (0.75, 192), (0.5, 160), (0.25, 128))  # largest first; each has ImageNet weights


def machine() -> dict:
    """What a measurement holds for: the CPU, its cores, the interpreter's threads."""
    model = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.lower().startswith(("model name",
                                                                                                  "hardware"))), model)
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count()}


def candidate(bb: BackboneConfig, alpha: float, size: int) -> BackboneConfig:
    """The backbone config of one rung: local weights when this disk has them, else Keras' ImageNet download."""
    weights = local_imagenet_weights(alpha, size)
    return bb.model_copy(update={"alpha": alpha, "input_size": size, "choose": "fixed",
                                 "weights": str(weights) if weights else "imagenet"})


def time_backbone(path: str, scaling, threads: int, interpreter: str, seconds: float = 0.6) -> float:
    """Milliseconds a frame for the backbone alone (after a warm-up)."""
    engine = Engine(EngineOptions(model_path=path, num_threads=threads, interpreter=interpreter, scaling=scaling))
    try:
        size = engine.input_size
        frame = np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)
        for _ in range(3):
            engine.embed(frame)
        n, t0 = 0, time.perf_counter()
        while n < 5 or time.perf_counter() - t0 < seconds:
            engine.embed(frame)
            n += 1
        return (time.perf_counter() - t0) / n * 1000
    finally:
        engine.close()


def chosen(cfg: Config, build: Callable[[Config], object], progress: Optional[Callable[[str], None]] = None,
           ladder: tuple[tuple[float, int], ...] = LADDER) -> tuple[Config, dict]:
    """`cfg` with a concrete backbone, and how it was chosen. `build(cfg)` gives the backbone's info (converting it
    once when it is not cached); `ladder`: the (alpha, size) candidates, largest first."""
    bb = cfg.backbone
    if not bb.auto:
        return cfg, {"choose": "fixed"}
    memory_path = StateLayout(cfg.state_path).backbone_choice
    here = {**machine(), "threads": cfg.runtime.num_threads, "interpreter": cfg.runtime.interpreter,
            "min_fps": bb.min_fps}
    memory = read_json_object(memory_path)
    if memory.get("measured_on") == here and (memory.get("alpha"), memory.get("input_size")) in ladder:
        return _with(cfg, candidate(bb, memory["alpha"], memory["input_size"])), {**memory, "remembered": True}
    tried, pick = [], None
    for alpha, size in ladder:
        rung = candidate(bb, alpha, size)
        if progress is not None:
            progress(f"choosing the backbone: timing {alpha}/{size}")
        try:
            info = build(_with(cfg, rung))
        except BackboneError as e:
            tried.append({"alpha": alpha, "input_size": size, "error": str(e)[:200]})
            log.warning("backbone %g/%d cannot be built here: %s", alpha, size, e)
            continue
        ms = time_backbone(info.path, info.scaling, cfg.runtime.num_threads, cfg.runtime.interpreter)
        tried.append({"alpha": alpha, "input_size": size, "ms": round(ms, 3), "fps": round(1000 / ms, 1)})
        pick = (alpha, size, ms)
        if 1000 / ms >= bb.min_fps:
            break
    if pick is None:
        raise BackboneError("backbone.choose = 'auto': no MobileNet v1 could be built here: "
                            + "; ".join(t["error"] for t in tried))
    alpha, size, ms = pick
    fast = 1000 / ms >= bb.min_fps
    reason = (f"the largest that runs >= {bb.min_fps:g} fps here ({1000 / ms:.0f} fps, {ms:.2f} ms a frame)" if fast
              else f"none runs {bb.min_fps:g} fps here: the smallest that could be built ({1000 / ms:.0f} fps)")
    memory = {"choose": "auto", "alpha": alpha, "input_size": size, "ms": round(ms, 3), "reason": reason,
              "tried": tried, "measured_on": here, "ts": round(time.time(), 3)}
    write_atomic(memory_path, json.dumps(memory, indent=2).encode())
    log.info("backbone chosen: MobileNet v1 %s/%d, %s", alpha, size, reason)
    return _with(cfg, candidate(bb, alpha, size)), memory


def remembered(cfg: Config) -> Optional[dict]:
    """The choice kept for this state folder (for `edged doctor`), or None before the first start."""
    memory = read_json_object(StateLayout(cfg.state_path).backbone_choice)
    return memory or None


def _with(cfg: Config, bb: BackboneConfig) -> Config:
    return cfg.model_copy(update={"backbone": bb})
