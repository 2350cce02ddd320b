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


def test_cmd_to_an_offline_device_says_so_at_once(broker, tmp_path, capsys):
    client = make_client(MqttConfig(port=broker.port), "offline-maker")
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    client.publish("edged/gone/status", json.dumps({"state": "offline"}), qos=1, retain=True).wait_for_publish(5)
    client.loop_stop()
    client.disconnect()
    cfg = write_config(tmp_path / "c.toml", f'device = "gone"\n[mqtt]\nport = {broker.port}\n')
    started = time.monotonic()
    assert main(["cmd", "--config", str(cfg), "--timeout", "30", "status"]) == 3
    assert time.monotonic() - started < 5
    assert "device 'gone' is offline" in capsys.readouterr().err


def test_cmd_refuses_a_misspelt_command_before_sending(tmp_path, capsys):
    """Issue 33, 9: `captur` waited ten minutes; refused here, naming the known commands (no broker is reached)."""
    cfg = write_config(tmp_path / "c.toml", 'device = "desk"\n[mqtt]\nport = 9\n')
    started = time.monotonic()
    assert main(["cmd", "--config", str(cfg), "captur", "--label", "mug"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'captur'" in err and "capture" in err and time.monotonic() - started < 5
    assert main(["cmd", "--config", str(cfg), "capture", "--label", "unknown"]) == 2
    assert "reserved" in capsys.readouterr().err


def test_cmd_to_a_device_that_never_existed_names_those_there(broker, tmp_path, capsys):
    """Issue 33, 10: no retained status at all: refused within seconds, naming the devices the broker knows."""
    client = make_client(MqttConfig(port=broker.port), "status-maker")
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    client.publish("edged/porch/status", json.dumps({"state": "online"}), qos=1, retain=True).wait_for_publish(5)
    client.loop_stop()
    client.disconnect()
    cfg = write_config(tmp_path / "c.toml", f'device = "ghost"\n[mqtt]\nport = {broker.port}\n')
    started = time.monotonic()
    assert main(["cmd", "--config", str(cfg), "--timeout", "600", "status"]) == 3
    assert time.monotonic() - started < 8
    err = capsys.readouterr().err
    assert "no device 'ghost'" in err and "porch (online)" in err, err
