"""`state_dir/serving.json`: which heads predict and which serve from exported models, kept across restarts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from ..files import read_json_object, write_atomic


class ServingChoice:
    def __init__(self, path: Path):
        self.path = Path(path)

    def load(self) -> dict:
        return read_json_object(self.path)

    def active(self, default: list[str]) -> list[str]:
        value = self.load().get("active")
        return list(value) if isinstance(value, list) and value else list(default)

    def models(self) -> list[str]:
        value = self.load().get("models")
        return [m for m in value if isinstance(m, str)] if isinstance(value, list) else []

    def save(self, active: list[str], models: Optional[list[str]]) -> None:
        write_atomic(self.path, json.dumps({"active": list(active), "models": sorted(models or [])}).encode())
