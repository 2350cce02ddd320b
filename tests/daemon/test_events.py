"""States, events and the motion gate end to end: a daemon subprocess, a real mosquitto, a real mp4 of a scene in
which a taught object enters and leaves (camera noise, a light drift, a masked distractor)."""

from __future__ import annotations

import base64
import json

import cv2
import numpy as np
import pytest
from conftest import WEIGHTS_025, backbone_settings, edged_cli, needs_weights, teach, toml_config, wait_until
from conftest import write_config

from edged.bench.eventscene import Appearance, EventScene, shape_photo, textured_background

DEVICE = "cam1"
CORNER = (0.0, 0.0, 0.25, 0.3)
BOX = (0.35, 0.25, 0.8, 0.9)
ENTERS, LEAVES, LENGTH = 4.0, 9.0, 20.0


def _teach(state, backbone, crops) -> None:
    """Store the scene's star and empty frames, cropped by `crops` ((crop, label, seed) per group)."""
    scene = _scene()
    taught = [(crop(img), label, None) for crop, label, seed in crops for img in scene.examples(label, 8, seed=seed)]
    teach(state, backbone, taught)


def _scene() -> EventScene:
    return EventScene(textured_background(), {"star": [shape_photo("star")]}, [Appearance("star", ENTERS, LEAVES, BOX)],
                      fps=15.0, distractor=CORNER, drift_period_s=60.0)


