"""Sound sources (edged.sources.audio): WAV files of any rate, width and channel count become 16 kHz windows
drawn as spectrograms, loud where the sound is; what cannot be read is named; a microphone that cannot be
opened is a lost source the grabber keeps retrying, not a crash."""

from __future__ import annotations

import importlib
import threading
import time
import wave

import numpy as np
import pytest

from edged.config import AudioConfig, SourceConfig
from edged.errors import SourceError
from edged.sources import FrameGrabber, open_source
from edged.sources.audio import MicrophoneSource, WavSource

WINDOW, HOP = AudioConfig().window_s, AudioConfig().hop_s


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
    # 4 s of sound: the first window (1.5 s), then one every hop
    assert len(frames) == 1 + int((4.0 - WINDOW) / HOP), len(frames)
    assert all(f.image.shape == (128, 128, 3) and f.sound.samples.shape == (24_000,) for f in frames)
    loud = [f.pos for f in frames if f.sound.loud]
    # a window is loud while the beep (2.0-2.5 s) is anywhere in it: it ends after 2.0 s and starts before 2.5 s
    beep_windows = {p for p in range(len(frames)) if WINDOW + HOP * p > 2.0 and HOP * p < 2.5}
    assert set(loud) == beep_windows, (loud, beep_windows)
    assert max(f.sound.level_db for f in frames) - min(f.sound.level_db for f in frames) > 20


def test_a_window_is_whole_where_it_holds_all_of_a_short_sound_or_a_long_sound_fills_it(tmp_path):
    frames = _frames(_wav(tmp_path / "beep.wav", _beep_in_noise(16_000), 16_000))
    # the beep (2.0-2.5 s) is whole in the windows whose first and last hops are quiet
    inside = {p for p in range(len(frames)) if HOP * p + HOP <= 2.0 and HOP * p + WINDOW - HOP >= 2.5}
    assert {f.pos for f in frames if f.sound.whole} == inside and len(inside) >= 3, inside
    assert all(f.sound.loud for f in frames if f.sound.whole) and any(f.sound.loud and not f.sound.whole for f in frames)

    rng = np.random.default_rng(1)
    hum = rng.normal(0, 200, 8 * 16_000)
    hum[2 * 16_000:6 * 16_000] += 8000 * np.sin(2 * np.pi * 440 * np.arange(4 * 16_000) / 16_000)  # 4 s: longer than a window
    frames = _frames(_wav(tmp_path / "hum.wav", hum, 16_000))
    filled = {p for p in range(len(frames)) if HOP * p + HOP >= 2.0 and HOP * p + WINDOW - HOP <= 6.0}  # <= 1 hop quiet
    assert {f.pos for f in frames if f.sound.whole} == filled and len(filled) >= (4.0 - WINDOW) / HOP, filled


def test_8_bit_works_and_what_cannot_be_read_is_named(tmp_path):
    assert len(_frames(_wav(tmp_path / "u8.wav", _beep_in_noise(8_000), 8_000, width=1))) == 1 + int((4.0 - WINDOW) / HOP)
    with pytest.raises(SourceError, match="24-bit samples are not supported"):
        _frames(_wav(tmp_path / "s24.wav", _beep_in_noise(8_000), 8_000, width=3))
    (tmp_path / "junk.wav").write_bytes(b"RIFF nonsense")
    with pytest.raises(SourceError, match="cannot read"):
        _frames(str(tmp_path / "junk.wav"))
    with pytest.raises(SourceError, match="sound file not found"):
        _frames(str(tmp_path / "missing.wav"))


def _lying_header(path, rate: int, channels: int = 1, data_bytes: int = 0) -> str:
    """A small WAV whose header claims what an attacker likes (issue 34, 14: 1 Hz took 3.19 GB, 0 Hz raised
    ZeroDivisionError and the grabber retried it forever)."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16_000)
        w.writeframes(b"\0\1" * 10_000)
    data = bytearray(path.read_bytes())
    data[22:24] = channels.to_bytes(2, "little")  # the fmt chunk: channels, then the sample rate
    data[24:28] = rate.to_bytes(4, "little")
    if data_bytes:
        data[40:44] = data_bytes.to_bytes(4, "little")  # the data chunk's size: how long the file says it is
    path.write_bytes(bytes(data))
    return str(path)


@pytest.mark.parametrize("rate,channels,data_bytes,why", [
    (1, 1, 0, "sample rate 1 Hz is outside"), (0, 1, 0, "sample rate 0 Hz"), (2_000_000_000, 1, 0, "sample rate 2000000000"),
    (16_000, 0, 0, "channels"), (16_000, 4000, 0, "4000 channels"), (4_000, 1, 4_000_000_000, "s long, over the 3600 s")])
def test_a_wav_header_out_of_bounds_is_named(tmp_path, rate, channels, data_bytes, why):
    with pytest.raises(SourceError, match=why):
        _frames(_lying_header(tmp_path / "liar.wav", rate, channels, data_bytes))


def test_a_microphone_that_cannot_open_is_a_lost_source_retried(tmp_path):
    cfg = SourceConfig(uri="audio:no-such-microphone", reconnect_min_s=0.05, reconnect_max_s=0.1)
    source = open_source(cfg)
    assert isinstance(source, MicrophoneSource)
    stop = threading.Event()
    grabber = FrameGrabber(source, cfg, stop, None)
    grabber.start()
    try:
        deadline = time.monotonic() + 10
        while grabber.state != "camera_lost" and time.monotonic() < deadline:
            stop.wait(0.02)
        try:
            importlib.import_module("sounddevice")
            why = "cannot open microphone no-such-microphone"  # PortAudio lists no such device, even started anew
        except (ImportError, OSError):
            why = "pip install 'edged[audio]'"
        assert grabber.state == "camera_lost" and why in grabber.error, grabber.error
        assert grabber._thread.is_alive()  # still retrying
    finally:
        stop.set()
        grabber.join()
