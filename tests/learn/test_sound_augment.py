"""Altered copies of taught sounds: played faster or slower and louder or softer (never backwards, as a flipped
spectrogram picture would be), embedded by the backbone that serves; the classifier learns from them."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SHARED
from edged_plugins.classifier import ClassifierHead, ClassifierOptions

from edged.config import BackboneConfig, Config
from edged.heads.base import TrainRequest
from edged.serve.learning import Learning
from edged.sources.audio import SAMPLE_RATE
from edged.sources.augment import augment_sound, augmenter
from edged.state.backbones import lookup_backbone
from edged.state.store import NewExample, Store

SPEECH = SHARED / "models" / "speech_embedding"


def _tone(freq: float, seconds: float = 1.5, rng=None) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    x = 6000 * np.sin(2 * np.pi * freq * t) * np.exp(-((t - seconds / 2) ** 2) / 0.05)
    return (x + (rng.normal(0, 100, t.size) if rng is not None else 0)).astype(np.float32)


def _peak_hz(x: np.ndarray) -> float:
    return float(np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE)[np.argmax(np.abs(np.fft.rfft(x)))])


def test_a_copy_keeps_the_length_and_moves_pitch_and_loudness_within_bounds():
    rng = np.random.default_rng(0)
    tone = _tone(1000.0)
    copies = [augment_sound(tone, rng) for _ in range(40)]
    assert all(c.shape == tone.shape and c.dtype == np.float32 for c in copies)
    peaks = np.array([_peak_hz(c) for c in copies])
    assert peaks.min() >= 1000 * 0.85 - 2 and peaks.max() <= 1000 * 1.15 + 2, peaks
    assert peaks.std() > 30  # not one speed for every copy
    gains = np.array([20 * np.log10(np.abs(c).max() / np.abs(tone).max()) for c in copies])
    assert gains.min() >= -6.5 and gains.max() <= 6.5 and gains.std() > 1.5, gains


def test_sounds_are_altered_when_every_example_keeps_one_else_pictures_else_nothing():
    seen = {"sound": 0, "picture": 0}

    def embed_sound(samples):
        seen["sound"] += 1
        return np.array([_peak_hz(samples)], np.float32)

    def embed_picture(pixels):
        seen["picture"] += 1
        return pixels.reshape(-1)[:1].astype(np.float32)

    sounds = {0: _tone(500.0), 1: _tone(900.0), 2: None}
    pixels = lambda ids: np.zeros((len(ids), 8, 8, 3), np.uint8)  # noqa: E731
    both = augmenter(pixels, embed_picture, sounds=lambda ids: [sounds[int(i)] for i in ids], embed_sound=embed_sound)
    out = both(np.array([0, 1]), 3, np.random.default_rng(0))
    assert out.shape == (6, 1) and seen == {"sound": 6, "picture": 0}
    assert abs(out[0, 0] - 500) < 100 and abs(out[1, 0] - 900) < 150  # copy-major: the rows' order repeats
    assert both(np.array([1, 2]), 2, np.random.default_rng(0)).shape == (4, 1) and seen["picture"] == 4
    hears_only = augmenter(pixels, None, sounds=lambda ids: [sounds[int(i)] for i in ids], embed_sound=embed_sound)
    assert hears_only(np.array([1, 2]), 2, np.random.default_rng(0)) is None


@pytest.mark.skipif(not SPEECH.is_dir(), reason="../shared/models/speech_embedding absent")
def test_the_speech_backbone_trains_the_classifier_on_altered_copies_of_the_kept_sounds(tmp_path):
    cfg = Config.model_validate({"state_dir": str(tmp_path), "source": {"uri": "room.wav"},
                                 "backbone": {"family": "speech_embedding"}})
    info = lookup_backbone(BackboneConfig(family="speech_embedding"), tmp_path)
    store = Store(tmp_path / "store")
    learning = Learning(cfg, store, info, heads=None)  # fit_context needs neither heads nor a worker
    try:
        rng = np.random.default_rng(3)
        items = [(_tone(f * rng.uniform(0.95, 1.05), rng=rng), label) for f, label in ((400, "low"), (1600, "high"))
                 for _ in range(5)]
        picture = np.zeros((128, 128, 3), np.uint8)
        store.add_many([NewExample(picture, label, learning.embed_sound(s), audio=s) for s, label in items], info.id)
        examples = store.examples(info.id)
        context = learning.fit_context(TrainRequest())
        copies = context.augmented(examples.ids[:2], 2, np.random.default_rng(0))
        assert copies.shape == (4, 192)
        head = ClassifierHead(ClassifierOptions(augment_copies=3))
        metrics = head.fit(examples, context)
        assert metrics["augmented_examples"] == 3 * len(items)
        assert "augmented" in metrics["chosen"], metrics["candidates"]
        assert head.predict(learning.embed_sound(_tone(1550.0, rng=rng))).label == "high"
    finally:
        learning.close()
        store.close()
