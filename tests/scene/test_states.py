"""Debounced states and events: enter after a run of wins, hysteresis against flicker, exit on low scores."""

from edged.config import EventsConfig, StatesConfig
from edged.scene.events import EventTracker
from edged.scene.states import StateTracker


def feed(tracker, answers, dt=1 / 15, t0=0.0):
    """(label, score) answers at 15 fps; the states it changed to, with the answer index."""
    changes = []
    for i, (label, score) in enumerate(answers):
        state = tracker.observe(label, score, t0 + i * dt, 1000.0 + i * dt, i)
        if state is not None:
            changes.append((i, state.label))
    return changes


def test_a_label_enters_after_enter_wins_in_a_row_and_not_before():
    tracker = StateTracker(StatesConfig(enter=3, min_score=0.5))
    changes = feed(tracker, [("mug", 0.9), ("mug", 0.9), ("keys", 0.9), ("mug", 0.9), ("mug", 0.9), ("mug", 0.9)])
    assert changes == [(5, "mug")]  # the keys answer broke the run: three leads in a row from index 3
    assert 0.8 <= tracker.state.score <= 0.9 and tracker.state.frame == 5  # the running score that decided


def test_an_answer_hovering_between_two_labels_does_not_flap():
    tracker = StateTracker(StatesConfig(enter=3, min_score=0.5, exit_score=0.35, exit_s=3))
    feed(tracker, [("mug", 0.9)] * 5)
    hover = [("mug", 0.55) if i % 2 else ("keys", 0.55) for i in range(900)]  # 60 s at 15 fps
    assert feed(tracker, hover, t0=1.0) == []
    assert tracker.state.label == "mug"


def test_low_scores_for_exit_s_make_the_state_none_and_a_win_between_resets_the_clock():
    tracker = StateTracker(StatesConfig(enter=2, min_score=0.5, exit_score=0.35, exit_s=1.0))
    # low answers for 0.67 s, two middling ones (the running score back over exit_score), then low again
    answers = [("mug", 0.9)] * 3 + [("keys", 0.2)] * 10 + [("keys", 0.5)] * 2 + [("keys", 0.2)] * 30
    changes = feed(tracker, answers)
    assert changes[0] == (2, "mug")
    assert changes[1][1] == "none" and 15 + 15 <= changes[1][0] <= 15 + 17, changes  # 1 s after the middling ones


def test_enter_s_also_asks_for_time():
    tracker = StateTracker(StatesConfig(enter=2, enter_s=1.0, min_score=0.5))
    changes = feed(tracker, [("mug", 0.9)] * 30)
    assert changes == [(16, "mug")]  # 1 s after its running score first led (the second answer), not 2 answers


def test_events_start_update_and_end_with_the_best_frame():
    cfg = EventsConfig(update_s=1.0)
    states = StateTracker(StatesConfig(enter=2, min_score=0.5, exit_score=0.3, exit_s=0.5))
    events = EventTracker(cfg, "knn", "")
    log = []
    answers = [("none", 0.9)] * 3 + [("fox", 0.6), ("fox", 0.7), ("fox", 0.8), ("fox", 0.95)] + [("fox", 0.8)] * 30 + \
              [("none", 0.9)] * 5
    for i, (label, score) in enumerate(answers):
        now, frame = i / 15, f"frame{i}"
        state = states.observe(label, score, now, 1000 + now, i)
        if state is not None:
            log += [(kind, e.label, e.top_score, e.best_frame) for kind, e in events.on_state(state, frame, now, score)]
        else:
            update = events.on_prediction(label, score, frame, now)
            if update:
                log.append((update[0], update[1].label, update[1].top_score, update[1].best_frame))
    kinds = [k for k, *_ in log]
    assert kinds == ["start", "update", "end"], log  # 'none' is not of interest: no event of its own
    assert log[0][1] == "fox" and log[0][2] == 0.8 and log[0][3] == "frame5"  # its running score's second lead
    assert log[1][2] == 0.95 and log[1][3] == "frame6"  # the update carries the best frame
    assert log[2][3] == "frame6"


def test_an_event_keeps_frames_of_its_label_spread_over_its_length_and_no_more_than_asked():
    states = StateTracker(StatesConfig(enter=2, min_score=0.5, exit_score=0.3, exit_s=0.5))
    events = EventTracker(EventsConfig(kept_frames=4), "knn", "")
    answers = [("fox", 0.9)] * 150 + [("cat", 0.2)] * 3 + [("fox", 0.9)] * 150 + [("none", 0.9)] * 20  # 20 s of fox
    ended = []
    for i, (label, score) in enumerate(answers):
        now, frame = i / 15, i
        state = states.observe(label, score, now, 1000 + now, i)
        if state is not None:
            ended += [e for kind, e in events.on_state(state, frame, now, score) if kind == "end"]
        else:
            events.on_prediction(label, score, frame, now)
    assert len(ended) == 1
    kept = ended[0].kept
    assert 2 <= len(kept) <= 4 and kept == sorted(kept)
    assert not set(kept) & {150, 151, 152}  # only frames that answered the event's label
    assert kept[0] <= 10 and kept[-1] >= 200  # from its start to late in it, not its first seconds alone
    assert min(b - a for a, b in zip(kept, kept[1:])) >= 30

    none = EventTracker(EventsConfig(kept_frames=0), "knn", "")
    fresh = StateTracker(StatesConfig(enter=1, min_score=0.5))
    state = next(s for i in range(10) if (s := fresh.observe("fox", 0.9, i / 15, 1000 + i / 15, i)) is not None)
    none.on_state(state, "frame", 0.0, 0.9)
    none.on_prediction("fox", 0.9, "later", 35.0)
    assert none.current is not None and none.current.kept == []


def test_a_few_unknown_answers_do_not_end_a_state_but_a_lasting_stretch_does():
    tracker = StateTracker(StatesConfig(enter=3, min_score=0.5, exit_score=0.35, exit_s=2.0))
    answers = [("nine", 0.9)] * 10 + [("unknown", 0.8)] * 20 + [("nine", 0.9)] * 10  # 1.3 s unsure, then sure again
    assert feed(tracker, answers) == [(3, "nine")]
    later = feed(tracker, [("unknown", 0.9)] * 60, t0=10.0)  # 4 s of 'unknown': nothing taught is there
    assert [label for _, label in later] == ["none"] and 30 <= later[0][0] <= 33, later
