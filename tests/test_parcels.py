"""Parcels (chunked retained shares) and bundles: assembled in any order, verified, limits enforced."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile

import numpy as np
import pytest

from edged.mqtt.parcels import Assembler, ShareError, pack
from edged.state.bundles import BundleError, pack_folder, unpack_examples, unpack_into


def test_parcel_round_trip_in_any_order_and_refusals():
    data = bytes(np.random.default_rng(0).integers(0, 256, 10_000, dtype=np.uint8))
    messages = pack("edged", "model", "classifier", data, {"device": "a"}, 1024, 1 << 20)
    assert len(messages) == 11 and messages[-1][0] == "edged/fleet/share/model/classifier/manifest"
    manifest = json.loads(messages[-1][1])
    assert manifest["sha256"] == hashlib.sha256(data).hexdigest() and manifest["chunks"] == 10

    asm = Assembler("edged", 1 << 20)
    got = [asm.feed(t, p) for t, p in reversed(messages)]  # manifest first, chunks backwards
    assert [g for g in got if g is not None][0].data == data

    tampered = list(messages)
    tampered[3] = (tampered[3][0], b"x" * len(tampered[3][1]))
    asm2 = Assembler("edged", 1 << 20)
    with pytest.raises(ShareError, match="sha256 mismatch"):
        for t, p in tampered:
            asm2.feed(t, p)

    with pytest.raises(ShareError, match="over fleet.max_share_bytes"):
        pack("edged", "model", "classifier", data, {}, 1024, 5000)
    small = Assembler("edged", 5000)
    with pytest.raises(ShareError, match="over this device's fleet.max_share_bytes"):
        small.feed(*messages[-1])
    assert small.feed("edged/fleet/share/nonsense/x/manifest", b"{}") is None
    with pytest.raises(ShareError, match="unreadable manifest"):
        small.feed("edged/fleet/share/model/x/manifest", b"{not json")


def test_bundles_refuse_paths_outside_and_bad_example_sets(tmp_path):
    src = tmp_path / "v1"
    src.mkdir()
    (src / "model.tflite").write_bytes(b"abc")
    (src / "metadata.json").write_text("{}")
    data = pack_folder(src)
    assert data == pack_folder(src)  # same folder, same bytes
    out = tmp_path / "out"
    out.mkdir()
    assert sorted(unpack_into(data, out)) == ["metadata.json", "model.tflite"]
    assert (out / "model.tflite").read_bytes() == b"abc"

    evil = io.BytesIO()
    with tarfile.open(fileobj=evil, mode="w") as tar:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(BundleError, match="not a plain file inside"):
        unpack_into(evil.getvalue(), out)
    assert not (tmp_path / "escape.txt").exists()
    with pytest.raises(BundleError):
        unpack_into(b"not a tar at all" * 100, out)

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
    with pytest.raises(BundleError, match="label"):
        unpack_examples(example_set("a" * 32, "../x"), 8)
