"""`edged bench audio`: how well sounds and spoken words are learnt from a few clips, on data the bench makes.

*words*: Debian's `espeak-ng` speaks six words in many voices (languages en, en-us, en-gb-scotland, en-029,
en-gb-x-rp with variants +m1..m7, +f1..f5), at random speeds and pitches, each placed at a random offset in a
1.5 s clip of background noise (pink and brown noise, mains hum) at 10-20 dB SNR; a `background` class of noise
alone is always taught, as in the speech-commands recogniser. Clips of half the voices teach (5 or 10 a word),
the other half's test: voices never taught. *sounds*: synthetic chimes, smoke-alarm beeps, knocks, a siren sweep
and speech, over the same noise, 5 clips a sound.

Side by side on the same embeddings: nearest class mean, logistic regression, edged's kNN head and edged's
classifier (its `train` learner, numpy, with altered copies of the taught sounds: faster or slower, louder or
softer); two backbones: the speech embedding (mean and max of its windows) and
an ImageNet MobileNet on the log-mel spectrogram as an image. Also the real-time factor on one core.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
from edged_plugins.classifier import ClassifierHead, ClassifierOptions
from edged_plugins.knn import KnnHead, KnnOptions

from ..config import BACKGROUND, AudioConfig, BackboneConfig, SourceConfig
from ..heads.base import FitContext, TrainRequest
from ..mqtt.broker import local_broker
from ..runtime.engine import Engine, EngineOptions
from ..runtime.speech import SAMPLE_RATE, SpeechEmbedder, SpeechEngine, SpeechOptions, speech_models_folder
from ..sources.audio import WavSource
from ..sources.wav import read_wav, wav_bytes
from ..sources.augment import augmenter
from ..sources.preprocess import to_pixels
from ..state.backbones import lookup_backbone
from ..state.store import Examples, NewExample, Store
from .common import CACHE, bench_backbone, table
from .daemonrun import Probe, start_daemon, stop_daemon, write_config
from .fewshot import logistic_baseline, ncm_baseline

WORDS = ("yes", "no", "up", "down", "left", "right")
LANGUAGES = ("en", "en-us", "en-gb-scotland", "en-029", "en-gb-x-rp")
VARIANTS = tuple(f"m{i}" for i in range(1, 8)) + tuple(f"f{i}" for i in range(1, 6))
SOUNDS = ("chime", "smoke alarm", "knock", "siren", "speech")
CLIP_S = 1.5


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--draws", type=int, default=3, help="random draws of the taught clips")
    p.add_argument("--image-model", default="0.25:128", help="alpha:size of the MobileNet on log-mel images "
                                                             "('' to leave it out)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--daemon-minutes", type=float, default=0.0, help="also play recordings this long through real "
                                                                     "daemons and a broker: false events an hour, latency")
    p.add_argument("--through", type=_through, default="sounds,words", help="what the daemons hear: sounds, words or "
                                                                            "both (sounds,words)")
    p.add_argument("--daemons", type=int, default=1, help="daemons playing their own recordings side by side "
                                                          "(6 x 10 minutes: an hour of sound in ten)")


def _through(value: str) -> list[bool]:
    """'sounds,words' -> [False, True]: whether each daemon run hears words."""
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in ("sounds", "words")]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"{', '.join(unknown) or 'nothing'}: give sounds, words or both")
    return [n == "words" for n in names]


# -- data -----------------------------------------------------------------------------------------------
def spoken(text: str, voice: str, speed: int, pitch: int) -> np.ndarray:
    """`text` spoken by espeak-ng at 16 kHz (int16 range), cached on disk."""
    key = hashlib.sha256(f"{text}|{voice}|{speed}|{pitch}".encode()).hexdigest()[:20]
    path = CACHE / "audio" / f"{key}.wav"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(suffix=".wav", dir=path.parent, delete=False) as tmp:
            subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", tmp.name, text],
                           check=True, capture_output=True)
        Path(tmp.name).replace(path)
    return read_wav(path)


def noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Room-like noise: pink and brown noise and a mains hum, random mix."""
    white = rng.normal(0, 1, n)
    spectrum = np.fft.rfft(white)
    f = np.maximum(np.fft.rfftfreq(n, 1 / SAMPLE_RATE), 1.0)
    pink = np.fft.irfft(spectrum / np.sqrt(f), n)
    brown = np.fft.irfft(spectrum / f, n)
    t = np.arange(n) / SAMPLE_RATE
    hum = np.sin(2 * np.pi * rng.choice([50, 60]) * t) + 0.3 * np.sin(2 * np.pi * 3 * rng.choice([50, 60]) * t)
    parts = [pink / pink.std(), brown / brown.std(), hum / hum.std()]
    mix = sum(w * p for w, p in zip(rng.dirichlet([2, 2, 1]), parts))
    return (mix / mix.std()).astype(np.float32)


