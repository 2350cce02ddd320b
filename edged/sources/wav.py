"""WAV files as edged reads and writes them: 16 kHz mono samples in the int16 range, every header field bounded."""

from __future__ import annotations

import io
import wave
from pathlib import Path

import numpy as np

from ..errors import SourceError

SAMPLE_RATE = 16_000
WAV_RATES = (4_000, 384_000)  # sample rates a WAV may have, Hz
WAV_MAX_CHANNELS = 32
WAV_MAX_S = 3600.0  # longest WAV read (an hour: 230 MB of samples at 16 kHz)


def read_wav(path: Path) -> np.ndarray:
    """A WAV file as 16 kHz mono samples in the int16 range; SourceError for what is not a PCM WAV, naming the header
    field that is out of bounds (a 20 KB file claiming 1 Hz would have been resampled to gigabytes)."""
    try:
        with wave.open(str(path)) as w:
            rate, channels, width, frames = w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes()
            if not WAV_RATES[0] <= rate <= WAV_RATES[1]:
                raise SourceError(f"{path}: sample rate {rate} Hz is outside {WAV_RATES[0]}-{WAV_RATES[1]} Hz")
            if not 1 <= channels <= WAV_MAX_CHANNELS:
                raise SourceError(f"{path}: {channels} channels, not 1 to {WAV_MAX_CHANNELS}")
            if frames / rate > WAV_MAX_S:
                raise SourceError(f"{path}: {frames / rate:.0f} s long, over the {WAV_MAX_S:.0f} s read at most")
            raw = w.readframes(frames)
    except (OSError, EOFError, wave.Error) as e:
        raise SourceError(f"cannot read {path}: {e}") from None
    if width not in (1, 2, 4):
        raise SourceError(f"{path}: {8 * width}-bit samples are not supported (8, 16 or 32-bit PCM)")
    data = np.frombuffer(raw, {1: np.uint8, 2: np.int16, 4: np.int32}[width]).astype(np.float32)
    data = (data - 128.0) * 256.0 if width == 1 else data / 65536.0 if width == 4 else data
    if channels > 1:
        data = data[: len(data) // channels * channels].reshape(-1, channels).mean(1)
    if rate != SAMPLE_RATE and len(data):
        t = np.arange(0, len(data) / rate, 1 / SAMPLE_RATE)
        data = np.interp(t, np.arange(len(data)) / rate, data).astype(np.float32)
    return data


def wav_bytes(samples: np.ndarray) -> bytes:
    """16 kHz mono 16-bit PCM WAV of int16-range samples."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(np.clip(np.asarray(samples, np.float32), -32768, 32767).astype(np.int16).tobytes())
    return buffer.getvalue()
