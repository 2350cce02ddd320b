"""Files shared over the broker: a retained manifest, then retained chunks under the content's sha256.

A parcel lives in its publisher's own topic tree, so a broker ACL (`pattern write edged/%u/#`) can enforce who
wrote it: `<publisher>/share/<kind>/<name>/manifest` names the parcel (size, sha256, chunk count, what it is) and
its chunks live at `<publisher>/share/<kind>/<name>/<sha256[:16]>/<i>`, so a new parcel never mixes with an older
one. `<publisher>` is `<prefix>/<device>` for a device and `<prefix>/fleet/trainers/<trainer>` for a trainer node.
The manifest is signed by the publisher (edged.fleet.signing) and names the sha256 of the chunks, so the chunks are
covered by the signature; a payload for one recipient is sealed before it is cut into chunks.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Optional

from .. import wire
from ..errors import EdgedError
from ..mqtt.topics import FleetTopics

KINDS = ("model", "head", "examples", "job", "result")  # job/result: trainer nodes (edged.fleet.remote_trainer)
MAX_MANIFESTS = 64          # parcels being assembled at once
ORPHAN_S = 120.0            # chunks whose manifest has not come by then are dropped


class ShareError(EdgedError):
    pass


@dataclass
class Parcel:
    publisher: str      # the device or trainer whose tree it came from
    role: str           # "device" or "trainer": which kind of tree
    kind: str
    name: str
    manifest: dict
    data: bytes


Sign = Callable[[dict], bytes]


def plain(manifest: dict) -> bytes:
    return json.dumps(manifest, default=str).encode()


def pack(base: str, kind: str, name: str, data: bytes, manifest: dict, chunk_bytes: int, max_bytes: int,
         sign: Sign = plain) -> list[tuple[str, bytes]]:
    """(topic, payload) to publish retained, in order: the manifest (made by `sign`), then the chunks; `base` is the
    publisher's tree (FleetTopics.publisher)."""
    if len(data) > max_bytes:
        raise ShareError(f"{kind} {name!r} is {len(data)} bytes, over fleet.max_share_bytes ({max_bytes})")
    sha = hashlib.sha256(data).hexdigest()
    topic = FleetTopics.share(base, kind, name)
    chunks = [data[i:i + chunk_bytes] for i in range(0, len(data), chunk_bytes)] or [b""]
    head = {**manifest, "kind": kind, "name": name, "size": len(data), "sha256": sha, "chunks": len(chunks),
            "chunk_bytes": chunk_bytes, "ts": round(time.time(), 6)}
    return [(f"{topic}/manifest", sign(head))] + [(f"{topic}/{sha[:16]}/{i}", c) for i, c in enumerate(chunks)]


def _roles(prefix: str, topic: str) -> Optional[tuple[str, str, list[str]]]:
    """(publisher, role, [kind, name, ...rest]) of a share topic, or None."""
    base, sep, rest = topic.partition("/share/")
    if not sep:
        return None
    levels = base.split("/")
    root = prefix.split("/")
    if levels[:len(root)] != root:
        return None
    tail = levels[len(root):]
    if len(tail) == 1 and tail[0] != "fleet":
        return tail[0], "device", rest.split("/")
    if len(tail) == 3 and tail[:2] == ["fleet", "trainers"]:
        return tail[2], "trainer", rest.split("/")
    return None


Opener = Callable[[str, str, str, str, bytes], dict]


