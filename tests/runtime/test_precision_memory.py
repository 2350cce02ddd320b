"""An int8 twin refused in "auto" is remembered for this machine and that int8 file: later starts serve float at once
instead of measuring again (issue 27, 11). Real backbones and interpreters; the parity verdict is forced."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
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


HEAP_PROBE = """
import sys
import numpy as np
from edged.runtime.memory import keep_the_heap_small

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20

if sys.argv[1] == "small":
    assert keep_the_heap_small()
before = rss_mb()
held = []
for round in range(6):  # trains' buffers, freed when each ends: the first the largest
    buffers = [np.ones((8 - round) * 2**20 // 8) for _ in range(8)]
    held.append(np.ones(64 * 1024 // 8))  # something small that lives on, above them in the heap
    del buffers
print(rss_mb() - before)
"""


@pytest.mark.skipif(not Path("/proc/self/statm").is_file(), reason="needs Linux's /proc")
def test_freed_training_buffers_go_back_to_the_system(tmp_path):
    """Issue 38, 7: with glibc's defaults, buffers freed after a train stay in the process (its mmap threshold rises
    to the largest block freed); the daemon maps large blocks on their own, so they go back when freed."""
    grown = {}
    for mode in ("default", "small"):
        out = subprocess.run([sys.executable, "-c", HEAP_PROBE, mode], capture_output=True, text=True, timeout=60,
                             env={k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_"))})
        assert out.returncode == 0, out.stderr
        grown[mode] = float(out.stdout.split()[-1])
    assert grown["small"] < 2.0, grown
    assert grown["default"] > 20.0, grown  # what the daemon no longer keeps


def test_the_interpreter_of_trains_and_marks_is_closed_when_unused(make_state, monkeypatch):
    """Issue 38, 7: the second interpreter (embedding for trains, labels and "wrong" marks) was kept for good once a
    job had used it: 35 MB of the soak's growth at 1.0/224. It is closed after EMBEDDER_IDLE_S unused."""
    from conftest import wait_until
    from edged.serve import learning

    monkeypatch.setattr(learning, "EMBEDDER_IDLE_S", 0.3)
    with serving(make_state) as (cfg, stack):
        learner = stack.with_learning().learning
        frame = np.zeros((96, 96, 3), np.uint8)
        first = learner.embed_image(frame)
        assert learner._embedder is not None
        wait_until(lambda: learner._embedder is None, 10, what="the idle interpreter closed")
        assert np.allclose(learner.embed_image(frame), first)  # opened again when needed
