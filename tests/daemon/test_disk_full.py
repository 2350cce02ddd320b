"""Disk full: the state directory on a small tmpfs. Capture until nothing fits; the reply names the cause, what was
stored stays intact, serving goes on, and capture works again once space is freed. Also the example caps."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess

import cv2
import pytest
from conftest import backbone_settings, prebuilt_backbones, toml_config, write_config

DEVICE = "cam-full"


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_capture_until_the_disk_is_full_then_again_after_freeing_space(broker, probe, daemons, backbone_root,
                                                                        small_disk, tmp_path):
    settings = backbone_settings("none", input_size=96)
    state = small_disk / "state"
    shutil.copytree(prebuilt_backbones(backbone_root, settings) / "backbones", state / "backbones")
    free = shutil.disk_usage(small_disk).free
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * max(free - 1_200_000, 0))  # leave room for a few hundred frames of 640x480 clutter
    text = toml_config(state, broker.port, "synthetic:clutter=10", settings, DEVICE,
                       extra='\n[runtime]\nprecision = "float32"\n')
    d = daemons(write_config(tmp_path / "full.toml", text), tmp_path / "full.log")
    probe.wait_online(DEVICE, timeout=60)

    reply = probe.request(DEVICE, "capture", {"label": "fill", "count": 10_000, "interval_ms": 0}, timeout=120)
    assert reply["ok"] is False and "disk full" in reply["error"] and "no space left" in reply["error"], reply
    status = probe.request(DEVICE, "status", {})["result"]
    stored = status["examples"].get("fill", 0)
    assert stored > 0 and status["store"]["free_bytes"] < 200_000
    probe.drain()
    probe.wait_for(lambda t, p, r: t == f"edged/{DEVICE}/prediction/knn", 10)  # serving goes on
    again = probe.request(DEVICE, "capture", {"label": "more", "count": 5, "interval_ms": 0}, timeout=60)
    assert again["ok"] is False and "disk full" in again["error"]

    filler.unlink()
    again = probe.request(DEVICE, "capture", {"label": "more", "count": 5, "interval_ms": 0}, timeout=60)
    assert again["ok"] and again["result"]["stored"] == 5, again
    listed = probe.request(DEVICE, "status", {})["result"]["examples"]
    assert listed == {"fill": stored, "more": 5}
    assert d.stop() == 0

    db = sqlite3.connect(state / "store" / "examples.db")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    frames = [r[0] for r in db.execute("SELECT frame FROM examples")]
    db.close()
    assert len(frames) == stored + 5
    assert all(cv2.imread(str(state / "store" / "frames" / f)) is not None for f in frames)
    on_disk = {p.name for p in (state / "store" / "frames").iterdir()}
    assert on_disk == set(frames), "temp or orphan files left behind"


def test_example_caps_prune_the_oldest_and_show_in_status(broker, probe, daemons, make_state, tmp_path):
    settings = backbone_settings("none", input_size=96)
    text = toml_config(make_state(settings), broker.port, "synthetic:clutter=2", settings, DEVICE,
                       extra='\n[capture]\nmax_per_label = 6\nmax_total = 10\n')
    d = daemons(write_config(tmp_path / "caps.toml", text), tmp_path / "caps.log")
    probe.wait_online(DEVICE, timeout=60)
    first = probe.request(DEVICE, "capture", {"label": "a", "count": 4, "interval_ms": 0})
    ids_before = {e["id"] for e in probe.request(DEVICE, "examples", {"label": "a"})["result"]["examples"]}
    second = probe.request(DEVICE, "capture", {"label": "a", "count": 4, "interval_ms": 0})
    assert first["ok"] and second["ok"] and second["result"]["pruned_oldest"] == 2
    kept = {e["id"] for e in probe.request(DEVICE, "examples", {"label": "a"})["result"]["examples"]}
    assert len(kept) == 6 and min(ids_before) not in kept and max(ids_before) in kept
    assert probe.request(DEVICE, "capture", {"label": "b", "count": 6, "interval_ms": 0})["ok"]
    status = probe.request(DEVICE, "status", {})["result"]
    assert sum(status["examples"].values()) == 10 and status["examples"]["b"] == 6
    assert status["store"]["max_per_label"] == 6 and status["store"]["max_total"] == 10
    assert d.stop() == 0
