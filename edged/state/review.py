"""The review queue: uncertain or novel frames kept on disk (bounded) until a person labels or discards them."""

from __future__ import annotations

import json
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from ..errors import StoreError
from ..files import write_atomic
from .store import NewExample, Store

REVIEW_ID = r"^[0-9a-f]{12}$"


class ReviewQueue:
    """`folder/<id>/frame.jpg`, `embedding.npy`, `item.json`; the oldest items go when `max_items` is reached."""

    def __init__(self, folder: Path, max_items: int = 200):
        self.folder = Path(folder)
        self.max_items = max_items
        self._lock = threading.Lock()

    def add(self, image: np.ndarray, embedding: Optional[np.ndarray], backbone: str, info: dict) -> dict:
        item_id = uuid.uuid4().hex[:12]
        staging = self.folder / f".staging-{item_id}"
        staging.mkdir(parents=True, exist_ok=True)
        ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        if not ok:
            raise StoreError("JPEG encoding failed")
        write_atomic(staging / "frame.jpg", jpeg.tobytes())
        if embedding is not None:
            buf = staging / "embedding.npy"
            np.save(buf, np.asarray(embedding, np.float32).reshape(-1))
        item = {"id": item_id, "ts": round(time.time(), 3), "backbone": backbone, **info}
        write_atomic(staging / "item.json", json.dumps(item).encode())
        with self._lock:
            staging.rename(self.folder / item_id)
            self._trim()
        return item

    def _trim(self) -> None:
        items = self._items()
        for old in items[: max(0, len(items) - self.max_items)]:
            shutil.rmtree(self.folder / old["id"], ignore_errors=True)

    def _items(self) -> list[dict]:
        out = []
        if not self.folder.is_dir():
            return out
        for path in self.folder.iterdir():
            meta = path / "item.json"
            if path.is_dir() and not path.name.startswith(".") and meta.is_file():
                try:
                    out.append(json.loads(meta.read_text()))
                except ValueError:
                    continue
        return sorted(out, key=lambda m: m["ts"])

    def list(self) -> list[dict]:
        with self._lock:
            return self._items()

    def get(self, item_id: str) -> tuple[dict, np.ndarray, Optional[np.ndarray]]:
        folder = self.folder / item_id
        if not (folder / "item.json").is_file():
            raise StoreError(f"no review item {item_id!r}")
        meta = json.loads((folder / "item.json").read_text())
        image = cv2.imread(str(folder / "frame.jpg"), cv2.IMREAD_COLOR)
        if image is None:
            raise StoreError(f"review item {item_id}: frame unreadable")
        emb = np.load(folder / "embedding.npy") if (folder / "embedding.npy").is_file() else None
        return meta, image, emb

    def discard(self, item_id: str) -> None:
        folder = self.folder / item_id
        if not folder.is_dir():
            raise StoreError(f"no review item {item_id!r}")
        with self._lock:
            shutil.rmtree(folder, ignore_errors=True)

    def label(self, item_id: str, label: str, store: Store, backbone: str, embed) -> tuple[int, np.ndarray]:
        """Store the item as an example of `label` (durably), then drop it from the queue; the example id and embedding."""
        meta, image, emb = self.get(item_id)
        if emb is None or meta.get("backbone") != backbone:
            emb = embed(image)  # kept under another backbone: embed the frame again
        example_id = store.add(NewExample(image, label, emb), backbone)
        self.discard(item_id)
        return example_id, emb
