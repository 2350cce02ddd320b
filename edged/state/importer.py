"""Bring labelled data sets into the example store: class folders, or Pascal VOC boxes."""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Iterator, Optional

import cv2

from ..sources.base import IMAGE_SUFFIXES
from .store import NewExample

log = logging.getLogger(__name__)


def class_folders(root: Path) -> Iterator[tuple[Path, str, None]]:
    """`root/<label>/*.jpg` -> (image, label, no box)."""
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                yield path, folder.name, None


def voc(root: Path, label: Optional[str] = None) -> Iterator[tuple[Path, str, tuple]]:
    """`root/annotations/*.xml` + `root/images/` -> (image, label, box); images with one object only."""
    ann = root / "annotations" if (root / "annotations").is_dir() else root / "Annotations"
    images = root / "images" if (root / "images").is_dir() else root / "JPEGImages"
    skipped = 0
    for xml in sorted(ann.glob("*.xml")):
        tree = ET.parse(xml).getroot()
        objects = tree.findall("object")
        if len(objects) != 1:
            skipped += 1
            continue
        w, h = float(tree.findtext("size/width")), float(tree.findtext("size/height"))
        bb = objects[0].find("bndbox")
        x1, y1, x2, y2 = (float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        box = (max(x1 - 1, 0) / w, max(y1 - 1, 0) / h, min(x2 / w, 1.0), min(y2 / h, 1.0))
        yield images / tree.findtext("filename"), label or objects[0].findtext("name"), box
    if skipped:
        log.warning("skipped %d annotations without exactly one object (the box head predicts one box per frame)", skipped)


def examples(items, embed, limit: int = 0) -> Iterator[NewExample]:
    for i, (path, label, box) in enumerate(items):
        if limit and i >= limit:
            return
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            log.warning("unreadable image %s skipped", path)
            continue
        yield NewExample(img, label, embed(img), box)
