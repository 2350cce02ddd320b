"""Sound as frames: a WAV file or a microphone, cut into overlapping windows, each drawn as its log-mel
spectrogram.

A window of `window_s` seconds comes every `hop_s` seconds. Its frame's `image` is the window's log-mel
spectrogram (time across, low frequencies at the bottom, each band drawn by how far it stands above the room's
own sound in that band), which the image backbones embed like a photo; `audio` holds the window's samples
(16 kHz mono, int16 range), `level_db` the loudness of its newest hop, `hops` which of its hops stand above the
room's noise floor, `loud` whether any does (the gate infers while a sound is in the window) and `whole` whether
it holds a whole sound, or one that fills it: what a capture stores (only quiet windows for the `background`
label). A word of half a second is then taught from the windows that hold all of it, at different places in them.
"""

from __future__ import annotations

import importlib
import queue
import threading
from collections import deque
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from ..config import SourceConfig
from ..errors import SourceError
from .base import Frame, Sound, Source
from .wav import SAMPLE_RATE, read_wav

N_FFT, WIN, HOP = 512, 400, 160  # 25 ms windows every 10 ms
ROOM_PERCENTILE = 20  # of each band's level across a window: the room's own sound there
ABOVE_ROOM_DB = 60.0  # a band this far above the room is drawn white


def _mel_filters(n_mels: int) -> np.ndarray:
    hz_to_mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    mel_to_hz = lambda m: 700.0 * (10 ** (m / 2595.0) - 1.0)  # noqa: E731
    edges = mel_to_hz(np.linspace(hz_to_mel(50.0), hz_to_mel(SAMPLE_RATE / 2), n_mels + 2))
    bins = np.fft.rfftfreq(N_FFT, 1 / SAMPLE_RATE)
    fb = np.zeros((n_mels, bins.size), np.float32)
    for i in range(n_mels):
        lo, mid, hi = edges[i:i + 3]
        fb[i] = np.clip(np.minimum((bins - lo) / (mid - lo), (hi - bins) / (hi - mid)), 0, None)
    return fb


class Spectrogram:
    """Samples -> the window's picture: a `size` x `size` BGR image of its log-mel spectrogram, each band drawn
    relative to the room's level in it (a low percentile across the window), as per-channel normalisation does for
    far-field sound. On an absolute scale, a smoke alarm taught over one room's noise was not known over a louder,
    differently coloured one: 9 of 17 heard in that recording against 17 of 17 (`edged bench audio`)."""

    def __init__(self, n_mels: int = 64, size: int = 128):
        self.filters, self.size = _mel_filters(n_mels), size
        self.hann = np.hanning(WIN).astype(np.float32)

    def db(self, samples: np.ndarray) -> np.ndarray:
        """(n_mels, frames) mel power in dB."""
        x = np.asarray(samples, np.float32)
        n = 1 + max(len(x) - WIN, 0) // HOP
        idx = np.arange(WIN)[None, :] + HOP * np.arange(n)[:, None]
        frames = np.pad(x, (0, max(0, WIN - len(x))))[idx] * self.hann
        power = np.abs(np.fft.rfft(frames, N_FFT)) ** 2
        return 10.0 * np.log10(self.filters @ power.T + 1e-10)

    def image(self, samples: np.ndarray) -> np.ndarray:
        db = self.db(samples)
        floor = np.percentile(db, ROOM_PERCENTILE, axis=1, keepdims=True)  # each band's room level in this window
        grey = np.clip((db - floor)[::-1] / ABOVE_ROOM_DB * 255.0, 0, 255).astype(np.uint8)
        grey = cv2.resize(grey, (self.size, self.size), interpolation=cv2.INTER_LINEAR)
        return cv2.applyColorMap(grey, cv2.COLORMAP_INFERNO)


def holds_whole_sound(hops: tuple) -> bool:
    """A window whose loud hops do not touch its edges (the sound begins and ends inside it), or leave at most one
    hop quiet (a sound too long to fit, filling it). A window that cuts a short sound holds only a part of
    it, and a part of a word sounds like the part of many others: such windows taught as the word made
    untaught words heard as it (`edged bench audio --daemon-minutes`)."""
    if not any(hops):
        return False
    return (not hops[0] and not hops[-1]) or sum(hops) >= len(hops) - 1


def level_db(samples: np.ndarray) -> float:
    """Loudness in dB below full scale (int16)."""
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if len(samples) else 0.0
    return 20.0 * np.log10(max(rms, 1e-3) / 32768.0)


class NoiseFloor:
    """The room's noise level: follows quiet windows at once and loud ones only slowly (`rise_db` a window)."""

    def __init__(self, rise_db: float):
        self.level: Optional[float] = None
        self.rise_db = rise_db

    def update(self, level: float) -> float:
        self.level = level if self.level is None else min(level, self.level + self.rise_db)
        return self.level


