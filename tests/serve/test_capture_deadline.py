"""A capture on a source that gives no frames ends at its deadline, says so, and can be cancelled (issue 27, 1)."""

from __future__ import annotations

import json
import time

from conftest import backbone_settings, toml_config, write_config


def test_a_capture_without_frames_ends_at_its_deadline_and_cancel_clears_it(broker, probe, daemons, make_state,
                                                                            tmp_path):
    settings = backbone_settings("none")
    missing = tmp_path / "no-such-video.mp4"
    cfg = write_config(tmp_path / "c.toml", toml_config(make_state(settings), broker.port, str(missing), settings,
                                                        "deaf"))
    d = daemons(cfg, tmp_path / "d.log")
    probe.wait_online("deaf")
    started = time.monotonic()
    reply = probe.request("deaf", "capture", {"label": "mug", "count": 3, "timeout_s": 2}, timeout=20)
    took = time.monotonic() - started
    assert reply["ok"] and reply["result"]["stored"] == 0, reply
    assert reply["result"]["source"] == "camera_lost" and "the source is camera_lost" in reply["result"]["note"]
    assert took < 6, took
    assert probe.request("deaf", "status", {})["result"]["capture"] is None

    # a long capture on the dead source: cancel ends it at once, and the next capture may start
    probe.send("deaf", "capture", {"label": "mug", "count": 3, "timeout_s": 600, "id": "long"})
    probe.wait_for(lambda t, p, r: t == "edged/deaf/status" and json.loads(p).get("capture") is not None, 10)
    assert probe.request("deaf", "cancel", {})["ok"]
    cancelled = probe.wait_for(lambda t, p, r: t == "edged/deaf/reply/capture" and b'"long"' in p, 10)
    assert b"cancelled after 0 of 3" in cancelled[1]
    again = probe.request("deaf", "capture", {"label": "mug", "count": 1, "timeout_s": 1}, timeout=10)
    assert again["ok"] and again["result"]["stored"] == 0
    assert d.stop() == 0
