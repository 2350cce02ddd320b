"""edged as a real Home Assistant sees it (issue 35): a newer one reading device discovery, an older one (before
2024.11) reading per-entity discovery. Each is onboarded through its API, given the MQTT integration through the
config flow, and then asked what it made of an edged daemon: the entities and their ids, the device, a teach button
pressed through it, a head added, edged stopped, killed and started again, its log and its recorder.

Marked slow: each Home Assistant is a venv of its own (`bash .ci/homeassistant 2025.4.4`, and
`bash .ci/homeassistant 2024.1.6` with Python 3.11); without one the case is skipped and says how to make it.
Run: `python -m pytest -q -m slow tests/daemon/test_homeassistant_real.py -s`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
from pathlib import Path

import pytest
from conftest import Probe, daemon_config, headless_browser, wait_until
from ha_instance import HomeAssistant, screenshot_device_page, venv

from edged.mqtt.broker import MosquittoBroker

DEVICE = "hatest"
VERSIONS = {"2025.4.4": "device", "2024.1.6": "entity"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ids(head: str, labels: list[str]) -> dict[str, str]:
    """The entity ids edged asks for, by what they are."""
    out = {f"sensor.{DEVICE}_head_{head}": "sensor", f"event.{DEVICE}_event_{head}": "event",
           f"button.{DEVICE}_wrong_{head}": "button"}
    out.update({f"binary_sensor.{DEVICE}_present_{head}_{label}": "binary_sensor" for label in labels})
    return out


def _registry_with(ha: HomeAssistant, wanted: set[str]) -> dict[str, dict]:
    def complete():
        registry = ha.entity_registry()
        return registry if wanted <= set(registry) else None

    return wait_until(complete, 60, what=lambda: sorted(wanted - set(ha.entity_registry())), interval=0.5)


COMMON = {f"button.{DEVICE}_teach_triangle", f"button.{DEVICE}_teach_rectangle", f"image.{DEVICE}_snapshot",
          f"image.{DEVICE}_event_snapshot", f"sensor.{DEVICE}_fps", f"sensor.{DEVICE}_examples"}


@pytest.mark.slow
@pytest.mark.parametrize("version", sorted(VERSIONS))
def test_a_real_home_assistant_makes_the_entities_edged_announces(version, daemons, make_state, tmp_path):
    root = venv(version)
    if root is None:
        pytest.skip(f"no Home Assistant {version} venv: bash .ci/homeassistant {version}")
    mode = VERSIONS[version]
    broker = MosquittoBroker().start()  # a broker of its own: nothing retained from another version's run
    probe = Probe(broker.port)
    ha = HomeAssistant(root, tmp_path / "ha", _free_port())
    ha.start()
    try:
        ha.onboard()
        ha.add_mqtt(broker.port)
        extra = (f'\n[homeassistant]\nenabled = true\ndiscovery = "{mode}"\ncapture_count = 3\n'
                 f"snapshot_interval_s = 5\n")
        config = daemon_config(tmp_path, make_state, broker.port, DEVICE, "synthetic:clutter=2", extra)
        d = daemons(config, tmp_path / "edged.log")
        probe.wait_online(DEVICE)
        for label in ("triangle", "rectangle"):
            assert probe.request(DEVICE, "capture", {"label": label, "count": 3, "interval_ms": 0})["ok"]

        wanted = COMMON | set(_ids("knn", ["triangle", "rectangle"]))
        registry = _registry_with(ha, wanted)
        ours = {e: r for e, r in registry.items() if r.get("platform") == "mqtt"}
        assert set(ours) == wanted, sorted(set(ours) ^ wanted)
        assert registry[f"button.{DEVICE}_teach_triangle"]["entity_category"] == "config"
        assert registry[f"sensor.{DEVICE}_fps"]["entity_category"] == "diagnostic"
        device = next(dev for dev in ha.devices() if ["mqtt", f"edged_{DEVICE}"] in dev["identifiers"])
        assert device["name"] == DEVICE and device["model"].startswith("MobileNet v1") and "/" in device["model"]
        if mode == "device":  # the device's page in the newer frontend (docs/homeassistant.png)
            picture = tmp_path / f"homeassistant-{version}.png"
            browser = headless_browser(tmp_path)
            try:
                screenshot_device_page(ha, browser, device["id"], ["Teach triangle", "Label (knn)"], picture)
            finally:
                browser.quit()
            if os.environ.get("EDGED_HA_SCREENSHOT_DIR"):
                shutil.copy(picture, Path(os.environ["EDGED_HA_SCREENSHOT_DIR"]) / "homeassistant.png")
        states = ha.states()
        assert states[f"button.{DEVICE}_teach_triangle"]["attributes"]["friendly_name"] == f"{DEVICE} Teach triangle"
        assert states[f"event.{DEVICE}_event_knn"]["attributes"].get("device_class") == "motion"
        assert states[f"sensor.{DEVICE}_fps"]["attributes"].get("unit_of_measurement") == "Hz"

        # a teach button pressed in Home Assistant reaches edged
        button = f"button.{DEVICE}_teach_triangle"
        wait_until(lambda: ha.states()[button]["state"] != "unavailable", 30, what="the button available")
        ha.press(button)
        _, pressed, _ = probe.wait_for(lambda t, p, r: t == f"edged/{DEVICE}/cmd/capture", 30)
        assert json.loads(pressed) == {"label": "triangle", "count": 3}
        wait_until(lambda: probe.request(DEVICE, "status", {})["result"]["examples"].get("triangle") == 6, 30,
                   what="3 more triangle examples from the button")
        wait_until(lambda: ha.states()[f"sensor.{DEVICE}_examples"]["state"] == "9", 30,
                   what=lambda: ha.states()[f"sensor.{DEVICE}_examples"])

        # "that was wrong", pressed in Home Assistant: the kNN's newest event becomes an example of background
        wrong = f"button.{DEVICE}_wrong_knn"
        wait_until(lambda: probe.request(DEVICE, "events", {"head": "knn", "limit": 1})["result"]["events"], 60,
                   what="an event of the knn head")
        background = probe.request(DEVICE, "status", {})["result"]["examples"].get("background", 0)
        ha.press(wrong)
        _, marked, _ = probe.wait_for(lambda t, p, r: t == f"edged/{DEVICE}/cmd/wrong", 30)
        assert json.loads(marked) == {"head": "knn"}
        wait_until(lambda: probe.request(DEVICE, "status", {})["result"]["examples"].get("background", 0)
                   == background + 1, 30, what="the wrong event stored as background")
        wanted |= {f"binary_sensor.{DEVICE}_present_knn_background", f"button.{DEVICE}_teach_background"}

        # a second head adds entities; the first head's keep their ids
        train = probe.request(DEVICE, "train", {"head": "classifier"}, timeout=120)
        assert train["ok"], train
        assert probe.request(DEVICE, "activate", {"heads": ["knn", "classifier"]})["ok"]
        assert train["result"]["metrics"]["left_out"] == {"background": 1}  # one mark: said, not a failed train
        wanted |= set(_ids("classifier", ["triangle", "rectangle", "background"]))
        registry = _registry_with(ha, wanted)
        assert {e for e, r in registry.items() if r.get("platform") == "mqtt"} == wanted

        def knn_states() -> int:
            probe.drain()
            return sum(1 for t, p, r in probe.seen if t == f"edged/{DEVICE}/state/knn")

        head = f"sensor.{DEVICE}_head_knn"
        wait_until(lambda: knn_states() >= 20, 90, what="20 state changes of the knn head")
        # stop, kill -9 and start again: unavailable, then back; no complaint in the log about any of it
        assert d.stop() == 0
        wait_until(lambda: ha.states()[head]["state"] == "unavailable", 30, what="unavailable after a stop")
        # the recorder, once the first daemon has stopped: a row per change of the head sensor, never one per frame
        changes = knn_states()
        rows = wait_until(lambda: (r := ha.recorded(sorted(wanted), changes_only=True)) and r[head] >= 0.8 * changes
                          and r, 30, interval=0.5, what=lambda: (ha.recorded([head], changes_only=True), changes))
        assert rows[head] <= changes, (rows[head], changes)
        print(f"Home Assistant {ha.version()} ({mode} discovery): {changes} knn state changes -> {rows[head]} rows "
              f"for the head sensor, {sum(rows.values())} rows across the device's {len(wanted)} entities "
              f"({sum(rows.values()) / max(changes, 1):.1f} a change): "
              f"{ {e.split('.', 1)[1]: n for e, n in sorted(rows.items()) if n} }")
        d = daemons(config, tmp_path / "edged2.log")
        wait_until(lambda: ha.states()[head]["state"] != "unavailable", 60, what="available again")
        d.stop(signal.SIGKILL)
        wait_until(lambda: ha.states()[head]["state"] == "unavailable", 60, what="unavailable after kill -9 (will)")
        d = daemons(config, tmp_path / "edged3.log")
        wait_until(lambda: ha.states()[head]["state"] != "unavailable", 60, what="available again after kill -9")
        assert d.stop() == 0
        assert ha.mqtt_complaints() == [], ha.mqtt_complaints()
        for log in ("edged.log", "edged2.log", "edged3.log"):
            assert "Traceback" not in (tmp_path / log).read_text(), log
    finally:
        ha.stop()
        probe.close()
        broker.close()
