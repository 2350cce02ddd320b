"""A local mosquitto process on a free loopback port (demo and tests), with an amqtt fallback for the demo."""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def find_mosquitto() -> Optional[str]:
    """mosquitto on the PATH or in Debian's sbin; EDGED_MOSQUITTO names another binary, or 'none' to hide it."""
    choice = os.environ.get("EDGED_MOSQUITTO")
    if choice:
        return None if choice == "none" else choice
    return shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")


class MosquittoBroker:
    """`start()` launches mosquitto on 127.0.0.1:port; `stop()` kills it. Restartable on the same port."""

    def __init__(self, port: Optional[int] = None, extra_config: str = "", persistence: bool = False):
        self.binary = find_mosquitto()
        if self.binary is None:
            raise FileNotFoundError("mosquitto is not installed (apt-get install mosquitto)")
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="edged-mosquitto-"))
        self.conf = self.dir / "mosquitto.conf"
        # `user`: when started as root, mosquitto would switch to its own user and lose access to our files.
        kept = f"persistence true\npersistence_location {self.dir}/\n" if persistence else "persistence false\n"
        # set_tcp_nodelay: replies are not held back by Nagle's algorithm (see edged.mqtt.link.no_delay)
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n{kept}"
                             f"user {getpass.getuser()}\n{extra_config}")
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> "MosquittoBroker":
        self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=subprocess.DEVNULL, start_new_session=True,
                                     stderr=open(self.dir / "log.txt", "ab"))
        if not wait_for_port(self.port):
            self.stop()
            raise RuntimeError(f"mosquitto did not listen on {self.port}: {(self.dir / 'log.txt').read_text()[-500:]}")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def close(self) -> None:
        """Stop and remove its temporary folder."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class AmqttBroker:
    """An in-process broker for machines without mosquitto (pip install 'edged[demo]'). It speaks MQTT 3.1.1:
    clients of the demo connect with `mqtt.protocol = "3.1.1"` (amqtt refuses edged's MQTT 5 will)."""

    protocol = "3.1.1"

    def __init__(self, port: Optional[int] = None):
        import amqtt  # noqa: F401  (ImportError tells the caller to install it)

        self.port = port or free_port()
        self._loop = None
        self._thread: Optional[threading.Thread] = None

    def start(self) -> "AmqttBroker":
        import asyncio

        from amqtt.broker import Broker

        config = {"listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
                  "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}}}
        ready = threading.Event()

        def serve():
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            self._broker = Broker(config, loop=self._loop)
            self._loop.run_until_complete(self._broker.start())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, name="amqtt", daemon=True)
        self._thread.start()
        if not ready.wait(10) or not wait_for_port(self.port):
            raise RuntimeError("embedded amqtt broker did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None:
            import asyncio

            fut = asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop)
            try:
                fut.result(5)
            except Exception:
                pass
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            self._loop = None

    close = stop


def local_broker(port: Optional[int] = None):
    """mosquitto when installed, else the embedded amqtt broker."""
    try:
        return MosquittoBroker(port).start()
    except FileNotFoundError:
        return AmqttBroker(port).start()
