"""Config validation and the CLI's config check, doctor and heads commands."""


import pytest
from conftest import edged_cli

from edged.config import load_config
from edged.errors import ConfigError


def test_config_check_misspelt_key_names_it(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('device = "cam"\n[mqtt]\nhost = "127.0.0.1"\nprot = 1884\n')
    result = edged_cli("config", "check", str(cfg))
    assert result.returncode != 0
    assert "mqtt.prot" in result.stderr and "unknown key" in result.stderr
    assert str(cfg) in result.stderr


def test_config_check_bad_value_names_path(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[backbone]\nalpha = 7\n[heads.knn]\nk = 0\n')
    result = edged_cli("config", "check", str(cfg))
    assert result.returncode == 2
    assert "backbone.alpha" in result.stderr and "heads.knn.k" in result.stderr


def test_config_check_good_file_and_example(tmp_path):
    result = edged_cli("config", "check", "edged/cli/systemd/edged.example.toml")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("edged/cli/systemd/edged.example.toml: ok (device 'kitchen-pi'"), result.stdout


def test_overrides_are_typed_and_validated(tmp_path):
    cfg = load_config(None, ["mqtt.port=1999", "source.uri=rtsp://cam/stream", "heads.active=['knn']"])
    assert cfg.mqtt.port == 1999 and cfg.source.uri == "rtsp://cam/stream" and cfg.heads.active == ["knn"]
    with pytest.raises(ConfigError, match="mqtt.port"):
        load_config(None, ["mqtt.port=0"])
    with pytest.raises(ConfigError, match="device"):
        load_config(None, ["device='a/b'"])


def test_sound_sources_decide_states_sooner_unless_told(tmp_path):
    assert load_config(None, ["source.uri='kitchen.wav'"]).states.enter == 2  # a short sound is whole in few windows
    assert load_config(None, ["source.uri='audio:'", "states.enter=4"]).states.enter == 4
    assert load_config(None, ["source.uri='0'"]).states.enter == 3
    mixed = ["sources=[{name='door', uri='audio:'}, {name='yard', uri='rtsp://cam/stream'}]"]
    assert load_config(None, mixed).states.enter == 3  # one states setting serves every source


def test_broken_toml_and_missing_file(tmp_path):
    bad = tmp_path / "x.toml"
    bad.write_text("device = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.toml")


def test_heads_lists_builtin_heads():
    result = edged_cli("heads")
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split()[1] for line in result.stdout.splitlines()}
    assert rows == {"boxes": "boxes", "classifier": "classes", "knn": "classes", "objects": "boxes"}


def test_doctor_reports_parts(broker, tmp_path):
    result = edged_cli("doctor", "--set", f"mqtt.port={broker.port}", "--set", f"state_dir='{tmp_path}'")
    out = result.stdout
    assert "interpreter" in out and "litert" in out
    assert "[ok  ] broker" in out
    assert "[ok  ] source" in out and "synthetic" in out
    assert "tensorflow" in out
    assert result.returncode == 0, out + result.stderr
    down = edged_cli("doctor", "--set", "mqtt.port=1", "--set", "source.uri='/no/such/video.mp4'")
    assert down.returncode == 1
    assert "[FAIL] broker" in down.stdout and "[FAIL] source" in down.stdout


def test_doctor_names_a_remembered_tflite_extractor(broker, tmp_path):
    """A board without TensorFlow remembers a TFLite extractor as its choice; doctor crashed on it (`KeyError:
    'alpha'`), found by the arm64 walk-through."""
    import json

    from conftest import EXTRACTOR_U8

    if not EXTRACTOR_U8.is_file():
        pytest.skip("../shared/models absent")
    from edged.state.layout import StateLayout

    memory = StateLayout(tmp_path).backbone_choice
    memory.parent.mkdir(parents=True)
    memory.write_text(json.dumps(
        {"choose": "auto", "tflite": str(EXTRACTOR_U8), "reason": "no MobileNet v1 could be built here"}))
    result = edged_cli("doctor", "--set", f"mqtt.port={broker.port}", "--set", f"state_dir='{tmp_path}'")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stdout + result.stderr
    assert f"TFLite feature extractor {EXTRACTOR_U8}" in result.stdout and "no MobileNet v1 could be built" in result.stdout


@pytest.mark.heavy
def test_collect_predict_import_and_a_running_daemon_picks_up(broker, probe, make_state, daemons, tmp_path):
    """`edged collect` and `edged import` write the store; a serving daemon sees the new examples."""
    import json

    import cv2
    from conftest import RACCOON, backbone_settings, toml_config, write_config

    from edged.sources.synthetic import scene_at

    settings = backbone_settings("none")
    state = make_state(settings)
    cfg = write_config(tmp_path / "c.toml", toml_config(state, broker.port, "synthetic:shape=rectangle,clutter=0",
                                                          settings, "cli1"))
    d = daemons(cfg, tmp_path / "d.log")
    probe.wait_online("cli1")
    out = edged_cli("collect", "--config", str(cfg), "--label", "rect", "--count", "4", "--interval-ms", "0",
                 "--set", "source.uri='synthetic:shape=rectangle,clutter=0'")
    assert out.returncode == 0, out.stderr
    reply = json.loads(out.stdout)
    assert (reply["label"], reply["stored"], reply["examples"]) == ("rect", 4, 4) and "distinct" in reply, reply
    status = probe.wait_for(lambda t, p, r: t == "edged/cli1/status" and json.loads(p)["examples"].get("rect") == 4, 20)
    assert json.loads(status[1])["heads"]["knn"]["ready"]
    probe.wait_for(lambda t, p, r: t == "edged/cli1/prediction/knn" and json.loads(p)["label"] == "rect", 20)
    assert d.stop() == 0

    image = tmp_path / "r.png"
    cv2.imwrite(str(image), scene_at(0, 2, 640, 480, "rectangle", clutter=0).image)
    pred = edged_cli("predict", "--config", str(cfg), str(image), str(tmp_path / "missing.png"))
    lines = [json.loads(l) for l in pred.stdout.splitlines()]
    assert lines[0]["head"] == "knn" and lines[0]["label"] == "rect"
    assert lines[1]["error"] == "cannot read image" and pred.returncode == 1

    if RACCOON.is_dir():
        imp = edged_cli("import", "--config", str(cfg), "voc", str(RACCOON), "--limit", "5")
        assert imp.returncode == 0, imp.stderr
        assert json.loads(imp.stdout)["examples"]["raccoon"] == 5
        from edged.config import BackboneConfig
        from edged.state.backbones import backbone_id
        from edged.state.store import Store

        stored = Store(state / "store").examples(backbone_id(BackboneConfig(**settings)))
        with_boxes = [objs for label, objs in zip(stored.labels, stored.objects) if label == "raccoon"]
        boxes = [b for objs in with_boxes for _, b in objs]
        assert len(with_boxes) == 5 and all(with_boxes) and len(boxes) >= 5
        assert all(0 <= b[0] < b[2] <= 1 and 0 <= b[1] < b[3] <= 1 for b in boxes)
