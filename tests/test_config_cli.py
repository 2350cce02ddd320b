"""Config validation and the CLI's config check, doctor and heads commands."""

import subprocess
import sys

import pytest

from edged.config import ConfigError, load_config


def _edged(*args, **kw):
    return subprocess.run([sys.executable, "-m", "edged", *args], capture_output=True, text=True, timeout=120, **kw)


def test_config_check_misspelt_key_names_it(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('device = "cam"\n[mqtt]\nhost = "127.0.0.1"\nprot = 1884\n')
    result = _edged("config", "check", str(cfg))
    assert result.returncode != 0
    assert "mqtt.prot" in result.stderr and "unknown key" in result.stderr
    assert str(cfg) in result.stderr


def test_config_check_bad_value_names_path(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[backbone]\nalpha = 7\n[heads.knn]\nk = 0\n')
    result = _edged("config", "check", str(cfg))
    assert result.returncode == 2
    assert "backbone.alpha" in result.stderr and "heads.knn.k" in result.stderr


def test_config_check_good_file_and_example(tmp_path):
    result = _edged("config", "check", "systemd/edged.example.toml")
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def test_overrides_are_typed_and_validated(tmp_path):
    cfg = load_config(None, ["mqtt.port=1999", "source.uri=rtsp://cam/stream", "heads.active=['knn']"])
    assert cfg.mqtt.port == 1999 and cfg.source.uri == "rtsp://cam/stream" and cfg.heads.active == ["knn"]
    with pytest.raises(ConfigError, match="mqtt.port"):
        load_config(None, ["mqtt.port=0"])
    with pytest.raises(ConfigError, match="device"):
        load_config(None, ["device='a/b'"])


def test_broken_toml_and_missing_file(tmp_path):
    bad = tmp_path / "x.toml"
    bad.write_text("device = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.toml")


def test_heads_lists_builtin_heads():
    result = _edged("heads")
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split()[1] for line in result.stdout.splitlines()}
    assert rows == {"boxes": "boxes", "classifier": "classes", "knn": "classes"}


def test_doctor_reports_parts(broker, tmp_path):
    result = _edged("doctor", "--set", f"mqtt.port={broker.port}", "--set", f"state_dir='{tmp_path}'")
    out = result.stdout
    assert "interpreter" in out and "litert" in out
    assert "[ok  ] broker" in out
    assert "[ok  ] source" in out and "synthetic" in out
    assert "tensorflow" in out
    assert result.returncode == 0, out + result.stderr
    down = _edged("doctor", "--set", "mqtt.port=1", "--set", "source.uri='/no/such/video.mp4'")
    assert down.returncode == 1
    assert "[FAIL] broker" in down.stdout and "[FAIL] source" in down.stdout
