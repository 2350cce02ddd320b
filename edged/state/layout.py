"""Every path under the state folder, in one place: nothing else joins names onto `state_dir`.

```
state_dir/
  store/                  examples: SQLite + JPEG frames (edged.state.store)
  backbones/<id>/         converted backbones (edged.state.backbones)
  heads/<head>/vN/        trained head versions, `current` (edged.state.versions)
  models/<head>/vN/       exported TFLite models, `current`
  review/<id>/            kept uncertain frames (edged.state.review)
  keys/                   this daemon's keys and certificate; keys/trainer-<name>/ a trainer node's
  devices/<device>/       a trainer node's copy of a device's state
  serving.json            which heads and models serve
  fleet.json              parcels taken and published
  homeassistant.json      where discovery was published
```
"""

from __future__ import annotations

from pathlib import Path

from .versions import Versions

VERSIONED = ("heads", "models")


class StateLayout:
    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser()

    @property
    def store(self) -> Path:
        return self.root / "store"

    @property
    def backbones(self) -> Path:
        return self.root / "backbones"

    @property
    def review(self) -> Path:
        return self.root / "review"

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    def trainer_keys(self, name: str) -> Path:
        return self.keys / f"trainer-{name}"

    def device(self, name: str) -> Path:
        """A trainer node's state folder for one device (a StateLayout of its own)."""
        return self.root / "devices" / name

    @property
    def serving(self) -> Path:
        return self.root / "serving.json"

    @property
    def fleet_memory(self) -> Path:
        return self.root / "fleet.json"

    @property
    def homeassistant_memory(self) -> Path:
        return self.root / "homeassistant.json"

    def versions(self, kind: str, name: str) -> Versions:
        """`heads` (trained head versions) or `models` (exported TFLite models) of head `name`."""
        if kind not in VERSIONED:
            raise ValueError(f"versions of {kind!r}: one of {VERSIONED}")
        return Versions(self.root / kind / name)

    def heads(self, name: str) -> Versions:
        return self.versions("heads", name)

    def models(self, name: str) -> Versions:
        return self.versions("models", name)

    def all_versions(self) -> list[Versions]:
        """Every head's and model's versions on disk."""
        return [Versions(folder) for kind in VERSIONED if (self.root / kind).is_dir()
                for folder in sorted((self.root / kind).iterdir()) if folder.is_dir()]
