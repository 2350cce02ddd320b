"""Two real mosquitto processes bridged with deploy/mosquitto-bridge.conf: a daemon on the site broker is listed
and commanded through the central broker."""

from __future__ import annotations

import json

import pytest
from conftest import ROOT, backbone_settings, edged_cli, toml_config, write_config

from edged.mqtt.broker import MosquittoBroker, wait_for_port


def _bridge_config(central_port: int) -> str:
    lines = []
    for line in (ROOT / "deploy" / "mosquitto-bridge.conf").read_text().splitlines():
        if line.startswith("address "):
            line = f"address 127.0.0.1:{central_port}"
        lines.append(line.replace("SITE", "site1"))
    return "\n".join(lines) + "\n"


@pytest.mark.heavy
def test_daemon_on_a_site_broker_is_listed_and_commanded_through_the_central_one(tmp_path, make_state, daemons):
    central = MosquittoBroker().start()
    site = MosquittoBroker(extra_config=_bridge_config(central.port)).start()
    try:
        settings = backbone_settings("none")
        state = make_state(settings, name="state-far1")
        cfg = write_config(tmp_path / "far1.toml", toml_config(state, site.port, "synthetic:clutter=2", settings, "far1"))
        d = daemons(cfg, tmp_path / "far1.log")
        cli = str(write_config(tmp_path / "cli.toml", f'[mqtt]\nhost = "127.0.0.1"\nport = {central.port}\n'))

        rows = {}
        for _ in range(60):
            listed = edged_cli("fleet", "ls", "--json", "--config", cli)
            rows = {r["device"]: r for r in json.loads(listed.stdout or "[]")}
            if rows.get("far1", {}).get("state") == "online" and rows["far1"]["fps"] is not None:
                break
        assert rows["far1"]["state"] == "online", rows

        sent = edged_cli("fleet", "send", "--json", "--config", cli, "--device", "far1", "--timeout", "10", "status")
        assert sent.returncode == 0, sent.stdout + sent.stderr
        reply = json.loads(sent.stdout)[0]
        assert reply["device"] == "far1" and reply["result"] == "ok" and reply["reply"]["device"] == "far1"

        everyone = edged_cli("fleet", "send", "--json", "--config", cli, "--timeout", "5", "capture", '{"label": "far", "count": 1}')
        assert everyone.returncode == 0, everyone.stdout + everyone.stderr
        assert json.loads(everyone.stdout)[0]["reply"]["stored"] == 1

        # the site link drops and comes back: the site keeps its retained state and the centre sees the device again
        site.stop()
        site.start()
        assert wait_for_port(site.port)
        for _ in range(60):
            rows = {r["device"]: r for r in json.loads(edged_cli("fleet", "ls", "--json", "--config", cli).stdout or "[]")}
            if rows.get("far1", {}).get("state") == "online":
                break
        assert rows["far1"]["state"] == "online"
        assert d.stop() == 0
    finally:
        site.close()
        central.close()
