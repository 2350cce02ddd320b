"""The example store (durable, per backbone) and the kNN head."""

import multiprocessing
import os

import numpy as np
import pytest
from edged_plugins.knn import UNKNOWN, KnnHead, KnnOptions

from edged.state.store import NewExample, Store


def _img(v):
    return np.full((24, 32, 3), v, np.uint8)


def test_store_roundtrip_forget_and_backbones(tmp_path):
    store = Store(tmp_path / "s")
    ids = store.add_many([NewExample(_img(10), "a", np.arange(4, dtype=np.float32)),
                          NewExample(_img(200), "b", np.ones(4), box=(0.1, 0.2, 0.5, 0.6))], "bb1")
    ex = store.examples("bb1")
    assert list(ex.labels) == ["a", "b"] and ex.embeddings.shape == (2, 4)
    assert ex.boxes[1] == pytest.approx((0.1, 0.2, 0.5, 0.6)) and ex.boxes[0] is None
    assert abs(int(store.load_frame(ids[1]).mean()) - 200) <= 2  # the JPEG on disk
    assert len(store.examples("bb2")) == 0
    assert [i for i, _ in store.missing_embeddings("bb2")] == ids
    store.set_embeddings("bb2", [(ids[0], np.zeros(8))])
    assert [i for i, _ in store.missing_embeddings("bb2")] == [ids[1]]
    assert store.forget("a") == 1
    assert store.counts() == {"b": 1}
    assert len(list((tmp_path / "s" / "frames").glob("*.jpg"))) == 1
    store.close()
    again = Store(tmp_path / "s")
    assert again.counts() == {"b": 1}


def _add_then_die(folder, conn):
    store = Store(folder)
    store.add(NewExample(_img(5), "kept", np.ones(3)), "bb")
    conn.send("acknowledged")
    os._exit(0)  # no close, no cleanup: like a power cut after the ack


def test_each_example_remembers_its_capture_and_older_stores_are_grouped_by_time(tmp_path):
    """Validation folds keep a capture whole (issue 37, 1): the store keeps which capture each frame came from; an
    example of its own (an import, a review label) is its own capture; rows from before the column are grouped by
    label, device and source while each follows the one before within CAPTURE_GAP_S."""
    import sqlite3

    from edged.state.store import CAPTURE_GAP_S

    img = np.zeros((8, 8, 3), np.uint8)
    store = Store(tmp_path / "s")
    store.add_many([NewExample(img, "mug", np.ones(4), capture="capture:one") for _ in range(3)], "bb")
    store.add_many([NewExample(img, "mug", np.ones(4)) for _ in range(2)], "bb")
    ex = store.examples("bb")
    assert ex.captures[:3].tolist() == ["capture:one"] * 3
    assert len(set(ex.captures[3:].tolist())) == 2 and "capture:one" not in ex.captures[3:]
    assert ex.subset(np.array([4, 0])).captures.tolist() == [ex.captures[4], "capture:one"]
    store.close()

    db = sqlite3.connect(tmp_path / "s" / "examples.db")  # as a store from before the column left them
    rows = [(1000.0, "cup", None), (1003.0, "cup", None), (1003.5, "cup", "yard"), (1004.0, "cup", None),
            (1004.0 + CAPTURE_GAP_S + 1, "cup", None), (1005.0, "pen", None)]
    for i, (ts, label, source) in enumerate(rows):
        db.execute("INSERT INTO examples (uid, label, ts, frame, source) VALUES (?, ?, ?, ?, ?)",
                   (f"old{i}", label, ts, f"old{i}.jpg", source))
        db.execute("INSERT INTO embeddings (example_id, backbone, vector) VALUES (last_insert_rowid(), 'old', ?)",
                   (np.ones(4, np.float32).tobytes(),))
    db.commit()
    db.close()
    store = Store(tmp_path / "s")
    c = store.examples("old").captures
    assert c[0] == c[1] == c[3] and len({c[0], c[2], c[4], c[5]}) == 4, c
    store.close()


def test_acknowledged_example_survives_hard_exit(tmp_path):
    parent, child = multiprocessing.Pipe()
    proc = multiprocessing.get_context("fork").Process(target=_add_then_die, args=(tmp_path / "s", child))
    proc.start()
    assert parent.recv() == "acknowledged"
    proc.join()
    assert Store(tmp_path / "s").counts() == {"kept": 1}


def test_data_version_sees_other_connections(tmp_path):
    a, b = Store(tmp_path / "s"), Store(tmp_path / "s")
    v = a.data_version()
    b.add(NewExample(_img(1), "x", np.ones(2)), "bb")
    assert a.data_version() != v


