"""Nobody in: TLS with a test CA, passwords and a mosquitto ACL; certificate refusals; no secret in logs or status."""

from __future__ import annotations

import datetime
import ipaddress
import json
import shutil
import ssl
import subprocess
import threading
import time
import uuid

import pytest
from conftest import backbone_settings, edged_cli, toml_config, wait_until, write_config

from edged.mqtt.broker import MosquittoBroker, find_mosquitto

pytestmark = pytest.mark.skipif(find_mosquitto() is None or shutil.which("mosquitto_passwd") is None,
                                reason="mosquitto and mosquitto_passwd needed")
crypto = pytest.importorskip("cryptography")
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

from edged.config import MqttConfig
from edged.mqtt.client import make_client

DEVICE = "cam-sec"
PASSWORDS = {"cam": "cam-Secret-1", "viewer": "viewer-Secret-2", "admin": "admin-Secret-3"}
ACL = """user cam
topic readwrite edged/#

user viewer
topic read edged/#

user admin
topic readwrite edged/#
"""


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _pem(obj) -> bytes:
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM)
    return obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def make_pki(folder, names: list[str]):
    """A test CA and a server certificate for `names` (DNS names or IP addresses): (ca.pem, cert.pem, key.pem)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edged test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(ca_key, hashes.SHA256()))
    key = _key()
    alt = [x509.IPAddress(ipaddress.ip_address(n)) if n[0].isdigit() else x509.DNSName(n) for n in names]
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False).sign(ca_key, hashes.SHA256()))
    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    for path, obj in zip(paths, (ca, cert, key)):
        path.write_bytes(_pem(obj))
    return paths


def secure_broker(tmp_path, names: list[str]) -> tuple[MosquittoBroker, object]:
    ca, cert, key = make_pki(tmp_path / f"pki-{names[0]}", names)
    passwd, acl = tmp_path / "passwd", tmp_path / "acl"
    for i, (user, password) in enumerate(PASSWORDS.items()):
        subprocess.run(["mosquitto_passwd", "-b"] + (["-c"] if i == 0 else []) + [str(passwd), user, password], check=True)
    passwd.chmod(0o600)
    acl.write_text(ACL)
    broker = MosquittoBroker(extra_config=f"cafile {ca}\ncertfile {cert}\nkeyfile {key}\n"
                                          f"password_file {passwd}\nacl_file {acl}\n")
    broker.conf.write_text(broker.conf.read_text().replace("allow_anonymous true", "allow_anonymous false"))
    return broker.start(), ca


class Client:
    """A paho client over TLS (or not) that records its CONNACK and what it receives."""

    def __init__(self, port: int, ca, user=None, tls=True):
        self.connack = threading.Event()
        self.refused = None
        self.messages: list[tuple[str, bytes]] = []
        self.client = make_client(MqttConfig(port=port, username=user, password=PASSWORDS[user] if user else None,
                                             tls={"ca_certs": str(ca)} if tls else None), f"t-{uuid.uuid4().hex[:8]}")
        self.client.on_connect = self._on_connect
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload))
        try:
            self.client.connect("127.0.0.1", port)
            self.client.loop_start()
            self.connack.wait(5)
        except (OSError, ssl.SSLError) as e:
            self.refused = f"{type(e).__name__}: {e}"

    def _on_connect(self, client, userdata, flags, reason_code, properties=None):
        self.refused = str(reason_code) if reason_code.is_failure else None
        if not reason_code.is_failure:
            client.subscribe("edged/#", qos=1)
        self.connack.set()

    @property
    def connected(self) -> bool:
        return self.connack.is_set() and self.refused is None

    def request(self, command: str, payload: dict, device: str = DEVICE, timeout: float = 10.0):
        corr = uuid.uuid4().hex
        payload = {**payload, "id": corr}
        self.client.publish(f"edged/{device}/cmd/{command}", json.dumps(payload), qos=1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for topic, data in list(self.messages):
                if topic == f"edged/{device}/reply/{command}":
                    reply = json.loads(data)
                    if reply.get("id") == corr and reply.get("final", True):
                        return reply
            time.sleep(0.05)
        return None

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


def _config(tmp_path, make_state, port, ca, name="sec", user="cam", extra=""):
    settings = backbone_settings("none")
    state = make_state(settings, name=f"state-{name}")
    mqtt_extra = f'username = "{user}"\npassword = "{PASSWORDS.get(user, "x")}"\n{extra}\n[mqtt.tls]\nca_certs = "{ca}"\n'
    return write_config(tmp_path / f"{name}.toml",
                        toml_config(state, port, "synthetic:shape=triangle,clutter=2", settings, DEVICE, mqtt_extra))


@pytest.mark.heavy
def test_tls_passwords_and_acl_keep_strangers_and_viewers_out(tmp_path, make_state, daemons):
    broker, ca = secure_broker(tmp_path, ["127.0.0.1", "localhost"])
    clients = []
    try:
        config = _config(tmp_path, make_state, broker.port, ca)
        d = daemons(config, tmp_path / "d.log")
        admin = Client(broker.port, ca, "admin")
        clients.append(admin)
        assert admin.connected, admin.refused
        wait_until(lambda: any(t == f"edged/{DEVICE}/status" and json.loads(p).get("state") == "online"
                               for t, p in list(admin.messages)) or not d.alive(), 60)
        assert d.alive(), d.output()
        reply = admin.request("capture", {"label": "tri", "count": 2, "interval_ms": 0}, timeout=60)
        assert reply and reply["ok"], reply

        stranger = Client(broker.port, ca)  # TLS but no credentials
        plain = Client(broker.port, ca, "admin", tls=False)  # right password, no TLS
        clients += [stranger, plain]
        assert not stranger.connected and stranger.refused, "an anonymous client got in"
        assert not plain.connected, "a client without TLS got in"

        viewer = Client(broker.port, ca, "viewer")
        clients.append(viewer)
        assert viewer.connected, viewer.refused
        wait_until(lambda: any(t == f"edged/{DEVICE}/prediction/knn" for t, _ in list(viewer.messages)),
                   what="a prediction read by the viewer")  # may read
        assert viewer.request("forget", {"label": "tri"}, timeout=3) is None  # may not command: the broker drops it
        # commands are taken only on the device's own prefix and the fleet prefix
        admin.client.publish("edged/another-device/cmd/forget", json.dumps({"label": "tri"}), qos=1)
        admin.client.publish("elsewhere/cmd/forget", json.dumps({"label": "tri"}), qos=1)
        status = admin.request("status", {})  # published after them by the same client: delivered after them
        assert status["ok"] and status["result"]["examples"] == {"tri": 2}

        # no secret in the log, the retained status or `edged doctor`
        doctor = edged_cli("doctor", "--config", str(config))
        retained = [p.decode() for t, p in admin.messages if t == f"edged/{DEVICE}/status"]
        for text in [d.output(), doctor.stdout + doctor.stderr, *retained, json.dumps(status)]:
            for secret in PASSWORDS.values():
                assert secret not in text
        assert d.stop() == 0
    finally:
        for c in clients:
            c.close()
        broker.close()


def test_daemon_refuses_a_missing_ca_file_and_a_certificate_for_another_host(tmp_path, make_state):
    broker, ca = secure_broker(tmp_path, ["otherhost.example"])  # valid CA, wrong name for 127.0.0.1
    try:
        missing = _config(tmp_path, make_state, broker.port, tmp_path / "no-such-ca.pem", name="noca")
        out = edged_cli("run", "--config", str(missing), timeout=120)
        assert out.returncode == 2 and "mqtt.tls.ca_certs: file not found" in out.stderr, out.stderr[-2000:]
        wrong = _config(tmp_path, make_state, broker.port, ca, name="wronghost")
        out = edged_cli("run", "--config", str(wrong), timeout=120)
        assert out.returncode == 2, out.stderr[-2000:]
        assert "mqtt.tls: the broker at 127.0.0.1" in out.stderr and "does not verify" in out.stderr
        insecure = _config(tmp_path, make_state, broker.port, ca, name="insecure").read_text() + "insecure = true\n"
        check = edged_cli("config", "check", str(write_config(tmp_path / "insecure.toml", insecure)))
        assert "mqtt.tls.insecure = true: the broker's certificate and host name are not checked" in check.stdout + check.stderr
    finally:
        broker.close()
