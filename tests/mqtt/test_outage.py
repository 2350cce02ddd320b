"""Nothing lost on the way to the broker: a 10 s broker outage with QoS 1 predictions, and a 5,000-message burst."""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import threading
import time
import uuid

import pytest
from conftest import backbone_settings, toml_config, wait_until, write_config
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edged.config import MqttConfig
from edged.mqtt.broker import MosquittoBroker, find_mosquitto
from edged.mqtt.client import make_client
from edged.mqtt.link import MqttLink

pytestmark = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto not installed")
DEVICE = "cam-outage"


class Subscriber:
    """A subscriber with a persistent MQTT 5 session: the broker keeps its QoS 1 messages while it is away."""

    def __init__(self, port: int, topics: list[str], client_id: str):
        self.port, self.topics = port, topics
        self.messages: "queue.Queue[tuple[float, str, bytes, bool]]" = queue.Queue()
        self.client = make_client(MqttConfig(port=port), client_id)
        self.client.on_message = lambda c, u, m: self.messages.put((time.monotonic(), m.topic, m.payload, m.retain))
        self.client.on_connect = lambda c, u, f, rc, p=None: c.subscribe([(t, 1) for t in self.topics])
        self.client.reconnect_delay_set(1, 1)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.client.connect("127.0.0.1", port, clean_start=False, properties=props)
        self.client.loop_start()

    def take(self, seconds: float) -> list[tuple[float, str, bytes, bool]]:
        out, deadline = [], time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                out.append(self.messages.get(timeout=0.1))
            except queue.Empty:
                pass
        return out

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


@pytest.mark.heavy
def test_broker_outage_loses_no_qos1_prediction(make_state, daemons, tmp_path):
    broker = MosquittoBroker(persistence=True).start()
    sub = None
    try:
        backbone = backbone_settings("none", input_size=96)
        state = make_state(backbone)
        text = toml_config(state, broker.port, "synthetic:clutter=4,frames=30", backbone, DEVICE,
                           extra="qos = 1\n\n[heads.knn]\nk = 1\nthreshold = 0.0\n").replace("fps = 60", "fps = 25")
        d = daemons(write_config(tmp_path / "d.toml", text), tmp_path / "d.log")
        prediction = f"edged/{DEVICE}/prediction/knn"
        status = f"edged/{DEVICE}/status"
        sub = Subscriber(broker.port, [prediction, status, f"edged/{DEVICE}/reply/#"], f"sub-{uuid.uuid4().hex[:6]}")
        deadline = time.monotonic() + 60
        while not any(t == status and json.loads(p).get("state") == "online" for _, t, p, _ in sub.take(0.5)):
            assert time.monotonic() < deadline, d.output()
        sub.client.publish(f"edged/{DEVICE}/cmd/capture", json.dumps({"label": "scene", "count": 3, "interval_ms": 0}),
                           qos=1).wait_for_publish(5)
        before = sub.take(3.0)
        assert any(t == prediction for _, t, _, _ in before), "no predictions before the outage"

        broker.stop()  # mosquitto saves its sessions (the subscriber's queue) on the way down
        time.sleep(10)
        restarted = time.monotonic()
        broker.start()
        after = sub.take(8.0)
        assert d.alive(), d.output()
        assert d.stop() == 0

        frames = sorted({json.loads(p)["frame"] for _, t, p, _ in before + after if t == prediction})
        missing = sorted(set(range(frames[0], frames[-1] + 1)) - set(frames))
        assert not missing, f"{len(missing)} frames lost, first {missing[:10]}"
        assert frames[-1] - frames[0] > 25 * 10, "predictions did not span the outage"
        back = [at for at, t, p, retained in after if t == status and not retained and json.loads(p).get("state") == "online"]
        assert back and back[0] - restarted <= 2.5, f"online again {back[0] - restarted if back else None:.2f} s after"
        stats = [json.loads(p) for _, t, p, _ in after if t == f"edged/{DEVICE}/stats"]
        offline = [json.loads(p) for _, t, p, _ in after if t == status and json.loads(p).get("state") == "offline"]
        assert offline, "the daemon's last status (on stop) is offline"
        print(f"outage: {len(frames)} frames, none missing; online {back[0] - restarted:.2f} s after the broker "
              f"returned; {len(stats)} stats")
    finally:
        if sub is not None:
            sub.close()
        broker.close()


@pytest.mark.skipif(shutil.which("mosquitto_sub") is None, reason="mosquitto-clients not installed")
def test_a_burst_of_5000_qos1_messages_arrives_whole(broker):
    """The link keeps its in-flight window within the broker's default limit (20) and loses nothing in a burst.

    The subscriber is mosquitto_sub: a Python subscriber acknowledging 20 at a time falls behind, and the
    broker then drops what exceeds its own queue for that subscriber (max_queued_messages, 1,000).
    """
    sub = subprocess.Popen(["mosquitto_sub", "-p", str(broker.port), "-t", "edged/burst/prediction/x",
                            "-t", "edged/burst/ready", "-q", "1", "-V", "5", "-i", f"burst-{uuid.uuid4().hex[:6]}"],
                           stdout=subprocess.PIPE, text=True)
    lines: list[dict] = []
    reader = threading.Thread(target=lambda: lines.extend(json.loads(line) for line in sub.stdout), daemon=True)
    reader.start()
    link = MqttLink(MqttConfig(port=broker.port, qos=1), "burst", lambda c: None, lambda: {"state": "online"})
    link.start()
    try:
        assert link.connected.wait(10)

        readies = []

        def subscribed():  # the subscriber hears a message published now
            readies.append(link.publish("edged/burst/ready", {"ready": True}))
            return any("ready" in line for line in list(lines))

        wait_until(subscribed, 10, what="mosquitto_sub subscribed", interval=0.2)
        started = time.monotonic()
        for i in range(5000):
            link.publish("edged/burst/prediction/x", {"n": i})
        wait_until(lambda: link.published >= 1 + len(readies) + 5000, 60,  # + the online status
                   what=lambda: f"{link.published} published")
        took = time.monotonic() - started
        wait_until(lambda: sum("n" in line for line in list(lines)) >= 5000, 30,
                   what=lambda: f"{sum('n' in line for line in list(lines))} of 5000 received")
        sub.terminate()
        sub.wait(10)
        reader.join(10)
        got = [line["n"] for line in lines if "n" in line]
        assert sorted(set(got)) == list(range(5000)), f"{5000 - len(set(got))} lost; dropped {link.queue_dropped}"
        assert link.queue_dropped == 0 and link.queued == 0
        print(f"burst: 5000 QoS 1 messages acknowledged in {took:.2f} s, all received")
    finally:
        link.stop()
        if sub.poll() is None:
            sub.kill()
