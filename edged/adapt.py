"""Run a train or export job in a TensorFlow child process and relay its progress (daemon and CLI side)."""

from __future__ import annotations

import importlib.util
import json
import logging
import subprocess
import sys
import threading
from collections import deque
from typing import Callable, Optional

from .config import Config
from .heads import HeadError

log = logging.getLogger(__name__)


NO_TENSORFLOW = ("{job} needs TensorFlow, which is not installed here: pip install 'edged[train]' "
                 "(the knn head keeps learning without it)")


def tensorflow_available() -> bool:
    """Whether TensorFlow could be imported, without importing it."""
    try:
        return importlib.util.find_spec("tensorflow") is not None
    except (ImportError, ValueError):
        return False


def run_job(cfg: Config, job: str, head: str, params: dict, on_progress: Optional[Callable[[dict], None]] = None,
            stop: Optional[threading.Event] = None, timeout: float = 3600.0) -> dict:
    """Run `python -m edged.trainer JOB`; return its result or raise HeadError with its message."""
    if not tensorflow_available():
        raise HeadError(NO_TENSORFLOW.format(job=job))
    cmd = [sys.executable, "-m", "edged.trainer", job, "--config-json", cfg.model_dump_json(), "--head", head,
           "--params", json.dumps(params)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
    errors: deque = deque(maxlen=40)
    drain = threading.Thread(target=lambda: errors.extend(proc.stderr), daemon=True)
    drain.start()
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    if stop is not None:
        def watch():
            while proc.poll() is None:
                if stop.wait(0.5):
                    proc.terminate()
                    return

        threading.Thread(target=watch, daemon=True).start()
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
        proc.wait()
    finally:
        timer.cancel()
        drain.join(2)
    if error:
        raise HeadError(error)
    if result is None:
        tail = "".join(l for l in errors if "TensorSpec" not in l)[-1500:]
        raise HeadError(f"{job} of {head!r} ended without a result (exit {proc.returncode}): {tail}")
    return result