def place(sound: np.ndarray, rng: np.random.Generator, snr_db: tuple[float, float] = (10, 20)) -> np.ndarray:
    """`sound` at a random offset in a CLIP_S clip of noise at a random SNR (over the sound's own span)."""
    n = int(CLIP_S * SAMPLE_RATE)
    sound = sound[:n]
    clip = noise(n, rng)
    if sound.size == 0:
        return clip * 300.0
    power = float(np.mean(sound ** 2)) + 1e-9
    snr = rng.uniform(*snr_db)
    clip *= np.sqrt(power / 10 ** (snr / 10))
    start = int(rng.integers(0, n - sound.size + 1))
    clip[start:start + sound.size] += sound
    return clip


def synthetic_sound(kind: str, rng: np.random.Generator) -> np.ndarray:
    """One rendition of a household sound, int16 range."""
    amp = rng.uniform(4000, 12000)
    t = lambda s: np.arange(int(s * SAMPLE_RATE)) / SAMPLE_RATE  # noqa: E731
    if kind == "chime":  # two decaying bell tones
        out = []
        for f0 in rng.uniform(600, 900) * np.array([1.0, 0.8]):
            x = t(0.45)
            out.append(sum(np.sin(2 * np.pi * f0 * k * x) / k for k in (1, 2.76, 5.4)) * np.exp(-x * 6))
        return amp * np.concatenate(out)
    if kind == "smoke alarm":  # three 0.15 s beeps near 3.1 kHz
        f0, beep, gap = rng.uniform(2900, 3300), t(0.15), np.zeros(int(0.1 * SAMPLE_RATE))
        return amp * np.concatenate([np.concatenate([np.sin(2 * np.pi * f0 * beep), gap]) for _ in range(3)])
    if kind == "knock":  # three short thuds
        out = []
        for _ in range(3):
            x = t(0.05)
            out += [rng.normal(0, 1, x.size) * np.exp(-x * 120) + np.sin(2 * np.pi * rng.uniform(120, 220) * x)
                    * np.exp(-x * 60), np.zeros(int(rng.uniform(0.12, 0.2) * SAMPLE_RATE))]
        return amp * np.concatenate(out)
    if kind == "siren":  # a rising and falling sweep
        x = t(1.0)
        f = rng.uniform(600, 800) + rng.uniform(300, 500) * np.sin(np.pi * x / x[-1]) ** 2
        return amp * np.sin(2 * np.pi * np.cumsum(f) / SAMPLE_RATE)
    voice = f"{rng.choice(LANGUAGES)}+{rng.choice(VARIANTS)}"
    return spoken(str(rng.choice(["the kettle is on", "dinner is ready", "where are my keys"])), voice,
                  int(rng.integers(130, 190)), int(rng.integers(30, 70)))


def word_clips(rng: np.random.Generator) -> tuple[list[np.ndarray], list[str], list[str]]:
    """Every word in every voice (one speed and pitch each), plus background clips: (clips, labels, voices)."""
    clips, labels, voices = [], [], []
    for lang in LANGUAGES:
        for variant in VARIANTS:
            voice = f"{lang}+{variant}"
            for word in WORDS:
                clips.append(place(spoken(word, voice, int(rng.integers(120, 200)), int(rng.integers(25, 75))), rng))
                labels.append(word)
                voices.append(voice)
            clips.append(place(np.zeros(0, np.float32), rng))
            labels.append(BACKGROUND)
            voices.append(voice)
    return clips, labels, voices


