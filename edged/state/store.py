"""Durable example store: SQLite rows + JPEG frames + embeddings per backbone id."""

from __future__ import annotations

import errno
import json
import sqlite3
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

import cv2
import numpy as np

from ..errors import StoreError
from ..files import write_atomic
from ..sources.wav import read_wav, wav_bytes
from .labels import label_problem


SCHEMA = """
CREATE TABLE IF NOT EXISTS examples (
    id INTEGER PRIMARY KEY,
    uid TEXT UNIQUE NOT NULL,
    label TEXT NOT NULL,
    ts REAL NOT NULL,
    frame TEXT NOT NULL,
    box TEXT
);
CREATE INDEX IF NOT EXISTS examples_label ON examples(label);
CREATE TABLE IF NOT EXISTS embeddings (
    example_id INTEGER NOT NULL REFERENCES examples(id) ON DELETE CASCADE,
    backbone TEXT NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (example_id, backbone)
);
"""


@dataclass
class Examples:
    """Everything a head learns from: one row per stored example."""

    ids: np.ndarray  # int64 (n,)
    labels: np.ndarray  # str (n,)
    embeddings: np.ndarray  # float32 (n, d)
    boxes: list[Optional[tuple[float, float, float, float]]]  # the box of a one-object example, else None
    objects: Optional[list[list[tuple[str, tuple]]]] = None  # every (label, box) of each example; [] for none
    captures: Optional[np.ndarray] = None  # str (n,): the capture (or recording) each example came from

    def __post_init__(self):
        if self.captures is None:  # nothing known: each example is its own capture
            self.captures = np.array([f"example:{i}" for i in self.ids.tolist()])
        if self.objects is None:
            self.objects = [[(str(l), tuple(b))] if b is not None else [] for l, b in zip(self.labels, self.boxes)]

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, rows: np.ndarray) -> "Examples":
        """The examples at `rows` (indices or a boolean mask), in that order."""
        rows = np.flatnonzero(rows) if np.asarray(rows).dtype == bool else np.asarray(rows, int)
        return Examples(self.ids[rows], self.labels[rows], self.embeddings[rows], [self.boxes[i] for i in rows],
                        [self.objects[i] for i in rows], self.captures[rows])

    @property
    def classes(self) -> list[str]:
        return sorted(set(self.labels.tolist()))


@dataclass
class NewExample:
    image: np.ndarray  # BGR uint8
    label: str
    embedding: np.ndarray
    box: Optional[tuple[float, float, float, float]] = None
    ts: Optional[float] = None
    objects: Optional[list[tuple[str, tuple]]] = None  # several labelled boxes (instead of `box`)
    uid: Optional[str] = None  # kept when the example comes from another device (the same example is stored once)
    origin: Optional[str] = None  # the device it was taught on; None: this one
    jpeg: Optional[bytes] = None  # the frame as JPEG already (a shared thumbnail): stored as is
    source: Optional[str] = None  # the source it was captured from, when the daemon serves several
    audio: Optional[np.ndarray] = None  # a sound example's samples: kept as <uid>.wav beside its spectrogram picture
    capture: Optional[str] = None  # the capture it is one frame (or window) of; None: an example of its own


Box = tuple[float, float, float, float]


def encode_objects(label: str, box: Optional[Box], objects: Optional[list[tuple[str, Box]]]) -> Optional[str]:
    """The `box` column: `[x1, y1, x2, y2]` for one box of the example's label, else `[{"label", "box"}, ...]`."""
    if objects:
        if len(objects) == 1 and objects[0][0] == label:
            box = objects[0][1]
        else:
            return json.dumps([{"label": l, "box": [float(v) for v in b]} for l, b in objects])
    return json.dumps([float(v) for v in box]) if box is not None else None


def decode_objects(label: str, column: Optional[str]) -> list[tuple[str, Box]]:
    if not column:
        return []
    value = json.loads(column)
    if value and isinstance(value[0], dict):
        return [(str(o["label"]), tuple(float(v) for v in o["box"])) for o in value]
    return [(label, tuple(float(v) for v in value))]


CAPTURE_GAP_S = 10.0  # rows from before the capture column: frames of one label this close in time were one capture


