"""The unit files pass systemd's own checks (no running systemd needed)."""

import re
import shutil
import subprocess

import pytest
from conftest import ROOT

analyze = shutil.which("systemd-analyze")
pytestmark = pytest.mark.skipif(analyze is None, reason="systemd-analyze not installed")


def _localised(tmp_path, name):
    """The unit with ExecStart pointing at this machine's `edged`."""
    edged = shutil.which("edged")
    assert edged, "edged console script not installed"
    text = (ROOT / "edged" / "cli" / "systemd" / name).read_text().replace("/opt/edged/bin/edged", edged)
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", ["edged.service", "edged@.service"])
def test_unit_verifies(tmp_path, name):
    unit = _localised(tmp_path, name)
    target = unit if "@" not in name else unit.with_name("edged@cam1.service")
    if target != unit:
        unit.rename(target)
    result = subprocess.run([analyze, "verify", str(target)], capture_output=True, text=True)
    problems = [l for l in (result.stdout + result.stderr).splitlines() if target.name in l or "edged" in l]
    assert result.returncode == 0 and problems == [], result.stdout + result.stderr


def test_unit_is_notify_with_watchdog_and_hardened(tmp_path):
    unit = _localised(tmp_path, "edged.service")
    text = unit.read_text()
    for line in ("Type=notify", "Restart=on-failure", "NoNewPrivileges=yes", "ProtectSystem=strict",
                 "PrivateTmp=yes", "SupplementaryGroups=video", "StateDirectory=edged"):
        assert line in text
    assert re.search(r"^WatchdogSec=\d+", text, re.M)
    result = subprocess.run([analyze, "security", "--offline=yes", str(unit)], capture_output=True, text=True)
    m = re.search(r"Overall exposure level for edged.service: ([\d.]+)", result.stdout + result.stderr)
    assert m, result.stdout + result.stderr
    assert float(m.group(1)) <= 2.0, result.stdout  # measured 1.7 "OK"
    for line in ("DeviceAllow=char-video4linux rw", "DeviceAllow=char-alsa rw",
                 "SupplementaryGroups=video audio"):  # the camera and the microphone stay reachable
        assert line in text
