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

from ..errors import EdgedError
from .store import LABEL_RE, NewExample, decode_objects

_UID = re.compile(r"^[0-9a-f]{32}$")


class BundleError(EdgedError):
    pass


def pack_folder(folder: Path) -> bytes:
    """The plain files of `folder` (recursively), in name order, with fixed owners and times (same folder, same bytes)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(p for p in Path(folder).rglob("*") if p.is_file() and not p.is_symlink()):
            data = path.read_bytes()
            info = tarfile.TarInfo(path.relative_to(folder).as_posix())
            info.size, info.mode, info.mtime = len(data), 0o600, 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def unpack_into(data: bytes, folder: Path, max_files: int = 1000) -> list[str]:
    """Write the files of a bundle under `folder`; a member that is not a plain file inside it is refused."""
    folder = Path(folder)
    names = []
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            members = tar.getmembers()
            if len(members) > max_files:
                raise BundleError(f"bundle holds {len(members)} files, over {max_files}")
            for member in members:
                target = (folder / member.name).resolve()
                if not member.isfile() or member.name.startswith("/") or folder.resolve() not in target.parents:
                    raise BundleError(f"bundle member {member.name[:100]!r} is not a plain file inside the bundle")
                target.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                target.write_bytes(source.read() if source else b"")
                names.append(member.name)
    except (tarfile.TarError, EOFError) as e:
        raise BundleError(f"not a readable bundle: {e}") from None
    return names


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
    at most (box coordinates are relative to the frame, so they hold at any size)."""
    frames, offsets = [], [0]
    for row in rows:
        image = cv2.imread(str(row["frame"]), cv2.IMREAD_COLOR)
        jpeg = b""
        if image is not None:
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
        with np.load(io.BytesIO(data), allow_pickle=False) as bundle:
            meta = json.loads(bytes(bundle["meta"]).decode())
            vectors = np.asarray(bundle["embeddings"], np.float32)
            blob, offsets = bytes(bundle["frames"]), np.asarray(bundle["offsets"], np.int64)
    except (ValueError, KeyError, OSError, UnicodeDecodeError) as e:
        raise BundleError(f"unreadable example set ({e})") from None
    rows = meta.get("examples") if isinstance(meta, dict) else None
    if not isinstance(rows, list) or len(rows) != len(vectors) or len(offsets) != len(rows) + 1:
        raise BundleError("example set: rows, embeddings and frames do not agree")
    if len(rows) and (vectors.ndim != 2 or (dim is not None and vectors.shape[1] != dim)):
        raise BundleError(f"example set: embeddings of shape {vectors.shape}; this backbone gives {dim}-d")
    for row in rows:
        if not isinstance(row, dict) or not _UID.match(str(row.get("uid", ""))):
            raise BundleError("example set: an example uid is not 32 hex digits")
        if not isinstance(row.get("label"), str) or not LABEL_RE.match(row["label"]) or not isinstance(row.get("box"), (str, type(None))):
            raise BundleError(f"example set: label {str(row.get('label'))[:70]!r} or its box is not valid")
    frames = [blob[offsets[i]:offsets[i + 1]] for i in range(len(rows))]
    return ExampleSet(rows, vectors, frames)
