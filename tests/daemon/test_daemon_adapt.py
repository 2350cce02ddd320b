"""Train, export, activate and roll back over MQTT while the daemon keeps serving; TensorFlow stays out of it."""

from __future__ import annotations

import json

import pytest
from conftest import EXTRACTOR_U8, backbone_settings, toml_config, without_tensorflow, write_config

from edged.config import load_config
from edged.serve.backbone import embed_image, open_backbone
from edged.sources.synthetic import scene_at
from edged.state.store import NewExample, Store

DEVICE = "adapt1"


def _prefill(state, settings):
    cfg = load_config(None, [f"state_dir='{state}'"] + [f"backbone.{k}={json.dumps(v)}" for k, v in settings.items()])
    info, engine = open_backbone(cfg)
    store = Store(cfg.state_path / "store")
    items = []
    for shape in ("triangle", "rectangle"):
        for i in range(10):
            img = scene_at(0, i, 640, 480, shape, clutter=4).image
            items.append(NewExample(img, shape, embed_image(engine, img)))
    store.add_many(items, info.id)
    store.close()


def _final(probe, command, payload, timeout=180):
    reply = probe.request(DEVICE, command, payload, timeout=timeout)
    return reply


@pytest.mark.heavy
def test_train_export_activate_rollback_over_mqtt(broker, probe, daemons, make_state, tmp_path):
    settings = backbone_settings("none")
    state = make_state(settings)
    _prefill(state, settings)
    text = toml_config(state, broker.port, "synthetic:clutter=4", settings, DEVICE)
    text += '\n[heads.classifier]\nfine_tune_layers = 2\n'
    d = daemons(write_config(tmp_path / "c.toml", text), tmp_path / "d.log")
    probe.wait_online(DEVICE)

    # train (auto): the answer comes once the numpy head serves; the fine-tune of the backbone follows as a job of
    # its own (progress and result on edged/<device>/job), the frame loop publishing all along
    corr = "train-1"
    probe.send(DEVICE, "train", {"head": "classifier", "epochs": 2, "id": corr})
    reply = json.loads(probe.wait_for(lambda t, p, r: t == f"edged/{DEVICE}/reply/train" and json.loads(p)["final"],
                                      60)[1])
    assert reply["ok"] and reply["id"] == corr, reply
    assert reply["result"]["version"] == "v1" and reply["result"]["active"], reply
    assert reply["result"]["fine_tune"].startswith("following as the job 'fine-tune classifier'"), reply
    # an export sent meanwhile waits its turn behind the fine-tune instead of being refused
    probe.send(DEVICE, "export", {"head": "classifier", "quantize": "float32", "id": "exp-0"})
    progress, knn_during, final = [], 0, None

    def watch(t, p, r):
        nonlocal knn_during, final
        if t == f"edged/{DEVICE}/prediction/knn":
            knn_during += 1
        if t == f"edged/{DEVICE}/reply/export":
            progress.append(("export", json.loads(p)))
        if t == f"edged/{DEVICE}/job":
            msg = json.loads(p)
            assert msg["job"] == "fine-tune classifier" and msg["for"] == corr, msg
            if msg["final"]:
                final = msg
                return True
            progress.append(("job", msg["progress"]))
        return False

    probe.wait_for(watch, timeout=180)
    assert final["ok"], final
    # the job first searched learners and augmented copies (v2 only if that beat the cheap v1), then fine-tuned
    frozen = final["result"]["frozen"]["version"]
    assert final["result"]["search"].startswith(("kept v1", "v2 serves")) and frozen == ("v1" if final["result"][
        "search"].startswith("kept") else "v2"), final["result"]
    assert final["result"]["version"] == f"v{int(frozen[1:]) + 1}", final["result"]
    for fold in ("fine_tune fold 1/2", "fine_tune fold 2/2"):
        assert [p["epoch"] for k, p in progress if k == "job" and p["phase"] == fold and "epoch" in p] == [1, 2]
    assert final["result"]["metrics"]["fine_tune"].startswith(("kept", "skipped"))
    assert knn_during > 10, "serving stopped while training"
    queued = [m for k, m in progress if k == "export"]
    assert queued and queued[0]["result"]["progress"]["step"] == "waiting for fine-tune classifier", queued
    exported = json.loads(probe.wait_for(lambda t, p, r: t == f"edged/{DEVICE}/reply/export" and json.loads(p)["final"],
                                         180)[1])
    assert exported["ok"] and exported["id"] == "exp-0", exported
    status = _final(probe, "status", {})["result"]
    assert status["last_job"]["job"].startswith("export classifier") and status["last_job"]["ok"], status["last_job"]
    # the fine-tuned version's figure is compared like with like, and whichever version serves has a quality report
    assert "both 2-fold on the same folds" in final["result"]["metrics"]["fine_tune"], final["result"]["metrics"]
    assert status["heads"]["classifier"].get("quality", {}).get("per_class_accuracy"), status["heads"]["classifier"]

    busy = _final(probe, "activate", {"heads": ["knn", "classifier"]})
    assert busy["ok"] and busy["result"]["active"] == ["knn", "classifier"]
    pred = json.loads(probe.wait_for(lambda t, p, r: t == f"edged/{DEVICE}/prediction/classifier", 20)[1])
    assert pred["label"] in ("triangle", "rectangle", "unknown") and set(pred["scores"]) == {"triangle", "rectangle"}

    # export twice (float32; float16's parity is meaningless on random weights), serve the newest, roll back
    exp = _final(probe, "export", {"head": "classifier", "quantize": "float32"})
    assert exp["ok"], exp
    assert exp["result"]["model_version"] == "v2" and exp["result"]["parity"]["passed"]  # v1 was exp-0's
    exp2 = _final(probe, "export", {"head": "classifier", "quantize": "float32", "force": True})
    assert exp2["ok"] and exp2["result"]["model_version"] == "v3", exp2
    act = _final(probe, "activate", {"model": "classifier"})
    assert act["ok"] and act["result"]["version"] == "v3" and act["result"]["quantization"] == "float32"
    sha_v3 = act["result"]["sha256"]
    pred = json.loads(probe.wait_for(
        lambda t, p, r: t == f"edged/{DEVICE}/prediction/classifier" and json.loads(p)["model_sha"] == sha_v3, 20)[1])
    frame_at_swap = pred["frame"]
    back = _final(probe, "rollback", {"model": "classifier"})
    assert back["ok"] and back["result"]["version"] == "v2", back
    pred = json.loads(probe.wait_for(
        lambda t, p, r: t == f"edged/{DEVICE}/prediction/classifier" and json.loads(p)["model_sha"] == back["result"]["sha256"], 20)[1])
    assert pred["frame"] > frame_at_swap  # the same stream went on across swaps

    bad = _final(probe, "activate", {"model": "classifier", "version": "v9"})
    assert not bad["ok"] and "no version 'v9'" in bad["error"]
    status = _final(probe, "status", {})["result"]
    assert status["tensorflow_imported"] is False
    assert status["heads"]["classifier"]["model"]["version"] == "v2"
    assert d.stop() == 0, d.output()

    # the serving choice survives a restart
    probe.wait_for(lambda t, p, r: t == f"edged/{DEVICE}/status" and json.loads(p)["state"] == "offline", 10)
    probe.drain()
    d = daemons(write_config(tmp_path / "c.toml", text), tmp_path / "d2.log")
    status = probe.wait_online(DEVICE)
    assert status["active"] == ["knn", "classifier"] and status["heads"]["classifier"]["model"]["version"] == "v2"

    # training again: the new head version predicts, the older export stops serving, and the reply says so
    retrained = _final(probe, "train", {"head": "classifier", "mode": "frozen"})
    assert retrained["ok"] and retrained["result"]["active"], retrained
    assert "model v2 (exported from an older version) no longer serves" in retrained["result"]["model"]
    status = _final(probe, "status", {})["result"]
    assert status["heads"]["classifier"].get("model") is None
    assert status["heads"]["classifier"]["version"] == retrained["result"]["version"]
    exported = back["result"]["sha256"]
    probe.wait_for(lambda t, p, r: t == f"edged/{DEVICE}/prediction/classifier" and json.loads(p)["model_sha"] != exported, 20)
    later = probe.collect(f"edged/{DEVICE}/prediction/classifier", 1.0)
    assert later and all(p["model_sha"] != exported for p in later)
    assert d.stop() == 0



