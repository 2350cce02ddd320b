"""The training context: the public API a head's Keras training module gets in the TensorFlow worker.

A head whose class names a ``trainer`` module (``trainer = "my_plugin.my_head_train"``) can define
there, importing TensorFlow/Keras freely:

``train(context: TrainContext, progress) -> dict``
    Train a new version into ``context.folder`` (a staging folder, committed as ``heads/<name>/vN``
    when ``train`` returns; removed if it raises) and return its metrics. ``progress(dict)`` reports
    ``{"phase", "epoch", "epochs", ...figures}``. Raise :class:`edged.errors.TrainingError` or
    :class:`edged.errors.HeadError` with an actionable message.
``export_model(context: TrainContext) -> ExportSpec``
    The Keras model to convert for ``export``: it takes scaled images (``context.scaled``) and
    outputs what the head's ``decode`` reads. The exporter converts it, checks parity on the
    frames of ``spec.check_ids`` with the head's ``agreement``, and writes the versioned model.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import keras
import numpy as np

from ..config import BACKGROUND, Config
from ..errors import HeadError
from ..files import file_sha256, write_atomic
from ..heads.base import FitContext, Head, Progress, TrainRequest
from ..runtime.engine import Engine, EngineOptions
from ..sources.audio import Spectrogram
from ..sources.augment import augmenter
from ..sources.preprocess import fit_frame, to_pixels
from ..state.backbones import BackboneInfo
from ..state.layout import StateLayout
from ..state.store import Examples, Store
from . import keras_backbone
from .convert import to_tflite


@dataclass
class ExportSpec:
    model: keras.Model  # scaled images in, what the head's `decode` reads out
    labels: list[str]
    metrics: dict = field(default_factory=dict)
    check_ids: Optional[np.ndarray] = None  # stored examples the parity check runs on (default: all, up to 200)
    decode: dict = field(default_factory=dict)  # extra metadata the head's `decode` needs


@dataclass
class BoxFrames:
    """Stored frames with boxes, as a box head's model sees them (fitted as `TrainContext.fit` says)."""

    ids: np.ndarray  # example ids
    pixels: np.ndarray  # (n, S, S, 3) RGB uint8
    labels: list[str]  # the example's label
    objects: list[tuple[list[str], np.ndarray]]  # per frame: object labels and (k, 4) boxes in model coordinates

    def __len__(self) -> int:
        return len(self.ids)

    def single(self) -> "BoxFrames":
        """Only the frames holding exactly one object."""
        keep = [i for i, (names, _) in enumerate(self.objects) if len(names) == 1]
        return BoxFrames(self.ids[keep], self.pixels[keep], [self.labels[i] for i in keep], [self.objects[i] for i in keep])


