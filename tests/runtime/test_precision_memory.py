"""An int8 twin refused in "auto" is remembered for this machine and that int8 file: later starts serve float at once
instead of measuring again (issue 27, 11). Real backbones and interpreters; the parity verdict is forced."""

from __future__ import annotations

import json
from contextlib import contextmanager

import pytest

from conftest import backbone_settings, state_config
from edged.serve import precision
from edged.serve.stack import ServingStack
from edged.state.backbones import int8_path


@contextmanager
def serving(make_state, *overrides):
    """A config and its serving stack on a random-weights backbone; closed with whichever engine serves by then."""
    settings = backbone_settings("none")
    cfg = state_config(make_state(settings), settings, *overrides)
    stack = ServingStack(cfg)
    try:
        yield cfg, stack
    finally:
        stack.close()


def choose(cfg, stack) -> dict:
    """choose_precision as the daemon calls it; the stack keeps the engine that serves."""
    stack.engine, report = precision.choose_precision(cfg, stack.backbone, stack.engine, stack.store, stack.heads)
    return report


def test_a_refusal_is_remembered_per_machine_and_int8_file(make_state, monkeypatch):
    with serving(make_state) as (cfg, stack):
        int8 = int8_path(stack.backbone)
        assert int8.is_file()
        bad = {"cosine": 0.5, "agreement": {}}
        monkeypatch.setattr(precision, "parity", lambda *a: dict(bad))
        report = choose(cfg, stack)
        assert report["precision"] == "float32" and "int8 parity failed (cosine 0.5" in report["reason"]
        assert precision.refusal_path(int8).is_file()

        def must_not_measure(*a):
            raise AssertionError("measured again")

        monkeypatch.setattr(precision, "parity", must_not_measure)
        again = choose(cfg, stack)
        assert again["precision"] == "float32" and "int8 was refused on this machine before" in again["reason"]
        assert "int8 parity failed" in again["reason"] and "int8-refused.json" in again["reason"]

        # another machine's (or another int8 file's) refusal does not count
        record = json.loads(precision.refusal_path(int8).read_text())
        for changed in ({"machine": "riscv64 someone else's board"}, {"int8_sha256": "0" * 64}):
            precision.refusal_path(int8).write_text(json.dumps({**record, **changed}))
            assert precision.remembered_refusal(int8, cfg.runtime.interpreter) is None


@pytest.mark.parametrize("forced", ["int8", "float32"])
def test_a_forced_precision_is_not_remembered(make_state, monkeypatch, forced):
    with serving(make_state, f"runtime.precision='{forced}'") as (cfg, stack):
        monkeypatch.setattr(precision, "parity", lambda *a: {"cosine": 0.5, "agreement": {}})
        choose(cfg, stack)
        assert not precision.refusal_path(int8_path(stack.backbone)).exists()


def test_no_int8_twin_is_built_before_there_are_stored_frames_to_calibrate_on(make_state, monkeypatch):
    """A first start on an empty store serves float at once instead of building a twin it cannot calibrate."""
    with serving(make_state) as (cfg, stack):
        int8 = int8_path(stack.backbone)
        for f in int8.parent.glob(int8.stem + ".*"):
            f.unlink()

        def must_not_build(*a):
            raise AssertionError("built an int8 twin with nothing stored to calibrate it on")

        monkeypatch.setattr(precision, "build_int8_in_child", must_not_build)
        monkeypatch.setattr(precision, "tensorflow_available", lambda: True)
        report = choose(cfg, stack)
        assert report["precision"] == "float32" and "0 are stored (at least 20)" in report["reason"], report
        assert not int8.exists() and not precision.refusal_path(int8).exists()
