"""`edged bench mistakes`: does "that was wrong" fix the next event? A scripted scene where taught objects and
look-alikes nobody taught come and go, played to a real daemon with the default config; up to `--marks` of the
false events it made are marked `wrong` (the same command as the teach page, Home Assistant's button and the CLI),
and the same scene is played again to the same state; then a scene where every object comes in another place (a
look-alike where it was never marked). False events an hour and recall on the taught objects, before and after,
side by side."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2

from ..config import BACKGROUND
from ..mqtt.broker import local_broker
from .common import bench_backbone, table
from .daemonrun import prepare_state, start_daemon, stop_daemon, write_config
from .events import FPS, SPOTS, Recorder, print_said, scene_photos, score_events
from .eventscene import Appearance, EventScene

TAUGHT = {"two": "2", "five": "5"}
LOOKALIKES = {"three": "3", "four": "4"}  # hands like the taught ones, never taught


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--minutes", type=float, default=10.0, help="length of the scene, played twice")
    p.add_argument("--alpha", type=float, default=None, help="default: what backbone.choose = 'auto' serves here")
    p.add_argument("--size", type=int, default=None, help="default: what backbone.choose = 'auto' serves here")
    p.add_argument("--examples", type=int, default=18, help="examples taught per label (each of its 3 photos in each of "
                                                            "the 3 places, twice) and of the empty scene")
    p.add_argument("--marks", type=int, default=5, help="false events marked wrong between the two plays")


def script(minutes: float, moved: int = 0) -> list[Appearance]:
    """Taught objects and look-alikes in turn, 10-16 s each, in the bench's three places; `moved`: each appearance
    that many places on (the same photo then never comes where it came before)."""
    length = minutes * 60
    labels = [l for pair in zip(TAUGHT, LOOKALIKES) for l in pair]
    n = max(4, round(16 * minutes / 10))
    slot = length / (n + 1)
    return [Appearance(labels[i % len(labels)], 5 + i * slot, 5 + i * slot + min(0.6 * slot, 16.0),
                       SPOTS[(i + moved) % len(SPOTS)], variant=i // len(labels)) for i in range(n)]


def as_the_camera_sends(examples: list[tuple], path: Path) -> list[tuple]:
    """The taught frames as a capture stores them: through the same video codec as the scene the daemon watches,
    not the clean renderings (a still camera's frames differ from them by the codec's artefacts alone)."""
    h, w = examples[0][0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (w, h))
    for img, _ in examples:
        writer.write(img)
    writer.release()
    video = cv2.VideoCapture(str(path))
    frames = [video.read()[1] for _ in examples]
    video.release()
    return [(frame, label) for frame, (_, label) in zip(frames, examples)]


def false_events(events: list[tuple[float, dict]], truth: list[Appearance]) -> list[dict]:
    """Event starts not matching a taught object on screen: a look-alike or the empty scene taken for one."""
    out = []
    for _, m in events:
        if m.get("type") != "start":
            continue
        t = m["frame"] / FPS
        showing = [a for a in truth if a.start_s - 1.0 <= t < a.end_s + 1.0 and a.label == m["label"]]
        if not showing:
            out.append(m)
    return out


def _play(config: Path, rec: Recorder, length: float, what: str, then=None) -> list[str]:
    """Play the scene to a fresh daemon on `config`'s state; `then()` runs while it still serves."""
    proc = start_daemon(config, config.parent / f"daemon-{what}.log")
    try:
        rec.wait(lambda t, m: t.endswith("/status") and m.get("state") == "online", 180)
        t0 = time.monotonic()
        while time.monotonic() - t0 < length + 3:
            time.sleep(5)
            print(f"  {what} {time.monotonic() - t0:.0f}/{length:.0f} s", flush=True)
        return then() if then is not None else []
    finally:
        stop_daemon(proc)


