"""Parcels (chunked retained shares) and bundles: assembled in any order, verified, bounded; archives hold plain data
files only, checked before anything is written."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pytest

from edged.fleet.parcels import Assembler, ShareError, pack
from edged.mqtt.topics import FleetTopics
from edged.fleet.bundles import BundleError, pack_folder, unpack_examples, unpack_into


def opened(publisher, role, kind, name, payload):
    try:
        return json.loads(payload)
    except ValueError:
        raise ShareError(f"{kind} {name!r}: unreadable manifest") from None


def test_parcel_round_trip_in_any_order_and_refusals():
    data = bytes(np.random.default_rng(0).integers(0, 256, 10_000, dtype=np.uint8))
    messages = pack(FleetTopics("edged").publisher("a"), "model", "classifier", data, {"device": "a"}, 1024, 1 << 20)
    assert len(messages) == 11 and messages[0][0] == "edged/a/share/model/classifier/manifest"
    assert FleetTopics("edged").every_share("model", "classifier") == "edged/+/share/model/classifier/#"
    manifest = json.loads(messages[0][1])
    assert manifest["sha256"] == hashlib.sha256(data).hexdigest() and manifest["chunks"] == 10

    asm = Assembler("edged", 1 << 20, opened)
    got = [asm.feed(t, p) for t, p in reversed(messages)]  # chunks backwards, manifest last
    parcel = [g for g in got if g is not None][0]
    assert parcel.data == data and parcel.publisher == "a" and parcel.role == "device"

    trainer = pack(FleetTopics("edged").publisher("big", "trainer"), "result", "a", data, {}, 4096, 1 << 20)
    assert trainer[0][0] == "edged/fleet/trainers/big/share/result/a/manifest"
    asm_t = Assembler("edged", 1 << 20, opened)
    assert [p for p in (asm_t.feed(t, m) for t, m in trainer) if p][0].role == "trainer"

    tampered = list(messages)
    tampered[3] = (tampered[3][0], b"x" * len(tampered[3][1]))
    asm2 = Assembler("edged", 1 << 20, opened)
    with pytest.raises(ShareError, match="sha256 mismatch"):
        for t, p in tampered:
            asm2.feed(t, p)

    with pytest.raises(ShareError, match="over fleet.max_share_bytes"):
        pack("edged/a", "model", "classifier", data, {}, 1024, 5000)
    small = Assembler("edged", 5000, opened)
    with pytest.raises(ShareError, match="over this device's fleet.max_share_bytes"):
        small.feed(*messages[0])
    assert small.feed("edged/a/share/nonsense/x/manifest", b"{}") is None
    assert small.feed("edged/fleet/share/model/x/manifest", b"{}") is None  # 'fleet' is no device
    with pytest.raises(ShareError, match="unreadable manifest"):
        small.feed("edged/a/share/model/x/manifest", b"{not json")
    lying = dict(manifest, chunks=100_000)
    with pytest.raises(ShareError, match="is not valid"):
        Assembler("edged", 1 << 20, opened).feed(messages[0][0], json.dumps(lying).encode())


def test_chunks_without_a_manifest_are_bounded_and_expire():
    """120 x 1 MiB chunks with no manifest once grew a daemon by 122 MB: held chunks stay within max_share_bytes."""
    now = [0.0]
    limit = 8 << 20
    asm = Assembler("edged", limit, opened, clock=lambda: now[0])
    chunk = b"x" * (1 << 20)
    for i in range(120):
        asm.feed(f"edged/evil/share/model/classifier/{'0' * 16}/{i}", chunk)
        assert asm.held_bytes <= limit
    for i in range(30):  # spread over many parcels too
        asm.feed(f"edged/evil{i}/share/model/classifier/{'1' * 16}/0", chunk)
    assert asm.held_bytes <= limit
    now[0] += 1000  # no manifest came: dropped at the next message
    asm.feed("edged/other/share/model/classifier/manifest", b"")
    assert asm.held_bytes == 0
    # a real parcel still completes with its chunks before its manifest
    data = bytes(range(256)) * 40
    messages = pack("edged/a", "model", "classifier", data, {}, 1024, limit)
    got = [p for p in (asm.feed(t, m) for t, m in messages[1:] + messages[:1]) if p]
    assert got and got[0].data == data


def _tar(*members) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _file(name: str, data: bytes = b"x", kind=tarfile.REGTYPE) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size, info.type = len(data), kind
    return info, data


def test_bundles_hold_plain_data_files_only(tmp_path):
    src = tmp_path / "v1"
    src.mkdir()
    (src / "model.tflite").write_bytes(b"abc")
    (src / "metadata.json").write_text("{}")
    (src / "fused.keras").write_bytes(b"PK")  # a Keras archive never travels
    data = pack_folder(src)
    assert data == pack_folder(src)  # same folder, same bytes
    out = tmp_path / "out"
    out.mkdir()
    assert sorted(unpack_into(data, out, 1 << 20)) == ["metadata.json", "model.tflite"]
    assert (out / "model.tflite").read_bytes() == b"abc"

    link = tarfile.TarInfo("metadata2.json")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    device = tarfile.TarInfo("dev.json")
    device.type = tarfile.CHRTYPE
    cases = {
        "escape": (_tar(_file("../escape.json")), "not a plain relative path"),
        "absolute": (_tar(_file("/tmp/abs.json")), "not a plain relative path"),
        "symlink": (_tar((link, None)), "not a regular file"),
        "device": (_tar((device, None)), "not a regular file"),
        "keras": (_tar(_file("fused.keras", b"PK\x03\x04")), "not one of the data files"),
        "pickle": (_tar(_file("head.pkl")), "not one of the data files"),
        "twice": (_tar(_file("a.json"), _file("a.json")), "names a file twice"),
        "too big": (_tar(_file("big.npy", b"x" * 5000)), "more than 4096 bytes"),
        "garbage": (b"not a tar at all" * 100, "not a readable bundle"),
    }
    for what, (blob, why) in cases.items():
        target = tmp_path / what.replace(" ", "_")
        target.mkdir()
        with pytest.raises(BundleError, match=why):
            unpack_into(blob, target, 4096)
        assert not any(target.rglob("*")), what  # nothing written on a refusal
    assert not (tmp_path / "escape.json").exists() and not __import__("os").path.exists("/tmp/abs.json")


def test_a_sparse_member_is_refused_before_it_is_read(tmp_path):
    """A 20 KB GNU sparse parcel once unpacked to a 600 MiB file held in memory."""
    info = tarfile.TarInfo("model.tflite")
    info.size = 10
    blob = bytearray(_tar((info, b"0123456789")))
    blob[156:157] = tarfile.GNUTYPE_SPARSE  # the member's type flag: GNU sparse
    header = blob[:512]
    header[148:156] = b" " * 8
    blob[148:156] = (oct(sum(header))[2:].rjust(6, "0") + "\0 ").encode()
    with tarfile.open(fileobj=io.BytesIO(bytes(blob))) as tar:
        assert tar.getmembers()[0].issparse() or tar.getmembers()[0].type == tarfile.GNUTYPE_SPARSE
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(BundleError, match="not a regular file|not a readable bundle"):
        unpack_into(bytes(blob), out, 1 << 30)
    assert not any(out.iterdir())


def test_example_sets_are_checked(tmp_path):
    def example_set(uid: str, label: str) -> bytes:
        buf = io.BytesIO()
        meta = {"examples": [{"uid": uid, "label": label, "ts": 1.0, "box": None}]}
        np.savez(buf, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), embeddings=np.zeros((1, 8), np.float32),
                 frames=np.zeros(0, np.uint8), offsets=np.zeros(2, np.int64))
        return buf.getvalue()

    assert unpack_examples(example_set("a" * 32, "cup"), 8).rows[0]["label"] == "cup"
    with pytest.raises(BundleError, match="8"):
        unpack_examples(example_set("a" * 32, "cup"), 16)
    with pytest.raises(BundleError, match="uid"):
        unpack_examples(example_set("../../etc", "cup"), 8)
    with pytest.raises(BundleError, match="uid"):
        unpack_examples(example_set("a" * 32 + "\n", "cup"), 8)
    with pytest.raises(BundleError, match="label"):
        unpack_examples(example_set("a" * 32, "../x"), 8)
    with pytest.raises(BundleError, match="label"):
        unpack_examples(example_set("a" * 32, "cat\n"), 8)  # `$` once let a newline through


def test_versions_are_pruned_but_never_the_serving_one_or_the_one_before(tmp_path):
    from edged.state.versions import Versions

    versions = Versions(tmp_path / "heads" / "classifier")
    for _ in range(8):
        staging = versions.staging()
        (staging / "head.json").write_text("{}")
        versions.commit(staging, activate=False)
    versions.activate("v2")
    versions.activate("v1")  # serving v1, v2 before it
    assert versions.prune(3) == ["v3", "v4", "v5"]
    assert versions.versions() == ["v1", "v2", "v6", "v7", "v8"] and versions.current() == "v1"
    assert versions.rollback() == "v2"


def test_nothing_parsed_from_a_topic_or_a_manifest_raises_out_of_the_assembler():
    """Issue 34, 1: a chunk index '²' (str.isdigit() is true, int() raises) and a manifest nested 30,000 deep (a
    RecursionError, not a ValueError) stopped `edged trainer` at every start."""
    from edged import wire
    from edged.fleet.signing import FleetTrust
    from edged.fleet.trust import Identity, TrustError

    asm = Assembler("edged", 1 << 20, opened)
    for index in ("²", "٣", "-1", "1e3", "0x1", "9999999"):
        assert asm.feed(f"edged/a/share/job/big/{'ab' * 8}/{index}", b"data") is None
    deep = b"[" * 30_000 + b"]" * 30_000
    with pytest.raises(ValueError, match="nested more than 64 levels deep"):
        wire.loads(deep)
    assert wire.loads(json.dumps({"a": "[" * 70 + '\\"{'}).encode()) == {"a": "[" * 70 + '\\"{'}  # in strings
    for mode in ("signed", "broker"):
        with tempfile.TemporaryDirectory() as folder:
            reader = FleetTrust(mode, Identity(Path(folder), "door", "device"))
            for payload in (deep[:60_000], json.dumps({"signed": "[" * 20_000}).encode()):
                with pytest.raises((ShareError, TrustError)):  # a refusal, never a RecursionError
                    Assembler("edged", 1 << 20, reader.open_manifest, kinds=("job",)).feed(
                        "edged/a/share/job/big/manifest", payload)


def test_arrays_are_read_only_once_their_unpacked_size_is_bounded(tmp_path):
    """Issue 34, 4: 1.57 MB of deflated zeros in a `head.npz` took a follower from 129 MB to 1.70 GB."""
    import zipfile

    from edged.state.arrays import ArraysError, load_npz

    bomb = tmp_path / "bomb.npz"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("weights.npy", "w", force_zip64=True) as member:
            header = io.BytesIO()
            np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                           "shape": (16 << 20,)})
            member.write(header.getvalue())
            zeros = bytes(1 << 20)
            for _ in range(64):  # 64 MB of zeros, a few hundred KB deflated
                member.write(zeros)
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(ArraysError, match="unpack to more than 8388608 bytes"):
        load_npz(bomb, max_bytes=8 << 20)
    # a header that claims more than its member holds (numpy would allocate what it claims)
    liar = io.BytesIO()
    with zipfile.ZipFile(liar, "w") as archive:
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (10 ** 10,)})
        archive.writestr("embeddings.npy", header.getvalue() + bytes(64))
    with pytest.raises(BundleError, match="claims 40000000000 bytes"):
        unpack_examples(liar.getvalue(), None)
    with pytest.raises(ArraysError, match="object array"):
        buf = io.BytesIO()
        np.savez(buf, x=np.array([{"a": 1}], dtype=object))
        load_npz(buf.getvalue())
    assert load_npz(_npz(a=np.arange(3)))["a"].tolist() == [0, 1, 2]


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()
