"""Fleet identity: certificates, signed envelopes, revocation, sealed payloads, and the enrolment commands."""

from __future__ import annotations

import json
import os
import stat

import pytest

from edged.cli import main
from edged.fleet.parcels import Assembler, ShareError, pack
from edged.fleet.signing import FleetTrust
from edged.mqtt.topics import FleetTopics
from edged.fleet.trust import FleetAuthority, Identity, TrustError, Verifier, seal, sign_body, unseal


def enrolled(authority: FleetAuthority, folder, name: str, role: str = "device") -> Identity:
    identity = Identity(folder, name, role)
    identity.install(authority.certify(identity.request(), role))
    return identity


@pytest.fixture
def fleet(tmp_path):
    return FleetAuthority.create(tmp_path / "admin")


def test_keys_are_private_and_certificates_bind_name_role_and_keys(fleet, tmp_path):
    door = enrolled(fleet, tmp_path / "door", "door")
    for name in ("identity.key", "box.key", "cert.json"):
        assert stat.S_IMODE(os.stat(tmp_path / "door" / name).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "admin" / "fleet.key").st_mode) == 0o600
    again = Identity(tmp_path / "door", "door", "device")  # a restart keeps the keys and the certificate
    assert again.enrolled and again.request() == door.request()
    with pytest.raises(TrustError, match="certifies 'door', but this is 'yard'"):
        Identity(tmp_path / "door", "yard", "device")
    other = Identity(tmp_path / "other", "door", "device")
    with pytest.raises(TrustError, match="other keys"):
        other.install(door.cert)
    with pytest.raises(TrustError, match="exists already"):
        FleetAuthority.create(tmp_path / "admin")


def test_verifier_checks_fleet_signer_name_role_and_revocation(fleet, tmp_path):
    door = enrolled(fleet, tmp_path / "door", "door")
    trainer = enrolled(fleet, tmp_path / "big", "big", "trainer")
    verifier = Verifier(fleet.public)
    body, cert = verifier.check(door.sign({"x": 1}), "door", ("device",), "test")
    assert body == {"x": 1} and cert.name == "door"
    with pytest.raises(TrustError, match="signed by 'door', not by 'yard'"):
        verifier.check(door.sign({"x": 1}), "yard", ("device",), "test")
    with pytest.raises(TrustError, match="certified as a device, not a trainer"):
        verifier.check(door.sign({}), "door", ("trainer",), "test")
    assert verifier.check(trainer.sign({}), "big", ("trainer",), "t")[1].role == "trainer"
    tampered = door.sign({"x": 1})
    tampered["signed"] = tampered["signed"].replace("1", "2")
    with pytest.raises(TrustError, match="bad signature"):
        verifier.check(tampered, "door", ("device",), "test")
    with pytest.raises(TrustError, match="not signed"):
        verifier.check({"x": 1}, "door", ("device",), "test")
    # a certificate from another fleet key, and a self-made one, are refused
    rogue_fleet = FleetAuthority.create(tmp_path / "rogue")
    rogue = enrolled(rogue_fleet, tmp_path / "rogue-door", "door")
    with pytest.raises(TrustError):
        verifier.check(rogue.sign({}), "door", ("device",), "test")
    self_made = dict(rogue.sign({}))
    self_made["cert"] = sign_body(rogue.signer, {"name": "door", "role": "device"})
    with pytest.raises(TrustError):
        verifier.check(self_made, "door", ("device",), "test")
    # revocation: fleet-signed, newer lists only
    assert verifier.revoke(fleet.revocation(["door"]))
    with pytest.raises(TrustError, match="'door' is revoked"):
        verifier.check(door.sign({}), "door", ("device",), "test")
    old = fleet.revocation([], seq=1)
    assert verifier.revoke(fleet.revocation(["door", "yard"], seq=2))
    assert not verifier.revoke(old)  # an older list replayed does not un-revoke
    with pytest.raises(TrustError):
        verifier.revoke(sign_body(rogue_fleet.key, {"type": "revocation", "names": [], "serials": [], "ts": 1e12}))
    assert "door" in verifier.revoked_names