@pytest.mark.heavy
@needs_weights
def test_an_object_entering_and_leaving_is_one_event_and_a_still_scene_sends_nothing(broker, probe, daemons,
                                                                                     make_state, tmp_path):
    backbone = backbone_settings(str(WEIGHTS_025), input_size=128)
    state = make_state(backbone)
    scene = _scene()
    video = scene.write(tmp_path / "scene.mp4", LENGTH)
    whole = lambda img: img  # noqa: E731
    _teach(state, backbone, [(whole, "star", 1), (whole, "background", 1)])

    extra = f"""
[gate]
masks = [{list(CORNER)}]
max_idle_s = 60
[states]
enter = 3
exit_s = 1.0
[events]
update_s = 1.0
clip_s = 1.0
retrain_after_wrong = 2
[homeassistant]
enabled = true
snapshot_interval_s = 0
"""
    config = write_config(tmp_path / "events.toml", toml_config(state, broker.port, str(video), backbone, DEVICE, extra,
                                                                 every_frame=False, fps=15))
    probe.client.subscribe("homeassistant/#", qos=1)
    d = daemons(config, tmp_path / "events.log")
    probe.wait_online(DEVICE, 90)

    start = json.loads(probe.wait_for(lambda t, p, r: t == f"edged/{DEVICE}/event/knn" and b'"start"' in p, 60)[1])
    assert start["label"] == "star" and start["head"] == "knn" and start["score"] >= 0.5
    end = json.loads(probe.wait_for(lambda t, p, r: t == f"edged/{DEVICE}/event/knn" and b'"end"' in p, 30)[1])
    assert end["id"] == start["id"] and 3.0 <= end["end"] - end["start"] <= 7.0, end  # on screen for 5 s

    probe.wait_for(lambda t, p, r: t == f"edged/{DEVICE}/state/knn" and json.loads(p)["label"] == "background", 10)
    states = [json.loads(p) for t, p, r in probe.seen if t == f"edged/{DEVICE}/state/knn"]
    labels = [s["label"] for s in states]
    assert labels == ["background", "star", "background"], labels  # each change once: no flicker reaches subscribers
    assert states[1]["event"] == start["id"]
    # the retained status follows the states (issue 33, 12: `edged status` was minutes stale)
    retained = [json.loads(p) for t, p, r in probe.seen if t == f"edged/{DEVICE}/status"]
    followed = [s["scene"]["states"].get("knn", {}).get("label") for s in retained if "scene" in s]
    assert "star" in followed, followed
    def followed_now():
        probe.drain()
        return [json.loads(p).get("scene", {}).get("states", {}).get("knn", {}).get("label")
                for t, p, r in probe.seen if t == f"edged/{DEVICE}/status"]

    wait_until(lambda: followed_now()[-1:] == ["background"], 10, what=followed_now)
    predictions = [p for t, p, r in probe.seen if t.startswith(f"edged/{DEVICE}/prediction/")]
    assert len(predictions) <= 10, len(predictions)  # [publish] predictions = "change" (the default)

    # the scene is still again: no state message, no prediction while it stays so (the rest of the video)
    probe.drain()
    quiet = probe.collect(f"edged/{DEVICE}/state/knn", 4.0) + probe.collect(f"edged/{DEVICE}/prediction/knn", 0.1)
    assert quiet == []

    # the gate skipped most frames; the watchdog and the frame count still saw every one
    stats = json.loads(probe.wait_for(lambda t, p, r: t == f"edged/{DEVICE}/stats", 10)[1])
    assert stats["gate"]["skipped_still"] > stats["inferences"] / 2, stats
    assert stats["frames"] > stats["inferences"], stats

    # Home Assistant's entities read the state and event topics; the event's snapshot is its image
    probe.drain()
    discovery = json.loads([p for t, p, r in probe.seen if t == "homeassistant/device/edged_cam1/config"][-1])
    assert discovery["components"]["edged_cam1_present_knn_star"]["state_topic"] == f"edged/{DEVICE}/state/knn"
    event_image = next(p for t, p, r in probe.seen if t == f"edged/{DEVICE}/event_snapshot")
    assert cv2.imdecode(np.frombuffer(event_image, np.uint8), cv2.IMREAD_COLOR) is not None

    # the event over MQTT, with its snapshot; on disk with its clip; through the CLI
    listed = probe.request(DEVICE, "events", {})
    assert listed.get("ok"), listed
    listed = listed["result"]["events"]
    assert listed[0]["id"] == start["id"] and listed[0]["end"] is not None
    one = probe.request(DEVICE, "events", {"event": start["id"]})["result"]["event"]
    jpeg = base64.b64decode(one["snapshot_jpeg_base64"])
    best = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert best.shape[:2] == (240, 320)
    assert probe.request(DEVICE, "state", {})["result"]["states"]["knn"]["label"] == "background"
    bad = probe.request(DEVICE, "events", {"event": "../../etc"})
    assert not bad["ok"] and "event id" in bad["error"]

    clip = cv2.VideoCapture(str(state / "events" / start["id"] / "clip.mp4"))
    frames = int(clip.get(cv2.CAP_PROP_FRAME_COUNT))
    clip.release()
    assert frames >= 15 * 5, frames  # pre-roll + the event + post-roll
    out = edged_cli("events", "show", start["id"], "--config", str(config), "--snapshot", str(tmp_path / "best.jpg"),
                    timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["label"] == "star" and (tmp_path / "best.jpg").read_bytes() == jpeg

    # issue 37, 4: "that was wrong" from the CLI (the same command as MQTT and Home Assistant's button): the event's
    # best frame and the frames it kept over its length become examples of background; the kNN knows them at once;
    # `delete` takes them back
    kept = sorted(p.name for p in (state / "events" / start["id"]).glob("frame-*.jpg"))
    assert 2 <= len(kept) <= 6, kept  # [events] kept_frames, written when the event ended
    before = probe.request(DEVICE, "status", {})["result"]["examples"]
    out = edged_cli("cmd", "--config", str(config), "wrong", "--event", start["id"], timeout=60)
    assert out.returncode == 0, out.stderr
    marked = json.loads(out.stdout)
    n = len(kept) + 1
    assert marked["said"] == "star" and marked["label"] == "background" and len(marked["examples"]) == n, marked
    assert marked["counts"]["background"] == before["background"] + n
    stored = probe.request(DEVICE, "examples", {"label": "background", "limit": n})["result"]["examples"]
    assert {e["id"] for e in stored} == set(marked["examples"])
    same = probe.request(DEVICE, "wrong", {"head": "knn", "label": "star"})  # the newest event, and what it said
    assert not same["ok"] and "already said 'star'" in same["error"], same
    assert not probe.request(DEVICE, "wrong", {})["ok"]  # an event or a head
    undone = probe.request(DEVICE, "delete", {"ids": marked["examples"]})["result"]
    assert undone["deleted"] == n and undone["counts"]["background"] == before["background"]
    assert "train the classifier" in marked["note"]  # no head that only `train` teaches is active yet

    # with the classifier serving, every `retrain_after_wrong` (here 2) marks train it again by themselves
    trained = probe.request(DEVICE, "train", {"head": "classifier"}, timeout=120)
    assert trained["ok"], trained
    first = probe.request(DEVICE, "wrong", {"event": start["id"]})["result"]
    assert "after 1 more mark" in first["note"], first
    second = probe.request(DEVICE, "wrong", {"event": start["id"]})["result"]
    assert "training classifier again now" in second["note"], second
    job = json.loads(probe.wait_for(lambda t, p, r: t == f"edged/{DEVICE}/job" and b"after wrong marks" in p
                                    and json.loads(p).get("final"), 120)[1])
    assert job["ok"] and job["result"]["version"] != trained["result"]["version"], job
    assert job["result"]["metrics"]["examples"] == trained["result"]["metrics"]["examples"] + 2 * n, job
    assert d.stop() == 0, d.output()


@pytest.mark.heavy
@needs_weights
def test_regions_have_their_own_states_and_are_taught_from_their_crop(broker, probe, daemons, make_state, tmp_path):
    from edged.config import Camera, RegionConfig, SourceConfig
    from edged.scene.views import views_of

    backbone = backbone_settings(str(WEIGHTS_025), input_size=128)
    state = make_state(backbone)
    scene = _scene()
    video = scene.write(tmp_path / "scene.mp4", LENGTH)
    regions = [RegionConfig(name="shelf", box=(0.0, 0.35, 0.3, 0.95)), RegionConfig(name="desk", box=BOX)]
    shelf, desk = views_of(Camera("", SourceConfig(), tuple(regions)))
    _teach(state, backbone, [(desk.crop, "star", 1), (desk.crop, "background", 1), (shelf.crop, "background", 2)])
    extra = f"""
[gate]
masks = [{list(CORNER)}]
[states]
exit_s = 1.0
[[regions]]
name = "shelf"
box = {list(shelf.box)}
[[regions]]
name = "desk"
box = {list(desk.box)}
"""
    config = write_config(tmp_path / "regions.toml", toml_config(state, broker.port, str(video), backbone, DEVICE, extra,
                                                                  every_frame=False, fps=15))
    d = daemons(config, tmp_path / "regions.log")
    probe.wait_online(DEVICE, 90)
    start = json.loads(probe.wait_for(lambda t, p, r: t == f"edged/{DEVICE}/event/knn/desk" and b'"start"' in p, 60)[1])
    assert start["label"] == "star" and start["region"] == "desk"
    probe.wait_for(lambda t, p, r: t == f"edged/{DEVICE}/event/knn/desk" and b'"end"' in p, 30)
    shelf_states = [json.loads(p)["label"] for t, p, r in probe.seen if t == f"edged/{DEVICE}/state/knn/shelf" and not r]
    assert shelf_states == ["background"], shelf_states  # nothing moved on the shelf: decided once, never changed
    # with regions only the regions are served (a retained whole-frame state of an earlier run is the broker's memory)
    assert not [t for t, p, r in probe.seen if not r and t in (f"edged/{DEVICE}/state/knn", f"edged/{DEVICE}/event/knn")]

    # a capture of a region stores its crop (and an unknown region is refused, naming the configured ones)
    bad = probe.request(DEVICE, "capture", {"label": "box", "count": 1, "region": "garage"})
    assert not bad["ok"] and "capture.region" in bad["error"] and "shelf, desk" in bad["error"]
    reply = probe.request(DEVICE, "capture", {"label": "box", "count": 2, "interval_ms": 0, "region": "shelf"})
    assert reply["ok"] and reply["result"]["stored"] == 2 and reply["result"]["region"] == "shelf", reply
    assert d.stop() == 0, d.output()
    from edged.state.store import Store

    store = Store(state / "store")
    try:
        box_ids = [row["id"] for row in store.list("box", 10)]
        assert len(box_ids) == 2
        frame = store.load_frame(box_ids[0])
    finally:
        store.close()
    assert frame.shape[:2] == shelf.crop(scene.frame(0)).shape[:2]  # the shelf's crop, not the whole frame