def test_knn_vote_unknown_and_forget():
    rng = np.random.default_rng(0)
    centres = {"cat": rng.normal(size=16), "dog": rng.normal(size=16)}
    head = KnnHead(KnnOptions(k=3, threshold=0.8))
    assert not head.ready
    for label, c in centres.items():
        for _ in range(5):
            head.add(c + 0.05 * rng.normal(size=16), label)
    assert head.ready and head.classes == ["cat", "dog"]
    pred = head.predict(centres["dog"] * 3.0)  # scale does not matter: cosine
    assert pred.label == "dog" and pred.score == pytest.approx(1.0)
    assert set(pred.scores) == {"dog"}
    far = head.predict(rng.normal(size=16))
    assert far.label == UNKNOWN
    head.forget("dog")
    assert head.classes == ["cat"]
    assert head.predict(centres["dog"]).label in ("cat", UNKNOWN)


def test_knn_fit_matches_incremental_adds():
    from edged.state.store import Examples

    rng = np.random.default_rng(1)
    emb = rng.normal(size=(200, 32)).astype(np.float32)
    labels = np.array([f"c{i % 4}" for i in range(200)])
    a, b = KnnHead(), KnnHead()
    a.fit(Examples(np.arange(200), labels, emb, [None] * 200))
    for e, l in zip(emb, labels):
        b.add(e, l)
    for q in rng.normal(size=(20, 32)):
        pa, pb = a.predict(q), b.predict(q)
        assert pa.label == pb.label and pa.score == pytest.approx(pb.score)


def test_knn_a_new_label_is_voted_for_at_once_without_an_index_error():
    """A label added right after a calibration (the class means refresh at most every 2 s) once raised IndexError
    when a vote picked it (issue 27, 2)."""
    rng = np.random.default_rng(3)
    head = KnnHead(KnnOptions(k=1))
    for label in ("mug", "keys"):
        for _ in range(4):
            head.add(rng.normal(size=32).astype(np.float32), label)
    head.predict(rng.normal(size=32).astype(np.float32))  # calibrated on two labels
    shown = rng.normal(size=32).astype(np.float32)
    head.add(shown, "phone")
    assert head.predict(shown).label == "phone"


def test_knn_near_copies_of_two_things_do_not_make_every_other_view_of_them_unknown():
    """Two classes taught from near-copies (a still camera): a frame of one of them with other noise is farther from
    its class than the copies are from each other, but far closer to it than the classes are alike. It must be that
    class, not 'unknown' with score 1.0; something unlike both is 'unknown' with its own confidence."""
    rng = np.random.default_rng(3)
    d = 64
    base = np.abs(rng.normal(size=d)).astype(np.float32)  # ReLU features share a large common part
    a, b = base + np.abs(rng.normal(size=d)), base + np.abs(rng.normal(size=d))
    head = KnnHead(KnnOptions())
    for _ in range(8):
        head.add(a + rng.normal(0, 0.01, d), "mug", None)
        head.add(b + rng.normal(0, 0.01, d), "keys", None)
    seen_again = [head.predict(a + rng.normal(0, 0.15, d)) for _ in range(20)]
    assert all(p.label == "mug" for p in seen_again), [(p.label, p.score) for p in seen_again]
    unlike = head.predict(base + 3 * np.abs(rng.normal(size=d)))
    assert unlike.label == UNKNOWN and 0.0 < unlike.score <= 1.0
    halfway = head.predict((a + b) / 2 + np.abs(rng.normal(0, 0.5, d)))
    assert halfway.label != UNKNOWN or halfway.score < 1.0  # never a certain 'unknown' for what lies between


def test_knn_a_look_alike_marked_background_a_few_times_is_background_though_the_empty_scene_outnumbers_it():
    """Background is many things: a look-alike's few frames marked wrong must not be averaged away by the many frames
    of the empty scene (issue 37, 4)."""
    rng = np.random.default_rng(3)
    d = 64
    scene, hand, other = (np.abs(rng.normal(size=d)) for _ in range(3))
    frame = lambda *parts: np.clip(sum(parts) + 0.15 * rng.normal(size=d), 0, None)  # noqa: E731
    two = lambda: frame(scene, hand)  # noqa: E731
    look_alike = lambda: frame(scene, 0.8 * hand, 0.5 * other)  # noqa: E731
    head = KnnHead()
    for _ in range(30):
        head.add(frame(scene), "background")
    for _ in range(15):
        head.add(two(), "two")
    assert sum(head.predict(look_alike()).label == "two" for _ in range(20)) >= 15  # taken for the taught one

    marked = [look_alike() for _ in range(4)]  # one event's frames, marked wrong
    for embedding in marked:
        head.add(embedding, "background")
    assert head.predict(marked[0]).label == "background"  # a copy of what was taught: at once
    head._calibrated -= 2  # the class means and modes follow within 2 s
    assert sum(head.predict(look_alike()).label == "two" for _ in range(40)) <= 2
    assert sum(head.predict(two()).label == "two" for _ in range(40)) >= 38
    assert sum(head.predict(frame(scene)).label == "background" for _ in range(20)) == 20
