"""An image folder played as a source."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from ..config import SourceConfig
from ..errors import SourceError
from .base import IMAGE_SUFFIXES, Frame, Source
from .jpeg import least_size, read_image

log = logging.getLogger(__name__)


class FolderSource(Source):
    live = False

    def __init__(self, folder: str, cfg: SourceConfig):
        self.folder = Path(folder)
        self.cfg = cfg
        self.description = f"folder {folder}"
        self.fps = cfg.fps
        self._least = least_size(cfg)
        self._files: list[Path] = []
        self._pos = 0

    def open(self) -> None:
        self._files = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self._files:
            raise SourceError(f"no images in {self.folder}")
        self._pos = 0

    def read(self) -> Optional[Frame]:
        for _ in range(len(self._files)):
            if self._pos >= len(self._files):
                if not self.cfg.loop:
                    return None
                self._pos = 0
            path = self._files[self._pos]
            pos = self._pos
            self._pos += 1
            img = read_image(path, self._least)
            if img is not None:
                return Frame(img, pos)
            log.warning("skipping unreadable image %s", path)
        raise SourceError(f"no readable images in {self.folder}")