def test_sealed_payload_opens_only_for_its_recipient_and_context(fleet, tmp_path):
    trainer = enrolled(fleet, tmp_path / "big", "big", "trainer")
    eve = enrolled(fleet, tmp_path / "eve", "eve", "trainer")
    data = os.urandom(5000)
    certified = Verifier(fleet.public).check(trainer.sign({}), "big", ("trainer",), "t")[1]
    sealed, header = seal(data, certified.box, b"job 1")
    assert data not in sealed and trainer.unseal(sealed, header, b"job 1") == data
    with pytest.raises(TrustError, match="another recipient"):
        eve.unseal(sealed, header, b"job 1")
    with pytest.raises(TrustError, match="does not open"):
        unseal(trainer.box, sealed, header, b"job 2")
    with pytest.raises(TrustError, match="does not open"):
        unseal(trainer.box, sealed[:-1] + bytes([sealed[-1] ^ 1]), header, b"job 1")


def test_signed_parcels_assemble_only_from_their_named_certified_publisher(fleet, tmp_path):
    door = enrolled(fleet, tmp_path / "door", "door")
    follower = FleetTrust("signed", enrolled(fleet, tmp_path / "yard", "yard"))
    data = os.urandom(3000)
    messages = pack(FleetTopics("edged").publisher("door"), "head", "classifier", data, {"version": "v1"}, 1024, 1 << 20,
                    FleetTrust("signed", door).sign_manifest)
    assert messages[0][0] == "edged/door/share/head/classifier/manifest"
    asm = Assembler("edged", 1 << 20, follower.open_manifest)
    got = [p for p in (asm.feed(t, m) for t, m in messages) if p is not None]
    assert got[0].data == data and got[0].publisher == "door" and got[0].manifest["_cert"].name == "door"
    # the same signed manifest under another device's topic: refused (the signer is not who the topic names)
    moved = [(t.replace("edged/door/", "edged/gate/"), m) for t, m in messages]
    with pytest.raises(TrustError, match="signed by 'door', not by 'gate'"):
        Assembler("edged", 1 << 20, follower.open_manifest).feed(*moved[0])
    # unsigned, the way an attacker on the broker would send it
    plain = pack(FleetTopics("edged").publisher("door"), "head", "classifier", data, {}, 1024, 1 << 20)
    with pytest.raises(TrustError, match="not signed"):
        Assembler("edged", 1 << 20, follower.open_manifest).feed(*plain[0])
    # on the broker's word (explicit opt-out) the unsigned one is taken
    broker = FleetTrust("broker", Identity(tmp_path / "loose", "loose", "device"))
    loose = Assembler("edged", 1 << 20, broker.open_manifest)
    assert [p for p in (loose.feed(t, m) for t, m in plain) if p][0].data == data
    # an unenrolled device in a signed fleet takes nothing, and says why
    alone = FleetTrust("signed", Identity(tmp_path / "alone", "alone", "device"))
    with pytest.raises(TrustError, match="not enrolled"):
        Assembler("edged", 1 << 20, alone.open_manifest).feed(*messages[0])
    with pytest.raises(ShareError):
        Assembler("edged", 1 << 20, follower.open_manifest).feed(
            "edged/door/share/head/classifier/manifest", json.dumps(door.sign({"kind": "model", "name": "x"})).encode())


def test_enrolment_commands(tmp_path, capsys):
    admin = tmp_path / "admin"
    cfg = tmp_path / "dev.toml"
    cfg.write_text(f'device = "porch"\nstate_dir = "{tmp_path / "state"}"\n')
    assert main(["fleet", "init", "--dir", str(admin)]) == 0
    capsys.readouterr()
    assert main(["fleet", "id", "--config", str(cfg)]) == 0
    request = tmp_path / "req.json"
    request.write_text(capsys.readouterr().out)
    assert json.loads(request.read_text())["name"] == "porch"
    # issue 34, 12: the role is the admin's to give, never the request's claim
    assert main(["fleet", "enroll", "--dir", str(admin), str(request)]) == 1
    assert "say which role 'porch' gets with --role" in capsys.readouterr().err
    assert main(["fleet", "enroll", "--dir", str(admin), "--role", "device", str(request)]) == 0
    cert = tmp_path / "cert.json"
    cert.write_text(capsys.readouterr().out)
    assert main(["fleet", "join", "--config", str(cfg), str(cert)]) == 0
    assert Identity(tmp_path / "state" / "keys", "porch", "device").enrolled
    assert main(["fleet", "enroll", "--dir", str(admin), "--config", str(cfg), "--trainer", "big"]) == 0
    assert Identity(tmp_path / "state" / "keys" / "trainer-big", "big", "trainer").enrolled
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "../x", "role": "device", "sign": "AA==", "box": "AA=="}))
    assert main(["fleet", "enroll", "--dir", str(admin), "--role", "device", str(bad)]) == 1
    assert "name '../x' is not valid" in capsys.readouterr().err
    for reserved in ("fleet", "clients"):  # topic levels of their own: a device of that name would write into them
        bad.write_text(json.dumps({"name": reserved, "role": "device", "sign": "AA==", "box": "AA=="}))
        assert main(["fleet", "enroll", "--dir", str(admin), "--role", "device", str(bad)]) == 1
        assert f"name '{reserved}' is not valid (a reserved topic level)" in capsys.readouterr().err


