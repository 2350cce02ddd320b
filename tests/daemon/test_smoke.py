"""The one end-to-end path the quick run keeps (`python -m pytest -q`): a daemon subprocess on a real broker is
taught by capture, predicts, trains a classifier, is restarted and still serves what it learned."""

from __future__ import annotations

import json

from conftest import backbone_settings, toml_config, write_config

SOURCE = "synthetic:shape={shape},clutter=2,frames=8"


def _daemon(daemons, tmp_path, state, port, source, name):
    cfg = write_config(tmp_path / f"{name}.toml", toml_config(state, port, source, backbone_settings("none"), "smoke",
                                                              '\n[heads]\nactive = ["knn", "classifier"]\n'))
    return daemons(cfg, tmp_path / f"{name}.log")


def test_capture_predict_train_restart_still_serving(broker, probe, daemons, make_state, tmp_path):
    state = make_state(backbone_settings("none"))
    for shape in ("triangle", "rectangle"):
        d = _daemon(daemons, tmp_path, state, broker.port, SOURCE.format(shape=shape), f"teach-{shape}")
        probe.wait_online("smoke")
        reply = probe.request("smoke", "capture", {"label": shape, "count": 8, "interval_ms": 0}, timeout=60)
        assert reply["ok"] and reply["result"]["stored"] == 8, reply
        knn = json.loads(probe.wait_for(lambda t, p, r: t == "edged/smoke/prediction/knn", 20)[1])
        assert knn["label"] in ("triangle", "rectangle", "unknown")
        if shape == "rectangle":
            trained = probe.request("smoke", "train", {"head": "classifier", "mode": "frozen", "id": "t1"}, timeout=120)
            assert trained["ok"] and trained["result"]["version"] == "v1", trained
            # the search over learners follows as a job; what serves after it (v1, or v2 if it won) is kept
            job = json.loads(probe.wait_for(lambda t, p, r: t == "edged/smoke/job" and json.loads(p)["final"]
                                            and json.loads(p)["for"] == "t1", 120)[1])
            assert job["ok"], job
            kept = job["result"]["version"]
        assert d.stop() == 0, d.output()
        probe.drain()

    d = _daemon(daemons, tmp_path, state, broker.port, SOURCE.format(shape="triangle"), "restart")
    status = probe.wait_online("smoke")
    assert status["examples"] == {"triangle": 8, "rectangle": 8}
    assert status["heads"]["classifier"]["version"] == kept and status["tensorflow_imported"] is False
    served = json.loads(probe.wait_for(lambda t, p, r: t == "edged/smoke/prediction/classifier", 20)[1])
    assert set(served["scores"]) == {"triangle", "rectangle"}
    assert d.stop() == 0