def run(args) -> int:
    cfg, info = bench_backbone(args.alpha, args.size)
    background, objects, source = scene_photos({**TAUGHT, **LOOKALIKES}, ("star", "disc", "star", "block"))
    length = args.minutes * 60
    scripts = {"before": script(args.minutes), "after": script(args.minutes), "moved": script(args.minutes, moved=1)}
    taught_truth = [a for a in scripts["before"] if a.label in TAUGHT]
    scenes = {play: EventScene(background, objects, truth, size=(320, 240), fps=FPS, noise=3.0, drift=0.15,
                               drift_period_s=length) for play, truth in scripts.items()}
    print(f"scene: {args.minutes:g} min at {FPS:g} fps, {len(taught_truth)} taught appearances "
          f"({', '.join(TAUGHT)}), {len(scripts['before']) - len(taught_truth)} look-alikes "
          f"({', '.join(LOOKALIKES)}), {source}; played before the marks, after them, and after them with every "
          f"object one place on; backbone {info.description}", flush=True)
    broker = local_broker()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            videos = {play: scene.write(tmp / f"scene-{play}.mp4", length + 3) for play, scene in scenes.items()}
            scene = scenes["before"]
            taught = [(img, BACKGROUND) for img in scene.examples(BACKGROUND, args.examples)]
            for label in TAUGHT:
                spots = [Appearance(label, 0, 0, spot, variant=v) for spot in SPOTS for v in range(3)]
                taught += [(img, label) for img in scene.examples(label, args.examples, showing=spots)]
            state = tmp / "state"
            prepare_state(state, info, as_the_camera_sends(taught, tmp / "taught.mp4"))
            figures, marked = {}, []
            for play, truth in scripts.items():
                config = write_config(state, broker.port, str(videos[play]), cfg.model_dump(), "mistakes",
                                      every_frame=False, fps=FPS, loop=False)
                taught_here = [a for a in truth if a.label in TAUGHT]
                rec = Recorder(broker.port, "mistakes")
                mark = (lambda: _mark(rec, false_events(rec.of("event"), taught_here), args.marks)) \
                    if play == "before" else None
                marked += _play(config, rec, length, play, mark)
                events = rec.of("event")
                recall, _, _ = score_events(events, taught_here, (-1.0, -1.0))
                figures[play] = {"false": len(false_events(events, taught_here)), "recall": recall,
                                 "starts": sum(1 for _, m in events if m.get("type") == "start")}
                print(f"{play}:")
                print_said(rec, truth, lambda a: "" if a.label in TAUGHT else " (look-alike)")
                rec.close()
    finally:
        broker.close()
    hour = 3600 / length
    names = {"before": "before", "after": f"after {len(marked)} marks", "moved": "after, objects moved"}
    rows = [[names[play], f"{f['starts']}", f"{f['false']}", f"{f['false'] * hour:.0f}", f"{f['recall']:.3f}"]
            for play, f in figures.items()]
    print(f"marked wrong between the plays: {len(marked)} events ({', '.join(marked) or 'none'})")
    print(table(rows, ["play", "event starts", "false events", "false events an hour", "recall (taught)"]))
    a, b, m = figures["before"], figures["after"], figures["moved"]
    print(f"objects moved (look-alikes where none was marked): false events an hour {m['false'] * hour:.0f}, recall "
          f"{m['recall']:.3f}")
    print(f"mistakes: false events an hour before {a['false'] * hour:.0f} after {b['false'] * hour:.0f}, recall before "
          f"{a['recall']:.3f} after {b['recall']:.3f} (targets B <= A/5, D >= C - 0.02)")
    return 0


def _mark(rec: Recorder, wrong: list[dict], marks: int) -> list[str]:
    """Mark up to `marks` false events wrong through the serving daemon, as a user would, one at a time."""
    done = []
    for i, m in enumerate(wrong[:marks]):
        rec.probe.send("wrong", {"event": m["id"], "id": f"mark-{i}"})
        reply = rec.wait(lambda t, r: t.endswith("/reply/wrong") and r.get("id") == f"mark-{i}"
                         and r.get("final", True), 60)
        if reply.get("ok"):
            done.append(f"{m['label']}@{m['frame'] / FPS:.0f}s")
        else:
            print(f"  wrong {m['id']}: {reply.get('error')}")
    return done
