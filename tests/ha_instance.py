"""A real Home Assistant on loopback for the tests: its own venv (`bash .ci/homeassistant VERSION`), onboarded through
its API, the MQTT integration added through the config flow, the entity and device registries read over its
websocket API, its recorder's rows counted in its own SQLite database."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sqlite3
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import aiohttp

VENVS = Path(os.environ.get("EDGED_HA_VENVS", Path.home() / ".cache" / "edged"))
PASSWORD = "test-pass-123"


def venv(version: str) -> Path | None:
    """The venv `bash .ci/homeassistant VERSION` made, or None."""
    root = VENVS / f"homeassistant-{version}"
    return root if (root / "bin" / "hass").is_file() else None


CONFIGURATION = """
homeassistant:
  name: Test
  latitude: 52.0
  longitude: 4.0
  elevation: 0
  unit_system: metric
  time_zone: UTC
  country: NL
  currency: EUR
http:
  server_host: 127.0.0.1
  server_port: {port}
api:
config:
onboarding:
frontend:
recorder:
  db_url: sqlite:///{db}
  commit_interval: 1
logger:
  default: warning
  logs:
    homeassistant.components.mqtt: info
"""


class HomeAssistant:
    def __init__(self, root: Path, folder: Path, port: int):
        self.root, self.folder, self.port = root, folder, port
        self.base = f"http://127.0.0.1:{port}"
        self.db = folder / "ha.db"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "configuration.yaml").write_text(CONFIGURATION.format(port=port, db=self.db))
        self.proc: subprocess.Popen | None = None
        self.token: str | None = None
        self.tokens: dict = {}

    @property
    def log(self) -> Path:
        return self.folder / "home-assistant.log"

    def version(self) -> str:
        out = subprocess.run([str(self.root / "bin" / "python"), "-c", "import homeassistant.const as c; print(c.__version__)"],
                             capture_output=True, text=True, check=True)
        return out.stdout.strip()

    def start(self, timeout: float = 180) -> None:
        """Start it (requirements were installed with the venv: `--skip-pip`, nothing is downloaded) and wait for its
        HTTP API."""
        self.proc = subprocess.Popen([str(self.root / "bin" / "hass"), "-c", str(self.folder), "--skip-pip"],
                                     stdout=open(self.folder / "stdout.log", "ab"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, (self.folder / "stdout.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(self.base + "/api/onboarding", timeout=2):
                    return
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    raise AssertionError("Home Assistant did not answer")
                time.sleep(0.5)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    # -- HTTP API ---------------------------------------------------------------------------------------------
    def request(self, method: str, path: str, body=None, form: bool = False):
        data = None
        if body is not None:
            data = urllib.parse.urlencode(body).encode() if form else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Content-Type", "application/x-www-form-urlencoded" if form else "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(req, timeout=30) as reply:
            raw = reply.read()
        return json.loads(raw) if raw else None

    def onboard(self) -> None:
        """Create the owner through onboarding and take an access token."""
        client = self.base + "/"
        code = self.request("POST", "/api/onboarding/users", {"client_id": client, "name": "Test", "username": "test",
                                                              "password": PASSWORD, "language": "en"})["auth_code"]
        self.tokens = self.request("POST", "/auth/token", {"grant_type": "authorization_code", "code": code,
                                                           "client_id": client}, form=True)
        self.token = self.tokens["access_token"]
        # the other steps, as the onboarding pages finish them: the frontend opens onboarding until all are done
        for step, body in (("core_config", {}), ("analytics", {}),
                           ("integration", {"client_id": client, "redirect_uri": client + "?auth_callback=1"})):
            try:
                self.request("POST", f"/api/onboarding/{step}", body)
            except urllib.error.HTTPError as e:
                if e.code != 404:  # a step this version does not have
                    raise

    def add_mqtt(self, broker_port: int) -> dict:
        """The MQTT integration, added as a person does in Settings → Devices & services."""
        flow = self.request("POST", "/api/config/config_entries/flow", {"handler": "mqtt", "show_advanced_options": False})
        while flow.get("type") == "form":
            fields = {f["name"] for f in flow.get("data_schema", [])}
            answer = {k: v for k, v in {"broker": "127.0.0.1", "port": broker_port}.items() if k in fields}
            flow = self.request("POST", f"/api/config/config_entries/flow/{flow['flow_id']}", answer)
        assert flow.get("type") == "create_entry", flow
        return flow

    def states(self) -> dict[str, dict]:
        return {s["entity_id"]: s for s in self.request("GET", "/api/states")}

    def press(self, entity_id: str) -> None:
        self.request("POST", "/api/services/button/press", {"entity_id": entity_id})

    def websocket(self, *commands: dict) -> list:
        """Each command's result over the websocket API (e.g. config/entity_registry/list)."""

        async def talk():
            async with aiohttp.ClientSession() as session:
                async with session.ws_connect(self.base + "/api/websocket") as ws:
                    await ws.receive_json()
                    await ws.send_json({"type": "auth", "access_token": self.token})
                    assert (await ws.receive_json())["type"] == "auth_ok"
                    out = []
                    for i, command in enumerate(commands, 1):
                        await ws.send_json({"id": i, **command})
                        while True:
                            reply = await ws.receive_json()
                            if reply.get("id") == i and reply.get("type") == "result":
                                assert reply["success"], reply
                                out.append(reply["result"])
                                break
                    return out

        return asyncio.run(talk())

    def entity_registry(self) -> dict[str, dict]:
        return {e["entity_id"]: e for e in self.websocket({"type": "config/entity_registry/list"})[0]}

    def devices(self) -> list[dict]:
        return self.websocket({"type": "config/device_registry/list"})[0]

    # -- what it logged and recorded ------------------------------------------------------------------------------
    def mqtt_complaints(self, since: int = 0) -> list[str]:
        """WARNING and ERROR lines of its log from `since` (a byte offset) on that concern MQTT or discovery."""
        text = self.log.read_text(errors="replace")[since:] if self.log.exists() else ""
        lines = re.findall(r"^\S+ \S+ (?:WARNING|ERROR|CRITICAL) .*$", text, re.M)
        return [line for line in lines if re.search(r"mqtt|discover|edged|template", line, re.I)]

    def log_size(self) -> int:
        return self.log.stat().st_size if self.log.exists() else 0

    def recorded(self, entity_ids: list[str], changes_only: bool = False) -> dict[str, int]:
        """Rows of the recorder's `states` table per entity (schema 2023.4 and later: `states_meta`); with
        `changes_only`, not the rows of its becoming unavailable or unknown."""
        skip = "WHERE s.state NOT IN ('unavailable', 'unknown') " if changes_only else ""
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True) as db:
            rows = db.execute("SELECT m.entity_id, COUNT(*) FROM states s JOIN states_meta m "
                              f"ON s.metadata_id = m.metadata_id {skip}GROUP BY m.entity_id").fetchall()
        counts = dict(rows)
        return {e: counts.get(e, 0) for e in entity_ids}


