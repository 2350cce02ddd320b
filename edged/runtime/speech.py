"""The audio backbone: Google's speech embedding as two TFLite models (log-mel, then a 96-d embedding of each
76-frame mel window), served by LiteRT. Samples in, embeddings out; no microphone, no MQTT here.

A clip's embedding pools the embeddings of its mel windows (every `step_frames` mel frames, 10 ms each): the
mean and the maximum of its loudest `keep_loudest` windows, so a short word inside a longer clip of room noise
is what the embedding says (measured by `edged bench audio`: on unseen voices, class means 0.756 -> 0.830 and
logistic regression 0.871 -> 0.894 against pooling every window).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import BackboneError, EngineError
from .engine import EngineOptions, interpreter_module

SAMPLE_RATE = 16_000
MEL_BINS = 32
WINDOW_FRAMES = 76  # mel frames per embedding window (about 775 ms)
MEL_FILE, EMBEDDING_FILE = "melspectrogram.tflite", "embedding_model.tflite"


def speech_models_folder(configured: str | None = None) -> Path:
    """The folder holding the two speech-embedding models: the configured one, $EDGED_SPEECH_MODELS, or this
    workspace's shared models; never downloaded."""
    candidates = [configured] if configured else [os.environ.get("EDGED_SPEECH_MODELS"),
                                                  Path(__file__).resolve().parents[3] / "shared" / "models" / "speech_embedding"]
    for folder in candidates:
        if folder and (Path(folder) / MEL_FILE).is_file() and (Path(folder) / EMBEDDING_FILE).is_file():
            return Path(folder)
    where = f"in {configured}" if configured else "(set backbone.path to their folder, or $EDGED_SPEECH_MODELS)"
    raise BackboneError(f"speech embedding: {MEL_FILE} and {EMBEDDING_FILE} not found {where}; "
                        f"`pip download --no-deps openwakeword==0.5.1` ships them in openwakeword/resources/models/")


@dataclass
class SpeechOptions:
    folder: str
    num_threads: int = 1
    step_frames: int = 4  # 40 ms between embedding windows
    keep_loudest: float = 0.3  # the fraction of windows pooled, loudest first
    interpreter: str = "auto"


class SpeechEmbedder:
    """16 kHz mono samples (float, int16 range or [-1, 1]) -> (192,) clip embedding: mean and max of its windows."""

    dim = 192

    def __init__(self, options: SpeechOptions):
        self.options = options
        _, mod = interpreter_module(options.interpreter)
        folder = Path(options.folder)
        self._mel = mod.Interpreter(model_path=str(folder / MEL_FILE), num_threads=options.num_threads)
        self._emb = mod.Interpreter(model_path=str(folder / EMBEDDING_FILE), num_threads=options.num_threads)
        self._emb.allocate_tensors()
        self._mel_samples = 0
        self._emb_in = self._emb.get_input_details()[0]["index"]
        self._emb_out = self._emb.get_output_details()[0]["index"]

    def mel(self, samples: np.ndarray) -> np.ndarray:
        """(frames, 32) log-mel, scaled as the embedding model expects."""
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        if x.size and np.abs(x).max() <= 1.0:
            x = x * 32767.0  # the model takes the int16 range
        if x.size < SAMPLE_RATE * WINDOW_FRAMES // 100 + 480:
            x = np.pad(x, (0, SAMPLE_RATE * WINDOW_FRAMES // 100 + 480 - x.size))
        if x.size != self._mel_samples:  # resized only when the clip length changes
            detail = self._mel.get_input_details()[0]
            self._mel.resize_tensor_input(detail["index"], [1, x.size])
            self._mel.allocate_tensors()
            self._mel_samples = x.size
        self._mel.set_tensor(self._mel.get_input_details()[0]["index"], x[None, :])
        self._mel.invoke()
        out = self._mel.get_tensor(self._mel.get_output_details()[0]["index"])
        return out.reshape(-1, MEL_BINS) / 10.0 + 2.0

    def windows(self, mel: np.ndarray) -> np.ndarray:
        """(n, 96) embeddings of the mel windows, one every `step_frames`."""
        out = np.empty((len(self._starts(mel)), 96), np.float32)
        for i, s in enumerate(self._starts(mel)):
            self._emb.set_tensor(self._emb_in, mel[s:s + WINDOW_FRAMES][None, :, :, None].astype(np.float32))
            self._emb.invoke()
            out[i] = self._emb.get_tensor(self._emb_out).reshape(-1)
        return out

    def _starts(self, mel: np.ndarray) -> range:
        return range(0, max(len(mel) - WINDOW_FRAMES, 0) + 1, self.options.step_frames)

    def embed(self, samples: np.ndarray) -> np.ndarray:
        mel = self.mel(samples)
        windows = self.windows(mel)
        loudness = np.array([mel[s:s + WINDOW_FRAMES].mean() for s in self._starts(mel)])
        keep = windows[np.argsort(-loudness)[:max(1, round(len(windows) * self.options.keep_loudest))]]
        return np.concatenate([keep.mean(0), keep.max(0)])

    def close(self) -> None:
        self._mel = self._emb = None


class SpeechEngine:
    """The speech embedding where the daemon expects a backbone engine: it embeds a frame's sound, and refuses
    pictures (a sound example's stored picture is its spectrogram, which this backbone cannot read)."""

    hears = True
    delegate = "cpu"
    input_size = 128  # the spectrogram picture's size, for what shows or stores it

    def __init__(self, folder: str | Path, num_threads: int = 1, interpreter: str = "auto"):
        self.interpreter_name, _ = interpreter_module(interpreter)
        self.options = EngineOptions(str(Path(folder) / EMBEDDING_FILE), num_threads, interpreter=interpreter)
        self.embedder = SpeechEmbedder(SpeechOptions(str(folder), num_threads=num_threads, interpreter=interpreter))
        self.output_dim = SpeechEmbedder.dim

    def embed_sound(self, samples: np.ndarray) -> np.ndarray:
        return self.embedder.embed(samples)

    def embed_frame(self, frame, pixels: np.ndarray) -> np.ndarray:
        if getattr(frame, "sound", None) is None:
            raise EngineError("backbone.family = 'speech_embedding' hears sound: the source must be audio (a "
                              "microphone, audio:..., or a .wav file)")
        return self.embed_sound(frame.sound.samples)

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        raise EngineError("the speech embedding embeds sound, not pictures: this needs the example's sound")

    def close(self) -> None:
        self.embedder.close()