class _Windows(Source):
    """Cuts a stream of samples into frames; subclasses give `_more(n)` samples."""

    def __init__(self, cfg: SourceConfig):
        self.cfg, self.audio = cfg, cfg.audio
        self.window = int(self.audio.window_s * SAMPLE_RATE)
        self.hop = int(self.audio.hop_s * SAMPLE_RATE)
        self.fps = 1.0 / self.audio.hop_s  # the grabber paces files at this rate
        self.picture = Spectrogram(size=self.audio.image_size)
        self._buffer = np.zeros(0, np.float32)
        self._pos = 0
        self._floor = NoiseFloor(rise_db=0.2 * self.audio.hop_s)  # 0.2 dB a second
        self._hops: deque = deque(maxlen=max(1, round(self.audio.window_s / self.audio.hop_s)))  # levels in the window

    def _more(self, n: int) -> Optional[np.ndarray]: ...

    def read(self) -> Optional[Frame]:
        need = self.window if self._pos == 0 else self.hop
        chunk = self._more(need)
        if chunk is None:
            return None
        self._buffer = np.concatenate([self._buffer, chunk])[-self.window:]
        if len(self._buffer) < self.window:
            self._buffer = np.pad(self._buffer, (self.window - len(self._buffer), 0))
        samples = self._buffer.copy()
        level = level_db(samples[-max(self.hop, 1):])  # the newest hop
        floor = self._floor.update(level)
        self._hops.append(level)
        hops = tuple(h >= floor + self.audio.loud_db for h in self._hops)
        frame = Frame(self.picture.image(samples), self._pos,
                      sound=Sound(samples, round(level, 1), hops, any(hops), holds_whole_sound(hops)))
        self._pos += 1
        return frame


class WavSource(_Windows):
    """A WAV file (any rate, channels, 8/16/32-bit PCM), played at its own pace; `loop` restarts it."""

    live = False

    def __init__(self, uri: str, cfg: SourceConfig):
        super().__init__(cfg)
        self.path = Path(uri)
        self.description = f"sound file {uri}"
        self._samples = np.zeros(0, np.float32)
        self._at = 0

    def open(self) -> None:
        if not self.path.is_file():
            raise SourceError(f"sound file not found: {self.path}")
        self._samples = read_wav(self.path)
        if len(self._samples) < self.hop:
            raise SourceError(f"{self.path}: shorter than one hop ({self.audio.hop_s:g} s)")
        self._at = 0

    def _more(self, n: int) -> Optional[np.ndarray]:
        out = []
        while n > 0:
            if self._at >= len(self._samples):
                if not self.cfg.loop:
                    return np.concatenate(out) if out else None
                self._at = 0
            piece = self._samples[self._at:self._at + n]
            self._at += len(piece)
            n -= len(piece)
            out.append(piece)
        return np.concatenate(out)

    def close(self) -> None:
        self._samples = np.zeros(0, np.float32)


class MicrophoneSource(_Windows):
    """A microphone through PortAudio (`sounddevice`, the `audio` extra): `audio:` the default input,
    `audio:<name or index>` another. A microphone that goes away is a lost source: reopened with backoff, and
    found again when it is plugged back in (PortAudio lists devices only when it starts, so a device it cannot
    find makes it start again, unless another microphone of this daemon is recording)."""

    live = True
    _lock = threading.Lock()
    _recording = 0  # open streams of this process: restarting PortAudio would stop them

    def __init__(self, uri: str, cfg: SourceConfig):
        super().__init__(cfg)
        name = uri.split(":", 1)[1]
        self.device = int(name) if name.isdigit() else (name or None)
        self.description = f"microphone {name or '(default)'}"
        self._stream = None
        self._chunks: "queue.Queue[np.ndarray]" = queue.Queue(maxsize=256)
        self._pending = np.zeros(0, np.float32)

    def open(self) -> None:
        try:
            sd = importlib.import_module("sounddevice")
        except (ImportError, OSError) as e:  # OSError: the PortAudio library itself is missing
            raise SourceError(f"{self.description}: sound input needs the audio extra (pip install 'edged[audio]' "
                              f"and Debian's libportaudio2): {e}") from None
        with MicrophoneSource._lock:
            try:
                self._start(sd)
            except Exception as first:  # PortAudioError, ValueError for a device it does not list
                if MicrophoneSource._recording or not hasattr(sd, "_terminate"):
                    raise SourceError(f"cannot open {self.description}: {first}") from None
                sd._terminate()  # list the devices anew: a microphone plugged in since PortAudio started
                sd._initialize()
                try:
                    self._start(sd)
                except Exception as e:
                    raise SourceError(f"cannot open {self.description}: {e}") from None
            MicrophoneSource._recording += 1

    def _start(self, sd) -> None:
        stream = sd.InputStream(samplerate=SAMPLE_RATE, channels=1, dtype="int16", device=self.device,
                                blocksize=HOP * 4, callback=self._on_audio)
        try:
            stream.start()
        except Exception:
            stream.close()
            raise
        self._stream = stream  # counted in _recording until close()

    def _on_audio(self, data, frames, time_info, status) -> None:
        try:
            self._chunks.put_nowait(np.asarray(data, np.float32).reshape(-1).copy())
        except queue.Full:
            pass

    def _more(self, n: int) -> Optional[np.ndarray]:
        while len(self._pending) < n:
            try:
                chunk = self._chunks.get(timeout=self.cfg.read_timeout_s)
            except queue.Empty:
                raise SourceError(f"{self.description}: no sound for {self.cfg.read_timeout_s:g} s") from None
            self._pending = np.concatenate([self._pending, chunk])
        out, self._pending = self._pending[:n], self._pending[n:]
        return out

    def close(self) -> None:
        if self._stream is None:
            return
        try:
            self._stream.stop()
            self._stream.close()
        except Exception:
            pass
        self._stream = None
        with MicrophoneSource._lock:
            MicrophoneSource._recording -= 1