# text anywhere on the page, shadow roots included (Home Assistant's frontend is web components all the way down)
DEEP_TEXT = """
const seen = [];
const walk = (node) => {
  if (node.shadowRoot) walk(node.shadowRoot);
  for (const child of node.children || []) walk(child);
  if (node.nodeType === 1 && node.childNodes) for (const t of node.childNodes) if (t.nodeType === 3) seen.push(t.data);
};
walk(document.documentElement);
return seen.join(" ");
"""


def screenshot_device_page(ha: HomeAssistant, browser, device_id: str, words: list[str], path: Path) -> None:
    """The device's page in Home Assistant's own frontend, signed in with the test's tokens, once it shows `words`."""
    from conftest import wait_until

    browser.get(ha.base + "/onboarding.html")
    tokens = {**ha.tokens, "hassUrl": ha.base, "clientId": ha.base + "/",
              "expires": int(time.time() * 1000) + 1_800_000}
    browser.execute_script("localStorage.setItem('hassTokens', arguments[0]);", json.dumps(tokens))
    browser.get(f"{ha.base}/config/devices/device/{device_id}")
    wait_until(lambda: all(w in browser.execute_script(DEEP_TEXT) for w in words), 60, interval=0.5,
               what=lambda: browser.execute_script(DEEP_TEXT)[:500])
    browser.save_screenshot(str(path))
