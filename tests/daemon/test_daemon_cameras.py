"""Several sources in one daemon, end to end: a daemon subprocess, a real mosquitto, two real mp4 cameras (a star
at the front door, a disc in the yard) and a third whose file is missing. Each camera is predicted, stated and
taught on its own topics; the dead one is reported and holds up nobody."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from conftest import WEIGHTS_025, backbone_settings, headless_browser, needs_weights, teach, write_config

from edged.bench.eventscene import Appearance, EventScene, shape_photo, textured_background
from edged.cli.fleet import device_table
from edged.mqtt.broker import free_port
from edged.fleet.roster import Device

DEVICE = "cams"
TOKEN = "cams-token"
BOX = (0.35, 0.25, 0.8, 0.9)


def _scene(label: str, seed: int) -> EventScene:
    return EventScene(textured_background(seed=seed), {label: [shape_photo(label)]}, [Appearance(label, 0.0, 1e9, BOX)],
                      fps=15.0, seed=seed)


def _config(state, port: int, backbone: dict, front: str, yard: str, garage: str, web_port: int) -> str:
    bb = "\n".join(f"{k} = {json.dumps(v)}" for k, v in backbone.items())
    cameras = "".join(f"""
[[sources]]
name = "{name}"
uri = "{uri}"
fps = 15
reconnect_min_s = 0.5
reconnect_max_s = 1
""" for name, uri in (("front", front), ("yard", yard), ("garage", garage)))
    return f"""
device = "{DEVICE}"
state_dir = "{state}"
{cameras}
[backbone]
{bb}

[gate]
mode = "always"

[states]
enter = 2

[mqtt]
host = "127.0.0.1"
port = {port}
stats_interval_s = 1.0

[homeassistant]
enabled = true
snapshot_interval_s = 0