def test_the_revocation_list_cannot_be_erased_rolled_back_or_lost_with_the_keys(fleet, tmp_path):
    """Issue 34, 3: an empty retained message erased the list, and a device keyed anew (keys/ deleted, where the
    list was kept) or enrolled later took the revoked device's parcels again. The list is numbered, kept outside
    the key folder, travels with every certificate, and an erased or older one is answered with the newest."""
    import shutil

    state = tmp_path / "yard"
    trust = FleetTrust("signed", enrolled(fleet, state / "keys", "yard"), state / "revoked.json")
    first, second = fleet.revocation(["rogue"], seq=1), fleet.revocation(["rogue", "thief"], seq=2)
    newest = json.dumps(second).encode()
    assert trust.take_revocation(json.dumps(first).encode()) and trust.take_revocation(newest)
    for bad in (b"", json.dumps(first).encode(), json.dumps({"signed": "{}", "sig": "AA"}).encode(), b"[" * 5000):
        assert not trust.take_revocation(bad)
        assert trust.revocation_answer(bad) == newest  # put back on the broker for the devices that come later
    assert trust.revocation_answer(newest) is None  # the newest itself: nothing to answer (no echo loop)
    # a later list with a smaller clock but a higher number wins; numbers decide before time
    assert not trust.take_revocation(json.dumps({**fleet.revocation([], seq=1)}).encode())
    assert trust.verifier.revoked_names == {"rogue", "thief"}

    # keyed anew: keys/ deleted, the device enrolled again; the list kept beside the keys still holds
    shutil.rmtree(state / "keys")
    again = FleetTrust("signed", enrolled(fleet, state / "keys", "yard"), state / "revoked.json")
    assert again.verifier.revoked_names == {"rogue", "thief"}

    # enrolled after the revocation, on a broker that lost the list: the certificate carries it
    fresh = Identity(tmp_path / "late" / "keys", "late", "device")
    fresh.install({**fleet.certify(fresh.request(), "device"), "revocation": second})
    late = FleetTrust("signed", Identity(tmp_path / "late" / "keys", "late", "device"), tmp_path / "late" / "revoked.json")
    assert late.verifier.revoked_names == {"rogue", "thief"}
    with pytest.raises(TrustError, match="'rogue' is revoked"):
        late.verifier.check(enrolled(fleet, tmp_path / "rogue", "rogue").sign({"x": 1}), "rogue", ("device",), "x")


def test_a_key_is_never_readable_by_others_while_it_is_written(tmp_path, monkeypatch):
    """Issue 34, 7: `edged fleet init` into an existing 0755 folder wrote the key 0644 and chmodded it after the
    rename. Every moment a key's bytes are on disk, the file is the owner's alone."""
    import edged.files

    folder = tmp_path / "admin"
    folder.mkdir(mode=0o755)
    seen = []
    real_fsync = os.fsync

    def watching(fd):
        for path in folder.iterdir():
            seen.append((path.name, stat.S_IMODE(path.stat().st_mode)))
        return real_fsync(fd)

    monkeypatch.setattr(edged.files.os, "fsync", watching)
    old = os.umask(0o022)  # the usual umask: what a file gets when it is made without a mode
    try:
        FleetAuthority.create(folder)
    finally:
        os.umask(old)
    keys = [(name, mode) for name, mode in seen if "key" in name and not name.endswith(".pub")]
    assert keys and all(mode == 0o600 for _, mode in keys), seen
