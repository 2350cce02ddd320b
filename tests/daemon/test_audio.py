"""Sound end to end: a daemon subprocess, a real mosquitto, a WAV file made here (room noise with a smoke alarm
and a knock at scripted times, looped) read as overlapping windows drawn as spectrograms, a real MobileNet.
Taught from windows of other renditions; the daemon's states and events follow the script, the background
makes none, and a capture takes only windows of the right loudness."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess

import numpy as np
import pytest
from conftest import ROOT, SHARED, WEIGHTS_025, backbone_settings, edged_cli, headless_browser, needs_weights, state_config, wait_until
from conftest import teach, toml_config, write_config

from edged.bench.audio import noise, synthetic_sound
from edged.config import SourceConfig
from edged.mqtt.broker import free_port
from edged.serve.backbone import open_backbone
from edged.sources import open_source
from edged.sources.wav import read_wav, wav_bytes
from edged.sources.preprocess import to_pixels
from edged.state.store import NewExample, Store

DEVICE = "ears"
RATE = 16_000
LOOP_S = 10.0  # noise 0-3 s, smoke alarm from 3 s, noise, knock from 7 s


def _write_wav(path, samples) -> str:
    path.write_bytes(wav_bytes(samples))
    return str(path)


def _room(seconds: float, rng) -> np.ndarray:
    return noise(int(seconds * RATE), rng) * 300.0


def _script(rng) -> np.ndarray:
    out = _room(LOOP_S, rng)
    for start, kind in ((3.0, "smoke alarm"), (7.0, "knock")):
        sound = synthetic_sound(kind, rng)
        at = int(start * RATE)
        out[at:at + sound.size] += sound
    return out


def _windows(path: str) -> list:
    source = open_source(SourceConfig(uri=path, loop=False))
    source.open()
    frames = []
    while (frame := source.read()) is not None:
        frames.append(frame)
    return frames


def _teach(state, backbone, tmp_path) -> None:
    """Windows of other renditions as a capture keeps them: those holding all of a sound, quiet ones of the room
    as `background`."""
    rng = np.random.default_rng(7)
    items = []
    for kind in ("smoke alarm", "knock"):
        for i in range(4):
            clip = _room(4.0, rng)  # the room first: the noise floor is learnt before the sound
            sound = synthetic_sound(kind, rng)
            clip[2 * RATE:2 * RATE + sound.size] += sound
            items += [(f.image, kind, None) for f in _windows(_write_wav(tmp_path / f"{kind}{i}.wav", clip)) if f.sound.whole]
    room = _windows(_write_wav(tmp_path / "room.wav", _room(6.0, rng)))
    items += [(f.image, "background", None) for f in room[::2] if not f.sound.loud]
    teach(state, backbone, items)


@pytest.mark.heavy
@needs_weights
def test_a_daemon_hears_the_sounds_it_was_taught(broker, probe, daemons, make_state, tmp_path):
    backbone = backbone_settings(str(WEIGHTS_025), input_size=128)
    state = make_state(backbone)
    _teach(state, backbone, tmp_path)
    wav = _write_wav(tmp_path / "kitchen.wav", _script(np.random.default_rng(1)))
    extra = "\n[states]\nexit_s = 0.5\n[events]\nupdate_s = 1.0\nclip_s = 1.0\n"
    config = write_config(tmp_path / "ears.toml", toml_config(state, broker.port, wav, backbone, DEVICE, extra,
                                                               every_frame=False))
    d = daemons(config, tmp_path / "ears.log")
    probe.wait_online(DEVICE, 90)

    # a loop of the script: the alarm is an event, then the knock; the room in between makes none
    topic = f"edged/{DEVICE}/event/knn"
    starts = []
    while len(starts) < 2:
        _, payload, _ = probe.wait_for(lambda t, p, r: t == topic and json.loads(p)["type"] == "start", 30)
        starts.append(json.loads(payload)["label"])
    assert set(starts) == {"smoke alarm", "knock"}, starts
    states = [json.loads(p)["label"] for t, p, r in probe.seen if t == f"edged/{DEVICE}/state/knn"]
    assert "background" in states and "unknown" not in starts, states

    # a capture of a sound counts sounds, not windows (issue 33, 2): one window holding all of each sound is kept,
    # the quiet ones and those cutting a sound at an edge are not
    reply = probe.request(DEVICE, "capture", {"label": "smoke alarm", "count": 2, "interval_ms": 0, "timeout_s": 30})
    assert reply["ok"] and reply["result"]["stored"] == reply["result"]["sounds"] == 2, reply
    assert reply["result"].get("skipped_loudness", 0) > 0 and reply["result"].get("skipped_cut", 0) > 0, reply
    status = probe.request(DEVICE, "status", {})["result"]
    assert status["source"]["state"] == "ok" and status["scene"]["gate"].get("skipped_still", 0) > 0, status["scene"]

    # a sound event's clip is the sound itself: clip_s before, the event, clip_s after
    clips = wait_until(lambda: sorted((state / "events").glob("*/clip.wav")), 30, what="a clip.wav written")
    event = json.loads((clips[0].parent / "event.json").read_text())
    seconds = len(read_wav(clips[0])) / RATE
    assert event["end"] is not None and seconds >= (event["end"] - event["start"]) + 1.5, (seconds, event)

    # "that was wrong" on a sound event: windows spread over the sound (not the clip's second before and after),
    # each stored with its samples
    right = "knock" if event["label"] != "knock" else "smoke alarm"
    marked = probe.request(DEVICE, "wrong", {"event": event["id"], "label": right})
    assert marked["ok"], marked
    ids = marked["result"]["examples"]
    assert 1 <= len(ids) <= 6 and marked["result"]["label"] == right, marked
    rows = [r for r in probe.request(DEVICE, "examples", {"label": right, "limit": 100})["result"]["examples"]
            if r["id"] in ids]
    assert len(rows) == len(ids) and all((state / r["frame"].replace(".jpg", ".wav")).is_file() for r in rows)
    assert d.stop() == 0, d.output()


def _whistle(rng) -> np.ndarray:
    """Someone whistling: 0.7 s near 2.5 kHz with vibrato."""
    t = np.arange(int(0.7 * RATE)) / RATE
    f = rng.uniform(2300, 2700) + 80 * np.sin(2 * np.pi * 6 * t)
    return rng.uniform(4000, 12000) * np.sin(2 * np.pi * np.cumsum(f) / RATE) * np.minimum(1, np.minimum(t, t[-1] - t) * 20)


def _peaks(state) -> list[int]:
    """The strongest frequency above 200 Hz of each stored doorbell example's sound."""
    store = Store(state / "store")
    rows = store.list("doorbell", 100)
    store.close()
    out = []
    for row in rows:
        samples = read_wav(state / row["frame"].replace(".jpg", ".wav"))
        spectrum = np.abs(np.fft.rfft(samples))
        low = int(200 * len(samples) / RATE)
        out.append(int((low + np.argmax(spectrum[low:])) * RATE / len(samples)))
    return out


