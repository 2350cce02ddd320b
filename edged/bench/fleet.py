"""`edged bench fleet --devices 200`: how fast `fleet ls` lists and `fleet send` collects a large fleet.

The devices are simulated, lightly: each is edged's own MQTT link (`MqttLink`: client, LWT, retained status and
stats, command intake, replies through `MqttResponder`) answering every command at once with its status — no
camera, no model. So the figures are the broker and the fleet protocol, not inference.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
import uuid

from .. import __version__
from ..commands.dispatch import answer_status_only
from ..config import MqttConfig
from ..mqtt.broker import MosquittoBroker, local_broker
from ..mqtt.client import make_client, no_delay
from ..mqtt.link import IncomingCommand, MqttLink
from ..mqtt.replies import MqttResponder
from ..mqtt.requests import BrokerClient
from ..fleet.roster import list_devices, send


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--devices", type=int, default=200)
    p.add_argument("--host", help="use this broker instead of a local mosquitto started for the run")
    p.add_argument("--port", type=int, default=1883)
    p.add_argument("--rounds", type=int, default=5, help="repeat ls and send this many times; medians printed")


class SimulatedDevice:
    def __init__(self, cfg: MqttConfig, name: str):
        self.name = name
        self.link = MqttLink(cfg, name, self._command, self._status)

    def _status(self) -> dict:
        return {"state": "online", "version": __version__, "device": self.name, "ts": round(time.time(), 3),
                "model": "simulated", "model_sha": "0" * 16, "active": ["knn"],
                "heads": {"knn": {"kind": "classes", "active": True, "ready": True, "classes": ["a", "b"]}},
                "examples": {"a": 10, "b": 12}, "source": {"uri": "simulated", "state": "ok", "error": None}}

    def _command(self, incoming: IncomingCommand) -> None:
        answer_status_only(incoming.name, incoming.payload, MqttResponder(self.link, incoming), self._status,
                           "a simulated device")

    def start(self) -> None:
        self.link.start()

    def publish_stats(self) -> None:
        self.link.publish(self.link.topics.stats, {"ts": round(time.time(), 3), "fps_out": 15.0,
                                                   "latency_ms": {"p50": 5.0, "p99": 9.0}}, retain=True, qos=1)

    def stop(self) -> None:
        self.link.stop(1.0)


def _raw_round_trip(cfg: MqttConfig, device: str, rounds: int) -> float:
    """Median ms of one request/reply to one device with a bare paho client (the broker's own round trip)."""
    got = threading.Event()
    client = make_client(cfg, f"bench-raw-{uuid.uuid4().hex[:6]}")
    client.on_message = lambda c, u, m: got.set()
    client.connect(cfg.host, cfg.port)
    no_delay(client)
    client.subscribe(f"{cfg.prefix}/{device}/reply/status", qos=1)
    client.loop_start()
    time.sleep(0.2)
    times = []
    for i in range(rounds):
        got.clear()
        t0 = time.perf_counter()
        client.publish(f"{cfg.prefix}/{device}/cmd/status", f'{{"id": "raw{i}"}}', qos=1)
        if got.wait(5):
            times.append((time.perf_counter() - t0) * 1000)
    client.loop_stop()
    client.disconnect()
    return statistics.median(times) if times else float("nan")


def run(args) -> int:
    broker = None if args.host else local_broker()
    try:
        host, port = (args.host, args.port) if args.host else ("127.0.0.1", broker.port)
        kind = "given" if broker is None else ("mosquitto" if isinstance(broker, MosquittoBroker) else "amqtt")
        prefix = f"edgedbench{uuid.uuid4().hex[:6]}"
        cfg = MqttConfig(host=host, port=port, prefix=prefix, qos=1, protocol="3.1.1" if kind == "amqtt" else "5")
        print(f"broker: {kind} at {host}:{port}, MQTT {cfg.protocol}; {args.devices} simulated devices "
              f"(edged's MqttLink and reply code, no camera or model: the figures are the broker and the protocol)")
        devices = [SimulatedDevice(cfg, f"sim{i:04d}") for i in range(args.devices)]
        t0 = time.perf_counter()
        for d in devices:
            d.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(d.link.connected.is_set() for d in devices):
            time.sleep(0.05)
        for d in devices:
            d.publish_stats()
        time.sleep(1.0)
        print(f"devices connected and announced in {time.perf_counter() - t0:.1f} s")

        raw_ms = _raw_round_trip(cfg, devices[0].name, 50)
        ls_s, send_s, listed, replies = [], [], 0, 0
        for _ in range(args.rounds):
            t = time.perf_counter()
            with BrokerClient(cfg, "bench") as client:
                found = list_devices(client, prefix)
                ls_s.append(time.perf_counter() - t)
                listed = sum(1 for d in found.values() if d.online and d.stats)
                online = [n for n, d in found.items() if d.online]
                t = time.perf_counter()
                outcomes = send(client, prefix, "status", {}, None, 10.0, online)
                send_s.append(time.perf_counter() - t)
                replies = sum(1 for o in outcomes.values() if o.ok)
        for d in devices:
            d.stop()
    finally:
        if broker is not None:
            broker.close()

    ls, sd = statistics.median(ls_s), statistics.median(send_s)
    print(f"raw broker request/reply round trip (one device, a bare paho client): {raw_ms:.2f} ms median of 50")
    print(f"fleet ls: {listed}/{args.devices} devices with status and stats, {ls * 1000:.0f} ms from connecting "
          f"(median of {args.rounds}; {ls * 1000 / max(raw_ms, 1e-6):.0f}x one raw round trip)")
    print(f"fleet send status: {replies}/{args.devices} replies in {sd * 1000:.0f} ms "
          f"(median of {args.rounds}; {sd * 1000 / max(raw_ms, 1e-6):.0f}x one raw round trip)")
    print(f"fleet ls: {ls:.3f} s to list {listed} (target <= 0.5 s)")
    print(f"fleet send: {sd:.3f} s to collect {replies} replies (target <= 1 s)")
    return 0 if listed == replies == args.devices else 1
