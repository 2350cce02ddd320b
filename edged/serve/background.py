"""Long commands (train, export) run one at a time on their own thread; serving and other commands go on."""

from __future__ import annotations

import logging
import threading
from typing import Callable, Optional

from ..errors import CommandError, EdgedError

log = logging.getLogger(__name__)


class JobRunner:
    def __init__(self):
        self._lock = threading.Lock()
        self.thread: Optional[threading.Thread] = None

    @property
    def running(self) -> Optional[str]:
        thread = self.thread
        return thread.name if thread is not None and thread.is_alive() else None

    def start(self, what: str, work: Callable[[], None], corr_id=None) -> None:
        """Run `work` on a new thread, or refuse when another job is running."""
        with self._lock:
            if self.running:
                raise CommandError(f"busy with {self.running}; wait for its reply", corr_id)
            self.thread = threading.Thread(target=work, name=what, daemon=True)
            self.thread.start()

    def join(self, timeout: float = 10.0) -> None:
        thread = self.thread
        if thread is not None:
            thread.join(timeout)


def run_reporting(work: Callable[[], dict], responder, what: str, on_done: Callable[[], None]) -> None:
    """The body of a job thread: the result or the error goes to `responder`, whatever happens."""
    try:
        responder.done(work())
    except Exception as e:
        if not isinstance(e, EdgedError):
            log.exception("%s failed", what)
        responder.fail(str(e) if isinstance(e, EdgedError) else f"{what} failed: {type(e).__name__}: {e}")
    finally:
        on_done()
