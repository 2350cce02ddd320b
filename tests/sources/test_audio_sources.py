"""Sound sources (edged.sources.audio): WAV files of any rate, width and channel count become 16 kHz windows
drawn as spectrograms, loud where the sound is; what cannot be read is named; a microphone that cannot be
opened is a lost source the grabber keeps retrying, not a crash."""

from __future__ import annotations

import importlib.util
import threading
import time
import wave

import numpy as np
import pytest

from edged.config import SourceConfig
from edged.errors import SourceError
from edged.sources import FrameGrabber, open_source
from edged.sources.audio import MicrophoneSource, WavSource


def _wav(path, samples: np.ndarray, rate: int, channels: int = 1, width: int = 2) -> str:
    data = np.repeat(samples[:, None], channels, axis=1).reshape(-1)
    raw = {1: lambda x: (x / 256 + 128).astype(np.uint8), 2: lambda x: x.astype(np.int16),
           3: lambda x: x.astype(np.int32)}[width](data)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(raw.tobytes() if width != 3 else b"".join(int(v).to_bytes(3, "little", signed=True) for v in raw[:10]))
    return str(path)


def _beep_in_noise(rate: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    x = rng.normal(0, 200, 4 * rate)
    t = np.arange(rate // 2) / rate
    x[2 * rate:2 * rate + t.size] += 8000 * np.sin(2 * np.pi * 1000 * t)
    return np.clip(x, -32767, 32767)


def _frames(uri: str, **options) -> list:
    source = open_source(SourceConfig(uri=uri, loop=False, **options))
    assert isinstance(source, WavSource)
    source.open()
    try:
        return list(iter(source.read, None))
    finally:
        source.close()


def test_a_stereo_44k_wav_becomes_16k_windows_loud_where_the_sound_is(tmp_path):
    frames = _frames(_wav(tmp_path / "beep.wav", _beep_in_noise(44_100), 44_100, channels=2))
    # 4 s of sound: the first window (1.5 s), then one every 0.25 s
    assert len(frames) == 1 + int((4.0 - 1.5) / 0.25), len(frames)
    assert all(f.image.shape == (128, 128, 3) and f.audio.shape == (24_000,) for f in frames)
    loud = [f.pos for f in frames if f.loud]
    # a window is loud while the beep (2.0-2.5 s) is anywhere in it: it ends after 2.0 s and starts before 2.5 s
    beep_windows = {p for p in range(len(frames)) if 1.5 + 0.25 * p > 2.0 and 0.25 * p < 2.5}
    assert set(loud) == beep_windows, (loud, beep_windows)
    assert max(f.level_db for f in frames) - min(f.level_db for f in frames) > 20


def test_8_bit_works_and_what_cannot_be_read_is_named(tmp_path):
    assert len(_frames(_wav(tmp_path / "u8.wav", _beep_in_noise(8_000), 8_000, width=1))) == 11
    with pytest.raises(SourceError, match="24-bit samples are not supported"):
        _frames(_wav(tmp_path / "s24.wav", _beep_in_noise(8_000), 8_000, width=3))
    (tmp_path / "junk.wav").write_bytes(b"RIFF nonsense")
    with pytest.raises(SourceError, match="cannot read"):
        _frames(str(tmp_path / "junk.wav"))
    with pytest.raises(SourceError, match="sound file not found"):
        _frames(str(tmp_path / "missing.wav"))


@pytest.mark.skipif(importlib.util.find_spec("sounddevice") is not None, reason="sounddevice installed here")
def test_a_microphone_that_cannot_open_is_a_lost_source_retried(tmp_path):
    cfg = SourceConfig(uri="audio:", reconnect_min_s=0.05, reconnect_max_s=0.1)
    source = open_source(cfg)
    assert isinstance(source, MicrophoneSource)
    stop = threading.Event()
    grabber = FrameGrabber(source, cfg, stop, None)
    grabber.start()
    try:
        deadline = time.monotonic() + 10
        while grabber.state != "camera_lost" and time.monotonic() < deadline:
            stop.wait(0.02)
        assert grabber.state == "camera_lost" and "pip install 'edged[audio]'" in grabber.error
        assert grabber._thread.is_alive()  # still retrying
    finally:
        stop.set()
        grabber.join()
