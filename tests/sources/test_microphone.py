"""A microphone through the real PortAudio and ALSA: a device defined in ALSA's config (its `file` plugin reads
the "microphone's" sound from a raw file) is not there when the daemon's grabber starts, is plugged in while it
retries, and is then found and heard. Runs in a child process whose HOME holds the ALSA config, so that this
process's PortAudio is untouched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

try:
    import sounddevice  # noqa: F401
except (ImportError, OSError) as e:  # OSError: PortAudio itself (Debian's libportaudio2) is missing
    pytest.skip(f"the audio extra (sounddevice and Debian's libportaudio2) is not installed: {e}", allow_module_level=True)

CHILD = textwrap.dedent('''
    import json, sys, threading, time
    from pathlib import Path
    from edged.config import SourceConfig
    from edged.sources import FrameGrabber, open_source

    home = Path(sys.argv[1])
    cfg = SourceConfig(uri="audio:edgedmic", reconnect_min_s=0.05, reconnect_max_s=0.2)
    stop = threading.Event()
    grabber = FrameGrabber(open_source(cfg), cfg, stop, None)
    grabber.start()
    deadline = time.monotonic() + 20
    while grabber.state != "camera_lost" and time.monotonic() < deadline:
        stop.wait(0.02)
    lost = {"state": grabber.state, "error": grabber.error}
    (home / ".asoundrc").write_text((home / "asoundrc").read_text())  # the microphone is plugged in
    frames = []
    while len(frames) < 3 and time.monotonic() < deadline:
        frame = grabber.get(0.5)
        if frame is not None:
            frames.append({"loud": bool(frame.sound.loud), "peak": float(abs(frame.sound.samples).max()), "shape": list(frame.image.shape)})
    print(json.dumps({"lost": lost, "frames": frames, "state": grabber.state}))
    stop.set()
    grabber.join()
''')


def test_a_microphone_plugged_in_while_the_grabber_retries_is_found_and_heard(tmp_path):
    t = np.arange(16_000 * 3) / 16_000
    tone = np.random.default_rng(0).normal(0, 100, t.size)
    tone[16_000:24_000] += 8000 * np.sin(2 * np.pi * 440 * t[:8000])
    tone.astype(np.int16).tofile(tmp_path / "mic.raw")
    (tmp_path / "asoundrc").write_text(textwrap.dedent(f'''
        pcm.edgedmic {{
            type file
            slave.pcm "null"
            file "/dev/null"
            infile "{tmp_path / 'mic.raw'}"
            format "raw"
            hint {{ show on description "edged test microphone" }}
        }}
    '''))
    env = dict(os.environ, HOME=str(tmp_path))
    env.pop("ALSA_CONFIG_PATH", None)
    out = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path)], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["lost"]["state"] == "camera_lost" and "cannot open microphone edgedmic" in seen["lost"]["error"], seen
    assert len(seen["frames"]) == 3 and seen["state"] == "ok", seen
    assert all(f["shape"] == [128, 128, 3] for f in seen["frames"])
    assert max(f["peak"] for f in seen["frames"]) > 4000, seen  # the tone the microphone heard
