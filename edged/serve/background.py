"""Long commands (train, export, a follow-up fine-tune) run one at a time, in order, on a thread of their own;
serving and other commands go on. A job sent while another runs waits its turn (its reply says so)."""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Callable, Optional

from ..errors import CommandError, EdgedError
from ..runtime.memory import release_free_memory

log = logging.getLogger(__name__)


class JobRunner:
    def __init__(self, max_waiting: int = 8):
        self._lock = threading.Lock()
        self._waiting: "queue.Queue[tuple[str, Callable[[], None]]]" = queue.Queue()
        self.max_waiting = max_waiting
        self._current: Optional[str] = None
        self.thread: Optional[threading.Thread] = None
        self.last: Optional[dict] = None  # the last finished job: name, ok, when, summary (for the status)

    @property
    def running(self) -> Optional[str]:
        return self._current

    @property
    def queued(self) -> int:
        return self._waiting.qsize()

    def start(self, what: str, work: Callable[[], None], corr_id=None,
              waiting: Optional[Callable[[str], None]] = None) -> None:
        """Run `work` when the jobs before it are done; `waiting(ahead)` is told what it waits for."""
        with self._lock:
            if self._waiting.qsize() >= self.max_waiting:
                raise CommandError(f"busy: {self._waiting.qsize()} jobs are waiting behind {self._current}; try again "
                                   f"later", corr_id)
            ahead = self._current or (self.queued and "the jobs queued before it")
            self._waiting.put((what, work))
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="jobs", daemon=True)
                self.thread.start()
        if ahead and waiting is not None:
            waiting(ahead)

    def _run(self) -> None:
        while True:
            with self._lock:
                try:
                    what, work = self._waiting.get_nowait()
                except queue.Empty:
                    self.thread = None
                    return
                self._current = what
            try:
                work()
            finally:
                self._current = None
                release_free_memory(collect=False)  # a train's buffers, freed, go back to the system

    def finished(self, what: str, ok: bool, summary: str) -> None:
        self.last = {"job": what, "ok": ok, "ts": round(time.time(), 3), "summary": summary[:300]}

    def join(self, timeout: float = 10.0) -> None:
        thread = self.thread
        if thread is not None:
            thread.join(timeout)


def run_reporting(work: Callable[[], dict], responder, what: str, on_done: Callable[[], None],
                  jobs: Optional[JobRunner] = None) -> None:
    """The body of a job: the result or the error goes to `responder`, whatever happens."""
    ok, summary = False, ""
    try:
        result = work()
        responder.done(result)
        ok, summary = True, _summary(result)
    except Exception as e:
        if not isinstance(e, EdgedError):
            log.exception("%s failed", what)
        summary = str(e) if isinstance(e, EdgedError) else f"{what} failed: {type(e).__name__}: {e}"
        responder.fail(summary)
    finally:
        if jobs is not None:
            jobs.finished(what, ok, summary)
        on_done()


def _summary(result) -> str:
    if not isinstance(result, dict):
        return "done"
    parts = [str(result[k]) for k in ("version", "fine_tune", "note") if isinstance(result.get(k), str)]
    return "; ".join(parts) or "done"


class TopicResponder:
    """Replies of a job that no command waits for any more (a fine-tune following a train's answer): published
    on `edged/<device>/job` as `{"job", "for", "final", "ok", "progress" | "result" | "error"}`."""

    def __init__(self, publish: Callable[[dict], None], job: str, for_id):
        self.publish, self.job = publish, job
        self.corr_id = for_id

    def _send(self, **fields) -> None:
        self.publish({"job": self.job, "for": self.corr_id, "ts": round(time.time(), 3), **fields})

    def progress(self, result: dict) -> None:
        self._send(final=False, ok=True, progress=result)

    def done(self, result: dict) -> None:
        self._send(final=True, ok=True, result=result)

    def fail(self, error: str) -> None:
        self._send(final=True, ok=False, error=error)
