"""The command layer and the head set, in process: validation, replies, errors, busy, live head swaps; kNN's compact scan."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from conftest import wait_until
from edged_plugins.knn import UNKNOWN, KnnHead, KnnOptions

from edged.commands.dispatch import DEFERRED, CollectingResponder, Dispatcher
from edged.commands.schema import COMMANDS
from edged.config import load_config
from edged.errors import CommandError, HeadError
from edged.heads.registry import head_classes, plugin_manager
from edged.serve.headset import HeadSet
from edged.state.store import Examples, NewExample, Store


def _handlers(**overrides):
    table = {name: (lambda cmd, r: {"echo": cmd.model_dump()}) for name in COMMANDS}
    table.update(overrides)
    return table


def test_dispatch_validates_replies_and_names_the_field():
    stop = threading.Event()
    seen = []

    def capture(cmd, responder):
        seen.append(cmd)
        responder.progress({"stored": 1})
        responder.done({"stored": cmd.count})
        return DEFERRED

    d = Dispatcher(_handlers(capture=capture), stop)
    ok = CollectingResponder(on_progress=lambda p: seen.append(p))
    d.run("capture", b'{"label": "cup", "count": 3, "id": "c1"}', ok)
    assert ok.wait(1) == {"stored": 3} and ok.corr_id == "c1"
    assert seen[0].label == "cup" and seen[1] == {"stored": 1}

    bad = CollectingResponder()
    d.run("capture", b'{"label": "cup", "count": 0, "id": 7}', bad)
    assert bad.ok is False and "capture.count" in bad.error and bad.corr_id == 7
    unknown = CollectingResponder()
    d.run("reboot", b"{}", unknown)
    assert unknown.ok is False and "unknown command 'reboot'" in unknown.error


def test_every_error_reply_carries_the_request_id():
    """Issue 33, 9: an unknown command's error reply dropped the id, so the CLI waited for a reply that had come."""
    d = Dispatcher(_handlers(), threading.Event())
    for name, payload in (("captur", b'{"label": "mug", "id": "r1"}'), ("capture", b'{"label": "none", "id": "r1"}'),
                          ("capture", b'{"label": "mug", "count": -1, "id": "r1"}')):
        r = CollectingResponder()
        d.run(name, payload, r)
        with pytest.raises(CommandError):
            r.wait(1)
        assert r.corr_id == "r1", (name, r.error)
    r = CollectingResponder()
    d.run("capture", b'{"label": "Unknown", "id": 7}', r)
    assert not r.ok and "reserved" in r.error and r.corr_id == 7


def test_dispatch_turns_handler_errors_into_replies_and_stays_up():
    stop = threading.Event()

    def refuse(cmd, r):
        raise HeadError("head 'x' is not trained: send a train command")

    def crash(cmd, r):
        raise RuntimeError("boom")

    d = Dispatcher(_handlers(train=refuse, export=crash), stop, queue_size=2)
    d.start()
    try:
        a, b, c = CollectingResponder(), CollectingResponder(), CollectingResponder()
        d.submit("train", b"{}", a)
        d.submit("export", b"{}", b)
        with pytest.raises(CommandError, match="not trained"):
            a.wait(5)
        with pytest.raises(CommandError, match="internal error: RuntimeError: boom"):
            b.wait(5)
        d.submit("status", b"{}", c)
        assert c.wait(5) == {"echo": {"id": None}}
    finally:
        stop.set()
        d.join()


def test_a_full_queue_answers_busy():
    stop = threading.Event()
    d = Dispatcher(_handlers(), stop, queue_size=1)  # not started: nothing drains the queue
    first, second = CollectingResponder(), CollectingResponder()
    d.submit("status", b"{}", first)
    d.submit("status", b"{}", second)
    assert second.ok is False and second.error.startswith("busy")
    assert not first.finished.is_set()


def test_dispatcher_refuses_a_table_that_misses_a_command():
    table = _handlers()
    table.pop("forget")
    with pytest.raises(ValueError, match="forget"):
        Dispatcher(table, threading.Event())


class _Backbone:
    id = "test-backbone"
    input_size = 8


def test_head_swap_while_predicting(tmp_path):
    """Predictions go on from another thread while the kNN head is replaced; the new head answers after."""
    cfg = load_config(None, [f"state_dir='{tmp_path}'", "heads.active=['knn']", "heads.knn.k=1", "heads.knn.threshold=-1"])
    store = Store(tmp_path / "store")
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=16), rng.normal(size=16)
    store.add_many([NewExample(np.zeros((8, 8, 3), np.uint8), "a", a)], _Backbone.id)
    heads = HeadSet.for_config(cfg, store, _Backbone(), head_classes(plugin_manager()))
    assert heads.predict(a, None)[0][1].label == "a"
    errors, answers, stop = [], [], threading.Event()

    def serve():
        while not stop.is_set():
            try:
                answers.append(heads.predict(b, None)[0][1].label)
            except Exception as e:  # any exception here is a failure of the swap
                errors.append(e)

    t = threading.Thread(target=serve)
    t.start()
    wait_until(lambda: len(answers) >= 20, what="answers before the swap")
    fresh = KnnHead(KnnOptions(k=1, threshold=-1))
    fresh.fit(Examples(np.array([1, 2]), np.array(["a", "b"]), np.stack([a, b]).astype(np.float32), [None, None]))
    swapped = len(answers)
    heads.swap("knn", fresh)
    wait_until(lambda: len(answers) >= swapped + 20, what="answers after the swap")
    stop.set()
    t.join()
    assert not errors and answers[0] == "a" and answers[-1] == "b"
    assert heads.describe()["knn"]["classes"] == ["a", "b"]
    heads.close()
    store.close()


def test_knn_compact_scan_matches_exact_search():
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(8, 64))
    labels = np.array([f"c{i % 8}" for i in range(600)])
    emb = (centres[np.arange(600) % 8] + 0.6 * rng.normal(size=(600, 64))).astype(np.float32)
    examples = Examples(np.arange(600), labels, emb, [None] * 600)
    exact = KnnHead(KnnOptions(k=5, threshold=-1, compact_min=10**6))
    compact = KnnHead(KnnOptions(k=5, threshold=-1, compact_min=550, compact_dim=16, rerank=40))
    exact.fit(examples)
    compact.fit(examples)
    assert compact.compact and not exact.compact
    queries = centres[rng.integers(0, 8, 200)] + 0.6 * rng.normal(size=(200, 64))
    same = np.mean([exact.predict(q).label == compact.predict(q).label for q in queries])
    assert same >= 0.98, same
    compact.forget("c0")
    assert not compact.compact  # below compact_min again: back to the exact scan
    assert all(compact.predict(q).label not in ("c0", UNKNOWN) for q in queries[:20])
