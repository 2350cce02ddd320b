"""Build a backbone's TFLite file into the cache. `python -m edged.learn.backbones` is how the serving side runs it."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from ..config import BackboneConfig
from ..errors import BackboneError
from ..state.backbones import BackboneInfo, backbone_id, lookup_backbone, store_backbone
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="edged.learn.backbones")
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--backbone-json", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = BackboneConfig.model_validate(json.loads(args.backbone_json))
    try:
        info = build_backbone(cfg, Path(args.state_dir))
    except BackboneError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(info.path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
