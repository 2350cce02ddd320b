"""Who may speak for the fleet: key pairs, fleet certificates, signed envelopes, revocation and sealed payloads.

Every daemon and trainer has an Ed25519 key (signing) and an X25519 key (receiving sealed data), made at first
start under `state_dir/keys/` (mode 0600). A fleet key, kept on an admin machine (`edged fleet init`), certifies
each of them (`edged fleet enroll`): a certificate binds a name and a role to the two public keys. A signed
envelope carries the signer's certificate, so a receiver needs only the fleet's public key to check it; a
fleet-signed revocation list (retained on the broker) drops a lost device.

All of it is JSON of base64 strings: nothing here deserialises anything that could run code.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .. import wire
from ..config import NAME_RE
from ..errors import EdgedError
from ..files import write_atomic
from ..state.layout import StateLayout

ROLES = ("device", "trainer")
MAX_ENVELOPE = 64 * 1024


class TrustError(EdgedError):
    pass


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text, what: str, size: Optional[int] = None) -> bytes:
    try:
        data = base64.b64decode(str(text), validate=True)
    except (ValueError, TypeError):
        raise TrustError(f"{what} is not base64") from None
    if size is not None and len(data) != size:
        raise TrustError(f"{what} is {len(data)} bytes, not {size}")
    return data


def key_id(public: bytes) -> str:
    """A short, stable name for a public key (shown to people, compared by code)."""
    return hashlib.sha256(public).hexdigest()[:16]


RESERVED_NAMES = ("fleet", "clients")  # topic levels of their own under the prefix (edged.mqtt.topics.FleetTopics)


def valid_name(name) -> bool:
    return (isinstance(name, str) and NAME_RE.fullmatch(name) is not None and name not in (".", "..")
            and name not in RESERVED_NAMES)


def _raw(key) -> bytes:
    return key.public_key().public_bytes_raw() if hasattr(key, "public_key") else key.public_bytes_raw()


def _write_secret(path: Path, data: bytes) -> None:
    """A key or certificate: a folder made for it 0700, the file 0600 from its first byte (another local user
    read a key made into an existing 0755 folder while it was written, 17 times in 20)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(path, data, mode=0o600)
    os.chmod(path, 0o600)  # a umask wider than 077 cannot loosen it


def _load_or_make(path: Path, kind):
    if path.is_file():
        try:
            return kind.from_private_bytes(unb64(path.read_text().strip(), str(path), 32))
        except (TrustError, ValueError) as e:
            raise TrustError(f"{path}: not a key file ({e})") from None
    key = kind.generate()
    _write_secret(path, b64(key.private_bytes_raw()).encode() + b"\n")
    return key


# -- signed envelopes --------------------------------------------------------------------------------------
def sign_body(key: Ed25519PrivateKey, body: dict, cert: Optional[dict] = None) -> dict:
    """{"signed": <the body's JSON text>, "sig": <signature of that text>, "cert"?}: the bytes signed are the bytes
    sent, so no canonical form is needed."""
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    envelope = {"signed": text, "sig": b64(key.sign(text.encode()))}
    if cert is not None:
        envelope["cert"] = cert
    return envelope


def open_body(envelope, public: bytes, what: str) -> dict:
    """The body of an envelope signed by `public`, or TrustError naming `what`."""
    if not isinstance(envelope, dict) or not isinstance(envelope.get("signed"), str):
        raise TrustError(f"{what}: not signed")
    if len(envelope["signed"]) > MAX_ENVELOPE:
        raise TrustError(f"{what}: signed part over {MAX_ENVELOPE} bytes")
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(unb64(envelope.get("sig"), f"{what} signature", 64),
                                                          envelope["signed"].encode())
    except InvalidSignature:
        raise TrustError(f"{what}: bad signature") from None
    try:
        body = wire.loads(envelope["signed"])
    except ValueError:
        raise TrustError(f"{what}: signed part is not JSON") from None
    if not isinstance(body, dict):
        raise TrustError(f"{what}: signed part is not an object")
    return body


