"""No code crosses the wire: a Keras archive whose Lambda layer runs a command is never loaded as a model, and never
travels or lands as part of a job, head or model parcel, or a trainer's result."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
from conftest import ROOT

from edged.fleet.bundles import BundleError, pack_folder, unpack_into

keras = pytest.importorskip("keras")


def _booby_trapped(path: Path, marker: Path) -> None:
    """A .keras file whose Lambda layer writes `marker` when the model is rebuilt from its config."""
    code = f"lambda x: (open({str(marker)!r}, 'w').write('ran'), x)[1]"
    inputs = keras.Input((4,))
    outputs = keras.layers.Lambda(eval(code))(keras.layers.Dense(2)(inputs))  # noqa: S307 (the test's own payload)
    keras.Model(inputs, outputs).save(path)
    marker.unlink(missing_ok=True)


def test_the_trap_is_real_and_a_trained_version_reads_only_its_weights(tmp_path):
    from edged.learn.finetune import load_fused

    marker = tmp_path / "ran.txt"
    version = tmp_path / "v1"
    version.mkdir()
    _booby_trapped(version / "fused.keras", marker)
    keras.models.load_model(version / "fused.keras", compile=False, safe_mode=False)
    assert marker.exists()  # what the old export did: the command ran
    marker.unlink()

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))  # the architecture, from this side's code
    load_fused(model, version)  # a legacy version: its weights file is read, its config never
    assert not marker.exists()


def test_the_trap_never_travels_or_lands(tmp_path):
    marker = tmp_path / "ran.txt"
    folder = tmp_path / "version"
    folder.mkdir()
    (folder / "head.json").write_text("{}")
    _booby_trapped(folder / "fused.keras", marker)
    assert "fused.keras" not in tarfile.open(fileobj=io.BytesIO(pack_folder(folder))).getnames()  # never sent

    # sent by hand, the way an attacker would: as a job, a head or model parcel, or a trainer's result
    for where in ("head/fused.keras", "fused.keras", "model/../fused.keras"):
        blob = io.BytesIO()
        with tarfile.open(fileobj=blob, mode="w") as tar:
            for name in ("examples.npz", where):
                data = (folder / "fused.keras").read_bytes() if name.endswith(".keras") else b"x"
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        landing = tmp_path / f"landing-{len(where)}"
        landing.mkdir()
        with pytest.raises(BundleError):
            unpack_into(blob.getvalue(), landing, 1 << 24)
        assert not any(landing.rglob("*")) and not marker.exists()


def test_no_code_path_deserialises_a_model_archive():
    """Only a user's own backbone file (family 'keras', read with Keras' safe mode) is loaded as a model."""
    offenders = []
    for path in list((ROOT / "edged").rglob("*.py")) + list((ROOT / "plugins").rglob("*.py")):
        text = path.read_text()
        if "safe_mode=False" in text or "allow_pickle=True" in text or "import pickle" in text:
            offenders.append(str(path.relative_to(ROOT)))
        if "load_model(" in text and path.name != "keras_backbone.py":
            offenders.append(f"{path.relative_to(ROOT)}: load_model")
    assert offenders == []


def test_a_weights_file_that_unpacks_to_more_than_the_model_holds_is_not_read(tmp_path):
    """Issue 34, 4: a 13.6 KB `fused.weights.h5` of gzip chunks took the trainer's worker to 4.66 GB. Its datasets'
    shapes are read from the file's metadata first and held against what the model holds."""
    import h5py

    from edged.learn.finetune import load_fused, save_fused
    from edged.state.arrays import ArraysError

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    good = tmp_path / "good"
    good.mkdir()
    save_fused(model, good)
    load_fused(model, good)  # its own weights: read
    bomb = tmp_path / "bomb"
    bomb.mkdir()
    with h5py.File(bomb / "fused.weights.h5", "w") as f:
        f.create_dataset("layers/dense/vars/0", shape=(25_000, 10_000), dtype="float32", chunks=(1000, 1000),
                         compression="gzip", fillvalue=0.0)  # 1 GB of zeros in a few kilobytes
    assert (bomb / "fused.weights.h5").stat().st_size < 100_000
    with pytest.raises(ArraysError, match="more than the model holds"):
        load_fused(model, bomb)
