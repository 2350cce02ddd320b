"""`edged bench runtime`: Keras eager vs TFLite float32 / float16 / int8 on one model, plus int8 accuracy."""

from __future__ import annotations

import argparse
import time

import numpy as np

from edged_plugins.classifier import ClassifierHead, ClassifierOptions
from edged_plugins.classifier_train import keras_classifier

from ..learn.convert import DIAGNOSTIC_QUANTIZATIONS, QUANTIZATIONS, to_tflite
from ..learn.keras_backbone import build
from ..runtime.engine import Engine, EngineOptions, interpreter_module, interpreter_version
from ..sources.preprocess import to_pixels
from ..state.store import Examples
from .common import DATA, MODELS, bench_backbone, load_sign_digits, table


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=str(DATA / "sign-digits"))
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--iterations", type=int, default=100)
    p.add_argument("--keras-iterations", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--train-per-class", type=int, default=50)
    p.add_argument("--representative", type=int, default=300, help="calibration frames for int8")
    p.add_argument("--diagnose", action="store_true",
                   help="also int8 weights with float activations: how much of int8's disagreement the weights cause")


def _invoke_ms(engine: Engine, pixels: np.ndarray, n: int, windows: int = 5) -> float:
    """Median over `windows` timing windows, so one disturbed second on a shared machine does not decide."""
    it = engine.interpreter
    it.set_tensor(engine.input_detail["index"], engine.adapter(pixels))
    for _ in range(3):
        it.invoke()
    per_window = max(1, n // windows)
    times = []
    for _ in range(windows):
        t0 = time.perf_counter()
        for _ in range(per_window):
            it.invoke()
        times.append((time.perf_counter() - t0) / per_window * 1000)
    return float(np.median(times))


def run(args) -> int:
    import tempfile
    from pathlib import Path

    cfg, info = bench_backbone(args.alpha, args.size)
    emb_engine = Engine(EngineOptions(info.path, num_threads=args.threads, scaling=info.scaling))
    images, labels = load_sign_digits(args.data)
    pixels = np.stack([to_pixels(img, info.input_size) for img in images])
    rng = np.random.default_rng(0)
    classes = sorted(set(labels.tolist()))
    train = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[: args.train_per_class] for c in classes])
    test = np.setdiff1d(np.arange(len(labels)), train)
    emb = np.stack([emb_engine.embed(p) for p in pixels[train]])
    head = ClassifierHead(ClassifierOptions(augment_copies=0))
    head.fit(Examples(train, labels[train], emb, [None] * len(train)))
    fused = keras_classifier(build(cfg), head)
    scaled = lambda px: px.astype(np.float32) * info.scale + info.offset

    x = scaled(pixels[test[:1]])
    fused(x, training=False)
    t0 = time.perf_counter()
    for i in range(args.keras_iterations):
        fused(scaled(pixels[test[i:i + 1]]), training=False)
    keras_ms = (time.perf_counter() - t0) / args.keras_iterations * 1000
    keras_probs = fused.predict(scaled(pixels[test]), verbose=0, batch_size=64)
    keras_pred = np.argmax(keras_probs, 1)

    folder = Path(tempfile.mkdtemp(prefix="edged-bench-runtime-"))
    name, _ = interpreter_module("auto")
    rows, results = [["keras eager", f"{keras_ms:.2f}", "1.0x", "-", "-", "-"]], {}
    rep = scaled(pixels[train[rng.permutation(len(train))[: args.representative]]])
    for q in QUANTIZATIONS + (DIAGNOSTIC_QUANTIZATIONS if args.diagnose else ()):
        path = folder / f"{q}.tflite"
        path.write_bytes(to_tflite(fused, q, rep if q == "int8" else None))
        engine = Engine(EngineOptions(str(path), num_threads=args.threads, scaling=info.scaling))
        ms = _invoke_ms(engine, pixels[test[0]], args.iterations)
        probs = np.stack([np.asarray(engine.run(p)[0], np.float64).reshape(-1) for p in pixels[test]])
        pred = np.argmax(probs, 1)
        acc = float(np.mean(np.array(classes)[pred] == labels[test]))
        results[q] = (ms, pred, acc, probs)
        rows.append([f"tflite {q}", f"{ms:.2f}", f"{keras_ms / ms:.1f}x", f"{path.stat().st_size / 1e6:.1f} MB",
                     f"{acc:.4f}", f"{np.mean(pred == results['float32'][1]):.4f}"])
    keras_acc = float(np.mean(np.array(classes)[keras_pred] == labels[test]))
    rows[0][4] = f"{keras_acc:.4f}"
    print(f"model: {info.description} + classifier head ({len(classes)} classes, {args.train_per_class}/class), "
          f"interpreter {name} {interpreter_version(name)}, {args.threads} threads; accuracy on {len(test)} held-out photos")
    print(table(rows, ["runtime", "ms/frame", "vs keras", "size", "accuracy", "agrees w/ float32"]))
    f32, i8 = results["float32"], results["int8"]
    top2 = np.sort(f32[3], 1)[:, -2:]
    sure = (top2[:, 1] - top2[:, 0]) >= 0.5
    print(f"int8 agreement where float32's top-2 margin is >= 0.5 ({sure.mean():.0%} of photos): "
          f"{np.mean(i8[1][sure] == f32[1][sure]):.4f}; below it: {np.mean(i8[1][~sure] == f32[1][~sure]):.4f}")
    ref = MODELS / "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"
    if ref.is_file() and (args.alpha, args.size) == (1.0, 224):  # the reference is that model
        ref_engine = Engine(EngineOptions(str(ref), num_threads=args.threads, scaling=info.scaling))
        ref_ms = _invoke_ms(ref_engine, pixels[test[0]], args.iterations)
        print(f"reference: the uint8 MobileNet v1 1.0/224 extractor in ../shared/models runs at {ref_ms:.2f} ms/frame "
              f"on this interpreter ({f32[0] / ref_ms:.2f}x our float32): quantized kernels are not the fast path on this x86 CPU")
    print(f"runtime: tflite float32 {keras_ms / f32[0]:.1f}x keras eager (target >= 30x); int8 {f32[0] / i8[0]:.2f}x float32 "
          f"(target >= 1.8x); int8 top-1 agreement {np.mean(i8[1] == f32[1]):.4f} (target >= 0.99), "
          f"accuracy loss {100 * (f32[2] - i8[2]):.2f} points (target <= 1)")
    return 0
