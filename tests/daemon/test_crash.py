"""Crash safety: `kill -9` at a random moment during capture, train, export, activate and re-embedding.

After each kill the daemon is started again and checked: every example whose capture was
acknowledged (a progress or final reply received) is present and readable, SQLite passes
`PRAGMA integrity_check`, every row's JPEG decodes, no staging folder is taken for a version, and
every head or model version `current` names is complete. Three kills per operation run in CI; 20 per
operation with `pytest -m slow` (figures in the README).
"""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import time

import cv2
import pytest
from conftest import Probe, backbone_settings, toml_config, write_config

from edged.state.versions import Versions

DEVICE = "crash"


class Harness:
    def __init__(self, broker, daemons, make_state, tmp_path, backbone=None):
        self.broker, self.daemons, self.tmp_path = broker, daemons, tmp_path
        self.backbone = backbone or backbone_settings("none", input_size=96)
        self.state = make_state(self.backbone, name=f"state-{tmp_path.name}")
        self.runs = 0
        self.acknowledged: set[int] = set()  # how many examples each acknowledged capture reported stored
        self.acked_total = 0

    def start(self, backbone=None):
        self.runs += 1
        text = toml_config(self.state, self.broker.port, "synthetic:clutter=3", backbone or self.backbone, DEVICE,
                           extra='\n[runtime]\nprecision = "float32"\n\n[heads]\nactive = ["knn"]\n')
        cfg = write_config(self.tmp_path / f"run{self.runs}.toml", text)
        self.daemon = self.daemons(cfg, self.tmp_path / f"run{self.runs}.log")
        probe = Probe(self.broker.port)
        probe.wait_online(DEVICE, timeout=120)
        return probe

    def kill(self):
        self.daemon.proc.send_signal(signal.SIGKILL)
        self.daemon.proc.wait(10)

    def stop(self):
        assert self.daemon.stop() == 0, self.daemon.output()

    def check_state(self, probe) -> dict:
        """What must hold after a crash and restart (the daemon running again)."""
        status = probe.request(DEVICE, "status", {})["result"]
        stored = sum(status["examples"].values())
        assert stored >= self.acked_total, f"acknowledged {self.acked_total} examples, {stored} present"
        for kind in ("heads", "models"):
            root = self.state / kind
            for folder in root.iterdir() if root.is_dir() else []:
                versions = Versions(folder)
                assert not any(v.startswith(".") for v in versions.versions())
                current = versions.current_path()
                if current is not None:
                    files = {p.name for p in current.iterdir()}
                    assert files and ("model.tflite" not in files or "metadata.json" in files), (current, files)
        return status

    def check_store(self):
        """Offline checks on the store (daemon stopped)."""
        db = sqlite3.connect(self.state / "store" / "examples.db")
        try:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            rows = db.execute("SELECT frame FROM examples").fetchall()
            missing = [r[0] for r in rows if cv2.imread(str(self.state / "store" / "frames" / r[0])) is None]
            assert not missing, f"{len(missing)} rows without a readable JPEG"
            no_vector = db.execute("SELECT COUNT(*) FROM examples WHERE id NOT IN (SELECT example_id FROM embeddings)"
                                   ).fetchone()[0]
            return len(rows), no_vector
        finally:
            db.close()


def _capture_and_kill(h: Harness, probe, rng):
    """Start a capture, kill -9 after a random delay; count what was acknowledged before the kill."""
    label = f"c{h.runs}"
    probe.send(DEVICE, "capture", {"label": label, "count": 60, "interval_ms": 20, "id": label})
    time.sleep(rng.uniform(0.1, 2.0))
    h.kill()
    probe.drain()
    stored = [json.loads(p).get("result", {}).get("stored", 0) for t, p, _ in probe.seen
              if t == f"edged/{DEVICE}/reply/capture" and json.loads(p).get("id") == label]
    h.acked_total += max(stored, default=0)


def _train_and_kill(h: Harness, probe, rng):
    probe.send(DEVICE, "train", {"head": "classifier", "id": f"t{h.runs}"})
    time.sleep(rng.uniform(0.0, 1.5))
    h.kill()


def _activate_and_kill(h: Harness, probe, rng):
    for i in range(rng.randint(1, 6)):
        probe.send(DEVICE, "activate", {"heads": ["knn", "classifier"] if i % 2 else ["knn"], "id": f"a{h.runs}-{i}"})
    time.sleep(rng.uniform(0.0, 0.3))
    h.kill()


def _export_and_kill(h: Harness, probe, rng):
    probe.send(DEVICE, "export", {"head": "classifier", "quantize": "float32", "id": f"e{h.runs}"})
    time.sleep(rng.uniform(0.5, 25.0))
    h.kill()


def _loop(h: Harness, operation, kills: int, seed: int) -> dict:
    rng = random.Random(seed)
    probe = h.start()
    try:
        for _ in range(kills):
            operation(h, probe, rng)
            probe.close()
            rows, no_vector = h.check_store()
            probe = h.start()
            h.check_state(probe)
    finally:
        probe.close()
    h.stop()
    rows, no_vector = h.check_store()
    return {"kills": kills, "rows": rows, "acknowledged": h.acked_total}


