"""The one command layer: command names -> validated payload models -> handlers, for MQTT, the CLI and the web page.

A handler gets the validated command and a `Responder`; it returns the final result, or
`DEFERRED` when the reply comes later (a capture finishing, a train job). Whatever a handler
raises becomes an error reply naming what was wrong; nothing a payload does stops the daemon.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import OrderedDict
from typing import Callable, Optional, Protocol

from ..errors import CommandError, CorrelationId, EdgedError
from .schema import COMMANDS, parse

log = logging.getLogger(__name__)

DEFERRED = object()


class Responder(Protocol):
    corr_id: CorrelationId

    def progress(self, result: dict) -> None: ...

    def done(self, result: dict) -> None: ...

    def fail(self, error: str) -> None: ...


Handler = Callable[[object, Responder], object]


class Remembered:
    """Forwards to a responder and keeps its final reply, so that a repeated command id gets the same reply."""

    def __init__(self, inner: Responder, memory: "OrderedDict", key):
        self.inner, self.memory, self.key = inner, memory, key
        self.corr_id = inner.corr_id

    def _forward_id(self) -> None:
        self.inner.corr_id = self.corr_id

    def progress(self, result: dict) -> None:
        self._forward_id()
        self.inner.progress(result)

    def done(self, result: dict) -> None:
        self._forward_id()
        self.memory[self.key] = ("done", result)
        self.inner.done(result)

    def fail(self, error: str) -> None:
        self._forward_id()
        self.memory[self.key] = ("fail", error)
        self.inner.fail(error)


class Dispatcher:
    """Commands run one at a time on the dispatcher's thread, in arrival order.

    Commands are idempotent by id: a command whose (name, id) was seen before is not run again — a QoS 1
    duplicate of `rollback` must not go back two versions. A finished one gets its reply again; one still
    running (a capture, a train) gets its reply once, when it ends.
    """

    REMEMBER = 1024

    def __init__(self, handlers: dict[str, Handler], stop: threading.Event, queue_size: int = 256):
        missing = sorted(set(COMMANDS) - set(handlers))
        extra = sorted(set(handlers) - set(COMMANDS))
        if missing or extra:
            raise ValueError(f"dispatcher: no handler for {missing}, no payload model for {extra}")
        self.handlers = handlers
        self.stop = stop
        self.queue: "queue.Queue[tuple[str, bytes, Responder]]" = queue.Queue(maxsize=queue_size)
        self._thread = threading.Thread(target=self._loop, name="commands", daemon=True)
        self.memory: OrderedDict = OrderedDict()  # (name, id) -> ("running",) | ("done", result) | ("fail", error)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float = 5.0) -> None:
        self._thread.join(timeout)

    def submit(self, name: str, payload: bytes, responder: Responder) -> None:
        """Queue a command; never blocks (a full queue answers 'busy')."""
        try:
            self.queue.put_nowait((name, payload, responder))
        except queue.Full:
            responder.fail("busy: too many commands queued; try again")

    def _loop(self) -> None:
        while not self.stop.is_set():
            try:
                name, payload, responder = self.queue.get(timeout=0.25)
            except queue.Empty:
                continue
            self.run(name, payload, responder)

    def run(self, name: str, payload: bytes, responder: Responder) -> None:
        """Validate and handle one command now, replying through `responder`."""
        try:
            command = parse(name, payload)
            responder.corr_id = command.id
            if command.id is not None:
                key = (name, command.id)
                seen = self.memory.get(key)
                if seen is not None:
                    log.info("command %s id %r seen before: not run again", name, command.id)
                    if seen[0] == "done":
                        responder.done(seen[1])
                    elif seen[0] == "fail":
                        responder.fail(seen[1])
                    return
                self.memory[key] = ("running",)
                while len(self.memory) > self.REMEMBER:
                    self.memory.popitem(last=False)
                responder = Remembered(responder, self.memory, key)
            result = self.handlers[name](command, responder)
        except CommandError as e:
            if e.corr_id is not None:
                responder.corr_id = e.corr_id
            responder.fail(str(e))
            return
        except EdgedError as e:
            responder.fail(str(e))
            return
        except Exception as e:
            log.exception("command %s failed", name)
            responder.fail(f"internal error: {type(e).__name__}: {e}")
            return
        if result is not DEFERRED:
            responder.done(result)


class CollectingResponder:
    """A responder for in-process callers (CLI, web): keeps progress, waits for the final reply."""

    def __init__(self, on_progress: Optional[Callable[[dict], None]] = None):
        self.corr_id: CorrelationId = None
        self.on_progress = on_progress
        self.finished = threading.Event()
        self.ok: Optional[bool] = None
        self.result: Optional[dict] = None
        self.error: Optional[str] = None

    def progress(self, result: dict) -> None:
        if self.on_progress:
            self.on_progress(result)

    def done(self, result: dict) -> None:
        self.ok, self.result = True, result
        self.finished.set()

    def fail(self, error: str) -> None:
        self.ok, self.error = False, error
        self.finished.set()

    def wait(self, timeout: Optional[float] = None) -> dict:
        """The final result; raises CommandError with the error text when the command failed."""
        if not self.finished.wait(timeout):
            raise CommandError("no reply in time")
        if not self.ok:
            raise CommandError(self.error or "failed")
        return self.result


def answer_status_only(name: str, payload: bytes, responder: Responder, status: Callable[[], dict], who: str) -> None:
    """For a process that answers only `status` (a trainer node, a simulated device): the payload is validated like
    any command's, the correlation id echoed, anything else refused by name."""
    try:
        responder.corr_id = parse(name, payload).id
    except CommandError as e:
        responder.corr_id = e.corr_id
        responder.fail(str(e))
        return
    if name == "status":
        responder.done(status())
    else:
        responder.fail(f"{who} answers only 'status', not {name[:64]!r}")
