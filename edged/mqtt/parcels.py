"""Files shared over the broker: retained chunks under the content's sha256, then a retained manifest.

`<prefix>/fleet/share/<kind>/<name>/manifest` names the parcel (size, sha256, chunk count, what it is);
its chunks live at `<prefix>/fleet/share/<kind>/<name>/<sha256[:16]>/<i>`, so a new parcel never mixes with
the chunks of an older one. Retained messages reach devices that connect later and travel across bridges.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional

from ..errors import EdgedError

KINDS = ("model", "head", "examples", "job", "result")  # job/result: trainer nodes (edged.serve.remote_trainer)


class ShareError(EdgedError):
    pass


@dataclass
class Parcel:
    kind: str
    name: str
    manifest: dict
    data: bytes


def share_base(prefix: str, kind: str, name: str) -> str:
    return f"{prefix}/fleet/share/{kind}/{name}"


def pack(prefix: str, kind: str, name: str, data: bytes, manifest: dict, chunk_bytes: int,
         max_bytes: int) -> list[tuple[str, bytes]]:
    """(topic, payload) to publish retained, in order: the chunks, then the manifest."""
    if len(data) > max_bytes:
        raise ShareError(f"{kind} {name!r} is {len(data)} bytes, over fleet.max_share_bytes ({max_bytes})")
    sha = hashlib.sha256(data).hexdigest()
    base = share_base(prefix, kind, name)
    chunks = [data[i:i + chunk_bytes] for i in range(0, len(data), chunk_bytes)] or [b""]
    out = [(f"{base}/{sha[:16]}/{i}", chunk) for i, chunk in enumerate(chunks)]
    head = {**manifest, "kind": kind, "name": name, "size": len(data), "sha256": sha, "chunks": len(chunks),
            "chunk_bytes": chunk_bytes, "ts": round(time.time(), 3)}
    out.append((f"{base}/manifest", json.dumps(head, default=str).encode()))
    return out


class Assembler:
    """Collects manifests and chunks in any order; `feed` returns a Parcel once every chunk of a manifest is in and
    the sha256 matches, and raises ShareError (naming the parcel) when it does not or the manifest is refused."""

    def __init__(self, prefix: str, max_bytes: int):
        self.root = f"{prefix}/fleet/share/".split("/")
        self.max_bytes = max_bytes
        self.manifests: dict[tuple[str, str], dict] = {}
        self.chunks: "OrderedDict[tuple[str, str, str], dict[int, bytes]]" = OrderedDict()

    def _where(self, topic: str) -> Optional[list[str]]:
        parts = topic.split("/")
        n = len(self.root) - 1
        if parts[:n] != self.root[:n] or len(parts) < n + 3 or parts[n] not in KINDS:
            return None
        return parts[n:]

    def feed(self, topic: str, payload: bytes) -> Optional[Parcel]:
        where = self._where(topic)
        if where is None:
            return None
        kind, name = where[0], where[1]
        if len(where) == 3 and where[2] == "manifest":
            if not payload:
                self.manifests.pop((kind, name), None)  # withdrawn
                return None
            try:
                manifest = json.loads(payload)
                size, sha, count = int(manifest["size"]), str(manifest["sha256"]), int(manifest["chunks"])
            except (ValueError, KeyError, TypeError) as e:
                raise ShareError(f"{kind} {name!r}: unreadable manifest ({e})") from None
            if size > self.max_bytes:
                raise ShareError(f"{kind} {name!r} is {size} bytes, over this device's fleet.max_share_bytes ({self.max_bytes})")
            if not 1 <= count <= 100_000 or len(sha) != 64:
                raise ShareError(f"{kind} {name!r}: manifest with {count} chunks and sha256 {sha[:16]!r} is not valid")
            self.manifests[(kind, name)] = manifest
            return self._complete(kind, name)
        if len(where) == 4 and where[3].isdigit() and payload:
            key = (kind, name, where[2])
            self.chunks.setdefault(key, {})[int(where[3])] = bytes(payload)
            self.chunks.move_to_end(key)
            self._bound()
            return self._complete(kind, name)
        return None

    def _bound(self) -> None:
        """Chunks of parcels never completed are dropped, oldest first, beyond twice the size limit."""
        total = sum(len(c) for parts in self.chunks.values() for c in parts.values())
        while total > 2 * self.max_bytes and len(self.chunks) > 1:
            _, parts = self.chunks.popitem(last=False)
            total -= sum(len(c) for c in parts.values())

    def _complete(self, kind: str, name: str) -> Optional[Parcel]:
        manifest = self.manifests.get((kind, name))
        if manifest is None:
            return None
        sha = manifest["sha256"]
        parts = self.chunks.get((kind, name, sha[:16]), {})
        if any(i not in parts for i in range(int(manifest["chunks"]))):
            return None
        del self.manifests[(kind, name)]
        self.chunks.pop((kind, name, sha[:16]), None)
        data = b"".join(parts[i] for i in range(int(manifest["chunks"])))
        got = hashlib.sha256(data).hexdigest()
        if got != sha or len(data) != int(manifest["size"]):
            raise ShareError(f"{kind} {name!r}: sha256 mismatch (manifest {sha[:16]}, chunks {got[:16]}, "
                             f"{len(data)} of {manifest['size']} bytes): refused")
        return Parcel(kind, name, manifest, data)
