"""What the command line tells matches what happens (issue 27, the small ones)."""

from __future__ import annotations

import importlib.util
import json
import time

from conftest import write_config

from edged.cli import main
from edged.cli.common import progress_line
from edged.config import MqttConfig
from edged.mqtt.client import make_client


def test_capture_progress_reads_as_a_sentence():
    line = progress_line({"label": "mug", "stored": 10, "count": 20, "distinct": 4, "near_copies": 6, "seconds": 1.2})
    assert line == "capture: mug 10/20 (4 distinct)"
    assert progress_line({"phase": "auto", "step": "numpy head serving"}) == "auto: numpy head serving"


def test_config_check_refuses_the_teach_page_without_aiohttp(tmp_path, capsys, monkeypatch):
    cfg = write_config(tmp_path / "c.toml", "[web]\nenabled = true\n")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "aiohttp" else real(name, *a))
    assert main(["config", "check", str(cfg)]) != 0
    assert "web.enabled: the teach page needs aiohttp" in capsys.readouterr().err


def _retain_status(broker, device: str, state: str) -> None:
    """A device's retained status on the broker, as its daemon (or its last will) leaves it."""
    client = make_client(MqttConfig(port=broker.port), f"status-of-{device}")
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    client.publish(f"edged/{device}/status", json.dumps({"state": state}), qos=1, retain=True).wait_for_publish(5)
    client.loop_stop()
    client.disconnect()


def test_cmd_to_an_offline_or_unknown_device_says_so_at_once(broker, tmp_path, capsys):
    """Offline: refused at once. Never seen (issue 33, 10: it waited 600 s): refused within seconds, naming the
    devices the broker knows."""
    _retain_status(broker, "gone", "offline")
    _retain_status(broker, "porch", "online")
    for device, said in (("gone", "device 'gone' is offline"), ("ghost", "no device 'ghost'")):
        cfg = write_config(tmp_path / f"{device}.toml", f'device = "{device}"\n[mqtt]\nport = {broker.port}\n')
        started = time.monotonic()
        assert main(["cmd", "--config", str(cfg), "--timeout", "600", "status"]) == 3
        assert time.monotonic() - started < 8
        err = capsys.readouterr().err
        assert said in err, err
    assert "porch (online)" in err and "gone (offline)" in err, err


def test_cmd_refuses_a_misspelt_command_before_sending(tmp_path, capsys):
    """Issue 33, 9: `captur` waited ten minutes; refused here, naming the known commands (no broker is reached)."""
    cfg = write_config(tmp_path / "c.toml", 'device = "desk"\n[mqtt]\nport = 9\n')
    started = time.monotonic()
    assert main(["cmd", "--config", str(cfg), "captur", "--label", "mug"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'captur'" in err and "capture" in err and time.monotonic() - started < 5
    assert main(["cmd", "--config", str(cfg), "capture", "--label", "unknown"]) == 2
    assert "reserved" in capsys.readouterr().err




def test_talking_to_a_daemon_loads_no_daemon_opencv_or_numpy():
    """Issue 38, 3: `edged cmd` and `edged status` started in 25 s on an emulated Pi, most of it importing the daemon,
    OpenCV and TensorFlow. They load their own group of commands alone (0.33 s here, `python -X importtime`)."""
    import subprocess
    import sys

    code = ("import sys\nfrom edged.cli.main import main\n"
            "main(['status', '--config', '/dev/null', '--timeout', '0.1'])\n"
            "print(sorted(m for m in ('cv2', 'numpy', 'tensorflow', 'edged.daemon.daemon', 'edged.serve.learning') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip().splitlines()[-1] == "[]", (out.stdout, out.stderr)
