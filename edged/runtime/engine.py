"""TFLite interpreter choice (LiteRT -> tflite_runtime -> tf.lite), delegates, and invoke with (de)quantization."""

from __future__ import annotations

import contextlib
import gc
import importlib
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import EngineError
from .scaling import Scaling

log = logging.getLogger(__name__)

INTERPRETER_MODULES = {
    "litert": "ai_edge_litert.interpreter",
    "tflite_runtime": "tflite_runtime.interpreter",
    "tensorflow": "tensorflow.lite",  # imports all of TensorFlow: last resort
}
EDGETPU_LIBRARY = "libedgetpu.so.1"


def interpreter_module(preference: str = "auto"):
    """Return (name, module) of the first importable interpreter."""
    names = list(INTERPRETER_MODULES) if preference == "auto" else [preference]
    errors = []
    for name in names:
        try:
            mod = importlib.import_module(INTERPRETER_MODULES[name])
            return name, mod
        except Exception as e:  # tflite_runtime 2.14 raises AttributeError/ImportError on numpy 2
            errors.append(f"{name}: {type(e).__name__}: {e}")
    raise EngineError("no TFLite interpreter could be imported (" + "; ".join(errors) + ")")


def interpreter_version(name: str) -> str:
    dist = {"litert": "ai-edge-litert", "tflite_runtime": "tflite-runtime", "tensorflow": "tensorflow"}[name]
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:
        return "unknown"


@dataclass
class EngineOptions:
    model_path: str
    num_threads: int = 2
    delegate: str = "none"  # none | edgetpu
    interpreter: str = "auto"
    scaling: Scaling = Scaling()
    quiet: bool = True  # keep the interpreter's native start-up lines ("Created ... XNNPACK delegate") off stderr


@contextlib.contextmanager
def native_stderr_silenced(enabled: bool = True):
    """Point file descriptor 2 at /dev/null for a moment: native libraries print there, not through Python."""
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def load_delegate(mod, library: str):
    """`mod.load_delegate(library)` without the 'Exception ignored in Delegate.__del__' noise a failed load leaves."""
    previous = sys.unraisablehook

    def hook(unraisable):
        if "Delegate" not in repr(getattr(unraisable, "object", "")):
            previous(unraisable)

    sys.unraisablehook = hook
    try:
        try:
            return mod.load_delegate(library)
        except Exception as e:  # noqa: BLE001  (any failure means: no delegate)
            message = str(e)
        gc.collect()  # the half-made Delegate dies here, with the hook in place
        raise EngineError(message)
    finally:
        sys.unraisablehook = previous


class InputAdapter:
    """Turns RGB uint8 pixels into the model's input tensor, reusing one buffer.

    Float inputs get p * scale + offset; quantized inputs get a 256-entry lookup table
    that folds scaling and quantization into one indexing step (or raw pixels when the
    table is the identity).
    """

    def __init__(self, detail: dict, scaling: Scaling):
        self.dtype = np.dtype(detail["dtype"])
        self.shape = tuple(int(d) for d in detail["shape"])
        self.scaling = scaling
        self.buffer = np.zeros(self.shape, self.dtype)
        self.lut: Optional[np.ndarray] = None
        self.identity = False
        if self.dtype in (np.uint8, np.int8):
            q_scale, q_zero = detail["quantization"]
            values = np.arange(256, dtype=np.float64) * scaling.scale + scaling.offset
            if q_scale:
                values = np.round(values / q_scale + q_zero)
            info = np.iinfo(self.dtype)
            lut = np.clip(values, info.min, info.max).astype(self.dtype)
            self.identity = self.dtype == np.uint8 and np.array_equal(lut, np.arange(256, dtype=np.uint8))
            self.lut = lut

    def __call__(self, pixels: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
        """Write the model input for `pixels` into `out` (default: an owned buffer) and return it."""
        out = self.buffer if out is None else out
        if out.size != pixels.size:
            raise ValueError(f"input of shape {pixels.shape} does not fit model input {self.shape}")
        target = out.reshape(pixels.shape)
        if self.dtype == np.float32:
            np.multiply(pixels, np.float32(self.scaling.scale), out=target, casting="unsafe")
            if self.scaling.offset:
                target += np.float32(self.scaling.offset)
        elif self.identity:
            target[...] = pixels
        else:
            np.take(self.lut, pixels, out=target)
        return out


def _dequantize(array: np.ndarray, detail: dict) -> np.ndarray:
    if array.dtype in (np.uint8, np.int8, np.int16):
        scale, zero = detail["quantization"]
        if scale:
            return (array.astype(np.float32) - zero) * np.float32(scale)
        return array.astype(np.float32)
    return array.astype(np.float32, copy=False)


class Engine:
    """A TFLite model taking one RGB image; `run(pixels)` returns its outputs as float32 arrays."""

    def __init__(self, options: EngineOptions):
        self.options = options
        path = Path(options.model_path)
        if not path.is_file():
            raise EngineError(f"model file not found: {path}")
        self.interpreter_name, mod = interpreter_module(options.interpreter)
        self.delegate = "cpu"
        delegates = []
        if options.delegate == "edgetpu":
            try:
                delegates = [load_delegate(mod, EDGETPU_LIBRARY)]
                self.delegate = "edgetpu"
            except Exception as e:
                log.warning("Edge TPU delegate unavailable (%s); running on the CPU", e)
        kwargs = {"model_path": str(path), "num_threads": options.num_threads}
        if delegates:
            kwargs["experimental_delegates"] = delegates
        try:
            with native_stderr_silenced(options.quiet):
                self.interpreter = mod.Interpreter(**kwargs)
                self.interpreter.allocate_tensors()
        except Exception as e:
            raise EngineError(f"cannot load model {path}: {e}") from e
        inputs = self.interpreter.get_input_details()
        if len(inputs) != 1 or len(inputs[0]["shape"]) != 4:
            raise EngineError(f"{path}: expected one image input (1, H, W, 3), got {[d['shape'] for d in inputs]}")
        self.input_detail = inputs[0]
        self.output_details = self.interpreter.get_output_details()
        self.input_size = int(self.input_detail["shape"][1])
        self.adapter = InputAdapter(self.input_detail, options.scaling)
        # Views into the interpreter's own buffers: no copy in or out of set_tensor/get_tensor.
        self._input_view = self.interpreter.tensor(self.input_detail["index"])
        self._output_views = [self.interpreter.tensor(d["index"]) for d in self.output_details]

    @property
    def output_dim(self) -> int:
        return int(np.prod(self.output_details[0]["shape"][1:]))

    def run(self, pixels: np.ndarray) -> list[np.ndarray]:
        self.adapter(pixels, self._input_view())  # the view is dropped before invoke, as LiteRT requires
        self.interpreter.invoke()
        return [_dequantize(view().copy(), d) for view, d in zip(self._output_views, self.output_details)]

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        """First output, flattened to a float32 vector."""
        return self.run(pixels)[0].reshape(-1)

    def embed_frame(self, frame, pixels: np.ndarray) -> np.ndarray:
        """A frame's embedding: an image backbone sees its pixels (the speech backbone hears its sound)."""
        return self.embed(pixels)

    def close(self) -> None:
        self.interpreter = None