def captures_of(rows) -> np.ndarray:
    """The capture of each (id, label, box, vector, capture, ts, origin, source) row, in order. Rows stored before
    captures were recorded are grouped as they were taken: the same label, device and source, each within
    CAPTURE_GAP_S of the one before."""
    out, last = [], {}
    for r in rows:
        example_id, label, capture, ts, origin, source = r[0], r[1], r[4], r[5], r[6], r[7]
        if capture:
            out.append(capture)
            continue
        key = (label, origin, source)
        run = last.get(key)
        if run is None or ts - run[1] > CAPTURE_GAP_S:
            run = (f"taken:{example_id}", ts)
        last[key] = (run[0], ts)
        out.append(run[0])
    return np.array(out)


class Store:
    """Thread-safe; every `add` is on disk (frame fsynced, row committed) when it returns."""

    def __init__(self, folder: str | Path, jpeg_quality: int = 92):
        self.folder = Path(folder)
        self.frames = self.folder / "frames"
        self.frames.mkdir(parents=True, exist_ok=True)
        self.jpeg_quality = jpeg_quality
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.folder / "examples.db", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(examples)")}
        if "origin" not in columns:  # stores from before fleet sharing
            self._db.execute("ALTER TABLE examples ADD COLUMN origin TEXT")
        if "source" not in columns:  # stores from before several sources
            self._db.execute("ALTER TABLE examples ADD COLUMN source TEXT")
        if "capture" not in columns:  # stores from before validation by capture
            self._db.execute("ALTER TABLE examples ADD COLUMN capture TEXT")

    def collect_orphans(self, older_than_s: float = 3600.0) -> int:
        """Delete frame files no row points at (a kill between the JPEG and its row) and temp files of torn writes."""
        cutoff = time.time() - older_than_s
        with self._lock:
            known = {Path(r[0]).stem for r in self._db.execute("SELECT frame FROM examples")}
        removed = 0
        for path in self.frames.iterdir():  # a row keeps its <uid>.jpg and, for a sound, its <uid>.wav
            if path.stem not in known and path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def add_many(self, items: Iterable[NewExample], backbone: str) -> list[int]:
        """Write frames, then all rows in one transaction; return the new ids.

        A full disk raises StoreError saying so; nothing half-written stays (temp files are removed,
        the transaction rolls back, frames of rows not committed are deleted).
        """
        written: list[Path] = []
        try:
            return self._add_many(items, backbone, written)
        except (OSError, sqlite3.OperationalError) as e:
            for path in written:
                path.unlink(missing_ok=True)
            if getattr(e, "errno", None) == errno.ENOSPC or "full" in str(e).lower():
                raise StoreError(f"disk full: no space left for examples in {self.folder} (free some space, or set "
                                 f"[capture] max_per_label / max_total to keep the store bounded)") from None
            raise StoreError(f"cannot store the example in {self.folder}: {e}") from None

    def _add_many(self, items: Iterable[NewExample], backbone: str, written: list[Path]) -> list[int]:
        rows = []
        for item in items:
            problem = label_problem(item.label)
            if problem is not None:
                raise StoreError(f"example not stored: {problem}")
            if item.jpeg is not None:
                data = item.jpeg
            else:
                ok, jpeg = cv2.imencode(".jpg", item.image, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
                if not ok:
                    raise StoreError("JPEG encoding failed")
                data = jpeg.tobytes()
            uid = item.uid or uuid.uuid4().hex
            write_atomic(self.frames / f"{uid}.jpg", data)
            written.append(self.frames / f"{uid}.jpg")
            if item.audio is not None:  # the sound itself: what a speech backbone embeds again
                write_atomic(self.frames / f"{uid}.wav", wav_bytes(item.audio))
                written.append(self.frames / f"{uid}.wav")
            box = encode_objects(item.label, item.box, item.objects)
            vector = np.ascontiguousarray(item.embedding, dtype=np.float32).reshape(-1)
            rows.append((uid, item.label, item.ts or time.time(), f"{uid}.jpg", box, vector.tobytes(), item.origin,
                         item.source, item.capture or f"example:{uid}"))
        ids = []
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                for uid, label, ts, frame, box, vector, origin, source, capture in rows:
                    cur.execute(
                        "INSERT INTO examples (uid, label, ts, frame, box, origin, source, capture) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (uid, label, ts, frame, box, origin, source, capture),
                    )
                    ids.append(cur.lastrowid)
                    cur.execute(
                        "INSERT INTO embeddings (example_id, backbone, vector) VALUES (?, ?, ?)",
                        (cur.lastrowid, backbone, vector),
                    )
                cur.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:  # SQLite rolls back by itself on some errors (a full disk)
                    cur.execute("ROLLBACK")
                raise
        return ids

    def add(self, item: NewExample, backbone: str) -> int:
        return self.add_many([item], backbone)[0]

    def examples(self, backbone: str) -> Examples:
        with self._lock:
            rows = self._db.execute(
                "SELECT e.id, e.label, e.box, m.vector, e.capture, e.ts, e.origin, e.source FROM examples e "
                "JOIN embeddings m ON m.example_id = e.id AND m.backbone = ? ORDER BY e.id",
                (backbone,),
            ).fetchall()
        if not rows:
            return Examples(np.zeros(0, np.int64), np.array([], dtype=str), np.zeros((0, 0), np.float32), [])
        ids = np.array([r[0] for r in rows], np.int64)
        labels = np.array([r[1] for r in rows])
        emb = np.stack([np.frombuffer(r[3], np.float32) for r in rows])
        objects = [decode_objects(r[1], r[2]) for r in rows]
        boxes = [objs[0][1] if len(objs) == 1 else None for objs in objects]
        return Examples(ids, labels, emb, boxes, objects, captures_of(rows))

    def known_uids(self, uids: list[str]) -> set[str]:
        marks = ",".join("?" * len(uids))
        with self._lock:
            return {r[0] for r in self._db.execute(f"SELECT uid FROM examples WHERE uid IN ({marks})", uids)} if uids else set()

    def own_examples(self, backbone: str, label: Optional[str] = None, include_received: bool = False) -> list[dict]:
        """Examples taught on this device (with `include_received`, also those from others) with their embedding
        for `backbone`: uid, label, ts, box column, vector bytes, frame path — what `share` sends."""
        query = ("SELECT e.uid, e.label, e.ts, e.box, m.vector, e.frame FROM examples e JOIN embeddings m "
                 "ON m.example_id = e.id AND m.backbone = ? WHERE (e.origin IS NULL OR ?)")
        params: tuple = (backbone, include_received)
        if label is not None:
            query += " AND e.label = ?"
            params += (label,)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY e.id", params).fetchall()
        return [{"uid": r[0], "label": r[1], "ts": r[2], "box": r[3], "vector": r[4], "frame": self.frames / r[5]}
                for r in rows]

    def missing_embeddings(self, backbone: str) -> list[tuple[int, Path]]:
        """Examples with no embedding for `backbone` (e.g. after the backbone changed)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, frame FROM examples WHERE id NOT IN (SELECT example_id FROM embeddings WHERE backbone = ?)",
                (backbone,),
            ).fetchall()
        return [(r[0], self.frames / r[1]) for r in rows]

    def set_embeddings(self, backbone: str, pairs: list[tuple[int, np.ndarray]]) -> None:
        with self._lock:
            with self._db:
                self._db.executemany(
                    "INSERT OR REPLACE INTO embeddings (example_id, backbone, vector) VALUES (?, ?, ?)",
                    [(i, backbone, np.asarray(v, np.float32).tobytes()) for i, v in pairs],
                )

    def forget(self, label: str) -> int:
        with self._lock:
            frames = [r[0] for r in self._db.execute("SELECT frame FROM examples WHERE label = ?", (label,))]
            with self._db:
                self._db.execute("DELETE FROM examples WHERE label = ?", (label,))
        self._remove_files(frames)
        return len(frames)

    def list(self, label: Optional[str] = None, limit: int = 100, offset: int = 0) -> list[dict]:
        """Stored examples, newest first: id, label, time, frame file, box."""
        query = "SELECT id, label, ts, frame, box, origin, source FROM examples"
        params: tuple = ()
        if label is not None:
            query += " WHERE label = ?"
            params = (label,)
        query += " ORDER BY id DESC LIMIT ? OFFSET ?"
        with self._lock:
            rows = self._db.execute(query, params + (limit, offset)).fetchall()
        out = []
        for r in rows:
            objs = decode_objects(r[1], r[4])
            out.append({"id": r[0], "label": r[1], "ts": round(r[2], 3), "frame": f"store/frames/{r[3]}",
                        "box": list(objs[0][1]) if len(objs) == 1 else None,
                        "boxes": [{"label": l, "box": list(b)} for l, b in objs], "origin": r[5],
                        **({"source": r[6]} if r[6] else {})})
        return out

    def delete(self, ids: list[int]) -> int:
        """Remove these examples (rows, embeddings, frames); returns how many existed."""
        marks = ",".join("?" * len(ids))
        with self._lock:
            frames = [r[0] for r in self._db.execute(f"SELECT frame FROM examples WHERE id IN ({marks})", ids)]
            with self._db:
                self._db.execute(f"DELETE FROM examples WHERE id IN ({marks})", ids)
        self._remove_files(frames)
        return len(frames)

    def relabel(self, ids: list[int], label: str) -> int:
        problem = label_problem(label)
        if problem is not None:
            raise StoreError(f"relabel: {problem}")
        marks = ",".join("?" * len(ids))
        with self._lock:
            with self._db:
                cur = self._db.execute(f"UPDATE examples SET label = ? WHERE id IN ({marks})", [label, *ids])
        return cur.rowcount

    def prune(self, label: str, max_per_label: int = 0, max_total: int = 0) -> int:
        """Delete the oldest examples beyond the caps (0 = no cap): of `label` first, then of the whole store."""
        doomed: list[int] = []
        with self._lock:
            if max_per_label:
                rows = self._db.execute("SELECT id FROM examples WHERE label = ? ORDER BY id DESC LIMIT -1 OFFSET ?",
                                        (label, max_per_label)).fetchall()
                doomed += [r[0] for r in rows]
            if max_total:
                rows = self._db.execute("SELECT id FROM examples ORDER BY id DESC LIMIT -1 OFFSET ?", (max_total,)).fetchall()
                doomed += [r[0] for r in rows if r[0] not in doomed]
        return self.delete(doomed) if doomed else 0

    def room_sounds(self, label: str, limit: int = 32) -> list[np.ndarray]:
        """The kept sounds of the newest `limit` examples of `label` (those that keep one)."""
        with self._lock:
            ids = [r[0] for r in self._db.execute("SELECT id FROM examples WHERE label = ? ORDER BY id DESC LIMIT ?",
                                                  (label, limit))]
        return [s for s in map(self.load_audio, ids) if s is not None]

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT label, COUNT(*) FROM examples GROUP BY label").fetchall()
        return dict(Counter({label: n for label, n in rows}))

    def _remove_files(self, frames: list[str]) -> None:
        for name in frames:
            (self.frames / name).unlink(missing_ok=True)
            (self.frames / name).with_suffix(".wav").unlink(missing_ok=True)

    def load_audio(self, example_id: int) -> Optional[np.ndarray]:
        """A sound example's samples, or None when it has none (a picture, or stored before sound was kept)."""
        with self._lock:
            row = self._db.execute("SELECT frame FROM examples WHERE id = ?", (example_id,)).fetchone()
        if row is None:
            raise StoreError(f"no example {example_id}")
        path = (self.frames / row[0]).with_suffix(".wav")
        return read_wav(path) if path.is_file() else None

    def load_frame(self, example_id: int) -> np.ndarray:
        with self._lock:
            row = self._db.execute("SELECT frame FROM examples WHERE id = ?", (example_id,)).fetchone()
        if row is None:
            raise StoreError(f"no example {example_id}")
        img = cv2.imread(str(self.frames / row[0]), cv2.IMREAD_COLOR)
        if img is None:
            raise StoreError(f"frame of example {example_id} is missing or unreadable")
        return img

    def data_version(self) -> int:
        """Changes when another connection (e.g. `edged collect`) commits."""
        with self._lock:
            return self._db.execute("PRAGMA data_version").fetchone()[0]