def test_without_tensorflow_the_classifier_still_learns_and_serves(broker, probe, daemons, make_state, tmp_path):
    """A board with only LiteRT: numpy heads train and serve; fine-tuning and export answer clearly."""
    settings = backbone_settings("none")
    state = make_state(settings)
    text = toml_config(state, broker.port, "synthetic:clutter=2", settings, DEVICE)
    d = daemons(write_config(tmp_path / "c.toml", text), tmp_path / "d.log", without_tensorflow(tmp_path / "site"))
    probe.wait_online(DEVICE)
    reply = _final(probe, "train", {"head": "classifier", "mode": "fine_tune"})
    assert not reply["ok"] and "needs TensorFlow" in reply["error"] and "pip install 'edged[train]'" in reply["error"]
    reply = _final(probe, "export", {"head": "classifier", "quantize": "int8"})
    assert not reply["ok"] and "needs TensorFlow" in reply["error"]
    for label in ("a", "b"):
        cap = _final(probe, "capture", {"label": label, "count": 4, "interval_ms": 0})
        assert cap["ok"] and cap["result"]["stored"] == 4
    pred = json.loads(probe.wait_for(lambda t, p, r: t == f"edged/{DEVICE}/prediction/knn", 20)[1])
    assert pred["label"] in ("a", "b", "unknown")
    trained = _final(probe, "train", {"head": "classifier", "id": "quick"})
    assert trained["ok"], trained
    assert trained["result"]["version"] == "v1" and trained["result"]["metrics"]["cv_folds"] == 4
    assert trained["result"]["fine_tune"] == "not tried: TensorFlow is not installed here, and no trainer node is online"
    # issue 38, 2: the reply comes with a cheap head serving (one learner, no augmented copies); the search over
    # learners and augmented copies follows as a job and serves only when cross-validation says it is better
    metrics = trained["result"]["metrics"]
    assert metrics["chosen"] == "logistic" and metrics["augmented_examples"] == 0 and list(metrics["candidates"]) == ["logistic"]
    assert trained["result"]["search"].startswith("following as the job 'search classifier'"), trained["result"]
    done = json.loads(probe.wait_for(lambda t, p, r: t == f"edged/{DEVICE}/job" and json.loads(p)["final"], 120)[1])
    assert done["ok"] and done["job"] == "search classifier" and done["for"] == "quick", done
    searched = done["result"]
    assert searched["search"].startswith(("kept v1", "v2 serves")), searched
    if searched["version"] == "v2":
        assert searched["metrics"]["cv_accuracy"] > metrics["cv_accuracy"] and len(searched["metrics"]["candidates"]) > 1
    assert _final(probe, "activate", {"heads": ["knn", "classifier"]})["ok"]
    pred = json.loads(probe.wait_for(lambda t, p, r: t == f"edged/{DEVICE}/prediction/classifier", 20)[1])
    assert pred["label"] in ("a", "b", "unknown") and set(pred["scores"]) == {"a", "b"} and 0 <= pred["novelty"] <= 1
    status = _final(probe, "status", {})["result"]
    assert status["tensorflow_imported"] is False and status["heads"]["classifier"]["quality"]["cv_accuracy"] >= 0
    assert d.stop() == 0


