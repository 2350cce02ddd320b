"""A capture's disk writes happen off the frame loop: the loop only chooses frames; the reply counts what is on disk."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from edged.errors import EdgedError
from edged.serve.capture import CaptureJob, CaptureRequest, CaptureTarget
from edged.state.store import Store


class SlowStore:
    """A store whose writes take a while (a slow SD card), and can fail (a full disk)."""

    def __init__(self, real: Store, fail_after: int = 10 ** 9):
        self.real, self.fail_after, self.writes = real, fail_after, 0
        self.writers: set[str] = set()

    def add(self, item, backbone_id):
        self.writers.add(threading.current_thread().name)
        if self.writes >= self.fail_after:
            raise EdgedError("disk full: no space left for examples")
        threading.Event().wait(0.02)
        self.writes += 1
        return self.real.add(item, backbone_id)


def _frames(n):
    rng = np.random.default_rng(0)
    return [(rng.integers(0, 255, (48, 64, 3), np.uint8), rng.normal(size=16).astype(np.float32)) for _ in range(n)]


def test_writes_leave_the_frame_thread_and_finish_before_the_reply(tmp_path):
    store = Store(tmp_path / "store")
    slow = SlowStore(store)
    learned = []
    job = CaptureJob(CaptureRequest("mug", 8), CaptureTarget(slow, "bb", writer=True, learned=lambda e, label, box: learned.append(label)))
    offered = [job.offer(image, emb) for image, emb in _frames(8)]
    assert all(offered) and job.all_chosen  # chosen at once: the loop did not wait 8 x 20 ms
    assert job.stored < 8
    job.close()
    assert job.stored == 8 and job.done and learned == ["mug"] * 8
    assert slow.writers == {"capture-writer"} and store.counts() == {"mug": 8}
    store.close()


def test_a_failing_write_ends_the_capture_with_what_is_on_disk(tmp_path):
    store = Store(tmp_path / "store")
    job = CaptureJob(CaptureRequest("mug", 8), CaptureTarget(SlowStore(store, fail_after=3), "bb", writer=True))
    for image, emb in _frames(8):
        job.offer(image, emb)
    job.close()
    assert job.stored == 3 and "capture stopped after 3 examples" in job.failed and "disk full" in job.failed
    assert store.counts() == {"mug": 3}
    store.close()


@pytest.mark.parametrize("writer", [False, True])
def test_without_a_writer_offer_stores_at_once(tmp_path, writer):
    store = Store(tmp_path / "store")
    job = CaptureJob(CaptureRequest("mug", 2), CaptureTarget(store, "bb", writer=writer))
    for image, emb in _frames(2):
        job.offer(image, emb)
    job.close()
    assert job.stored == 2 and store.counts() == {"mug": 2}
    again = CaptureJob(CaptureRequest("mug", 1), CaptureTarget(store, "bb", writer=writer))
    again.offer(*_frames(1)[0])
    again.close()
    captures = store.examples("bb").captures.tolist()  # one capture's frames are validated together, never split
    assert captures == [job.capture_id] * 2 + [again.capture_id] and job.capture_id != again.capture_id
    store.close()