def _readme_sound_block() -> list[list[str]]:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```sh\n(.*?)```", readme[readme.index("## Audio"):], re.S).group(1)
    return [shlex.split(line.split("#")[0]) for line in block.splitlines() if line.startswith("edged ")]


@pytest.mark.heavy
@needs_weights
def test_teach_your_doorbell_as_the_readme_says(broker, probe, daemons, make_state, tmp_path):
    """The README's "Sound" commands, in order, against a daemon hearing a hall where the same doorbell rings every
    3 s and, once a loop, someone whistles: the stored doorbell examples are the bell, never the whistle (issue 33,
    2), one example a ring."""
    backbone = backbone_settings(str(WEIGHTS_025), input_size=128)
    state = make_state(backbone)
    rng = np.random.default_rng(3)
    room = _room(15.0, rng)
    bell = synthetic_sound("chime", rng)
    for start in (1.0, 4.0, 7.0, 10.0):
        room[int(start * RATE):int(start * RATE) + bell.size] += bell
    tune = _whistle(rng)
    room[int(13.0 * RATE):int(13.0 * RATE) + tune.size] += tune
    wav = _write_wav(tmp_path / "hall.wav", room)
    web_port = free_port()
    config = write_config(tmp_path / "hall.toml", toml_config(
        state, broker.port, wav, backbone, "hall",
        f"\n[web]\nenabled = true\nport = {web_port}\n"
        '[fleet]\ntrainer = "remote"\n',  # the numpy head serves; no fine-tune job to wait out at the end
        every_frame=False))
    d = daemons(config, tmp_path / "hall.log")
    probe.wait_online("hall", 90)
    ran = []
    for argv in _readme_sound_block():
        words = argv[1:]
        at = words.index("--config")
        words[at + 1] = str(config)  # the README's my.toml is this test's config
        out = edged_cli(*words, timeout=300, cwd=tmp_path)
        assert out.returncode == 0, (argv, out.stdout, out.stderr)
        reply = json.loads(out.stdout)
        ran.append(words[at + 2])
        if ran[-1] == "capture" and reply["label"] == "doorbell":
            assert 3 <= reply["stored"] <= 5 and reply["stored"] + len(reply.get("set_aside", [])) == 5, reply
    assert ran == ["capture", "capture", "train"], ran
    assert reply["active"], reply
    assert [hz for hz in _peaks(state) if hz > 1500] == [], _peaks(state)  # the bell's, not the whistle's
    start = probe.wait_for(lambda t, p, r: t == "edged/hall/event/classifier" and json.loads(p)["type"] == "start", 60)
    assert json.loads(start[1])["label"] == "doorbell"

    # the teach page shows the spectrogram as the live view and a level meter that turns red while it rings
    assert probe.request("hall", "status", {})["result"]["sound"]["level_db"] < 0
    browser = headless_browser(tmp_path)
    from selenium.webdriver.support.ui import WebDriverWait  # after the skip when Selenium is missing

    try:
        browser.get(f"http://127.0.0.1:{web_port}/")
        js = browser.execute_script
        wait = WebDriverWait(browser, 30)
        wait.until(lambda b: js("return document.getElementById('live').naturalWidth") > 0)
        wait.until(lambda b: not js("return document.getElementById('meter').hidden"))
        wait.until(lambda b: js("return document.getElementById('meter').classList.contains('loud')"))
        assert js("return document.getElementById('level').textContent").endswith("dB, sound")
        # the page teaches sound as it teaches pictures: its "capture 10" button, then "train"
        count = lambda: js("return (status.examples || {})['doorbell'] || 0")  # noqa: E731
        wait.until(lambda b: count() >= 3 and js("return !!document.querySelector('.label-row[data-label=doorbell]')"))
        before = count()
        js("document.querySelector('.label-row[data-label=doorbell] button.capture10').click()")
        wait.until(lambda b: count() > before)  # a ring heard is a sound stored
        js("document.getElementById('train').click()")
        wait.until(lambda b: b.find_elements("id", "cv-accuracy"))
    finally:
        browser.quit()
    assert d.stop() == 0, d.output()