# -- the fleet authority (admin machine) ----------------------------------------------------------------------
class FleetAuthority:
    """The fleet key: certifies devices and trainers, signs the revocation list. Kept off the devices."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        path = self.folder / "fleet.key"
        if not path.is_file():
            raise TrustError(f"no fleet key in {self.folder}: run `edged fleet init --dir {self.folder}` first")
        self.key = _load_or_make(path, Ed25519PrivateKey)
        self.public = _raw(self.key)

    @classmethod
    def create(cls, folder: str | Path) -> "FleetAuthority":
        folder = Path(folder)
        if (folder / "fleet.key").exists():
            raise TrustError(f"{folder / 'fleet.key'} exists already: a second fleet key would split the fleet")
        _load_or_make(folder / "fleet.key", Ed25519PrivateKey)
        authority = cls(folder)
        write_atomic(folder / "fleet.pub", (b64(authority.public) + "\n").encode())
        return authority

    def certify(self, request: dict, role: Optional[str], valid_days: float = 3650) -> dict:
        """A certificate for an identity request (`edged fleet id` prints one), in the role the admin gives: what the
        request claims for itself is not taken."""
        if not isinstance(request, dict):
            raise TrustError("enrolment request: not a JSON object")
        name = request.get("name")
        if not valid_name(name):
            raise TrustError(f"enrolment request: name {str(name)[:70]!r} is not valid"
                             + (" (a reserved topic level)" if name in RESERVED_NAMES else ""))
        if role not in ROLES:
            raise TrustError(f"enrol: say which role {str(name)[:70]!r} gets with --role ({' or '.join(ROLES)}); "
                             f"the request asks for {str(request.get('role'))[:20]!r}")
        unb64(request.get("sign"), "enrolment request: sign key", 32)
        unb64(request.get("box"), "enrolment request: box key", 32)
        now = time.time()
        body = {"name": name, "role": role, "sign": request["sign"], "box": request["box"],
                "fleet": key_id(self.public), "issued": round(now, 3), "expires": round(now + valid_days * 86400, 3),
                "serial": os.urandom(8).hex()}
        return {**sign_body(self.key, body), "fleet_key": b64(self.public)}

    def revocation(self, names: list[str], serials: list[str] = (), seq: int = 0) -> dict:
        """The signed list of revoked names and certificate serials, numbered: a list of a higher `seq` replaces the
        one held (then a later `ts`, for lists from before the numbers)."""
        for name in names:
            if not valid_name(name):
                raise TrustError(f"revoke: {str(name)[:70]!r} is not a valid name")
        return sign_body(self.key, {"type": "revocation", "fleet": key_id(self.public), "names": sorted(set(names)),
                                    "serials": sorted(set(serials)), "seq": int(seq), "ts": round(time.time(), 6)})


# -- a device's or trainer's identity ------------------------------------------------------------------------
@dataclass
class Certificate:
    name: str
    role: str
    sign: bytes
    box: bytes
    serial: str
    expires: float
    raw: dict = field(repr=False, default_factory=dict)


class Identity:
    """This process's keys (made at first start) and, once enrolled, its certificate and the fleet's public key."""

    def __init__(self, folder: str | Path, name: str, role: str):
        self.folder, self.name, self.role = Path(folder), name, role
        self.signer = _load_or_make(self.folder / "identity.key", Ed25519PrivateKey)
        self.box = _load_or_make(self.folder / "box.key", X25519PrivateKey)
        self.cert: Optional[dict] = None
        self.fleet_key: Optional[bytes] = None
        self._load_cert()

    def _load_cert(self) -> None:
        path = self.folder / "cert.json"
        if not path.is_file():
            return
        try:
            cert = json.loads(path.read_text())
            fleet = unb64(cert.get("fleet_key"), "fleet key", 32)
            mine = check_certificate(cert, fleet)
        except (ValueError, TrustError) as e:
            raise TrustError(f"{path}: {e}") from None
        if mine.sign != _raw(self.signer) or mine.box != _raw(self.box):
            raise TrustError(f"{path} certifies other keys than {self.folder}/identity.key: enrol this device again")
        if mine.name != self.name:
            raise TrustError(f"{path} certifies {mine.name!r}, but this is {self.name!r}")
        self.cert, self.fleet_key = cert, fleet

    @property
    def enrolled(self) -> bool:
        return self.cert is not None

    def request(self) -> dict:
        """What `edged fleet enroll` certifies: the name, role and public keys (no secret)."""
        return {"name": self.name, "role": self.role, "sign": b64(_raw(self.signer)), "box": b64(_raw(self.box))}

    def install(self, cert: dict) -> Certificate:
        """Keep a certificate made for these keys (and the fleet key it names)."""
        fleet = unb64(cert.get("fleet_key") if isinstance(cert, dict) else None, "certificate fleet key", 32)
        mine = check_certificate(cert, fleet)
        if mine.sign != _raw(self.signer) or mine.box != _raw(self.box):
            raise TrustError("this certificate was made for other keys (another device, or keys made anew)")
        if mine.name != self.name:
            raise TrustError(f"this certificate is for {mine.name!r}, but this is {self.name!r}")
        _write_secret(self.folder / "cert.json", json.dumps(cert).encode())
        self.cert, self.fleet_key = cert, fleet
        return mine

    def sign(self, body: dict) -> dict:
        if self.cert is None:
            raise TrustError(f"{self.name} is not enrolled in a fleet: run `edged fleet id` here and `edged fleet "
                             f"enroll` on the admin machine (or set fleet.trust = \"broker\")")
        return sign_body(self.signer, body, {k: self.cert[k] for k in ("signed", "sig")})

    def unseal(self, sealed: bytes, header: dict, context: bytes) -> bytes:
        return unseal(self.box, sealed, header, context)

    def describe(self) -> dict:
        out = {"name": self.name, "role": self.role, "key": key_id(_raw(self.signer)), "enrolled": self.enrolled}
        if self.fleet_key is not None:
            out["fleet"] = key_id(self.fleet_key)
        return out


def check_certificate(cert, fleet_key: bytes) -> Certificate:
    """A certificate signed by the fleet key, not expired, naming a valid name and role."""
    body = open_body(cert, fleet_key, "certificate")
    name, role = body.get("name"), body.get("role")
    if body.get("fleet") != key_id(fleet_key):
        raise TrustError("certificate of another fleet")
    if not valid_name(name) or role not in ROLES:
        raise TrustError("certificate names no valid name or role")
    expires = float(body.get("expires") or 0)
    if expires < time.time():
        raise TrustError(f"certificate of {name} expired")
    return Certificate(name, role, unb64(body.get("sign"), "certificate sign key", 32),
                       unb64(body.get("box"), "certificate box key", 32), str(body.get("serial", "")), expires, body)


class Verifier:
    """Checks envelopes against the fleet key and the newest revocation list it was given."""

    def __init__(self, fleet_key: bytes):
        self.fleet_key = fleet_key
        self.revoked_names: frozenset[str] = frozenset()
        self.revoked_serials: frozenset[str] = frozenset()
        self.revocation_order = (0, 0.0)  # (seq, ts) of the list held

    def revoke(self, envelope) -> bool:
        """Take a revocation list when it is the fleet's and newer (seq, then ts) than the one held; returns whether
        it was."""
        body = open_body(envelope, self.fleet_key, "revocation list")
        if body.get("type") != "revocation" or body.get("fleet") != key_id(self.fleet_key):
            raise TrustError("revocation list: not this fleet's")
        try:
            order = (int(body.get("seq") or 0), float(body.get("ts") or 0))
        except (TypeError, ValueError):
            raise TrustError("revocation list: seq and ts must be numbers") from None
        if order <= self.revocation_order:
            return False
        names, serials = body.get("names"), body.get("serials")
        if not isinstance(names, list) or not isinstance(serials, list):
            raise TrustError("revocation list: names and serials must be lists")
        self.revoked_names = frozenset(str(n) for n in names)
        self.revoked_serials = frozenset(str(s) for s in serials)
        self.revocation_order = order
        return True

    def check(self, envelope, name: str, roles: tuple[str, ...], what: str) -> tuple[dict, Certificate]:
        """The body of an envelope signed by a certified, unrevoked `name` in one of `roles`."""
        if not isinstance(envelope, dict) or "cert" not in envelope:
            raise TrustError(f"{what}: not signed (this fleet takes only signed parcels; fleet.trust = \"signed\")")
        cert = check_certificate(envelope["cert"], self.fleet_key)
        if cert.name != name:
            raise TrustError(f"{what}: signed by {cert.name!r}, not by {name!r} whose name it carries")
        if cert.role not in roles:
            raise TrustError(f"{what}: {cert.name!r} is certified as a {cert.role}, not a {' or '.join(roles)}")
        if cert.name in self.revoked_names or cert.serial in self.revoked_serials:
            raise TrustError(f"{what}: {cert.name!r} is revoked")
        return open_body(envelope, cert.sign, what), cert


# -- sealed payloads (for one recipient) ---------------------------------------------------------------------
def _key(shared: bytes, context: bytes) -> bytes:
    return HKDF(SHA256(), 32, salt=None, info=b"edged seal v1 " + context).derive(shared)


def seal(data: bytes, recipient_box: bytes, context: bytes) -> tuple[bytes, dict]:
    """Encrypt for the holder of `recipient_box` (X25519 + HKDF + ChaCha20-Poly1305); `context` is bound in."""
    ephemeral = X25519PrivateKey.generate()
    key = _key(ephemeral.exchange(X25519PublicKey.from_public_bytes(recipient_box)), context)
    nonce = os.urandom(12)
    sealed = ChaCha20Poly1305(key).encrypt(nonce, data, context)
    return sealed, {"epk": b64(_raw(ephemeral)), "nonce": b64(nonce), "to": key_id(recipient_box)}


def unseal(box: X25519PrivateKey, sealed: bytes, header, context: bytes) -> bytes:
    if not isinstance(header, dict):
        raise TrustError("sealed data without its header")
    if header.get("to") != key_id(_raw(box)):
        raise TrustError("sealed for another recipient")
    epk = unb64(header.get("epk"), "sealed ephemeral key", 32)
    key = _key(box.exchange(X25519PublicKey.from_public_bytes(epk)), context)
    try:
        return ChaCha20Poly1305(key).decrypt(unb64(header.get("nonce"), "sealed nonce", 12), sealed, context)
    except InvalidTag:
        raise TrustError("sealed data does not open (tampered, or not for this key)") from None


def trainer_identity(cfg, name: str) -> Identity:
    """A trainer node's identity: a folder of its own, so a device and a trainer can share a state folder."""
    return Identity(StateLayout(cfg.state_path).trainer_keys(name), name, "trainer")
