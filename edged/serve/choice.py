"""The default backbone, chosen from measurements: the largest MobileNet v1 that keeps `backbone.min_fps` here.

With `backbone.choose = "auto"` (the default), family mobilenet_v1, ImageNet weights and neither `alpha` nor
`input_size` set, the first start builds the candidates largest first (1.0/224, 0.75/192, 0.5/160, 0.25/128),
times each backbone alone on this machine's interpreter and threads, and serves the first that runs at least
`min_fps` times a second (the smallest when none does). Each rung is timed as the best of a few rounds, so a
moment of load elsewhere does not tip the choice. The choice is kept in `backbones/choice.json` with what it was
measured on; later starts (and the CLI's offline commands) read it, and measure again only on another machine,
interpreter, thread count or `min_fps`.

A board that can convert no rung (no TensorFlow) and finds none cached serves, in this order, a TFLite feature
extractor on its disk, or a rung a fleet machine with TensorFlow built and sent (`edged backbone build` there,
edged.fleet.backbones); else one error names each way.

A device that joins a fleet (other devices' retained statuses on its broker) adopts the backbone the fleet's
members chose when it runs at least FLEET_MARGIN × `min_fps` here — devices on one backbone share examples and
models — and says why when it cannot. ImageNet weight files found on this disk (edged.state.backbones
.local_imagenet_weights) are used instead of Keras' download.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..config import BackboneConfig, Config
from ..errors import BackboneError
from ..files import read_json_object, write_atomic
from ..runtime.engine import Engine, EngineOptions
from ..state.backbones import backbone_id, local_imagenet_weights, local_tflite_extractors, weights_folders
from ..state.layout import StateLayout

log = logging.getLogger(__name__)

LADDER = ((1.0, 224), (0.75, 192), (0.5, 160), (0.25, 128))  # largest first; each has ImageNet weights
FLEET_MARGIN = 0.5  # the fleet's backbone is adopted when it runs at least this share of min_fps here


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
    return with_local_weights(bb.model_copy(update={"alpha": alpha, "input_size": size, "choose": "fixed"}))


def with_local_weights(bb: BackboneConfig) -> BackboneConfig:
    """A MobileNet v1 with `weights = "imagenet"` takes the matching ImageNet weight file on this disk
    ($EDGED_WEIGHTS_DIR, edged.state.backbones.weights_folders) whatever chose its size: Keras' download only when
    there is none."""
    if bb.family != "mobilenet_v1" or bb.weights != "imagenet":
        return bb
    weights = local_imagenet_weights(bb.alpha, bb.input_size)
    return bb.model_copy(update={"weights": str(weights)}) if weights else bb


def time_backbone(path: str, scaling, threads: int, interpreter: str, seconds: float = 0.6, rounds: int = 3) -> float:
    """Milliseconds a frame for the backbone alone (after a warm-up): the best of `rounds` timings, as the machine
    gives it when nothing else is busy."""
    engine = Engine(EngineOptions(model_path=path, num_threads=threads, interpreter=interpreter, scaling=scaling))
    try:
        size = engine.input_size
        frame = np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)
        for _ in range(3):
            engine.embed(frame)
        best = float("inf")
        for _ in range(rounds):
            n, t0 = 0, time.perf_counter()
            while n < 5 or time.perf_counter() - t0 < seconds / rounds:
                engine.embed(frame)
                n += 1
            best = min(best, (time.perf_counter() - t0) / n * 1000)
        return best
    finally:
        engine.close()


def fleet_rung(peers: dict[str, dict], ladder: tuple[tuple[float, int], ...]) -> Optional[tuple[float, int, list[str]]]:
    """The rung most of the fleet's devices chose (by their statuses' `backbone_choice`), with their names."""
    votes: dict[tuple[float, int], list[str]] = {}
    for name, status in peers.items():
        choice = status.get("backbone_choice") if isinstance(status, dict) else None
        if not isinstance(choice, dict) or choice.get("choose") != "auto":
            continue
        rung = (choice.get("alpha"), choice.get("input_size"))
        if rung in ladder:
            votes.setdefault(rung, []).append(name)
    if not votes:
        return None
    (alpha, size), names = max(votes.items(), key=lambda kv: (len(kv[1]), kv[0]))
    return alpha, size, sorted(names)


def chosen(cfg: Config, build: Callable[[Config], object], progress: Optional[Callable[[str], None]] = None,
           ladder: tuple[tuple[float, int], ...] = LADDER,
           fleet: Callable[[], dict[str, dict]] = lambda: {},
           extractors: Callable[[], list[Path]] = local_tflite_extractors,
           fleet_backbones: Callable[[dict[str, BackboneConfig]], dict[str, str]] = lambda wanted: {},
           ) -> tuple[Config, dict]:
    """`cfg` with a concrete backbone, and how it was chosen. `build(cfg)` gives the backbone's info (converting it
    once when it is not cached); `ladder`: the (alpha, size) candidates, largest first; `fleet()`: the other
    devices' statuses by name (asked only when a choice is to be made); `extractors()`: TFLite feature extractors
    on this disk, served when no rung can be built (a board without TensorFlow and without a cached backbone);
    `fleet_backbones(wanted)`: after those, the rungs (id -> config) fleet machines built, taken into the cache
    ({id: who built it})."""
    bb = cfg.backbone
    if not bb.auto:
        return _with(cfg, with_local_weights(bb)), {"choose": "fixed"}
    memory_path = StateLayout(cfg.state_path).backbone_choice
    here = {**machine(), "threads": cfg.runtime.num_threads, "interpreter": cfg.runtime.interpreter,
            "min_fps": bb.min_fps}
    memory = read_json_object(memory_path)
    if memory.get("measured_on") == here and (memory.get("alpha"), memory.get("input_size")) in ladder:
        return _with(cfg, candidate(bb, memory["alpha"], memory["input_size"])), {**memory, "remembered": True}
    if memory.get("measured_on") == here and memory.get("tflite") in [str(f) for f in extractors()]:
        return _with(cfg, tflite_candidate(memory["tflite"])), {**memory, "remembered": True}
    adopted, fleet_note = _from_fleet(cfg, build, fleet, ladder, here)
    if adopted is not None:
        write_atomic(memory_path, json.dumps(adopted, indent=2).encode())
        log.info("backbone adopted from the fleet: MobileNet v1 %s/%d, %s", adopted["alpha"], adopted["input_size"],
                 adopted["reason"])
        return _with(cfg, candidate(bb, adopted["alpha"], adopted["input_size"])), adopted
    tried: list[dict] = []
    pick = _climb(cfg, build, ladder, progress, tried)
    taken: dict[str, str] = {}
    if pick is None:
        files = extractors()
        served = _from_files(cfg, build, tried, files, memory_path, here, progress)
        if served is not None:
            return served
        taken = _ask_the_fleet(cfg, ladder, fleet_backbones, tried, progress)
        if taken:
            pick = _climb(cfg, build, ladder, progress, [])
        if pick is None:
            raise _no_backbone(cfg, tried, files, bool(taken))
    alpha, size, ms = pick
    fast = 1000 / ms >= bb.min_fps
    reason = (f"the largest that runs >= {bb.min_fps:g} fps here ({1000 / ms:.0f} fps, {ms:.2f} ms a frame)" if fast
              else f"none runs {bb.min_fps:g} fps here: the smallest that could be built ({1000 / ms:.0f} fps)")
    built_by = taken.get(backbone_id(candidate(bb, alpha, size)))
    if built_by:
        reason += f"; built by {built_by} of the fleet (no TensorFlow here)"
    memory = {"choose": "auto", "alpha": alpha, "input_size": size, "ms": round(ms, 3), "reason": reason,
              "tried": tried, "measured_on": here, "ts": round(time.time(), 3),
              **({"fleet": fleet_note} if fleet_note else {}), **({"built_by": built_by} if built_by else {})}
    write_atomic(memory_path, json.dumps(memory, indent=2).encode())
    log.info("backbone chosen: MobileNet v1 %s/%d, %s", alpha, size, reason)
    return _with(cfg, candidate(bb, alpha, size)), memory


def _ask_the_fleet(cfg: Config, ladder, fleet_backbones, tried: list[dict], progress) -> dict[str, str]:
    """The rungs fleet machines built, taken into this state folder's cache: {id: who built it}; why not in
    `tried` when the fleet could not be asked."""
    wanted = {}
    for alpha, size in ladder:
        rung = candidate(cfg.backbone, alpha, size)
        wanted[backbone_id(rung)] = rung
    if progress is not None:
        progress("asking the fleet for a backbone built on a machine with TensorFlow")
    try:
        return fleet_backbones(wanted)
    except Exception as e:  # the broker is away: said in the one error that follows
        tried.append({"fleet": f"could not ask: {str(e)[:200]}"})
        return {}


def _climb(cfg: Config, build, ladder, progress, tried: list[dict]) -> Optional[tuple[float, int, float]]:
    """(alpha, size, ms) of the largest rung that runs `min_fps` here, else of the smallest that could be built; None
    when none could."""
    pick = None
    for alpha, size in ladder:
        if progress is not None:
            progress(f"choosing the backbone: timing {alpha}/{size}")
        ms = _timed(cfg, build, candidate(cfg.backbone, alpha, size), {"alpha": alpha, "input_size": size}, tried)
        if ms is None:
            continue
        pick = (alpha, size, ms)
        if 1000 / ms >= cfg.backbone.min_fps:
            break
    return pick


def _timed(cfg: Config, build, bb: BackboneConfig, which: dict, tried: list[dict]) -> Optional[float]:
    """Milliseconds a frame for candidate `bb` here, or None when it cannot be built; either way noted in `tried`
    under `which` (the rung, or the file)."""
    try:
        info = build(_with(cfg, bb))
    except BackboneError as e:
        tried.append({**which, "error": str(e)[:200]})
        log.warning("backbone %s cannot be built here: %s", which, e)
        return None
    ms = time_backbone(info.path, info.scaling, cfg.runtime.num_threads, cfg.runtime.interpreter)
    tried.append({**which, "ms": round(ms, 3), "fps": round(1000 / ms, 1)})
    return ms


def tflite_candidate(path: str) -> BackboneConfig:
    return BackboneConfig(family="tflite", path=str(path), choose="fixed")


def _from_files(cfg: Config, build, tried: list[dict], files: list[Path], memory_path, here: dict,
                progress) -> Optional[tuple[Config, dict]]:
    """No MobileNet v1 could be built or found cached: the fastest TFLite feature extractor on this disk that reaches
    `min_fps` (else the fastest); None when there is none, or none opens."""
    bb, timed = cfg.backbone, []
    for path in files:
        if progress is not None:
            progress(f"choosing the backbone: timing {path.name}")
        ms = _timed(cfg, build, tflite_candidate(str(path)), {"tflite": str(path)}, tried)
        if ms is not None:
            timed.append((ms, path))
    if not timed:
        return None
    fast = [(ms, path) for ms, path in timed if 1000 / ms >= bb.min_fps]
    ms, path = min(fast or timed)
    reason = (f"no MobileNet v1 could be built here (no TensorFlow); the TFLite extractor {path.name} on this disk "
              f"runs {1000 / ms:.0f} fps")
    memory = {"choose": "auto", "tflite": str(path), "ms": round(ms, 3), "reason": reason, "tried": tried,
              "measured_on": here, "ts": round(time.time(), 3)}
    write_atomic(memory_path, json.dumps(memory, indent=2).encode())
    log.info("backbone chosen: %s", reason)
    return _with(cfg, tflite_candidate(str(path))), memory


def _no_backbone(cfg: Config, tried: list[dict], files: list[Path], taken: bool) -> BackboneError:
    """The one error of a board that has no way to a backbone, naming each way."""
    built = "; ".join(t["error"] for t in tried if "error" in t and "tflite" not in t)[:600]
    opened = "; ".join(f"{Path(t['tflite']).name}: {t['error']}" for t in tried if "error" in t and "tflite" in t)
    extractors = (f"the TFLite feature extractors here could not be opened ({opened[:400]})" if files else
                  f"no TFLite feature extractor (*extractor*.tflite, *embedding*.tflite) is in "
                  f"{', '.join(str(f) for f in weights_folders())}")
    asked = next((t["fleet"] for t in tried if "fleet" in t), None)
    fleet = (f"the fleet {asked}" if asked else
             "the fleet's backbones could not be served here" if taken else
             "no machine of the fleet has published a backbone on the broker" if cfg.mqtt.enabled else
             "MQTT is off, so no fleet machine can send one")
    return BackboneError(
        f"backbone.choose = 'auto': no MobileNet v1 could be built here ({built}), none is cached in "
        f"{StateLayout(cfg.state_path).backbones}, {extractors}, and {fleet}. Any one of these serves: "
        "pip install 'edged[train]' (TensorFlow converts the backbone once); copy a TFLite feature extractor "
        "(e.g. mobilenet_v1_1.0_224_quant_embedding_extractor.tflite) into $EDGED_WEIGHTS_DIR; run `edged backbone "
        "build` on a machine of the fleet that has TensorFlow (on the same broker); set backbone.family = 'tflite' "
        "and backbone.path; or copy state_dir/backbones/ from a machine that built it")


def _from_fleet(cfg: Config, build, fleet, ladder, here: dict) -> tuple[Optional[dict], Optional[str]]:
    """(the kept choice when the fleet's backbone fits here, else None; why it was not adopted, or None)."""
    bb = cfg.backbone
    try:
        peers = {name: status for name, status in fleet().items() if name != cfg.device}
    except Exception as e:  # the broker is away: this machine's own measurement decides
        log.info("no fleet backbone to adopt: %s", e)
        return None, None
    rung = fleet_rung(peers, ladder)
    if rung is None:
        return None, None
    alpha, size, names = rung
    who = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    try:
        info = build(_with(cfg, candidate(bb, alpha, size)))
    except BackboneError as e:
        return None, f"the fleet's backbone {alpha:g}/{size} ({who}) cannot be built here: {str(e)[:200]}"
    ms = time_backbone(info.path, info.scaling, cfg.runtime.num_threads, cfg.runtime.interpreter)
    fps = 1000 / ms
    if fps < bb.min_fps * FLEET_MARGIN:
        return None, (f"the fleet's backbone {alpha:g}/{size} ({who}) runs {fps:.0f} fps here, under "
                      f"{FLEET_MARGIN:g} x backbone.min_fps: this machine chose its own, and shares examples and "
                      f"models only with devices on the same backbone")
    return {"choose": "auto", "alpha": alpha, "input_size": size, "ms": round(ms, 3),
            "reason": f"the fleet's backbone (served by {who}): {fps:.0f} fps here, at least {FLEET_MARGIN:g} x "
                      f"backbone.min_fps", "adopted_from": names, "measured_on": here,
            "ts": round(time.time(), 3)}, None


def remembered(cfg: Config) -> Optional[dict]:
    """The choice kept for this state folder (for `edged doctor`), or None before the first start."""
    memory = read_json_object(StateLayout(cfg.state_path).backbone_choice)
    return memory or None


def _with(cfg: Config, bb: BackboneConfig) -> Config:
    return cfg.model_copy(update={"backbone": bb})
