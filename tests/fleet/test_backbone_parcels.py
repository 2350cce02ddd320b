"""Issue 38, 1: a board without TensorFlow, without a converted backbone and without a TFLite extractor serves the
default config with a backbone a fleet machine that has TensorFlow built (`edged backbone build --fleet`), taken
from the broker once its origin checks out."""

from __future__ import annotations

import io
import json
import tarfile

import pytest
from conftest import WEIGHTS_025, backbone_settings, edged_cli, enrol, needs_weights, toml_config, without_tensorflow
from conftest import write_config

from edged.config import BackboneConfig
from edged.fleet.backbones import KIND, bundle, served_as, take
from edged.fleet.parcels import ShareError, pack
from edged.mqtt.topics import FleetTopics
from edged.state.backbones import backbone_id, lookup_backbone

RUNG = BackboneConfig(alpha=0.25, input_size=128)  # as a board without the weight file computes it


def _built(make_state):
    settings = backbone_settings(str(WEIGHTS_025), input_size=128)
    state = make_state(settings, name="laptop")
    return state, lookup_backbone(BackboneConfig(**settings), state)


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@needs_weights
def test_a_backbone_bundle_is_taken_only_as_what_it_is(make_state, tmp_path):
    _, info = _built(make_state)
    assert backbone_id(RUNG) in served_as(BackboneConfig(alpha=0.25, input_size=128, weights=str(WEIGHTS_025)))
    board = tmp_path / "board"
    bid = backbone_id(RUNG)
    with tarfile.open(fileobj=io.BytesIO(bundle(info))) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    assert set(files) == {"backbone.tflite", "backbone.json", "backbone-int8.tflite"}
    meta = json.loads(files["backbone.json"])

    refusals = {
        "another id": (bundle(info), backbone_id(BackboneConfig(alpha=0.5, input_size=160)), "this board computes"),
        "an extra file": (_tar({**files, "run.json": b"{}"}), bid, "holds"),
        "no model": (_tar({"backbone.json": files["backbone.json"]}), bid, "holds"),
        "a model of another size": (_tar({**files, "backbone.json": json.dumps({**meta, "input_size": 224}).encode()}),
                                    bid, "not the"),
        "a lie about its output": (_tar({**files, "backbone.json": json.dumps({**meta, "output_dim": 7}).encode()}),
                                   bid, "gives 256 values, not the 128 and 7"),
        "not a model": (_tar({**files, "backbone.tflite": b"TFL3" + b"\0" * 64}), bid, "backbone"),
    }
    for what, (data, as_id, said) in refusals.items():
        with pytest.raises(ShareError) as refused:
            take(data, RUNG, as_id, board, 64 << 20)
        assert said in str(refused.value), (what, str(refused.value))
        assert lookup_backbone(RUNG, board) is None, what
        assert not list((board / "backbones").glob(".incoming-*")), what

    taken = take(bundle(info), RUNG, bid, board, 64 << 20)
    again = lookup_backbone(RUNG, board)
    assert taken.id == again.id == bid and again.path == str(board / "backbones" / bid / "backbone.tflite")
    assert (again.input_size, again.output_dim) == (128, info.output_dim)


@pytest.mark.heavy
@needs_weights
def test_a_board_without_tensorflow_serves_the_default_config_on_a_backbone_its_fleet_built(
        broker, probe, daemons, make_state, fleet_admin, tmp_path):
    laptop_state, _ = _built(make_state)
    enrol(fleet_admin, laptop_state, "laptop")
    laptop = write_config(tmp_path / "laptop.toml", toml_config(laptop_state, broker.port, "synthetic:", {}, "laptop"))
    out = edged_cli("backbone", "build", "--fleet", "--rung", "0.25/128", "--config", str(laptop), timeout=600)
    assert out.returncode == 0, out.stderr
    assert f"published {backbone_id(RUNG)}" in out.stdout and "(signed)" in out.stdout, out.stdout

    # someone outside the fleet offers a backbone under the same id first: refused, never served
    rogue = pack(FleetTopics("edged").publisher("0rogue"), KIND, backbone_id(RUNG), b"not a model",
                 {"device": "0rogue", "ids": [backbone_id(RUNG)]}, 1024, 1 << 20)
    for topic, payload in rogue:
        probe.client.publish(topic, payload, qos=1, retain=True).wait_for_publish(5)

    board_state = tmp_path / "board"
    enrol(fleet_admin, board_state, "board")
    weights = tmp_path / "no-weights"
    weights.mkdir()
    board = write_config(tmp_path / "board.toml", toml_config(board_state, broker.port, "synthetic:clutter=2", {}, "board"))
    env = {**without_tensorflow(tmp_path / "site"), "EDGED_WEIGHTS_DIR": str(weights)}
    d = daemons(board, tmp_path / "board.log", env)
    status = probe.wait_online("board", 180)
    assert status["tensorflow_imported"] is False
    choice = status["backbone_choice"]
    assert (choice["alpha"], choice["input_size"], choice["built_by"]) == (0.25, 128, "laptop"), choice
    assert "built by laptop of the fleet" in choice["reason"], choice
    for label in ("a", "b"):
        reply = probe.request("board", "capture", {"label": label, "count": 3, "interval_ms": 0}, timeout=60)
        assert reply["ok"], reply
    pred = json.loads(probe.wait_for(lambda t, p, r: t == "edged/board/prediction/knn", 30)[1])
    assert pred["label"] in ("a", "b", "unknown")
    assert d.stop() == 0
    log = (tmp_path / "board.log").read_text()
    assert "0rogue" in log and "refused" in log, log[-3000:]
