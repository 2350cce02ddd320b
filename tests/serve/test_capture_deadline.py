"""A capture on a source that is lost ends at once with an error (what it stored is kept), and one waiting for frames
can be cancelled (issue 27, 1; issue 33, 11)."""

from __future__ import annotations

import json
import time

from conftest import backbone_settings, edged_cli, write_config

DEVICE = "deaf"


def _config(state, port: int, missing: str, settings: dict) -> str:
    bb = "\n".join(f"{k} = {json.dumps(v)}" for k, v in settings.items())
    return f"""
device = "{DEVICE}"
state_dir = "{state}"
[[sources]]
name = "dead"
uri = "{missing}"
reconnect_min_s = 0.5
reconnect_max_s = 1
[[sources]]
name = "live"
uri = "synthetic"
fps = 10
[backbone]
{bb}
[mqtt]
host = "127.0.0.1"
port = {port}
"""


def test_a_capture_on_a_lost_source_ends_at_once_and_cancel_ends_a_waiting_one(broker, probe, daemons, make_state,
                                                                                 tmp_path):
    settings = backbone_settings("none")
    cfg = write_config(tmp_path / "c.toml", _config(make_state(settings), broker.port,
                                                    str(tmp_path / "no-such-video.mp4"), settings))
    d = daemons(cfg, tmp_path / "d.log")
    probe.wait_online(DEVICE)
    started = time.monotonic()
    reply = probe.request(DEVICE, "capture", {"label": "mug", "count": 3, "source": "dead", "timeout_s": 120},
                          timeout=20)
    assert not reply["ok"] and "source 'dead' is camera_lost" in reply["error"], reply
    assert "stopped after 0 of 3" in reply["error"] and time.monotonic() - started < 6
    assert probe.request(DEVICE, "status", {})["result"]["capture"] is None

    # the CLI says so at once and exits non-zero
    started = time.monotonic()
    out = edged_cli("cmd", "--config", str(cfg), "capture", "--label", "mug", "--count", "3", "--source", "dead", timeout=60)
    assert out.returncode == 1 and "camera_lost" in out.stderr and time.monotonic() - started < 15, out

    # a capture waiting for its next frame (due in ten minutes): cancel ends it at once, and the next may start
    probe.send(DEVICE, "capture", {"label": "mug", "count": 3, "interval_ms": 600_000, "source": "live", "id": "long"})
    probe.wait_for(lambda t, p, r: t == f"edged/{DEVICE}/status" and json.loads(p).get("capture") is not None, 10)
    assert probe.request(DEVICE, "cancel", {})["ok"]
    cancelled = probe.wait_for(lambda t, p, r: t == f"edged/{DEVICE}/reply/capture" and b'"long"' in p, 10)
    assert b"cancelled after" in cancelled[1] and b"of 3" in cancelled[1]
    again = probe.request(DEVICE, "capture", {"label": "mug", "count": 1, "source": "live"}, timeout=10)
    assert again["ok"] and again["result"]["stored"] == 1
    assert d.stop() == 0