def _seed_examples(h: Harness, probe, n_per_label: int = 8):
    for label in ("a", "b"):
        reply = probe.request(DEVICE, "capture", {"label": label, "count": n_per_label, "interval_ms": 0}, timeout=60)
        assert reply["ok"], reply
        h.acked_total += n_per_label


def _run_kills(broker, daemons, make_state, tmp_path, kills: int):
    results = {}
    h = Harness(broker, daemons, make_state, tmp_path / "capture")
    results["capture"] = _loop(h, _capture_and_kill, kills, 1)

    h = Harness(broker, daemons, make_state, tmp_path / "train")
    probe = h.start()
    _seed_examples(h, probe)
    probe.close()
    h.stop()
    results["train"] = _loop(h, _train_and_kill, kills, 2)
    results["activate"] = _loop(h, _activate_and_kill, kills, 3)
    return results, h


@pytest.fixture
def crash_paths(tmp_path):
    for name in ("capture", "train", "reembed", "export"):
        (tmp_path / name).mkdir()
    return tmp_path


@pytest.mark.heavy
def test_kill_9_during_capture_train_and_activate(broker, daemons, make_state, crash_paths):
    results, _ = _run_kills(broker, daemons, make_state, crash_paths, kills=3)
    print(f"kill -9: {results}")


def _reembed_kills(broker, daemons, make_state, tmp_path, kills: int) -> dict:
    """Store frames under one backbone, then start with another: the start re-embeds; kill it midway."""
    h = Harness(broker, daemons, make_state, tmp_path / "reembed")
    other = backbone_settings("none", input_size=96, seed=1)
    make_state(other, name=h.state.name)  # the second backbone's cache in the same state folder
    probe = h.start()
    for i in range(5):
        assert probe.request(DEVICE, "capture", {"label": f"r{i}", "count": 100, "interval_ms": 0}, timeout=120)["ok"]
        h.acked_total += 100
    probe.close()
    h.stop()
    rng = random.Random(4)
    inside = 0  # kills that landed while the store was being re-embedded
    for k in range(kills):
        h.runs += 1
        text = toml_config(h.state, broker.port, "synthetic:clutter=3", other, DEVICE,
                           extra='\n[runtime]\nprecision = "float32"\n')
        log = h.tmp_path / f"re{k}.log"
        d = daemons(write_config(h.tmp_path / f"re{k}.toml", text), log)
        deadline = time.monotonic() + 60
        said = ""
        # each start goes on with the frames the killed one left; once all are embedded the start just serves
        while "embedding" not in said and "serving device" not in said and time.monotonic() < deadline:
            time.sleep(0.01)
            said = log.read_text() if log.exists() else ""
        time.sleep(rng.uniform(0.0, 0.4))  # somewhere inside the re-embedding of what is left of 500 frames
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait(10)
        h.check_store()
        said = log.read_text()
        inside += "embedding" in said and "serving device" not in said
    assert inside >= 1, "no kill landed inside the re-embedding"
    h.start(backbone=other)
    probe = Probe(broker.port)
    status = h.check_state(probe)
    probe.close()
    h.stop()
    rows, _ = h.check_store()
    assert sum(status["examples"].values()) == rows == h.acked_total
    return {"kills": kills, "inside_reembedding": inside, "rows": rows}


@pytest.mark.heavy
def test_kill_9_during_store_reembedding(broker, daemons, make_state, crash_paths):
    print(f"kill -9 re-embedding: {_reembed_kills(broker, daemons, make_state, crash_paths, kills=3)}")


@pytest.mark.slow
def test_kill_9_loops_20_each(broker, daemons, make_state, crash_paths):
    results, h = _run_kills(broker, daemons, make_state, crash_paths, kills=20)
    results["reembed"] = _reembed_kills(broker, daemons, make_state, crash_paths, kills=20)
    results["export"] = _loop(h, _export_and_kill, 20, 5)
    print(f"kill -9 (slow): {results}")


@pytest.mark.heavy
def test_a_crash_leaves_its_stack_in_the_log(broker, probe, daemons, make_state, tmp_path):
    """Issue 38, 6: a daemon that segfaulted inside LiteRT left an empty log. `edged run` enables Python's fault
    handler: a fatal signal writes where each thread was."""
    settings = backbone_settings("none")
    cfg = write_config(tmp_path / "c.toml", toml_config(make_state(settings), broker.port, "synthetic", settings, "seg"))
    d = daemons(cfg, tmp_path / "seg.log")
    probe.wait_online("seg")
    assert d.stop(signal.SIGSEGV) != 0
    log = d.log.read_text(errors="replace")  # the whole log: every thread's stack can outgrow output()'s tail
    assert "Fatal Python error: Segmentation fault" in log and "Thread 0x" in log, log[-2000:]
