"""Versioned artefacts on disk: `<root>/vN/` folders, a `current` pointer switched by atomic rename, rollback."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from ..errors import VersionError
from ..files import fsync_dir, fsync_tree, write_atomic


@dataclass
class Draft:
    """A version being written (see Versions.draft): `version` is its name once committed."""

    folder: Path
    activate: bool
    version: Optional[str] = None


_VERSION = re.compile(r"v([1-9][0-9]{0,8})")


class Versions:
    """`root/v1`, `root/v2`, … are immutable once committed; `root/current` names the active one."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def versions(self) -> list[str]:
        if not self.root.is_dir():
            return []
        found = [(int(m.group(1)), p.name) for p in self.root.iterdir() if p.is_dir() and (m := _VERSION.fullmatch(p.name))]
        return [name for _, name in sorted(found)]

    def staging(self) -> Path:
        """A fresh folder to fill; `commit` turns it into the next version."""
        self.root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=".staging-", dir=self.root))

    def commit(self, staging: Path, activate: bool = True) -> str:
        fsync_tree(staging)  # everything in the version is on disk before its name (or `current`) can point at it
        for _ in range(100):
            existing = self.versions()
            name = f"v{int(existing[-1][1:]) + 1 if existing else 1}"
            try:
                os.rename(staging, self.root / name)  # fails if another writer took the name
                break
            except OSError:
                continue
        else:
            raise VersionError(f"cannot commit a new version under {self.root}")
        fsync_dir(self.root)
        if activate:
            self.activate(name)
        return name

    def _state(self) -> dict:
        path = self.root / "current"
        if not path.is_file():
            return {"current": None, "history": []}
        return json.loads(path.read_text())

    def current(self) -> Optional[str]:
        name = self._state()["current"]
        return name if name and (self.root / name).is_dir() else None

    def current_path(self) -> Optional[Path]:
        name = self.current()
        return self.root / name if name else None

    def activate(self, name: str) -> None:
        if name not in self.versions():
            raise VersionError(f"no version {name!r} under {self.root}; have {self.versions()}")
        state = self._state()
        history = [h for h in state["history"] if h != name] + [name]
        write_atomic(self.root / "current", json.dumps({"current": name, "history": history[-50:], "ts": time.time()}).encode())

    def rollback(self) -> str:
        """Activate the version that was active before the current one."""
        state = self._state()
        history = [h for h in state["history"] if (self.root / h).is_dir()]
        if len(history) < 2:
            raise VersionError(f"nothing to roll back to under {self.root}")
        previous = history[-2]
        write_atomic(self.root / "current", json.dumps({"current": previous, "history": history[:-1], "ts": time.time()}).encode())
        return previous

    def prune(self, keep: int) -> list[str]:
        """Remove all but the newest `keep` versions; the current one and the one before it always stay."""
        history = self._state()["history"]
        protected = set(history[-2:])
        names = self.versions()
        doomed = [n for n in names[:max(len(names) - keep, 0)] if n not in protected]
        for name in doomed:
            shutil.rmtree(self.root / name, ignore_errors=True)
        if doomed:
            fsync_dir(self.root)
        return doomed

    @contextmanager
    def draft(self, activate: bool = True) -> Iterator["Draft"]:
        """The one way a version is written: fill `draft.folder` in the block; leaving it commits the folder as the
        next version (made current when `draft.activate`), and any error discards it."""
        draft = Draft(self.staging(), activate)
        try:
            yield draft
            draft.version = self.commit(draft.folder, activate=draft.activate)
        except BaseException:
            self.discard(draft.folder)
            raise

    def discard(self, staging: Path) -> None:
        shutil.rmtree(staging, ignore_errors=True)

    def clean_staging(self, older_than_s: float = 3600.0) -> int:
        """Remove staging folders a killed trainer left behind (never mistaken for versions: no `vN` name)."""
        if not self.root.is_dir():
            return 0
        cutoff = time.time() - older_than_s
        stale = [p for p in self.root.glob(".staging-*") if p.is_dir() and p.stat().st_mtime < cutoff]
        for path in stale:
            shutil.rmtree(path, ignore_errors=True)
        return len(stale)
