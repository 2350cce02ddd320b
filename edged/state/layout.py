"""Every path under the state folder, in one place: nothing else joins names onto `state_dir`.

```
state_dir/
  store/                  examples: SQLite + JPEG frames (edged.state.store)
  backbones/<id>/         converted backbones (edged.state.backbones)
  backbones/choice.json   the backbone chosen for this machine (edged.serve.choice)
  heads/<head>/vN/        trained head versions, `current` (edged.state.versions)
  models/<head>/vN/       exported TFLite models, `current`
  review/<id>/            kept uncertain frames (edged.state.review)
  events/<id>/            events: record, best-frame snapshot, optional clip (edged.state.events)
  keys/                   this daemon's keys and certificate; keys/trainer-<name>/ a trainer node's
  devices/<device>/       a trainer node's copy of a device's state
  trainer-<name>-jobs.json  the job ids a trainer node ran lately
  serving.json            which heads and models serve
  revoked.json            the newest fleet revocation list seen (outside keys/: a device keyed anew keeps it)
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
        self.store = self.root / "store"
        self.backbones = self.root / "backbones"
        self.backbone_choice = self.backbones / "choice.json"
        self.review = self.root / "review"
        self.events = self.root / "events"
        self.keys = self.root / "keys"
        self.revocation = self.root / "revoked.json"
        self.serving = self.root / "serving.json"
        self.fleet_memory = self.root / "fleet.json"
        self.homeassistant_memory = self.root / "homeassistant.json"

    def trainer_keys(self, name: str) -> Path:
        return self.keys / f"trainer-{name}"

    def trainer_memory(self, name: str) -> Path:
        """The job ids a trainer node ran lately: a job sent again after a restart is not run twice."""
        return self.root / f"trainer-{name}-jobs.json"

    def device(self, name: str) -> Path:
        """A trainer node's state folder for one device (a StateLayout of its own)."""
        return self.root / "devices" / name

    def versions(self, kind: str, name: str) -> Versions:
        """`heads` (trained head versions) or `models` (exported TFLite models) of head `name`."""
        if kind not in VERSIONED:
            raise ValueError(f"versions of {kind!r}: one of {VERSIONED}")
        return Versions(self.root / kind / name)

    def heads(self, name: str) -> Versions:
        return self.versions("heads", name)

    def models(self, name: str) -> Versions:
        return self.versions("models", name)