def sound_clips(rng: np.random.Generator, per: int) -> tuple[list[np.ndarray], list[str]]:
    clips, labels = [], []
    for kind in SOUNDS + (BACKGROUND,):
        for _ in range(per):
            sound = np.zeros(0, np.float32) if kind == BACKGROUND else synthetic_sound(kind, rng)
            clips.append(place(sound, rng))
            labels.append(kind)
    return clips, labels


# -- backbones ------------------------------------------------------------------------------------------
class MelImage:
    """An ImageNet MobileNet on the clip's log-mel spectrogram drawn as an image (time across, mel up)."""

    def __init__(self, speech: SpeechEmbedder, alpha: float, size: int):
        _, info = bench_backbone(alpha, size)
        self.speech, self.size = speech, info.input_size
        self.engine = Engine(EngineOptions(info.path, num_threads=1, scaling=info.scaling))
        self.name = f"MobileNet v1 {alpha:g}/{size} on log-mel images"

    def embed(self, clip: np.ndarray) -> np.ndarray:
        mel = self.speech.mel(clip).T[::-1]  # (32, frames), low frequencies at the bottom
        img = cv2.resize(np.clip((mel - mel.min()) / (np.ptp(mel) + 1e-6) * 255, 0, 255).astype(np.uint8),
                         (self.size, self.size), interpolation=cv2.INTER_LINEAR)
        return self.engine.embed(np.repeat(img[:, :, None], 3, axis=2))


# -- learners -------------------------------------------------------------------------------------------
def learners(x: np.ndarray, labels: np.ndarray, xt: np.ndarray, sounds: list, embed) -> dict[str, list[str]]:
    """Every learner's answers on `xt`; edged's classifier gets what `train` gives it in the daemon: altered copies
    of the taught sounds (`sounds`, one per row of `x`) over the taught background's, embedded by the same
    backbone."""
    classes = sorted(set(labels.tolist()))
    y = np.array([classes.index(label) for label in labels])
    out = {"class mean": [classes[i] for i in ncm_baseline(x, y, xt)],
           "logistic": [classes[i] for i in logistic_baseline(x, y, xt)]}
    knn = KnnHead(KnnOptions())
    for v, label in zip(x, labels):
        knn.add(v, str(label), None)
    out["edged kNN"] = [max(p.scores, key=p.scores.get) if p.scores else p.label for p in map(knn.predict, xt)]
    head = ClassifierHead(ClassifierOptions())
    rooms = [sound for sound, label in zip(sounds, labels) if label == BACKGROUND]
    context = FitContext(TrainRequest(), 0, frames=None, pixels=None, embed=None,  # sounds only
                         augmented=augmenter(None, None, sounds=lambda ids: [sounds[i] for i in ids], embed_sound=embed,
                                             rooms=lambda: rooms))
    head.fit(Examples(np.arange(len(x)), labels, x, [None] * len(x)), context)
    out["edged classifier"] = [max(s, key=s.get) for s in (head.predict(v).scores for v in xt)]
    return out


def _score(pred: list[str], truth: np.ndarray) -> float:
    return float(np.mean(np.asarray(pred) == truth))


