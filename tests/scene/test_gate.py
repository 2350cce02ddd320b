"""The motion gate on rendered scenes: camera noise, a slow light drift and a masked distractor do not wake the
backbone; an object entering does, at once; a still scene is still inferred every max_idle_s."""

from edged.bench.eventscene import Appearance, EventScene, shape_photo, textured_background
from edged.config import Camera, GateConfig, RegionConfig, SourceConfig, StatesConfig
from edged.scene.gate import Gate
from edged.scene.states import StateTracker
from edged.scene.views import View, views_of

CORNER = (0.0, 0.0, 0.25, 0.3)


def scene(script=(), drift_period_s=20.0):
    return EventScene(textured_background(), {"star": [shape_photo("star")]}, list(script), noise=3.0,
                      drift=0.15, drift_period_s=drift_period_s, distractor=CORNER)


def run(gate, sc, seconds, fps=15.0):
    """(time, view names inferred) per frame."""
    out = []
    for i in range(int(seconds * fps)):
        t = i / fps
        out.append((t, [v.name for v in gate.due(sc.frame(t), t)]))
    return out


def test_noise_light_drift_and_a_masked_distractor_leave_the_backbone_idle():
    gate = Gate(GateConfig(masks=[CORNER], max_idle_s=5.0), views_of(Camera("", SourceConfig())))
    frames = run(gate, scene(), 20.0)  # the light goes through a whole 15 % cycle
    inferred = [t for t, views in frames if views]
    # the first frame (no background yet), its hold, then once every max_idle_s
    assert len(inferred) <= 1 + 15 + 4, inferred
    assert gate.reasons["skipped_still"] >= 250 and gate.reasons["idle"] == 3


def test_the_distractor_without_its_mask_is_motion():
    gate = Gate(GateConfig(), views_of(Camera("", SourceConfig())))
    frames = run(gate, scene(), 6.0)
    assert sum(1 for _, v in frames if v) > 0.8 * len(frames)


def test_an_object_entering_wakes_the_backbone_on_its_first_frame_and_it_sleeps_again_once_still():
    sc = scene([Appearance("star", 4.0, 100.0, (0.35, 0.3, 0.75, 0.85))])
    gate = Gate(GateConfig(masks=[CORNER], hold_s=1.0, max_idle_s=60.0), views_of(Camera("", SourceConfig())))
    frames = run(gate, sc, 12.0)
    enter = next(i for i, (t, _) in enumerate(frames) if t >= 4.0)
    assert frames[enter][1] == [""], "the first frame with the object is inferred"
    assert not any(v for t, v in frames if 1.5 < t < 4.0)
    # the object stays still: the background takes it in and the gate closes again within a few seconds
    assert not any(v for t, v in frames if t > 9.0)


def test_regions_are_gated_on_their_own_and_a_settling_state_keeps_its_view_inferred():
    regions = [RegionConfig(name="left", box=(0.0, 0.3, 0.3, 1.0)), RegionConfig(name="right", box=(0.35, 0.3, 0.75, 0.85))]
    sc = scene([Appearance("star", 3.0, 100.0, (0.35, 0.3, 0.75, 0.85))])
    gate = Gate(GateConfig(masks=[CORNER], hold_s=0.5, max_idle_s=60.0), views_of(Camera("", SourceConfig(), tuple(regions))))
    frames = run(gate, sc, 5.0)
    woke = [v for t, v in frames if 3.0 <= t < 3.2]
    assert all(v == ["right"] for v in woke), woke
    tracker = StateTracker(StatesConfig())
    tracker.observe("star", 0.9, 0.0, 0.0)
    tracker.observe("star", 0.9, 0.1, 0.1)  # one lead of three: settling
    assert tracker.settling
    settling = Gate(GateConfig(masks=[CORNER], max_idle_s=60.0), [View("")])
    quiet = scene(drift_period_s=1000.0)
    settling.due(quiet.frame(0.0), 0.0)
    assert settling.due(quiet.frame(5.0), 5.0, settling=lambda view: tracker.settling) != []
    assert settling.due(quiet.frame(5.1), 5.1) == []
