"""Build a backbone's TFLite file into the cache. `python -m edged.learn.backbones` is how the serving side runs it."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from ..config import BackboneConfig, Config
from ..errors import BackboneError, EdgedError
from ..files import write_atomic
from ..sources import open_source
from ..sources.preprocess import to_pixels
from ..state.backbones import BackboneInfo, backbone_id, int8_path, lookup_backbone, store_backbone
from ..state.layout import StateLayout
from ..state.store import Store
from . import keras_backbone
from .convert import to_tflite

log = logging.getLogger(__name__)


def build_backbone(cfg: BackboneConfig, state_dir: Path) -> BackboneInfo:
    """The cached backbone for `cfg`, converting it with Keras first when it is missing."""
    info = lookup_backbone(cfg, state_dir)
    if info is not None:
        return info
    log.info("converting backbone %s to TFLite (once; later starts reuse it)", backbone_id(cfg))
    model = keras_backbone.build(cfg)
    return store_backbone(cfg, state_dir, to_tflite(model, "float32"), int(model.output_shape[-1]))


def calibration_frames(cfg: Config, info: BackboneInfo, n: int) -> tuple[np.ndarray, str]:
    """Up to `n` model inputs to calibrate int8 with: stored frames, topped up from the configured source."""
    size = info.input_size
    if cfg.runtime.int8_calibration == "blank":
        return np.zeros((n, size, size, 3), np.uint8), f"{n} black frames (deliberately bad)"
    frames = []
    store = Store(StateLayout(cfg.state_path).store)
    try:
        ids = store.examples(info.id).ids
        rng = np.random.default_rng(0)
        for i in (rng.choice(ids, n, replace=False) if len(ids) > n else ids):
            frames.append(to_pixels(store.load_frame(int(i)), size))
    finally:
        store.close()
    stored = len(frames)
    if len(frames) < n:
        source = open_source(cfg.camera().source)
        try:
            source.open()
            while len(frames) < n and (frame := source.read()) is not None:
                frames.append(to_pixels(frame.image, size))
        except EdgedError as e:
            log.warning("calibration frames from the source stopped: %s", e)
        finally:
            source.close()
    if not frames:
        raise BackboneError("int8 calibration: no stored frames and no frames from the source")
    return np.stack(frames), f"{stored} stored frames + {len(frames) - stored} from {source_name(cfg)}"


def source_name(cfg: Config) -> str:
    return cfg.camera().source.uri.split("@")[-1][:80]


def build_int8(cfg: Config) -> Path:
    """The full-integer (uint8 input) twin of the float backbone, calibrated on representative frames."""
    info = build_backbone(cfg.backbone, cfg.state_path)
    frames, what = calibration_frames(cfg, info, cfg.runtime.calibration_frames)
    model = keras_backbone.build(cfg.backbone)
    data = to_tflite(model, "int8", frames.astype(np.float32) * info.scale + info.offset)
    path = int8_path(info)
    write_atomic(path, data)
    write_atomic(path.with_suffix(".json"), json.dumps({"calibration": what, "frames": int(len(frames)),
                                                         "created": time.time()}).encode())
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="edged.learn.backbones")
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--backbone-json", help="build the float backbone of this [backbone] table")
    parser.add_argument("--int8-config-json", help="build the int8 twin for this whole config (frames from its store)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.int8_config_json:
            print(build_int8(Config.model_validate(json.loads(args.int8_config_json))))
            return 0
        info = build_backbone(BackboneConfig.model_validate(json.loads(args.backbone_json)), Path(args.state_dir))
    except EdgedError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(info.path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
