"""`edged bench adapt`: train command -> first prediction from the new head, daemon running; capture throughput."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from ..mqtt.broker import local_broker
from .common import DATA, bench_backbone, load_sign_digits, table
from .daemonrun import Probe, prepare_state, start_daemon, stop_daemon, write_config


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=str(DATA / "sign-digits"))
    p.add_argument("--alpha", type=float, default=0.25)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--examples", type=int, default=200)
    p.add_argument("--classes", type=int, default=0, help="only this many digits, examples split evenly (0: all, drawn "
                                                          "at random)")
    p.add_argument("--capture", type=int, default=100, help="examples captured over MQTT for the throughput figure")
    p.add_argument("--rounds", type=int, default=3, help="train commands timed")


def run(args) -> int:
    from .pipeline import make_video

    cfg, info = bench_backbone(args.alpha, args.size)
    images, labels = load_sign_digits(args.data)
    rng = np.random.default_rng(0)
    if args.classes:
        digits = sorted(set(labels.tolist()))[: args.classes]
        pick = np.concatenate([rng.permutation(np.flatnonzero(labels == d))[: args.examples // len(digits)]
                               for d in digits])
    else:
        pick = rng.permutation(len(labels))[: args.examples]
    broker = local_broker()
    video = make_video(640, 480)
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            state = Path(tmp)
            prepare_state(state, info, [(images[i], f"d{labels[i]}") for i in pick])
            extra = "[heads]\nactive = [\"knn\", \"classifier\"]\n"
            config = write_config(state, broker.port, str(video), cfg.model_dump(), "adapt", extra)
            probe = Probe(broker.port, "adapt")
            proc = start_daemon(config, state / "daemon.log")
            try:
                probe.wait(lambda t, m: t == "edged/adapt/status" and m.get("state") == "online", 60)
                probe.wait(lambda t, m: t == "edged/adapt/prediction/knn", 30)
                for r in range(args.rounds):
                    corr = f"train-{r}"
                    t_send = probe.send("train", {"head": "classifier", "id": corr})
                    t_reply, reply = probe.wait(lambda t, m: t == "edged/adapt/reply/train" and m.get("id") == corr and m.get("final"), 300)
                    if not reply["ok"]:
                        raise SystemExit(f"train failed: {reply['error']}")
                    version = reply["result"]["version"]
                    t_pred, pred = probe.wait(lambda t, m: t == "edged/adapt/prediction/classifier" and m.get("ts", 0) >= 0
                                              and t_reply is not None, 30)
                    tuned = "—"
                    result = reply["result"]
                    if any(str(result.get(k, "")).startswith("following") for k in ("search", "fine_tune")):
                        t_tuned, job = probe.wait(lambda t, m: t == "edged/adapt/job" and m.get("for") == corr
                                                  and m.get("final"), 1800)
                        done = job.get("result", {})
                        outcome = "; ".join(str(x).split(":")[0] for x in (done.get("search"),
                                            done.get("metrics", {}).get("fine_tune")) if x) if job.get("ok") \
                            else job.get("error", "")
                        tuned = f"{t_tuned - t_send:.1f} ({outcome})"
                    rows.append([f"train #{r + 1} ({version})", f"{t_reply - t_send:.2f}", f"{t_pred - t_send:.2f}",
                                 reply["result"]["metrics"].get("cv_accuracy"), tuned])
                t_send = probe.send("capture", {"label": "bench", "count": args.capture, "interval_ms": 0, "id": "cap"})
                t_done, reply = probe.wait(lambda t, m: t == "edged/adapt/reply/capture" and m.get("final"), 120)
                capture_rate = args.capture / (t_done - t_send)
                preds = 0
                t_end = time.perf_counter() + 2
                while time.perf_counter() < t_end:
                    try:
                        probe.wait(lambda t, m: t == "edged/adapt/prediction/knn", 0.2)
                        preds += 1
                    except TimeoutError:
                        pass
            finally:
                stop_daemon(proc)
                probe.close()
    finally:
        broker.close()
    print(f"{len(pick)} stored sign-digits examples, classifier head, "
          f"{info.description}; the default train: the default learner on the stored examples answers and serves; "
          f"the search over learners and augmented copies follows as a job (then, where TensorFlow is installed, a "
          f"fine-tune in the same job); the daemon keeps serving")
    print(table(rows, ["command", "reply s", "first new prediction s", "cv accuracy", "follow-up job done s"]))
    best = min(float(r[2]) for r in rows)
    warm = [float(r[2]) for r in rows[1:]] or [best]
    print(f"capture while serving: {capture_rate:.1f} examples/s stored durably (count {args.capture}, interval 0)")
    print(f"adapt: train -> serving {float(rows[0][2]):.2f} s first, {np.median(warm):.2f} s warm (target <= 2 s warm, <= 5 s first)")
    return 0
