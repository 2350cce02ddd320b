"""The topic tree: `<prefix>/<device>/...` per device, `<prefix>/fleet/...` for every device."""

from __future__ import annotations


class Topics:
    def __init__(self, prefix: str, device: str, base: str | None = None):
        self.base = base or f"{prefix}/{device}"
        self.status = f"{self.base}/status"
        self.stats = f"{self.base}/stats"
        self.snapshot = f"{self.base}/snapshot"
        self.review = f"{self.base}/review"
        self.commands = f"{self.base}/cmd/+"
        self.fleet_commands = f"{prefix}/fleet/cmd/+"

    def prediction(self, head: str) -> str:
        return f"{self.base}/prediction/{head}"

    def reply(self, command: str) -> str:
        return f"{self.base}/reply/{command}"


def trainer_status(prefix: str, name: str = "+") -> str:
    """Where a trainer node keeps its retained status (`+`: every trainer's)."""
    return f"{prefix}/fleet/trainers/{name}"


def trainer_topics(prefix: str, name: str) -> Topics:
    """A trainer node's own tree, `<prefix>/fleet/trainers/<name>/...`: its retained status (and will) at the root,
    where devices look for trainers without reading every device's status."""
    topics = Topics(prefix, name, base=trainer_status(prefix, name))
    topics.status = topics.base
    topics.fleet_commands = topics.commands
    return topics