[web]
enabled = true
port = {web_port}
token = "{TOKEN}"
"""


@pytest.mark.heavy
@needs_weights
def test_one_daemon_serves_each_camera_on_its_own_topics(broker, probe, daemons, make_state, tmp_path):
    backbone = backbone_settings(str(WEIGHTS_025), input_size=128)
    state = make_state(backbone)
    web_port = free_port()
    front, yard = _scene("star", 1), _scene("disc", 2)
    taught = [(img, "star", None) for img in front.examples("star", 8)] + \
             [(img, "disc", None) for img in yard.examples("disc", 8)]
    teach(state, backbone, taught)
    config = write_config(tmp_path / "cams.toml", _config(
        state, broker.port, backbone, front.write(tmp_path / "front.mp4", 20.0),
        yard.write(tmp_path / "yard.mp4", 20.0), tmp_path / "garage.mp4", web_port))
    probe.client.subscribe("homeassistant/#", qos=1)
    d = daemons(config, tmp_path / "cams.log")
    probe.wait_online(DEVICE, 90)

    # each camera's answers on its own topics, with its name in the payload
    for source, label in (("front", "star"), ("yard", "disc")):
        topic = f"edged/{DEVICE}/state/knn/{source}"
        wanted = lambda t, p, r: t == topic and json.loads(p)["label"] == label  # noqa: E731
        seen = [item for item in probe.seen if wanted(*item)]  # the other camera's may have come while waiting
        state_message = json.loads((seen[-1] if seen else probe.wait_for(wanted, 60))[1])
        assert state_message["source"] == source
    for source, label in (("front", "star"), ("yard", "disc")):  # sent on change (the default): seen by now
        predictions = [json.loads(p) for t, p, r in probe.seen if t == f"edged/{DEVICE}/prediction/knn/{source}"]
        assert predictions and predictions[-1]["source"] == source and predictions[-1]["label"] == label, predictions

    # the status lists every source; the missing one is lost and retried, the others serve
    status = probe.request(DEVICE, "status", {})["result"]
    sources = status["sources"]
    assert sources["front"]["state"] == "ok" and sources["yard"]["state"] == "ok", sources
    assert sources["garage"]["state"] == "camera_lost" and "garage.mp4" in sources["garage"]["error"]
    assert "garage camera_lost" in status["source"]["state"]
    listed = device_table({DEVICE: Device(DEVICE, status)})  # what `edged fleet ls` prints
    assert "front ok, yard ok, garage camera_lost" in listed, listed
    stats = json.loads(probe.wait_for(lambda t, p, r: t == f"edged/{DEVICE}/stats" and
                                      json.loads(p).get("sources", {}).get("yard", {}).get("inference_fps", 0) > 0, 20)[1])
    per_source = stats["sources"]
    assert per_source["front"]["inference_fps"] > 0 and per_source["garage"]["inferences"] == 0, per_source
    fast, slow = max(per_source["front"]["inferences"], per_source["yard"]["inferences"]), \
        min(per_source["front"]["inferences"], per_source["yard"]["inferences"])
    assert slow / fast >= 0.8, per_source  # both at 15 fps: the same share

    # a capture names its source; the store records it
    refused = probe.request(DEVICE, "capture", {"label": "disc", "count": 2})
    assert not refused["ok"] and "capture.source" in refused["error"] and "front, yard, garage" in refused["error"]
    unknown = probe.request(DEVICE, "capture", {"label": "disc", "count": 2, "source": "shed"})
    assert not unknown["ok"] and "no source 'shed'" in unknown["error"]
    reply = probe.request(DEVICE, "capture", {"label": "disc", "count": 2, "interval_ms": 100, "source": "yard"})
    assert reply["ok"] and reply["result"]["stored"] == 2 and reply["result"]["source"] == "yard", reply
    newest = probe.request(DEVICE, "examples", {"label": "disc", "limit": 2})["result"]["examples"]
    assert [e.get("source") for e in newest] == ["yard", "yard"], newest
    snapshot = probe.request(DEVICE, "snapshot", {"source": "front"})["result"]
    assert snapshot["source"] == "front"

    # Home Assistant: an entity set per camera, capture buttons that name theirs
    probe.drain()
    discovery = json.loads([p for t, p, r in probe.seen if t == f"homeassistant/device/edged_{DEVICE}/config"][-1])
    components = discovery["components"]
    assert components[f"edged_{DEVICE}_head_knn_yard"]["state_topic"] == f"edged/{DEVICE}/state/knn/yard"
    assert json.loads(components[f"edged_{DEVICE}_teach_disc_garage"]["payload_press"])["source"] == "garage"

    # the teach page: a camera is chosen; the live view, the predictions and the capture buttons follow it
    page = f"http://127.0.0.1:{web_port}"
    with pytest.raises(urllib.error.HTTPError) as refused_view:
        urllib.request.urlopen(urllib.request.Request(f"{page}/api/live.mjpg?source=shed",
                                                      headers={"Authorization": f"Bearer {TOKEN}"}), timeout=10)
    assert refused_view.value.code == 400
    browser = headless_browser(tmp_path)
    from selenium.webdriver.support.ui import WebDriverWait  # after the skip when Selenium is missing

    try:
        browser.get(f"{page}/?token={TOKEN}")
        js = browser.execute_script
        wait = WebDriverWait(browser, 60)
        wait.until(lambda b: js("return document.getElementById('camera').options.length") == 3)
        js("const s = document.getElementById('camera'); s.value = 'yard'; s.dispatchEvent(new Event('change'));")
        assert "source=yard" in js("return document.getElementById('live').src")
        wait.until(lambda b: js("return document.getElementById('live').naturalWidth") > 0)
        shown = "return [...document.querySelectorAll('#predictions .head')].map((h) => h.dataset.label)"
        wait.until(lambda b: js(shown) == ["disc"])
        before = probe.request(DEVICE, "examples", {"label": "disc", "limit": 1000})["result"]["examples"]
        wait.until(lambda b: js("return document.querySelector('.label-row[data-label=disc] button.capture10')"))
        js("document.querySelector('.label-row[data-label=disc] button.capture10').click()")
        wait.until(lambda b: js("return (status.examples || {}).disc || 0") >= len(before) + 10)
    finally:
        browser.quit()
    taught = probe.request(DEVICE, "examples", {"label": "disc", "limit": 10})["result"]["examples"]
    assert {e.get("source") for e in taught} == {"yard"}, taught
    assert d.alive()
    assert d.stop() == 0, d.output()
