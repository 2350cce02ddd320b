"""What travels between devices as bytes: a version folder (an uncompressed tar of plain files) and a set of
examples (embeddings, labels, boxes, JPEG frames) — and back, checked."""

from __future__ import annotations

import io
import json
import re
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from .. import wire
from ..errors import EdgedError
from ..state.arrays import ArraysError, load_npz
from ..state.labels import label_problem
from ..state.store import NewExample, decode_objects

_UID = re.compile(r"[0-9a-f]{32}")


class BundleError(EdgedError):
    pass


def pack_folder(folder: Path) -> bytes:
    """The plain files of `folder` (recursively), in name order, with fixed owners and times (same folder, same bytes)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(p for p in Path(folder).rglob("*") if p.is_file() and not p.is_symlink()
                           and p.name.endswith(DATA_SUFFIXES)):
            data = path.read_bytes()
            info = tarfile.TarInfo(path.relative_to(folder).as_posix())
            info.size, info.mode, info.mtime = len(data), 0o600, 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


# what a version or job folder may hold: data only (no .keras archive, no pickle: nothing that names code to run)
DATA_SUFFIXES = (".json", ".npz", ".npy", ".tflite", ".h5", ".png", ".jpg", ".txt")
_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")


def _member_name(member: tarfile.TarInfo) -> str:
    """The member's path, when it is a plain file with a plain relative name and a data suffix."""
    name = member.name
    parts = name.split("/")
    if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE) or member.issparse():
        raise BundleError(f"bundle member {name[:100]!r} is not a regular file (links, devices and sparse files "
                          f"are refused)")
    if len(parts) > 4 or any(not _PART.fullmatch(p) or p.startswith("..") for p in parts):
        raise BundleError(f"bundle member name {name[:100]!r} is not a plain relative path")
    if not name.endswith(DATA_SUFFIXES):
        raise BundleError(f"bundle member {name[:100]!r} is not one of the data files a version holds "
                          f"({', '.join(DATA_SUFFIXES)})")
    return name


def unpack_into(data: bytes, folder: Path, max_bytes: int, max_files: int = 1000) -> list[str]:
    """Write the regular files of a bundle under `folder`, streamed, each and all together at most `max_bytes`.
    Everything is checked before the first byte is written; on any refusal nothing is left in `folder`."""
    folder = Path(folder)
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            members = []
            total = 0
            for member in tar:
                members.append((member, _member_name(member)))
                total += member.size
                if len(members) > max_files:
                    raise BundleError(f"bundle holds more than {max_files} files")
                if total > max_bytes:
                    raise BundleError(f"bundle unpacks to more than {max_bytes} bytes (fleet.max_share_bytes)")
            if len({name for _, name in members}) != len(members):
                raise BundleError("bundle names a file twice")
            written = []
            try:
                for member, name in members:
                    target = folder / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    source = tar.extractfile(member)
                    with open(target, "xb") as out:
                        left = member.size
                        while left > 0:
                            block = source.read(min(left, 1 << 20))
                            if not block:
                                raise BundleError(f"bundle member {name!r} is cut short")
                            out.write(block)
                            left -= len(block)
                    written.append(target)
            except BaseException:
                for target in written:
                    target.unlink(missing_ok=True)
                raise
    except (tarfile.TarError, EOFError, OSError) as e:
        raise BundleError(f"not a readable bundle: {e}") from None
    return [name for _, name in members]


@dataclass
class ExampleSet:
    """Examples as they travel between devices: rows (uid, label, ts, box column), embeddings, JPEG frames."""

    rows: list[dict]
    embeddings: np.ndarray
    frames: list[bytes]

    def new_examples(self, origin: str, skip: frozenset | set = frozenset()) -> list[NewExample]:
        """What `Store.add_many` takes: the examples whose uid is not in `skip`, taught on device `origin`."""
        return [NewExample(image=None, label=row["label"], embedding=self.embeddings[i],
                           ts=float(row.get("ts") or time.time()),
                           objects=decode_objects(row["label"], row.get("box")) or None, uid=row["uid"],
                           origin=origin, jpeg=self.frames[i])
                for i, row in enumerate(self.rows) if row["uid"] not in skip]


def pack_examples(rows: list[dict], longest_side: int) -> bytes:
    """`Store.own_examples` rows -> bytes: embeddings, labels, boxes and each frame as a JPEG of `longest_side` px
    at most (box coordinates are relative to the frame, so they hold at any size); `longest_side` 0: no frames."""
    frames, offsets = [], [0]
    for row in rows:
        image = cv2.imread(str(row["frame"]), cv2.IMREAD_COLOR)
        jpeg = b""
        if image is not None and longest_side > 0:
            scale = longest_side / max(image.shape[:2])
            if scale < 1:
                image = cv2.resize(image, (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))),
                                   interpolation=cv2.INTER_AREA)
            jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()
        frames.append(jpeg)
        offsets.append(offsets[-1] + len(jpeg))
    meta = {"examples": [{"uid": r["uid"], "label": r["label"], "ts": r["ts"], "box": r["box"]} for r in rows]}
    buf = io.BytesIO()
    np.savez(buf, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8),
             embeddings=np.stack([np.frombuffer(r["vector"], np.float32) for r in rows]),
             frames=np.frombuffer(b"".join(frames), np.uint8), offsets=np.asarray(offsets, np.int64))
    return buf.getvalue()


def unpack_examples(data: bytes, dim: Optional[int]) -> ExampleSet:
    """Bytes from `pack_examples`, checked: sizes agree, `dim`-d embeddings (any when None), uids of 32 hex digits,
    valid labels."""
    try:
        bundle = load_npz(data)  # every member's unpacked size known and bounded before it is read
        meta = wire.loads(bytes(bundle["meta"]))
        vectors = np.asarray(bundle["embeddings"], np.float32)
        blob, offsets = bytes(bundle["frames"]), np.asarray(bundle["offsets"], np.int64)
    except (ArraysError, ValueError, KeyError) as e:
        raise BundleError(f"unreadable example set ({e})") from None
    rows = meta.get("examples") if isinstance(meta, dict) else None
    if not isinstance(rows, list) or len(rows) != len(vectors) or len(offsets) != len(rows) + 1:
        raise BundleError("example set: rows, embeddings and frames do not agree")
    if len(rows) and (vectors.ndim != 2 or (dim is not None and vectors.shape[1] != dim)):
        raise BundleError(f"example set: embeddings of shape {vectors.shape}; this backbone gives {dim}-d")
    for row in rows:
        if not isinstance(row, dict) or not _UID.fullmatch(str(row.get("uid", ""))):
            raise BundleError("example set: an example uid is not 32 hex digits")
        if label_problem(row.get("label")) is not None or not isinstance(row.get("box"), (str, type(None))):
            raise BundleError(f"example set: label {str(row.get('label'))[:70]!r} or its box is not valid")
    frames = [blob[offsets[i]:offsets[i + 1]] for i in range(len(rows))]
    return ExampleSet(rows, vectors, frames)
