"""Train and export in a TensorFlow process; the daemon runs this as a child and relays its progress.

`python -m edged.trainer train|export --config-json J --head NAME [--params JSON]` prints JSON
lines: {"progress": {...}} while working, then {"result": {...}} or {"error": "..."}.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Callable, Optional

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from .backbone import BackboneInfo, file_sha256, resolve_backbone, write_atomic  # noqa: E402
from .config import Config  # noqa: E402
from .heads import HeadError, head_options  # noqa: E402
from .models import Versions  # noqa: E402
from .plugins import head_classes, plugin_manager  # noqa: E402
from .preprocess import crop_box, to_pixels  # noqa: E402
from .store import Examples, Store  # noqa: E402

log = logging.getLogger(__name__)
Progress = Optional[Callable[[dict], None]]
QUANTIZATIONS = ("float32", "float16", "int8")
PARITY_TOLERANCE = {"float32": 0.99, "float16": 0.98, "int8": 0.9}  # top-1 agreement, or mean IoU for boxes


def box_in_crop(box, shape) -> np.ndarray:
    """A full-frame normalised box -> normalised to the centre crop the model sees."""
    cx1, cy1, cx2, cy2 = crop_box(shape)
    w, h = cx2 - cx1, cy2 - cy1
    x1, y1, x2, y2 = box
    return np.clip(np.array([(x1 - cx1) / w, (y1 - cy1) / h, (x2 - cx1) / w, (y2 - cy1) / h], np.float32), 0, 1)


class TrainContext:
    """What a head may use while training: config, store frames, the backbone, a folder to write to."""

    def __init__(self, cfg: Config, store: Store, backbone: BackboneInfo, folder: Path):
        self.cfg, self.store, self.backbone, self.folder = cfg, store, backbone, folder

    def pixels(self, ids) -> np.ndarray:
        size = self.backbone.input_size
        return np.stack([to_pixels(self.store.load_frame(int(i)), size) for i in ids])

    def augmented_embeddings(self, ids: np.ndarray, rows: np.ndarray, copies: int, seed: int = 0):
        """Embeddings of `copies` augmented versions of each frame in `rows`, from the TFLite backbone."""
        from .augment import embed_augmented
        from .runtime import Engine, EngineOptions

        engine = Engine(EngineOptions(self.backbone.path, num_threads=self.cfg.runtime.num_threads, scaling=self.backbone.scaling))
        try:
            extra = embed_augmented(engine.embed, self.pixels(ids[rows]), copies, np.random.default_rng(seed))
        finally:
            engine.close()
        return extra, np.tile(rows, copies)

    def frames_with_boxes(self, examples: Examples):
        keep = [i for i, b in enumerate(examples.boxes) if b is not None]
        if not keep:
            raise HeadError("no stored example has a box: capture with {\"box\": [x1, y1, x2, y2]}")
        images, boxes = [], []
        for i in keep:
            frame = self.store.load_frame(int(examples.ids[i]))
            images.append(to_pixels(frame, self.backbone.input_size))
            boxes.append(box_in_crop(examples.boxes[i], frame.shape))
        return np.stack(images), np.stack(boxes), [str(examples.labels[i]) for i in keep]

    def fine_tune_classifier(self, head, result, opts, progress: Progress) -> dict:
        from . import keras_backbone, learn

        examples = self.store.examples(self.backbone.id)
        images = self.pixels(examples.ids)
        y = np.array([result.classes.index(l) for l in examples.labels.tolist()])
        val = result.val_index
        train = np.setdiff1d(np.arange(len(y)), val)
        backbone = keras_backbone.build(self.cfg.backbone)
        fused = learn.fused_model(backbone, result.model)
        metrics = learn.fine_tune(fused, backbone, images[train], y[train], images[val], y[val], opts,
                                  self.backbone.scale, self.backbone.offset, progress)
        fused.save(self.folder / "fused.keras")
        export_fused(fused, head.name, "classes", result.classes, self.backbone, self.folder, "float32",
                     images[val], {"val_accuracy": metrics["fine_tune_val_accuracy"]}, progress=progress)
        return {k: v for k, v in metrics.items() if k != "fine_tune_history"}


# -- conversion --------------------------------------------------------------------------------
def convert(model, quantize: str, representative: Optional[np.ndarray] = None) -> bytes:
    import tensorflow as tf

    if quantize not in QUANTIZATIONS:
        raise HeadError(f"export.quantize: {quantize!r} is not one of {QUANTIZATIONS}")
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if quantize == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "int8":
        if representative is None or not len(representative):
            raise HeadError("int8 export needs representative frames: the store is empty")

        def frames():
            for x in representative:
                yield [x[None].astype(np.float32)]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = frames
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
    with contextlib.redirect_stdout(io.StringIO()):  # the converter prints every captured tensor
        return converter.convert()


def parity(kind: str, keras_out: np.ndarray, tflite_out: np.ndarray, labels: list[str], decode_extra: dict) -> float:
    """Top-1 agreement (classes, similarities) or mean IoU (boxes) between Keras and TFLite outputs."""
    from .fused import decode
    from .learn import iou_numpy

    if kind == "boxes":
        n = len(labels)
        return float(iou_numpy(np.clip(keras_out[:, n:n + 4], 0, 1), np.clip(tflite_out[:, n:n + 4], 0, 1)).mean())
    a = [decode(kind, labels, [k], decode_extra).label for k in keras_out]
    b = [decode(kind, labels, [t], decode_extra).label for t in tflite_out]
    return float(np.mean(np.array(a) == np.array(b)))


def export_fused(model, head: str, kind: str, labels: list[str], backbone: BackboneInfo, folder: Path, quantize: str,
                 check_pixels: np.ndarray, metrics: dict, decode_extra: Optional[dict] = None,
                 representative: Optional[np.ndarray] = None, progress: Progress = None) -> dict:
    """Convert, parity-check against Keras on held-out frames, and write model.tflite + metadata.json."""
    from .runtime import Engine, EngineOptions

    scale, offset = backbone.scale, backbone.offset
    if progress:
        progress({"phase": "export", "step": f"converting to TFLite {quantize}"})
    reps = representative if representative is not None else check_pixels
    data = convert(model, quantize, None if reps is None else reps.astype(np.float32) * scale + offset)
    write_atomic(folder / "model.tflite", data)
    engine = Engine(EngineOptions(str(folder / "model.tflite"), scaling=backbone.scaling))
    keras_out = np.asarray(model.predict(check_pixels.astype(np.float32) * scale + offset, verbose=0, batch_size=32))
    keras_out = keras_out.reshape(len(check_pixels), -1)
    tflite_out = np.stack([engine.run(p)[0].reshape(-1) for p in check_pixels])
    engine.close()
    score = parity(kind, keras_out, tflite_out, labels, decode_extra or {})
    tolerance = PARITY_TOLERANCE[quantize] if kind != "boxes" else {"float32": 0.98, "float16": 0.95, "int8": 0.8}[quantize]
    meta = {
        "head": head, "kind": kind, "labels": labels, "input_size": backbone.input_size,
        "preprocessing": {"crop": "centre", "colour": "RGB", "scale": scale, "offset": offset},
        "backbone": backbone.id, "quantization": quantize, "sha256": file_sha256(folder / "model.tflite"),
        "bytes": len(data), "metrics": metrics, "decode": decode_extra or {},
        "parity": {"measure": "mean IoU" if kind == "boxes" else "top-1 agreement", "value": round(score, 4),
                   "tolerance": tolerance, "frames": int(len(check_pixels)), "passed": bool(score >= tolerance)},
        "created": time.time(),
    }
    write_atomic(folder / "metadata.json", json.dumps(meta, indent=2).encode())
    return meta


# -- jobs ---------------------------------------------------------------------------------------
def _setup(cfg: Config):
    store = Store(cfg.state_path / "store")
    backbone = resolve_backbone(cfg.backbone, cfg.state_path, build=True)
    classes = head_classes(plugin_manager(cfg.plugins_dir))
    return store, backbone, classes


def run_train(cfg: Config, head: str, params: dict, progress: Progress = None) -> dict:
    store, backbone, classes = _setup(cfg)
    try:
        if head not in classes:
            raise HeadError(f"train.head: unknown head {head!r}; installed: {sorted(classes)}")
        examples = store.examples(backbone.id)
        if not len(examples):
            raise HeadError("the store has no examples for this backbone yet: capture some first")
        versions = Versions(cfg.state_path / "heads" / head)
        staging = versions.staging()
        try:
            instance = classes[head](head_options(cfg, classes[head]))
            context = TrainContext(cfg, store, backbone, staging)
            metrics = instance.fit(examples, progress=progress, context=context, **params)
            instance.save(staging)
            version = versions.commit(staging)
        except BaseException:
            versions.discard(staging)
            raise
        return {"head": head, "version": version, "metrics": metrics}
    finally:
        store.close()


def _representative(store: Store, backbone: BackboneInfo, examples: Examples, n: int = 100) -> np.ndarray:
    rng = np.random.default_rng(0)
    ids = examples.ids if len(examples) <= n else rng.choice(examples.ids, n, replace=False)
    return np.stack([to_pixels(store.load_frame(int(i)), backbone.input_size) for i in ids])


def run_export(cfg: Config, head: str, quantize: str = "float32", force: bool = False, progress: Progress = None) -> dict:
    import keras

    from . import keras_backbone, learn

    store, backbone, classes = _setup(cfg)
    try:
        if head not in classes:
            raise HeadError(f"export.head: unknown head {head!r}; installed: {sorted(classes)}")
        examples = store.examples(backbone.id)
        if not len(examples):
            raise HeadError("the store has no examples: nothing to export")
        head_dir = Versions(cfg.state_path / "heads" / head).current_path()
        decode_extra = {}
        if head == "knn":
            knn = cfg.heads.knn
            base = keras_backbone.build(cfg.backbone)
            vectors = examples.embeddings / np.maximum(np.linalg.norm(examples.embeddings, axis=1, keepdims=True), 1e-12)
            inputs = keras.Input(base.input_shape[1:], name="image")
            x = keras.layers.UnitNormalization(name="l2_normalise")(base(inputs))
            sims = keras.layers.Dense(len(vectors), use_bias=False, name="similarities")
            model = keras.Model(inputs, sims(x))
            sims.set_weights([vectors.T.astype(np.float32)])
            kind, labels = "similarities", sorted(set(examples.labels.tolist()))
            decode_extra = {"row_labels": examples.labels.tolist(), "k": knn.k, "threshold": knn.threshold}
            metrics = {"examples": len(examples)}
            check_ids = examples.ids
        else:
            if head_dir is None:
                raise HeadError(f"head {head!r} has no trained version: train it first")
            meta = json.loads((head_dir / "head.json").read_text())
            labels, metrics = meta["classes"], meta.get("metrics", {})
            kind = classes[head].kind
            if (head_dir / "fused.keras").is_file():
                model = keras.models.load_model(head_dir / "fused.keras", compile=False, safe_mode=False)
            elif hasattr(classes[head], "keras_head"):
                instance = classes[head](head_options(cfg, classes[head]))
                instance.load(head_dir)
                model = learn.fused_model(keras_backbone.build(cfg.backbone), instance.keras_head())
            else:
                raise HeadError(f"head {head!r} has nothing to export in {head_dir}")
            _, val = learn.balanced_split(examples.labels, 0.2, 1, 0) if len(set(examples.labels.tolist())) > 1 else (None, np.arange(len(examples)))
            check_ids = examples.ids[val]
        check = np.stack([to_pixels(store.load_frame(int(i)), backbone.input_size) for i in check_ids[:200]])
        versions = Versions(cfg.state_path / "models" / head)
        staging = versions.staging()
        try:
            meta = export_fused(model, head, kind, labels, backbone, staging, quantize, check, metrics, decode_extra,
                                _representative(store, backbone, examples), progress)
            passed = meta["parity"]["passed"]
            if not passed and not force:
                raise HeadError(f"parity check failed: {meta['parity']}; the model was not activated (use force to keep it)")
            version = versions.commit(staging, activate=True)
        except BaseException:
            versions.discard(staging)
            raise
        return {"head": head, "model_version": version, "quantization": quantize, "parity": meta["parity"],
                "bytes": meta["bytes"], "path": str(versions.root / version / "model.tflite")}
    finally:
        store.close()


def _run_job(job: str, cfg: Config, head: str, params: dict, emit) -> int:
    try:
        if job == "train":
            result = run_train(cfg, head, params, progress=lambda p: emit({"progress": p}))
        elif job == "export":
            result = run_export(cfg, head, params.get("quantize", "float32"), params.get("force", False),
                                progress=lambda p: emit({"progress": p}))
        else:
            raise HeadError(f"unknown job {job!r}")
    except HeadError as e:
        emit({"error": str(e)})
        return 2
    except ModuleNotFoundError as e:
        if e.name and e.name.split(".")[0] in ("tensorflow", "keras"):
            from .adapt import NO_TENSORFLOW

            emit({"error": NO_TENSORFLOW.format(job=job)})
            return 2
        raise
    except Exception as e:
        log.exception("%s failed", job)
        emit({"error": f"{job} failed: {type(e).__name__}: {e}"})
        return 1
    emit({"result": result})
    return 0


def _emit(obj) -> None:
    sys.stdout.write(json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()


def serve_jobs() -> int:
    """Warm worker: import TensorFlow once, then run one JSON job per stdin line until stdin closes."""
    try:
        import keras
        import tensorflow  # noqa: F401
    except ModuleNotFoundError:
        from .adapt import NO_TENSORFLOW

        _emit({"error": NO_TENSORFLOW.format(job="training"), "fatal": True})
        return 2
    _emit({"ready": True})
    for line in sys.stdin:
        try:
            request = json.loads(line)
            cfg = Config.model_validate(request["config"])
        except Exception as e:
            _emit({"error": f"bad job request: {e}"})
            _emit({"done": True})
            continue
        _run_job(request["job"], cfg, request["head"], request.get("params", {}), _emit)
        keras.backend.clear_session()
        _emit({"done": True})
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="edged.trainer")
    parser.add_argument("job", choices=["train", "export", "serve"])
    parser.add_argument("--config-json")
    parser.add_argument("--head")
    parser.add_argument("--params", default="{}")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if args.job == "serve":
        return serve_jobs()
    cfg = Config.model_validate(json.loads(args.config_json))
    return _run_job(args.job, cfg, args.head, json.loads(args.params), _emit)


if __name__ == "__main__":
    raise SystemExit(main())