class Assembler:
    """Collects manifests and chunks in any order, within bounds; `feed` returns a Parcel once every chunk of an
    accepted manifest is in and the sha256 matches, and raises ShareError (naming the parcel) when it does not.

    `open_manifest(publisher, role, kind, name, payload)` turns a manifest message into its body or raises (a
    bad signature, a replay): chunks are kept only for manifests it accepted, or for a short while before theirs
    comes, within `max_bytes` in all.
    """

    def __init__(self, prefix: str, max_bytes: int, open_manifest: Opener, kinds: tuple[str, ...] = KINDS,
                 clock: Callable[[], float] = time.monotonic):
        self.prefix, self.max_bytes, self.open_manifest, self.kinds, self.clock = prefix, max_bytes, open_manifest, kinds, clock
        self.manifests: "OrderedDict[tuple[str, str, str], dict]" = OrderedDict()
        self.chunks: "OrderedDict[tuple[str, str, str, str], dict[int, bytes]]" = OrderedDict()
        self.arrived: dict[tuple[str, str, str, str], float] = {}

    @property
    def held_bytes(self) -> int:
        return sum(len(c) for parts in self.chunks.values() for c in parts.values())

    def feed(self, topic: str, payload: bytes) -> Optional[Parcel]:
        where = _roles(self.prefix, topic)
        if where is None or len(where[2]) < 3 or where[2][0] not in self.kinds:
            return None
        publisher, role, (kind, name, *rest) = where
        key = (publisher, kind, name)
        self._expire()
        if rest == ["manifest"]:
            if not payload:
                self.manifests.pop(key, None)  # withdrawn
                return None
            manifest = self._manifest(publisher, role, kind, name, bytes(payload))
            self.manifests[key] = manifest
            self.manifests.move_to_end(key)
            while len(self.manifests) > MAX_MANIFESTS:
                self.manifests.popitem(last=False)
            self._drop_other_chunks(key, manifest["sha256"][:16])
            return self._complete(publisher, role, kind, name)
        if len(rest) == 2 and payload:
            try:
                index = wire.topic_number(rest[1])
            except ValueError:
                return None  # not a chunk's topic ('²' passed str.isdigit and then made int() raise)
            manifest = self.manifests.get(key)
            if manifest is not None:
                if rest[0] != manifest["sha256"][:16] or index >= manifest["chunks"] or len(payload) > manifest["chunk_bytes"]:
                    return None  # another parcel's, or not one of this manifest's chunks
            elif len(payload) > self.max_bytes:
                return None
            slot = key + (rest[0],)
            self.chunks.setdefault(slot, {})[index] = bytes(payload)
            self.chunks.move_to_end(slot)
            self.arrived.setdefault(slot, self.clock())
            self._bound(keep=slot if manifest is not None else None)
            return self._complete(publisher, role, kind, name)
        return None

    def _manifest(self, publisher: str, role: str, kind: str, name: str, payload: bytes) -> dict:
        manifest = self.open_manifest(publisher, role, kind, name, payload)
        try:
            size, sha, count = int(manifest["size"]), str(manifest["sha256"]), int(manifest["chunks"])
            chunk_bytes = int(manifest["chunk_bytes"])
        except (ValueError, KeyError, TypeError) as e:
            raise ShareError(f"{kind} {name!r} from {publisher}: unreadable manifest ({e})") from None
        if size > self.max_bytes:
            raise ShareError(f"{kind} {name!r} from {publisher} is {size} bytes, over this device's "
                             f"fleet.max_share_bytes ({self.max_bytes})")
        expected = max(1, -(-size // chunk_bytes)) if chunk_bytes > 0 else -1
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha) or count != expected:
            raise ShareError(f"{kind} {name!r} from {publisher}: manifest with {count} chunks of {chunk_bytes} "
                             f"bytes for {size} bytes (sha256 {sha[:16]!r}) is not valid")
        return {**manifest, "size": size, "sha256": sha, "chunks": count, "chunk_bytes": chunk_bytes}

    def _drop_other_chunks(self, key: tuple, sha16: str) -> None:
        for slot in [s for s in self.chunks if s[:3] == key and s[3] != sha16]:
            self.chunks.pop(slot)
            self.arrived.pop(slot, None)

    def _expire(self) -> None:
        """Chunks with no manifest are dropped after ORPHAN_S."""
        now = self.clock()
        for slot in [s for s, t in self.arrived.items() if now - t > ORPHAN_S and s[:3] not in self.manifests]:
            self.chunks.pop(slot, None)
            self.arrived.pop(slot, None)

    def _bound(self, keep=None) -> None:
        """At most `max_bytes` held in all: the oldest chunks without a manifest go first, then the oldest parcels'
        — never the one being completed (its manifest already bounds it to `max_bytes`)."""
        total = self.held_bytes
        for orphans_first in (True, False):
            for slot in list(self.chunks):
                if total <= self.max_bytes:
                    return
                if slot == keep or (orphans_first and slot[:3] in self.manifests):
                    continue
                parts = self.chunks.pop(slot)
                self.arrived.pop(slot, None)
                total -= sum(len(c) for c in parts.values())

    def _complete(self, publisher: str, role: str, kind: str, name: str) -> Optional[Parcel]:
        key = (publisher, kind, name)
        manifest = self.manifests.get(key)
        if manifest is None:
            return None
        sha = manifest["sha256"]
        parts = self.chunks.get(key + (sha[:16],), {})
        if any(i not in parts for i in range(manifest["chunks"])):
            return None
        del self.manifests[key]
        self.chunks.pop(key + (sha[:16],), None)
        self.arrived.pop(key + (sha[:16],), None)
        data = b"".join(parts[i] for i in range(manifest["chunks"]))
        got = hashlib.sha256(data).hexdigest()
        if got != sha or len(data) != manifest["size"]:
            raise ShareError(f"{kind} {name!r} from {publisher}: sha256 mismatch (manifest {sha[:16]}, chunks "
                             f"{got[:16]}, {len(data)} of {manifest['size']} bytes): refused")
        return Parcel(publisher, role, kind, name, manifest, data)
