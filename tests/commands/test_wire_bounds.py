"""Small doors from the wire: names and integers bounded where they are parsed, the opt-out of signatures warned
about, and a TensorFlow worker that does not outlive a killed daemon."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import ROOT, wait_until, write_config

from edged.cli import main
from edged.commands.schema import parse
from edged.config import load_config
from edged.errors import CommandError, ConfigError


@pytest.mark.parametrize("name,body,field", [
    ("delete", b'{"ids": [99999999999999999999999]}', "delete.ids.0"),
    ("relabel", b'{"ids": [-1], "label": "cup"}', "relabel.ids.0"),
    ("examples", b'{"offset": 99999999999999999999999}', "examples.offset"),
    ("capture", b'{"label": "cat\\n"}', "capture.label"),
    ("forget", b'{"label": "cat\\n"}', "forget.label"),
])
def test_integers_and_labels_are_bounded_where_they_are_parsed(name, body, field):
    with pytest.raises(CommandError, match=field):
        parse(name, body)


@pytest.mark.parametrize("device", ["..", "fleet", "a/b", "cat\n", "x" * 65, "-lead"])
def test_device_names_are_one_plain_topic_level(device):
    with pytest.raises(ConfigError, match="device"):
        load_config(None, [f"device={device!r}"])


def test_config_check_warns_about_trusting_the_broker(tmp_path, capsys):
    cfg = write_config(tmp_path / "c.toml", '[fleet]\ntrust = "broker"\n')
    assert main(["config", "check", str(cfg)]) == 0
    assert 'fleet.trust = "broker"' in capsys.readouterr().err


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"


def test_the_tensorflow_worker_does_not_outlive_a_killed_daemon():
    """kill -9 of the daemon, even while its worker is still importing TensorFlow: the worker goes too."""
    script = ("import threading, time\n"
              "from edged.serve.worker_client import TrainerWorker\n"
              "w = TrainerWorker(600)\n"
              "threading.Thread(target=w._start, daemon=True).start()\n"
              "while w.proc is None: time.sleep(0.01)\n"
              "print(w.proc.pid, flush=True)\ntime.sleep(300)\n")
    daemon = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    worker = int(daemon.stdout.readline())
    assert _state(worker) not in ("gone", "Z")
    daemon.kill()
    daemon.wait(10)
    wait_until(lambda: _state(worker) in ("gone", "Z"), 30, what=lambda: f"the worker still {_state(worker)!r}",
               interval=0.1)
    try:
        os.waitpid(worker, os.WNOHANG)
    except ChildProcessError:
        pass
