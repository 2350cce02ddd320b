"""The fleet's rule for what crosses the broker between devices: signed by a certified, unrevoked publisher whose
name is the one in the topic (`[fleet] trust = "signed"`, the default), or taken on the broker's word
(`trust = "broker"`, an explicit opt-out that the status and `edged config check` warn about).

Manifests, trainer announcements, progress and done messages are signed envelopes (edged.fleet.trust); a payload
for one recipient (a job, a result) is sealed for that recipient's certified X25519 key.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Optional

from .. import wire
from ..files import read_json_object, write_atomic
from ..state.layout import StateLayout
from .trust import Certificate, Identity, TrustError, Verifier, seal
from .parcels import ShareError, plain

log = logging.getLogger(__name__)

MAX_MANIFEST = 64 * 1024


def _json(payload: bytes, what: str):
    if len(payload) > MAX_MANIFEST:
        raise ShareError(f"{what}: {len(payload)} bytes, over {MAX_MANIFEST}")
    try:
        return wire.loads(payload, MAX_MANIFEST)
    except ValueError as e:
        raise ShareError(f"{what}: not JSON ({e})") from None


def device_trust(cfg) -> "FleetTrust":
    """A device's trust, from its config and state folder (its keys are made at its first start; a fleet certificate
    comes from `edged fleet enroll`)."""
    layout = StateLayout(cfg.state_path)
    return FleetTrust(cfg.fleet.trust, Identity(layout.keys, cfg.device, "device"), layout.revocation)


class FleetTrust:
    """`revocations`: where the newest revocation list seen is kept, outside the key folder (a device keyed anew
    keeps it); a list that came with the certificate (`edged fleet enroll`) and one kept by an older edged in the key
    folder count too, the newest of all serving."""

    def __init__(self, mode: str, identity: Identity, revocations: Optional[Path] = None):
        self.mode, self.identity = mode, identity
        self.signed = mode == "signed"
        self.verifier = Verifier(identity.fleet_key) if identity.fleet_key is not None else None
        self._saved = revocations or identity.folder / "revoked.json"
        self._held: Optional[bytes] = None  # the newest list as it came
        self._lock = threading.Lock()
        if self.verifier is None:
            return
        bundled = (identity.cert or {}).get("revocation")
        for source, envelope in (("kept", read_json_object(self._saved)),
                                 ("older edged's", read_json_object(identity.folder / "revoked.json")),
                                 ("the certificate's", bundled if isinstance(bundled, dict) else {})):
            if not envelope:
                continue
            try:
                if self.verifier.revoke(envelope):
                    self._held = json.dumps(envelope).encode()
            except TrustError as e:
                log.warning("%s revocation list ignored: %s", source, e)
        if self._held is not None and not self._saved.is_file():
            write_atomic(self._saved, self._held)

    # -- what this side sends ----------------------------------------------------------------------------
    def sign_manifest(self, manifest: dict) -> bytes:
        if not self.signed:
            return plain(manifest)
        return json.dumps(self.identity.sign(manifest)).encode()

    def sign(self, body: dict) -> dict:
        """A message body as it goes out: signed where the fleet is, as it is on the broker's word."""
        return self.identity.sign(body) if self.signed else body

    def seal_for(self, data: bytes, recipient: Optional[Certificate], context: str) -> tuple[bytes, dict]:
        """(bytes to send, manifest fields): sealed for `recipient` where the fleet is signed."""
        if not self.signed:
            return data, {}
        if recipient is None:
            raise TrustError("no certified recipient to seal for")
        sealed, header = seal(data, recipient.box, context.encode())
        return sealed, {"sealed": header}

    def unseal(self, data: bytes, manifest: dict, context: str) -> bytes:
        if not self.signed:
            return data
        if "sealed" not in manifest:
            raise TrustError(f"{context}: not sealed for this device")
        return self.identity.unseal(data, manifest["sealed"], context.encode())

    # -- what this side receives ---------------------------------------------------------------------------
    def _verifier(self, what: str) -> Verifier:
        if self.verifier is None:
            raise TrustError(f"{what}: refused, this {self.identity.role} is not enrolled in a fleet (`edged fleet "
                             f"id` here, `edged fleet enroll` on the admin machine), and fleet.trust = \"signed\"")
        return self.verifier

    def open_manifest(self, publisher: str, role: str, kind: str, name: str, payload: bytes) -> dict:
        """The manifest's body once its signature, signer, name and role check out (see Assembler)."""
        what = f"{kind} {name!r} from {publisher}"
        message = _json(payload, what)
        cert = None
        if self.signed:
            body, cert = self._verifier(what).check(message, publisher, (role,), what)
        else:
            body = _json(message["signed"], what) if isinstance(message, dict) and "signed" in message else message
        if not isinstance(body, dict):
            raise ShareError(f"{what}: manifest is not an object")
        if body.get("kind") != kind or body.get("name") != name or body.get("device", publisher) != publisher:
            raise ShareError(f"{what}: manifest names {body.get('kind')!r} {str(body.get('name'))[:64]!r} from "
                             f"{str(body.get('device'))[:64]!r}, not what its topic says")
        body["device"] = publisher
        body["_cert"] = cert  # the signer's certificate (None on the broker's word): whom to seal an answer for
        return body

    def check(self, message, name: str, role: str, what: str) -> tuple[dict, Optional[Certificate]]:
        """A signed message from `name` (or, on the broker's word, the message itself)."""
        if not self.signed:
            if isinstance(message, dict) and isinstance(message.get("signed"), str):
                return wire.loads(message["signed"]), None
            if not isinstance(message, dict):
                raise TrustError(f"{what}: not an object")
            return message, None
        return self._verifier(what).check(message, name, (role,), what)

    def take_revocation(self, payload: bytes) -> bool:
        """A revocation list from the broker: kept when it is the fleet's and newer than the one held (an empty,
        older or unsigned one is ignored: the list is never erased or rolled back from the broker)."""
        if self.verifier is None or not payload:
            return False
        try:
            envelope = wire.loads(payload)
            with self._lock:
                newer = self.verifier.revoke(envelope)
                if newer:
                    self._held = bytes(payload)
                    write_atomic(self._saved, self._held)
        except (ValueError, TrustError) as e:
            log.warning("revocation list refused: %s", e)
            return False
        if newer:
            log.warning("fleet revocation list: %s revoked", sorted(self.verifier.revoked_names) or "nobody")
        return newer

    def is_revoked(self, name: str, cert=None) -> bool:
        """Whether `name` (or its certificate's serial) is on the newest revocation list held."""
        if self.verifier is None:
            return False
        return name in self.verifier.revoked_names or getattr(cert, "serial", None) in self.verifier.revoked_serials

    def revocation_answer(self, payload: bytes) -> Optional[bytes]:
        """After `payload` came on the revocation topic (and was offered to `take_revocation`): the newest list held,
        to be put back retained, when what came was empty, older or not the fleet's — so that a device enrolled
        later still finds it; None when there is nothing to put back."""
        held = self._held
        return held if held is not None and bytes(payload) != held else None

    def describe(self) -> dict:
        out = {"trust": self.mode, **self.identity.describe()}
        if self.verifier is not None:
            out["revoked"] = sorted(self.verifier.revoked_names)
        if not self.signed:
            out["warning"] = ("fleet.trust = \"broker\": parcels, jobs and trainers are taken from anyone who can "
                              "publish on the broker")
        elif not self.identity.enrolled:
            out["warning"] = "not enrolled: fleet sharing and trainer jobs are refused until `edged fleet enroll`"
        return out

