"""Helpers shared by the benchmarks: locating ../shared, building backbones, loading data sets."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from ..config import BackboneConfig, Config
from ..learn.backbones import build_backbone
from ..serve.choice import chosen
from ..state.backbones import BackboneInfo

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("EDGED_SHARED", REPO.parent / "shared"))
MODELS = SHARED / "models"
DATA = SHARED / "data"
CACHE = Path(os.environ.get("EDGED_BENCH_CACHE", Path.home() / ".cache" / "edged-bench"))


WEIGHT_FILES = {0.25: "0.25_128", 0.5: "0.5_160", 0.75: "0.75_192", 1.0: "1.0_224"}


def weights_for(alpha: float) -> Optional[Path]:
    """The offline ImageNet weights for this width (any input size works: the net is convolutional)."""
    name = WEIGHT_FILES.get(alpha)
    path = MODELS / f"mobilenet_v1_{name}_imagenet_no_top.weights.h5" if name else None
    return path if path is not None and path.is_file() else None


def backbone_config(alpha: float, size: int, weights: Optional[str] = None, cut: Optional[str] = None,
                    pooling: str = "avg") -> tuple[BackboneConfig, str]:
    """A MobileNet v1 config with real weights when ../shared has them, else random (said in the note)."""
    note = ""
    if weights is None:
        found = weights_for(alpha)
        if found is None:
            note = f"note: no ImageNet weights for alpha={alpha:g} in {MODELS}; using random weights"
            weights = "none"
        else:
            weights = str(found)
    return BackboneConfig(alpha=alpha, input_size=size, weights=weights, cut_layer=cut, pooling=pooling), note


def backbone(cfg: BackboneConfig) -> BackboneInfo:
    return build_backbone(cfg, CACHE)


def bench_backbone(alpha: Optional[float] = None, size: Optional[int] = None) -> tuple[BackboneConfig, BackboneInfo]:
    """The config (its note printed when the weights are random) and the converted backbone; without an alpha or a
    size, those of the backbone the product's automatic choice serves here."""
    if alpha is None or size is None:
        served_alpha, served_size, why = served_backbone()
        alpha, size = alpha or served_alpha, size or served_size
        print(f"backbone: {alpha}/{size} (backbone.choose = 'auto' serves {served_alpha}/{served_size} here: {why})")
    cfg, note = backbone_config(alpha, size)
    if note:
        print(note)
    return cfg, backbone(cfg)


def served_backbone() -> tuple[float, int, str]:
    """(alpha, size, why) of the MobileNet v1 that `backbone.choose = "auto"` serves on this machine (timed once,
    then remembered in the bench cache like a daemon's state folder remembers it)."""
    cfg = Config.model_validate({"state_dir": str(CACHE / "served-choice")})
    picked, how = chosen(cfg, lambda c: backbone(c.backbone))
    return picked.backbone.alpha, picked.backbone.input_size, how.get("reason", how.get("choose", ""))


def models(specs: str):
    """`alpha:size,alpha:size` -> (alpha, size, config, converted backbone) for each, notes printed."""
    for spec in specs.split(","):
        alpha, size = spec.split(":")
        yield (alpha, size, *bench_backbone(float(alpha), int(size)))


def load_sign_digits(folder: Path) -> tuple[list[np.ndarray], np.ndarray]:
    images, labels = [], []
    for class_dir in sorted(p for p in Path(folder).iterdir() if p.is_dir()):
        for f in sorted(class_dir.iterdir()):
            img = cv2.imread(str(f), cv2.IMREAD_COLOR)
            if img is not None:
                images.append(img)
                labels.append(class_dir.name)
    if not images:
        raise SystemExit(f"no images under {folder}")
    return images, np.array(labels)


class Timer:
    def __init__(self):
        self.t0 = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.t0


def table(rows: list[list], header: list[str]) -> str:
    cells = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
