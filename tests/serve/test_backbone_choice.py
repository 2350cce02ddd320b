"""The default backbone is chosen from measurements (edged.serve.choice): real MobileNet v1 backbones converted
from the workspace's ImageNet weights, timed on this machine's interpreter; the choice is kept and reused, and
measured again when what it was measured for changes. An explicit alpha or input size is never overridden."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import WEIGHTS_025, backbone_settings, needs_weights

from edged.config import load_config
from edged.errors import BackboneError
from edged.serve.backbone import open_backbone, resolve
from edged.serve.choice import chosen
from edged.state.layout import StateLayout

RUNGS = ((0.25, 128),)  # the rung other tests convert already (a 1.0/224 conversion costs half a minute)


def _refuse(cfg):
    raise AssertionError("a remembered choice must not build or time anything")


@needs_weights
def test_the_default_backbone_is_measured_once_kept_and_reused(make_state):
    state = make_state(backbone_settings(str(WEIGHTS_025), input_size=128))
    cfg = load_config(None, [f"state_dir='{state}'", "backbone.min_fps=1"])
    assert cfg.backbone.auto  # the default config chooses

    served, choice = chosen(cfg, resolve, ladder=RUNGS)
    assert (served.backbone.alpha, served.backbone.input_size) == (0.25, 128)
    assert Path(served.backbone.weights).resolve() == WEIGHTS_025.resolve() and not served.backbone.auto
    assert choice["tried"][0]["ms"] > 0 and "the largest that runs >= 1 fps here" in choice["reason"]
    kept = json.loads(StateLayout(state).backbone_choice.read_text())
    assert kept["alpha"] == 0.25 and kept["measured_on"]["min_fps"] == 1.0

    again, memory = chosen(cfg, _refuse, ladder=RUNGS)
    assert memory["remembered"] and again.backbone == served.backbone

    # another frame-rate target is measured again; one no backbone reaches serves the smallest and says so
    greedy = load_config(None, [f"state_dir='{state}'", "backbone.min_fps=10000"])
    _, choice = chosen(greedy, resolve, ladder=RUNGS)
    assert "none runs 10000 fps here" in choice["reason"] and "remembered" not in choice

    # the CLI's offline commands open the same backbone as the daemon
    info, engine = open_backbone(greedy)
    engine.close()
    assert info.input_size == 128


def test_an_explicit_backbone_is_never_chosen_for(tmp_path):
    for overrides in (["backbone.alpha=0.5"], ["backbone.input_size=160"], ["backbone.choose='fixed'"],
                      ["backbone.weights='none'"]):
        cfg = load_config(None, [f"state_dir='{tmp_path}'", *overrides])
        assert not cfg.backbone.auto, overrides
        served, choice = chosen(cfg, _refuse)
        assert choice == {"choose": "fixed"} and served.backbone.model_dump(exclude={"weights"}) == \
            cfg.backbone.model_dump(exclude={"weights"})


def test_no_rung_that_can_be_built_is_an_error_naming_the_key(tmp_path):
    cfg = load_config(None, [f"state_dir='{tmp_path}'"])

    def cannot(cfg):
        raise BackboneError(f"backbone.weights: no ImageNet weights for {cfg.backbone.alpha:g} offline")

    with pytest.raises(BackboneError, match=r"backbone.choose = 'auto': no MobileNet v1 could be built here"):
        chosen(cfg, cannot, ladder=RUNGS)


def test_a_fixed_size_takes_the_local_weight_file(tmp_path, monkeypatch):
    """Issue 33, 8: alpha and input_size set with weights = "imagenet" went to Keras' download (offline: a failure)
    past the file in $EDGED_WEIGHTS_DIR; the local file that matches is used whatever chose the size."""
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "mobilenet_v1_0.5_128_imagenet_no_top.weights.h5").write_bytes(b"stand-in")
    monkeypatch.setenv("EDGED_WEIGHTS_DIR", str(folder))
    cfg = load_config(None, [f"state_dir='{tmp_path}'", "backbone.alpha=0.5", "backbone.input_size=128"])
    served, choice = chosen(cfg, _refuse)
    assert choice == {"choose": "fixed"}
    assert served.backbone.weights == str(folder / "mobilenet_v1_0.5_128_imagenet_no_top.weights.h5")
    other = load_config(None, [f"state_dir='{tmp_path}'", "backbone.alpha=0.5", "backbone.input_size=96"])
    assert chosen(other, _refuse)[0].backbone.weights == "imagenet"  # no such file: Keras' ImageNet weights


@needs_weights
def test_a_new_member_adopts_the_fleets_backbone_or_says_why_not(make_state):
    """Issue 33, 7: two daemons measured 82 and 31 fps and could pick different backbones, and then not share. A
    device whose fleet already chose adopts that backbone when it runs at least half of min_fps here."""
    state = make_state(backbone_settings(str(WEIGHTS_025), input_size=128))
    peers = {"porch": {"state": "online", "backbone_choice": {"choose": "auto", "alpha": 0.25, "input_size": 128}},
             "attic": {"state": "offline", "backbone_choice": {"choose": "fixed"}}}
    cfg = load_config(None, [f"state_dir='{state}'", "backbone.min_fps=1"])
    # without the fleet the first rung (0.5/160) would serve; the fleet's 0.25/128 is adopted, never 0.5/160 built
    served, choice = chosen(cfg, resolve, ladder=((0.5, 160), (0.25, 128)), fleet=lambda: peers)
    assert (served.backbone.alpha, served.backbone.input_size) == (0.25, 128), choice
    assert choice["adopted_from"] == ["porch"] and "the fleet's backbone (served by porch)" in choice["reason"]
    again, memory = chosen(cfg, _refuse, ladder=((0.5, 160), (0.25, 128)), fleet=lambda: peers)
    assert memory["remembered"] and again.backbone == served.backbone

    # the fleet's backbone too slow here: this machine measures its own and says why it did not adopt
    slow = load_config(None, [f"state_dir='{state}'", "backbone.min_fps=10000"])
    _, choice = chosen(slow, resolve, ladder=((0.25, 128),), fleet=lambda: peers)
    assert "adopted_from" not in choice and "runs" in choice["fleet"] and "porch" in choice["fleet"], choice
