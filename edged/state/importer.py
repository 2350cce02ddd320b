"""Bring labelled data sets into the example store: class folders, or Pascal VOC boxes (every object of a photo)."""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import cv2

from ..errors import StoreError
from ..sources.base import IMAGE_SUFFIXES
from .store import NewExample

log = logging.getLogger(__name__)


def class_folders(root: Path) -> Iterator[tuple[Path, str, None]]:
    """`root/<label>/*.jpg` -> (image, label, no box)."""
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                yield path, folder.name, None


@dataclass
class Skipped:
    """What an import left out, and why (reported to the user, not only logged)."""

    reasons: Counter = field(default_factory=Counter)
    examples: dict = field(default_factory=dict)  # reason -> first file it applied to

    def add(self, reason: str, path: Path) -> None:
        self.reasons[reason] += 1
        self.examples.setdefault(reason, str(path))

    def report(self) -> dict:
        return {reason: {"count": n, "first": self.examples[reason]} for reason, n in self.reasons.items()}


def voc_folders(root: Path, annotations: Optional[Path] = None, images: Optional[Path] = None) -> tuple[Path, Path]:
    """The annotation and image folders: given, or the usual names under `root`."""
    if annotations is None:
        annotations = next((root / n for n in ("annotations", "Annotations") if (root / n).is_dir()), root)
    if images is None:
        images = next((root / n for n in ("images", "JPEGImages") if (root / n).is_dir()), annotations)
    for name, folder in (("annotations", annotations), ("images", images)):
        if not Path(folder).is_dir():
            raise StoreError(f"voc {name} folder {folder} does not exist")
    return Path(annotations), Path(images)


def voc(annotations: Path, images: Path, label: Optional[str] = None, skipped: Optional[Skipped] = None
        ) -> Iterator[tuple[Path, str, list[tuple[str, tuple]]]]:
    """Pascal VOC XML files -> (image, label, [(object label, box in frame coordinates), ...]).

    Every object of a photo is kept; the example's label is its most frequent object name. Photos
    whose XML cannot be read, that have no object, or whose image is missing are skipped and counted.
    """
    skipped = skipped if skipped is not None else Skipped()
    for xml in sorted(Path(annotations).glob("*.xml")):
        try:
            tree = ET.parse(xml).getroot()
            w, h = float(tree.findtext("size/width")), float(tree.findtext("size/height"))
            objects = []
            for obj in tree.findall("object"):
                bb = obj.find("bndbox")
                x1, y1, x2, y2 = (float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
                box = (max(x1 - 1, 0) / w, max(y1 - 1, 0) / h, min(x2 / w, 1.0), min(y2 / h, 1.0))
                if box[2] <= box[0] or box[3] <= box[1]:
                    skipped.add("empty box", xml)
                    continue
                objects.append((label or (obj.findtext("name") or "object").strip(), box))
        except (ET.ParseError, TypeError, ValueError, AttributeError):
            skipped.add("unreadable annotation", xml)
            continue
        if not objects:
            skipped.add("no object", xml)
            continue
        image = Path(images) / (tree.findtext("filename") or f"{xml.stem}.jpg")
        if not image.is_file():
            skipped.add("image missing", image)
            continue
        names = Counter(name for name, _ in objects)
        yield image, names.most_common(1)[0][0], objects
    for reason, n in skipped.reasons.items():
        log.warning("voc import skipped %d: %s (first: %s)", n, reason, skipped.examples[reason])


def examples(items, embed, limit: int = 0, skipped: Optional[Skipped] = None) -> Iterator[NewExample]:
    """items: (image path, label, objects or None) -> stored examples, embedded by `embed(bgr)`."""
    skipped = skipped if skipped is not None else Skipped()
    for i, (path, label, objects) in enumerate(items):
        if limit and i >= limit:
            return
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            skipped.add("unreadable image", path)
            log.warning("unreadable image %s skipped", path)
            continue
        yield NewExample(img, label, embed(img), objects=objects)
