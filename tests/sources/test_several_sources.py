"""Several sources feeding one frame loop (edged.sources.cameras): real mp4 files decoded by OpenCV, one source
whose file does not exist. Frames are taken in turn, a capped source keeps to its cap, a dead source is reported
and never holds the others up; the config names a bad key."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from conftest import write_video

from edged.config import Config, load_config
from edged.errors import ConfigError
from edged.sources import open_source
from edged.sources.cameras import Cameras


def _video(path, shade: int) -> str:
    rng = np.random.default_rng(shade)
    frames = [np.clip(rng.normal(shade, 20, (96, 128, 3)), 0, 255).astype(np.uint8) for _ in range(30)]
    return write_video(path, frames, fps=30)


def _config(tmp_path, extra: str = "") -> Config:
    front, yard = _video(tmp_path / "front.mp4", 60), _video(tmp_path / "yard.mp4", 190)
    text = f"""
[[sources]]
name = "front"
uri = "{front}"
realtime = false
[[sources]]
name = "yard"
uri = "{yard}"
realtime = false
[[sources]]
name = "garage"
uri = "{tmp_path / 'missing.mp4'}"
reconnect_min_s = 0.2
reconnect_max_s = 0.4
{extra}
"""
    (tmp_path / "edged.toml").write_text(text)
    return load_config(tmp_path / "edged.toml")


def _serve(cameras: Cameras, stop: threading.Event, seconds: float, work_s: float = 0.01) -> list[str]:
    """The frame loop's side: take frames for `seconds`, each costing `work_s` (an inference); their sources."""
    seen = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        frame = cameras.get(0.25)
        if frame is not None:
            seen.append(frame.source)
            stop.wait(work_s)
    return seen


def test_sources_are_taken_in_turn_and_a_dead_one_holds_up_nobody(tmp_path):
    cfg = _config(tmp_path)
    stop = threading.Event()
    cameras = Cameras(cfg.cameras, open_source, stop)
    cameras.start()
    try:
        seen = _serve(cameras, stop, 2.0)
        assert cameras.grabbers["garage"].health == "camera_lost"
        assert "garage" in cameras.health and "missing.mp4" in cameras.error
        front, yard = seen.count("front"), seen.count("yard")
        assert front > 30 and yard > 30, (front, yard)
        assert min(front, yard) / max(front, yard) >= 0.9, (front, yard)  # each its fair share
        # in turn: the decoders keep up with the loop, so a source is rarely taken twice in a row
        repeats = sum(a == b for a, b in zip(seen, seen[1:]))
        assert repeats <= len(seen) * 0.2, (repeats, len(seen))
        assert cameras.grabbers["garage"].reconnects == 0 and cameras.taken["garage"] == 0
    finally:
        stop.set()
        cameras.join()


def test_a_capped_source_keeps_to_its_cap_and_the_other_gets_the_rest(tmp_path):
    cfg = _config(tmp_path)
    cfg = cfg.model_copy(update={"sources": [cfg.sources[0].model_copy(update={"max_fps": 10.0}), cfg.sources[1]]})
    stop = threading.Event()
    cameras = Cameras(cfg.cameras, open_source, stop)
    cameras.start()
    try:
        seen = _serve(cameras, stop, 2.0)
        assert 15 <= seen.count("front") <= 22, seen.count("front")  # 10 a second
        assert seen.count("yard") > 3 * seen.count("front")
    finally:
        stop.set()
        cameras.join()


def test_one_source_is_served_as_before_and_named_sources_validate(tmp_path):
    single = Config()
    assert [c.name for c in single.cameras] == [""]
    with pytest.raises(ConfigError, match=r"sources\.1\.name|sources.*name"):
        (tmp_path / "bad.toml").write_text('[[sources]]\nname = "a"\n[[sources]]\nname = "../x"\n')
        load_config(tmp_path / "bad.toml")
    (tmp_path / "both.toml").write_text('[source]\nuri = "0"\n[[sources]]\nname = "a"\n')
    with pytest.raises(ConfigError, match="not both"):
        load_config(tmp_path / "both.toml")
    (tmp_path / "twice.toml").write_text('[[sources]]\nname = "a"\n[[sources]]\nname = "a"\n')
    with pytest.raises(ConfigError, match="unique"):
        load_config(tmp_path / "twice.toml")
    (tmp_path / "regions.toml").write_text('[[sources]]\nname = "a"\n[[regions]]\nname = "r"\nbox = [0, 0, 1, 1]\n')
    with pytest.raises(ConfigError, match=r"sources\.regions"):
        load_config(tmp_path / "regions.toml")
    cfg = _config(tmp_path, '[sources.gate]\nmode = "always"\n')  # the garage's own gate
    assert cfg.camera("yard").source.uri.endswith("yard.mp4")
    assert cfg.camera("yard").gate.mode == "motion" and cfg.camera("garage").gate.mode == "always"
    with pytest.raises(ConfigError, match="no source 'shed'; configured: front, yard, garage"):
        cfg.camera("shed")