def words_task(emb: np.ndarray, labels: np.ndarray, voices: np.ndarray, shots: int, draws: int, seed: int,
               clips: list, embed) -> dict:
    """Teach `shots` clips a word from half the voices; test on the other half (voices never taught)."""
    names = sorted(set(voices.tolist()))
    scores: dict[str, list[float]] = {}
    for d in range(draws):
        rng = np.random.default_rng(seed + d)
        taught_voices = set(rng.permutation(names)[: len(names) // 2].tolist())
        teach = np.array([v in taught_voices for v in voices])
        rows = np.concatenate([rng.permutation(np.flatnonzero(teach & (labels == w)))[:shots]
                               for w in sorted(set(labels.tolist()))])
        test = np.flatnonzero(~teach)
        for name, pred in learners(emb[rows], labels[rows], emb[test], [clips[i] for i in rows], embed).items():
            scores.setdefault(name, []).append(_score(pred, labels[test]))
    return {k: float(np.mean(v)) for k, v in scores.items()}


def sounds_task(emb: np.ndarray, labels: np.ndarray, shots: int, draws: int, seed: int, clips: list, embed) -> dict:
    scores: dict[str, list[float]] = {}
    for d in range(draws):
        rng = np.random.default_rng(seed + 100 + d)
        rows = np.concatenate([rng.permutation(np.flatnonzero(labels == k))[:shots] for k in sorted(set(labels.tolist()))])
        test = np.setdiff1d(np.arange(len(labels)), rows)
        for name, pred in learners(emb[rows], labels[rows], emb[test], [clips[i] for i in rows], embed).items():
            scores.setdefault(name, []).append(_score(pred, labels[test]))
    return {k: float(np.mean(v)) for k, v in scores.items()}


def run(args) -> int:
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    clips, labels, voices = word_clips(rng)
    sounds, sound_labels = sound_clips(rng, 30)
    print(f"data: {len(clips)} word clips ({len(WORDS)} words + background, {len(LANGUAGES) * len(VARIANTS)} voices), "
          f"{len(sounds)} sound clips, made in {time.perf_counter() - t0:.0f} s", flush=True)
    speech = SpeechEmbedder(SpeechOptions(str(speech_models_folder()), num_threads=1))
    backbones = [("speech embedding (mean+max of windows)", speech.embed)]
    if args.image_model:
        alpha, size = args.image_model.split(":")
        image = MelImage(speech, float(alpha), int(size))
        backbones.append((image.name, image.embed))
    labels, voices, sound_labels = np.array(labels), np.array(voices), np.array(sound_labels)
    rows, figures = [], {}
    for name, embed in backbones:
        t = time.perf_counter()
        emb = np.stack([embed(c) for c in clips])
        seconds = time.perf_counter() - t
        rtf = len(clips) * CLIP_S / seconds
        sound_emb = np.stack([embed(c) for c in sounds])
        words = lambda shots: words_task(emb, labels, voices, shots, args.draws, args.seed, clips, embed)  # noqa: E731
        for task, result in (("words, 10 clips a word", words(10)), ("words, 5 clips a word", words(5)),
                             ("sounds, 5 clips a sound", sounds_task(sound_emb, sound_labels, 5, args.draws, args.seed,
                                                                     sounds, embed))):
            rows.append([name, task] + [f"{result[k]:.3f}" for k in ("class mean", "logistic", "edged kNN",
                                                                    "edged classifier")])
            figures[(name, task)] = result
        rows.append([name, "real-time factor, one core", f"{rtf:.0f}x", "", "", ""])
        figures[(name, "rtf")] = rtf
        print(f"  {name}: embedded in {seconds:.1f} s", flush=True)
    speech.close()
    print("\nwords: unseen voices (taught from half the voices, tested on the other half); sounds: other renditions; "
          f"mean of {args.draws} draws; 10-20 dB SNR room noise; a background class always taught")
    print(table(rows, ["backbone", "task", "class mean", "logistic", "edged kNN", "edged classifier"]))
    best = backbones[0][0]
    w10, w5 = figures[(best, "words, 10 clips a word")], figures[(best, "words, 5 clips a word")]
    snd = figures[(best, "sounds, 5 clips a sound")]
    print(f"words, 5 clips a word, edged classifier: {w5['edged classifier']:.3f} (target >= 0.85)")
    print(f"sounds, 5 clips a sound, edged classifier: {snd['edged classifier']:.3f} (target >= 0.95)")
    print(f"real-time factor, speech embedding, one core: {figures[(best, 'rtf')]:.0f}x (target >= 20)")
    if not args.daemon_minutes:
        print("false events an hour, sound -> event latency: --daemon-minutes N plays a recording through the daemon")
    if args.daemon_minutes:
        for words in args.through:
            daemon_run(args, words)
    print(f"audio: words, 10 clips a word, unseen voices, edged classifier {w10['edged classifier']:.3f} "
          f"(logistic {w10['logistic']:.3f}; target >= 0.92 and >= logistic + 0.03)")
    return 0


# -- through the daemon -------------------------------------------------------------------------------------
LEAD_S = 90.0  # room noise before the first sound: the daemons start and train their classifiers meanwhile
TRAINING = threading.Lock()
TAUGHT_SOUNDS, UNTAUGHT_SOUNDS = ("chime", "smoke alarm"), ("knock", "siren", "speech")
TAUGHT_WORDS, UNTAUGHT_WORDS = ("lights", "music"), ("kitchen", "window", "stop", "hello", "yes")
TEACHING_VOICES = tuple(f"{lang}+{v}" for lang in ("en", "en-us") for v in ("m1", "m3", "f2", "f4"))
HEARD_VOICES = tuple(f"{lang}+{v}" for lang in ("en-gb-scotland", "en-029", "en-gb-x-rp") for v in ("m5", "f1", "m7"))


def _write_wav(path: Path, samples: np.ndarray) -> str:
    path.write_bytes(wav_bytes(samples))
    return str(path)


def _room(seconds: float, rng) -> np.ndarray:
    return noise(int(seconds * SAMPLE_RATE), rng) * rng.uniform(150, 450)


class Scenario:
    """What is taught and what is played: sounds through the spectrogram picture, or words through the speech
    embedding (spoken by voices never taught)."""

    def __init__(self, words: bool):
        self.words = words
        self.taught, self.untaught = (TAUGHT_WORDS, UNTAUGHT_WORDS) if words else (TAUGHT_SOUNDS, UNTAUGHT_SOUNDS)

    def sound(self, kind: str, rng, voices=HEARD_VOICES) -> np.ndarray:
        if kind in TAUGHT_WORDS + UNTAUGHT_WORDS:
            return spoken(kind, str(rng.choice(voices)), int(rng.integers(130, 180)), int(rng.integers(35, 65)))
        return synthetic_sound(kind, rng)

    def recording(self, minutes: float, rng) -> tuple[np.ndarray, list[tuple[float, float, str]]]:
        """`minutes` of room noise, a sound every 12-20 s, taught and untaught in turn: (samples, [(start, end,
        kind)]), each sound from its first audible sample to its last."""
        total = _room(minutes * 60, rng)
        script, t, i = [], LEAD_S, 0
        while t < minutes * 60 - 5:
            kind = self.taught[i // 2 % len(self.taught)] if i % 2 == 0 else self.untaught[i // 2 % len(self.untaught)]
            sound = self.sound(kind, rng)
            at = int(t * SAMPLE_RATE)
            sound = sound[: total.size - at]
            total[at:at + sound.size] += sound
            audible = np.flatnonzero(np.abs(sound) > 0.02 * np.abs(sound).max())  # without espeak's silences
            script.append((t + audible[0] / SAMPLE_RATE, t + (audible[-1] + 1) / SAMPLE_RATE, kind))
            t += rng.uniform(12, 20)
            i += 1
        return total, script

    def teaching(self, tmp: Path, rng, per: int = 8) -> list[tuple[object, str]]:
        """Windows as captures store them: those holding the whole of each taught sound (other renditions; for
        words, the teaching voices), quiet ones of the room as `background`."""
        def windows(samples):
            source = WavSource(_write_wav(tmp / "teach.wav", samples), SourceConfig(loop=False))
            source.open()
            return list(iter(source.read, None))

        out = []
        for kind in self.taught:
            for i in range(per):
                clip = _room(4.0, rng)
                sound = self.sound(kind, rng, (TEACHING_VOICES[i % len(TEACHING_VOICES)],))
                clip[2 * SAMPLE_RATE:2 * SAMPLE_RATE + sound.size] += sound[: clip.size - 2 * SAMPLE_RATE]
                out += [(f, kind) for f in windows(clip) if f.sound.whole]
        out += [(f, BACKGROUND) for f in windows(_room(20.0, rng))[::3] if not f.sound.loud]
        return out


def _prepare(state: Path, scenario: Scenario, rng) -> dict:
    """The state folder with the taught windows stored (picture, sound and embedding); the backbone config."""
    items = scenario.teaching(state, rng)
    if scenario.words:
        backbone = BackboneConfig(family="speech_embedding")
        info = lookup_backbone(backbone, state)
        engine = SpeechEngine(Path(info.path).parent)
        embed = lambda f: engine.embed_sound(f.sound.samples)  # noqa: E731
    else:
        backbone, info = bench_backbone(0.25, 128)
        shutil.copytree(CACHE / "backbones" / info.id, state / "backbones" / info.id, dirs_exist_ok=True)
        engine = Engine(EngineOptions(info.path, scaling=info.scaling))
        embed = lambda f: engine.embed(to_pixels(f.image, info.input_size))  # noqa: E731
    store = Store(state / "store")
    store.add_many([NewExample(f.image, label, embed(f), audio=f.sound.samples) for f, label in items], info.id)
    store.close()
    engine.close()
    return {"backbone": backbone.model_dump(), "description": info.description, "examples": len(items)}


def daemon_run(args, words: bool) -> None:
    """Recordings through real daemons (`--daemons`, side by side, each its own recording) and one broker, each at
    its own pace, with the instant kNN and the classifier (trained over MQTT once a daemon is up, as a user would):
    each head's events against the scripts. States and everything else are the daemons' defaults for sound."""
    scenario = Scenario(words)
    broker = local_broker()
    runs: list[dict] = [{} for _ in range(args.daemons)]
    with tempfile.TemporaryDirectory() as tmp:
        taught = Path(tmp) / "taught"
        taught.mkdir()
        prepared = _prepare(taught, scenario, np.random.default_rng(args.seed + 7 + words))
        threads = [threading.Thread(target=_one_daemon, args=(args, scenario, broker.port, taught, prepared["backbone"],
                                                               Path(tmp) / f"d{i}", args.seed + 100 * i + words, runs[i]))
                   for i in range(args.daemons)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    broker.close()
    failed = [r["error"] for r in runs if "error" in r]
    if failed:
        raise SystemExit(f"a bench daemon failed: {failed[0]}")
    what = "words (voices never taught)" if words else "sounds"
    minutes = args.daemon_minutes * args.daemons
    scripts = [r["script"] for r in runs]
    n_taught = sum(kind in scenario.taught for script in scripts for _, _, kind in script)
    print(f"\nthrough the daemon, {what}: {prepared['description']}, {prepared['examples']} windows taught; "
          f"{args.daemons} daemon(s) side by side, {minutes:g} min of room noise in all with {n_taught} taught "
          f"{', '.join(scenario.taught)} and {sum(map(len, scripts)) - n_taught} untaught "
          f"{', '.join(scenario.untaught)}, each played at its own pace")
    dropped = sum(r.get("dropped", 0) for r in runs)
    print(f"  windows dropped because a daemon fell behind: {dropped}")
    trained = [r["trained"] for r in runs]
    print(f"  the classifier, trained over MQTT: {trained[0]}" + (" (and alike on the others)" if len(trained) > 1 else ""))
    for head in ("knn", "classifier"):
        _score_events(head, [(r["starts"][head], r["script"]) for r in runs], scenario, minutes / 60)


def _one_daemon(args, scenario: Scenario, port: int, taught: Path, backbone: dict, state: Path, seed: int,
                out: dict) -> None:
    """One daemon playing its own recording of `args.daemon_minutes`; what it heard into `out`."""
    try:
        samples, out["script"] = scenario.recording(args.daemon_minutes, np.random.default_rng(seed))
        shutil.copytree(taught, state)
        device = f"ears{seed}"
        config = write_config(state, port, _write_wav(state / "room.wav", samples), backbone, device,
                              extra='[heads]\nactive = ["knn", "classifier"]\n', every_frame=False)
        config.write_text(config.read_text().replace("realtime = true", "realtime = true\nloop = false"))
        probe = Probe(port, device)
        proc = start_daemon(config, state / "daemon.log")
        out["starts"] = {"knn": [], "classifier": []}
        try:
            probe.wait(lambda t, m: t == f"edged/{device}/status" and m.get("state") == "online", 120)
            with TRAINING:  # one at a time: six trainings at once would starve the daemons' frame loops
                t_send = probe.send("train", {"head": "classifier", "mode": "frozen", "id": "bench"})
                t_reply, reply = probe.wait(lambda t, m: t == f"edged/{device}/reply/train" and m.get("id") == "bench"
                                            and m.get("final"), 120)
            if not reply.get("ok"):
                raise RuntimeError(f"train failed: {reply.get('error')}")
            metrics = reply["result"]["metrics"]
            out["trained"] = (f"{t_reply - t_send:.1f} s, {metrics.get('chosen')}, cross-validated "
                              f"{metrics.get('cv_accuracy')}, {metrics.get('augmented_examples', 0)} altered copies")
            deadline = time.monotonic() + args.daemon_minutes * 60 + 60
            while time.monotonic() < deadline:
                try:
                    _, msg = probe.wait(lambda topic, m: topic.startswith(f"edged/{device}/event/") or
                                        (topic == f"edged/{device}/stats" and m.get("source_state") == "ended"), 5)
                except TimeoutError:
                    continue
                if msg.get("source_state") == "ended":
                    out["dropped"] = int(msg.get("dropped", 0))
                    break
                if msg.get("type") == "start" and msg.get("head") in out["starts"]:
                    out["starts"][msg["head"]].append((time.time(), msg))
        finally:
            stop_daemon(proc)
            probe.close()
    except Exception as e:
        out["error"] = f"{type(e).__name__}: {e}"


def _score_events(head: str, runs: list, scenario: Scenario, hours: float) -> None:
    """One head's event starts against each run's script: a start inside a sound of its label (or up to 2 s after
    it) hears that sound; any other start is a false event."""
    hop, window = AudioConfig().hop_s, AudioConfig().window_s  # what the daemons ran with
    heard = n_taught = 0
    latencies, lags, wrong, missed = [], [], [], Counter()
    for starts, script in runs:
        found = set()
        n_taught += sum(kind in scenario.taught for _, _, kind in script)
        for received, msg in starts:
            heard_at = window + hop * msg["frame"]  # the end of the window that decided, in the recording's time
            match = next((i for i, (s, e, kind) in enumerate(script) if kind == msg["label"] and s <= heard_at <= e + 2.0),
                         None)
            if match is None or match in found:
                playing = next((kind for s, e, kind in script if s <= heard_at <= e + 2.0), "room noise")
                wrong.append(f"{msg['label']} at {heard_at:.1f} s ({playing})")
                continue
            found.add(match)
            latencies.append((heard_at - script[match][0], heard_at - script[match][1]))
            lags.append(received - msg["start"])
        heard += len(found)
        missed.update(kind for i, (_, _, kind) in enumerate(script) if kind in scenario.taught and i not in found)
    print(f"  {head}: taught ones heard {heard}/{n_taught}" + (f" (missed: {dict(missed)})" if missed else "") +
          f"; false events {len(wrong)} ({len(wrong) / hours:.1f} an hour; target <= 1)" +
          (f": {', '.join(wrong[:10])}" if wrong else ""))
    if latencies:
        onset, end = np.median(latencies, axis=0)
        print(f"    the deciding window's end after the onset, median {onset:.2f} s ({end:+.2f} s from the end: "
              f"negative is before it ends); that window -> the event message, median {np.median(lags) * 1000:.0f} ms "
              f"(target end of sound -> event <= 0.5 s)")
