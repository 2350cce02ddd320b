"""The TensorFlow worker process: `python -m edged.learn.worker serve` runs one JSON job per stdin line.

It prints JSON lines: {"ready": true} once TensorFlow is imported, then per job {"progress": {...}}
while working, {"result": {...}} or {"error": "..."}, and {"done": true}. The daemon side is
`edged.serve.worker_client.TrainerWorker`; nothing else crosses the boundary.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def exit_with_parent(parent: int) -> None:
    """A daemon thread: when the daemon dies the worker is re-parented; then it stops at once, mid-job too,
    so that it never goes on to commit and activate a version alone."""

    def watch():
        while True:
            if os.getppid() != parent:
                os._exit(3)
            time.sleep(0.5)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


if __name__ == "__main__" and "--parent" in sys.argv[:-1]:
    # before the seconds-long TensorFlow import: a daemon killed during it does not leave this worker behind
    exit_with_parent(int(sys.argv[sys.argv.index("--parent") + 1]))


from ..config import Config  # noqa: E402
from ..errors import NO_TENSORFLOW, EdgedError  # noqa: E402
from ..heads.base import TrainRequest  # noqa: E402

try:
    from keras.backend import clear_session

    from .jobs import run_export, run_train
    TENSORFLOW_MISSING = False
except ModuleNotFoundError as e:  # the worker still starts, to say clearly what is missing
    if not e.name or e.name.split(".")[0] not in ("tensorflow", "keras"):
        raise
    TENSORFLOW_MISSING = True

log = logging.getLogger(__name__)


def _run_job(job: str, cfg: Config, head: str, params: dict, emit) -> int:
    try:
        if job == "train":
            request = TrainRequest(**params)
            result = run_train(cfg, head, request, progress=lambda p: emit({"progress": p}))
        elif job == "export":
            result = run_export(cfg, head, params.get("quantize", "float32"), params.get("force", False),
                                progress=lambda p: emit({"progress": p}))
        else:
            raise EdgedError(f"unknown job {job!r}")
    except EdgedError as e:
        emit({"error": str(e)})
        return 2
    except ModuleNotFoundError as e:
        if e.name and e.name.split(".")[0] in ("tensorflow", "keras"):
            emit({"error": NO_TENSORFLOW.format(job=job)})
            return 2
        raise
    except Exception as e:
        log.exception("%s failed", job)
        emit({"error": f"{job} failed: {type(e).__name__}: {e}"})
        return 1
    emit({"result": result})
    return 0


def _emit(obj) -> None:
    sys.stdout.write(json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()


def serve_jobs() -> int:
    """Warm worker: import TensorFlow once, then run one JSON job per stdin line until stdin closes."""
    if TENSORFLOW_MISSING:
        _emit({"error": NO_TENSORFLOW.format(job="training"), "fatal": True})
        return 2
    _emit({"ready": True})
    for line in sys.stdin:
        try:
            request = json.loads(line)
            cfg = Config.model_validate(request["config"])
        except Exception as e:
            _emit({"error": f"bad job request: {e}"})
            _emit({"done": True})
            continue
        _run_job(request["job"], cfg, request["head"], request.get("params", {}), _emit)
        clear_session()
        _emit({"done": True})
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="edged.learn.worker")
    parser.add_argument("job", choices=["train", "export", "serve"])
    parser.add_argument("--config-json")
    parser.add_argument("--head")
    parser.add_argument("--params", default="{}")
    parser.add_argument("--parent", type=int, help="exit when this process (the daemon) is gone")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if args.job == "serve":
        return serve_jobs()
    cfg = Config.model_validate(json.loads(args.config_json))
    return _run_job(args.job, cfg, args.head, json.loads(args.params), _emit)


if __name__ == "__main__":
    raise SystemExit(main())