class TrainContext:
    """Config, the stored examples and frames, the backbone (TFLite and Keras), a folder to write to."""

    def __init__(self, cfg: Config, store: Store, backbone: BackboneInfo, head: type[Head], options,
                 request: TrainRequest, folder: Optional[Path] = None):
        self.cfg, self.store, self.backbone = cfg, store, backbone
        self.head, self.options, self.request, self.folder = head, options, request, folder
        self.examples: Examples = store.examples(backbone.id)
        # how frames fit the model: the head's `frame_fit`, or what an older trained version recorded
        self.fit: str = head.frame_fit

    def requested_options(self):
        """The head's options with what the train request set (epochs, fine_tune_layers) applied."""
        fields = type(self.options).model_fields
        updates = {k: v for k, v in (("epochs", self.request.epochs), ("fine_tune_layers", self.request.fine_tune_layers))
                   if v is not None and k in fields}
        return self.options.model_copy(update=updates)

    # -- data ------------------------------------------------------------------------------
    def pixels(self, ids, fit: Optional[str] = None) -> np.ndarray:
        """Stored frames as the model sees them (`self.fit` by default): RGB uint8 (n, S, S, 3)."""
        size, fit = self.backbone.input_size, fit or self.fit
        return np.stack([fit_frame(self.store.load_frame(int(i)), size, fit)[0] for i in ids])

    def scaled(self, pixels: np.ndarray) -> np.ndarray:
        """RGB uint8 pixels -> the float32 input of the Keras backbone."""
        return pixels.astype(np.float32) * self.backbone.scale + self.backbone.offset

    @contextmanager
    def fit_context(self) -> Iterator[FitContext]:
        """What an in-process `fit` gets in the daemon (stored frames, the serving TFLite backbone's embedding),
        so that a head fitted here (e.g. a fold's frozen baseline) is the head the daemon would fit."""
        engine = Engine(EngineOptions(self.backbone.path, num_threads=self.cfg.runtime.num_threads,
                                      scaling=self.backbone.scaling))
        size = self.backbone.input_size
        spectrogram = Spectrogram(size=self.cfg.cameras[0].source.audio.image_size)
        pixels = lambda ids: self.pixels(ids, "crop")  # noqa: E731
        try:
            yield FitContext(self.request, size, frames=lambda ids: [self.store.load_frame(int(i)) for i in ids],
                             pixels=pixels, embed=engine.embed,
                             augmented=augmenter(pixels, engine.embed,
                                                 sounds=lambda ids: [self.store.load_audio(int(i)) for i in ids],
                                                 embed_sound=lambda s: engine.embed(to_pixels(spectrogram.image(s), size)),
                                                 rooms=lambda: self.store.room_sounds(BACKGROUND)))
        finally:
            engine.close()

    def box_frames(self) -> BoxFrames:
        """Every stored example with boxes, fitted as the head's model sees it, boxes mapped to match."""
        examples = self.examples
        keep = [i for i, objs in enumerate(examples.objects) if objs]
        if not keep:
            raise HeadError("no stored example has a box: capture with {\"box\": [x1, y1, x2, y2]} "
                            "or {\"boxes\": [{\"box\": [...], \"label\": ...}]}")
        pixels, objects = [], []
        for i in keep:
            frame = self.store.load_frame(int(examples.ids[i]))
            px, placement = fit_frame(frame, self.backbone.input_size, self.fit)
            pixels.append(px)
            names = [label for label, _ in examples.objects[i]]
            boxes = np.stack([placement.to_model(box) for _, box in examples.objects[i]]).astype(np.float32)
            objects.append((names, boxes))
        return BoxFrames(examples.ids[keep], np.stack(pixels), [str(examples.labels[i]) for i in keep], objects)

    # -- models ----------------------------------------------------------------------------
    def keras_backbone(self) -> keras.Model:
        """The configured backbone as a pooled Keras model (same weights as the serving TFLite file)."""
        return keras_backbone.build(self.cfg.backbone)

    def feature_map(self, layer: Optional[str] = None) -> keras.Model:
        """A fresh backbone (its own weights) without pooling, cut at `layer` (see `feature_map_at`)."""
        return keras_backbone.feature_map_at(self.cfg.backbone, layer)

    def current_version(self) -> Optional[Path]:
        """The head's active trained version folder, if it has one."""
        return StateLayout(self.cfg.state_path).heads(self.head.name).current_path()

    # -- writing ---------------------------------------------------------------------------
    def write_model(self, folder: Path, spec: ExportSpec, quantize: str, check_pixels: np.ndarray,
                    representative: Optional[np.ndarray] = None, progress: Progress = None) -> dict:
        """Convert `spec.model`, check parity against Keras on `check_pixels`, write model.tflite + metadata.json."""
        if progress:
            progress({"phase": "export", "step": f"converting to TFLite {quantize}"})
        reps = representative if representative is not None else check_pixels
        data = to_tflite(spec.model, quantize, None if reps is None else self.scaled(reps))
        write_atomic(folder / "model.tflite", data)
        meta = {
            "head": self.head.name, "kind": self.head.kind, "labels": spec.labels, "input_size": self.backbone.input_size,
            "preprocessing": {"fit": self.fit, "colour": "RGB", "scale": self.backbone.scale,
                              "offset": self.backbone.offset},
            "backbone": self.backbone.id, "quantization": quantize, "sha256": file_sha256(folder / "model.tflite"),
            "bytes": len(data), "metrics": spec.metrics, "decode": spec.decode, "created": time.time(),
        }
        engine = Engine(EngineOptions(str(folder / "model.tflite"), scaling=self.backbone.scaling))
        try:
            keras_out = np.asarray(spec.model.predict(self.scaled(check_pixels), verbose=0, batch_size=32))
            keras_preds = [self.head.decode([row], meta) for row in keras_out.reshape(len(check_pixels), -1)]
            tflite_preds = [self.head.decode(engine.run(p), meta) for p in check_pixels]
        finally:
            engine.close()
        score = self.head.agreement(keras_preds, tflite_preds)
        tolerance = self.head.parity_tolerance[quantize]
        meta["parity"] = {"measure": self.head.parity_measure, "value": round(score, 4), "tolerance": tolerance,
                          "frames": int(len(check_pixels)), "passed": bool(score >= tolerance)}
        write_atomic(folder / "metadata.json", json.dumps(meta, indent=2).encode())
        return meta