@pytest.mark.heavy
@pytest.mark.skipif(not EXTRACTOR_U8.is_file(), reason="needs ../shared/models (the uint8 MobileNet v1 extractor)")
def test_the_default_config_serves_without_tensorflow_from_a_tflite_extractor(broker, probe, daemons, tmp_path):
    """Issue 38, 1: a board without TensorFlow, the default config (`mobilenet_v1`, ImageNet weights, chosen
    automatically) and no cached backbone failed at start with "No module named 'keras'". A TFLite feature extractor
    in $EDGED_WEIGHTS_DIR now serves; the status says where the backbone came from."""
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / EXTRACTOR_U8.name).symlink_to(EXTRACTOR_U8)
    state = tmp_path / "state"
    text = toml_config(state, broker.port, "synthetic:clutter=2", {}, DEVICE)
    env = {**without_tensorflow(tmp_path / "site"), "EDGED_WEIGHTS_DIR": str(weights)}
    d = daemons(write_config(tmp_path / "c.toml", text), tmp_path / "d.log", env)
    status = probe.wait_online(DEVICE, 180)
    assert status["tensorflow_imported"] is False
    choice = status["backbone_choice"]
    assert choice["tflite"].endswith(EXTRACTOR_U8.name) and "no MobileNet v1 could be built" in choice["reason"], choice
    for label in ("a", "b"):
        assert _final(probe, "capture", {"label": label, "count": 3, "interval_ms": 0})["ok"]
    pred = json.loads(probe.wait_for(lambda t, p, r: t == f"edged/{DEVICE}/prediction/knn", 30)[1])
    assert pred["label"] in ("a", "b", "unknown")
    assert d.stop() == 0


def test_without_any_backbone_the_error_names_each_way(tmp_path):
    """No TensorFlow, nothing cached, no extractor on disk: one error that says every way to a backbone."""
    from edged.errors import BackboneError
    from edged.serve.choice import chosen

    def cannot(cfg):
        raise BackboneError("building backbone failed: No module named 'keras'")

    cfg = load_config(None, [f"state_dir='{tmp_path}'"])
    with pytest.raises(BackboneError) as caught:
        chosen(cfg, cannot, extractors=lambda: [])
    said = str(caught.value)
    for way in ("No module named 'keras'", "pip install 'edged[train]'", "$EDGED_WEIGHTS_DIR", "backbone.path",
                "state_dir/backbones/", "edged backbone build"):
        assert way in said, (way, said)
