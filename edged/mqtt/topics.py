"""The topic tree: `<prefix>/<device>/...` per device, `<prefix>/fleet/...` for every device."""

from __future__ import annotations


class Topics:
    def __init__(self, prefix: str, device: str):
        self.base = f"{prefix}/{device}"
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
