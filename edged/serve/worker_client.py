"""The daemon side of the TensorFlow worker process: start it, send it jobs, relay their progress."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections import deque
from typing import Optional

from ..config import Config
from ..errors import NO_TENSORFLOW, TrainingError

log = logging.getLogger(__name__)


def tensorflow_available() -> bool:
    """Whether TensorFlow could be imported, without importing it."""
    try:
        return importlib.util.find_spec("tensorflow") is not None
    except (ImportError, ValueError):
        return False


class TrainerWorker:
    """A warm `python -m edged.learn.worker serve` process: TensorFlow is imported once, jobs run one at a time.

    Started on the first job (or at once with `preload`), stopped after `idle_exit_s` without jobs,
    so a device that is not learning does not keep TensorFlow's memory.
    """

    def __init__(self, idle_exit_s: float = 600.0):
        self.idle_exit_s = idle_exit_s
        self.proc: Optional[subprocess.Popen] = None
        self.errors: deque = deque(maxlen=60)
        self._lock = threading.Lock()
        self._last_used = time.monotonic()
        self._closed = threading.Event()
        self._cancel: Optional[threading.Event] = None
        threading.Thread(target=self._reaper, name="trainer-idle", daemon=True).start()

    def _reaper(self) -> None:
        while not self._closed.wait(5.0):
            if self.proc is not None and time.monotonic() - self._last_used > self.idle_exit_s and self._lock.acquire(blocking=False):
                try:
                    log.info("trainer worker idle for %.0fs: stopping it", self.idle_exit_s)
                    self._stop_proc()
                finally:
                    self._lock.release()

    def _start(self) -> None:
        if not tensorflow_available():
            raise TrainingError(NO_TENSORFLOW.format(job="training"))
        self.proc = subprocess.Popen([sys.executable, "-m", "edged.learn.worker", "serve", "--parent", str(os.getpid())],
                                     stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
        proc = self.proc
        threading.Thread(target=lambda: self.errors.extend(proc.stderr), daemon=True).start()
        first = proc.stdout.readline()
        try:
            msg = json.loads(first)
        except ValueError:
            msg = {}
        if not msg.get("ready"):
            self._stop_proc()
            raise TrainingError(msg.get("error") or f"trainer worker failed to start: {self._tail()}")

    def _tail(self) -> str:
        return "".join(l for l in self.errors if "TensorSpec" not in l)[-1500:]

    def _stop_proc(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            proc.stdin.close()
            proc.wait(5)
        except Exception:
            proc.kill()
            proc.wait()

    def preload(self) -> None:
        def start():
            with self._lock:
                if self.proc is None:
                    try:
                        self._start()
                    except TrainingError as e:
                        log.warning("trainer worker not preloaded: %s", e)

        threading.Thread(target=start, name="trainer-preload", daemon=True).start()

    def cancel(self) -> bool:
        """Stop the running job (the worker is killed; the next job starts a fresh one). False when idle."""
        cancel = self._cancel
        if cancel is None:
            return False
        cancel.set()
        return True

    def run(self, cfg: Config, job: str, head: str, params: dict, on_progress=None,
            stop: Optional[threading.Event] = None) -> dict:
        cancel = threading.Event()
        self._cancel = cancel  # cancellable from now on, even while the worker starts
        with self._lock:
            if self.proc is None or self.proc.poll() is not None:
                self._start()
            proc = self.proc
            self._last_used = time.monotonic()
            proc.stdin.write(json.dumps({"job": job, "config": json.loads(cfg.model_dump_json()), "head": head,
                                         "params": params}) + "\n")
            proc.stdin.flush()
            done, why = threading.Event(), []
            deadline = time.monotonic() + cfg.trainer.job_timeout_s

            def watch():
                """Kill the worker when the job is cancelled, runs past its time, or the daemon stops."""
                while not done.wait(0.25):
                    reason = ("cancelled" if cancel.is_set() else
                              "the daemon is stopping" if stop is not None and stop.is_set() else
                              f"no result after trainer.job_timeout_s = {cfg.trainer.job_timeout_s:g} s"
                              if time.monotonic() > deadline else None)
                    if reason:
                        why.append(reason)
                        proc.kill()
                        return

            threading.Thread(target=watch, name="trainer-watch", daemon=True).start()
            result, error = None, None
            try:
                for line in proc.stdout:
                    try:
                        msg = json.loads(line)
                    except ValueError:
                        continue
                    if "progress" in msg and on_progress:
                        on_progress(msg["progress"])
                    elif "result" in msg:
                        result = msg["result"]
                    elif "error" in msg:
                        error = msg["error"]
                    elif msg.get("done"):
                        break
                else:
                    self.proc = None  # the worker died mid-job (or was killed): reaped here, the next job starts afresh
                    code = proc.wait()
                    if why:
                        raise TrainingError(f"{job} of {head!r} stopped: {why[0]}; the daemon serves on")
                    raise TrainingError(f"{job} of {head!r}: trainer worker exited ({code}): {self._tail()}")
            finally:
                done.set()
                self._cancel = None
                self._last_used = time.monotonic()
        if error:
            raise TrainingError(error)
        if result is None:
            raise TrainingError(f"{job} of {head!r} ended without a result")
        return result

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            self._stop_proc()