def _spoken(tmp_path, word: str, voice: str, speed: int = 150) -> np.ndarray:
    path = tmp_path / f"{word}-{voice.replace('+', '_')}-{speed}.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(path), word], check=True, capture_output=True)
    return read_wav(path)


@pytest.mark.heavy
@needs_weights
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="Debian's espeak-ng is not installed")
@pytest.mark.skipif(not (SHARED / "models" / "speech_embedding").is_dir(), reason="../shared/models/speech_embedding absent")
def test_the_speech_backbone_learns_words_and_reembeds_kept_sounds(broker, probe, daemons, make_state, tmp_path):
    """Words taught under the picture backbone (each example keeps its sound) are embedded again by the speech
    backbone at start; it then hears an untaught voice say them."""
    picture = backbone_settings(str(WEIGHTS_025), input_size=128)
    state = make_state(picture)
    rng = np.random.default_rng(5)
    items = []
    for voice in ("en+m1", "en+f2", "en-us+m3", "en-gb-scotland+f1"):
        for word in ("lights", "music"):
            clip = _room(4.0, rng)
            said = _spoken(tmp_path, word, voice)
            clip[2 * RATE:2 * RATE + said.size] += said[: 2 * RATE]
            items += [(f, word) for f in _windows(_write_wav(tmp_path / "teach.wav", clip)) if f.sound.whole]
    items += [(f, "background") for f in _windows(_write_wav(tmp_path / "room.wav", _room(6.0, rng)))[::2] if not f.sound.loud]
    info, engine = open_backbone(state_config(state, picture))
    store = Store(state / "store")
    store.add_many([NewExample(f.image, label, engine.embed(to_pixels(f.image, 128)), audio=f.sound.samples)
                    for f, label in items], info.id)
    store.close()
    engine.close()
    assert len(list((state / "store" / "frames").glob("*.wav"))) == len(items)

    script = _room(12.0, rng)
    for start, word in ((3.0, "lights"), (8.0, "music")):
        said = _spoken(tmp_path, word, "en-029+m5", speed=140)  # a voice never taught
        script[int(start * RATE):int(start * RATE) + said.size] += said
    speech = {"family": "speech_embedding"}
    config = write_config(tmp_path / "words.toml", toml_config(
        state, broker.port, _write_wav(tmp_path / "words.wav", script), speech, "words",
        "", every_frame=False))
    d = daemons(config, tmp_path / "words.log")
    probe.wait_online("words", 90)
    assert f"embedding {len(items)} stored frames" in (tmp_path / "words.log").read_text()
    heard = []
    while len(heard) < 2:
        _, payload, _ = probe.wait_for(lambda t, p, r: t == "edged/words/event/knn" and json.loads(p)["type"] == "start", 30)
        heard.append(json.loads(payload)["label"])
    assert sorted(heard) == ["lights", "music"], heard

    # a capture keeps the sound too; train gives the numpy head and says why nothing is fine-tuned
    before = len(list((state / "store" / "frames").glob("*.wav")))
    assert probe.request("words", "capture", {"label": "lights", "count": 1, "timeout_s": 20})["result"]["stored"] == 1
    assert len(list((state / "store" / "frames").glob("*.wav"))) == before + 1
    trained = probe.request("words", "train", {"head": "classifier"})
    assert trained["ok"] and "speech embedding has no Keras form" in trained["result"]["fine_tune"], trained
    refused = probe.request("words", "export", {"head": "classifier"})
    assert not refused["ok"] and "speech embedding has no Keras form" in refused["error"], refused
    assert d.stop() == 0, d.output()

    # edged collect stores sound as a capture does (issue 33, 4): one window per word, its WAV beside it, under
    # either backbone
    for name, backbone in (("speech", speech), ("picture", picture)):
        config = write_config(tmp_path / f"collect-{name}.toml", toml_config(
            state, broker.port, str(tmp_path / "words.wav"), backbone, "words", "", realtime=False,
            every_frame=False))
        before = len(list((state / "store" / "frames").glob("*.wav")))
        out = edged_cli("collect", "--config", str(config), "--label", f"said-{name}", "--count", "2", timeout=120)
        assert out.returncode == 0, (name, out.stderr)
        reply = json.loads(out.stdout)
        assert reply["stored"] == 2 and reply["sounds"] == 2, reply
        assert len(list((state / "store" / "frames").glob("*.wav"))) == before + 2
