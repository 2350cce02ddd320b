"""The topic tree, in one place: `<prefix>/<device>/...` per device, `<prefix>/fleet/...` for every device.

```
<prefix>/<device>/status | stats | snapshot | review | event_snapshot | job   what a device publishes
<prefix>/<device>/prediction | state | event/<head>[/<source>][/<region>]  per-frame answers, states, events
<prefix>/<device>/cmd/<command>  ->  <prefix>/<device>/reply/<command>     commands and replies
<prefix>/<device>/share/<kind>/<name>/manifest | <sha16>/<i>               what a device shares (parcels)
<prefix>/fleet/cmd/<command>                                               a command for every device
<prefix>/fleet/trainers/<trainer>[/progress|done/<device>]                 trainer nodes and their answers
<prefix>/fleet/trainers/<trainer>/share/result/<device>/...                a trainer's result (a parcel)
<prefix>/fleet/revoked                                                     the fleet-signed revocation list
<prefix>/clients/<session>/reply | sync                                    a CLI's own MQTT 5 response topics
```
`<source>` is there only when the daemon serves several (`[[sources]]`), `<region>` only for a region's view.
Every topic a device or trainer writes carries its own name (a broker ACL can then hold it to its tree).
"""

from __future__ import annotations

from typing import Optional


class Topics:
    """One device's tree (or, with `base`, a trainer's)."""

    def __init__(self, prefix: str, device: str, base: str | None = None):
        self.base = base or f"{prefix}/{device}"
        self.status = f"{self.base}/status"
        self.stats = f"{self.base}/stats"
        self.snapshot = f"{self.base}/snapshot"
        self.review = f"{self.base}/review"
        self.event_snapshot = f"{self.base}/event_snapshot"
        self.job = f"{self.base}/job"
        self.commands = f"{self.base}/cmd/+"
        self.fleet_commands = f"{prefix}/fleet/cmd/+"

    def prediction(self, head: str, region: str = "") -> str:
        """`region`: the view's place, `[source/]region` (edged.scene.views.place)."""
        return f"{self.base}/prediction/{head}" + (f"/{region}" if region else "")

    def state(self, head: str, region: str = "") -> str:
        """A head's debounced state (retained, on change); `region` for a region's."""
        return f"{self.base}/state/{head}" + (f"/{region}" if region else "")

    def event(self, head: str, region: str = "") -> str:
        return f"{self.base}/event/{head}" + (f"/{region}" if region else "")

    def command(self, name: str) -> str:
        return f"{self.base}/cmd/{name}"

    def reply(self, command: str) -> str:
        return f"{self.base}/reply/{command}"


class FleetTopics:
    """Topics about more than one device: every device's, the fleet's, trainers', parcels', clients'."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.every_status = f"{prefix}/+/status"
        self.every_stats = f"{prefix}/+/stats"
        self.revoked = f"{prefix}/fleet/revoked"

    def device(self, name: str) -> Topics:
        return Topics(self.prefix, name)

    def every_reply(self, command: str) -> str:
        return f"{self.prefix}/+/reply/{command}"

    def fleet_command(self, command: str) -> str:
        return f"{self.prefix}/fleet/cmd/{command}"

    def is_fleet_command(self, topic: str) -> bool:
        return topic.startswith(f"{self.prefix}/fleet/cmd/")

    def client_reply(self, session: str) -> str:
        """The MQTT 5 response topic a client names; each device answers on it under its own name (`…/reply/<device>`),
        so that a broker account may write replies under its own name only (deploy/mosquitto-acl.conf)."""
        return f"{self.prefix}/clients/{session}/reply"

    def is_client_reply(self, topic: str) -> bool:
        """A response topic of the clients' tree: `<prefix>/clients/<session>/reply`."""
        parts = topic.split("/")
        head = self.prefix.split("/")
        return (len(parts) == len(head) + 3 and parts[:len(head)] == head and parts[len(head)] == "clients"
                and parts[-1] == "reply" and bool(parts[len(head) + 1]))

    def replier(self, topic: str, session: str, claimed: Optional[str] = None) -> Optional[str]:
        """The device a reply came from, by its topic: the last level of `<client_reply>/<device>`, or the device
        level of `<prefix>/<device>/reply/<command>`. Only on the bare `<client_reply>` (where an edged from before
        answered, and which the ACL template lets no device write) does what the reply `claimed` count."""
        mine = self.client_reply(session) + "/"
        if topic == mine[:-1]:
            return claimed if isinstance(claimed, str) else None
        if topic.startswith(mine):
            name = topic[len(mine):]
            return name if name and "/" not in name else None
        head = self.prefix.split("/")
        parts = topic.split("/")
        if len(parts) == len(head) + 3 and parts[:len(head)] == head and parts[-2] == "reply":
            name = parts[len(head)]
            return None if name in ("fleet", "clients") else name
        return None

    def client_sync(self, session: str) -> str:
        return f"{self.prefix}/clients/{session}/sync"

    # -- trainer nodes -------------------------------------------------------------------------------
    def trainer_status(self, name: str = "+") -> str:
        """Where a trainer node keeps its retained status (`+`: every trainer's)."""
        return f"{self.prefix}/fleet/trainers/{name}"

    def trainer(self, name: str) -> Topics:
        """A trainer node's own tree, `<prefix>/fleet/trainers/<name>/...`: its retained status (and will) at the
        root, where devices look for trainers without reading every device's status."""
        topics = Topics(self.prefix, name, base=self.trainer_status(name))
        topics.status = topics.base
        topics.fleet_commands = topics.commands
        return topics

    def trainer_message(self, trainer: str, kind: str, device: str) -> str:
        """A trainer's `progress` or `done` message for one device's job."""
        return f"{self.trainer_status(trainer)}/{kind}/{device}"

    def trainer_messages_for(self, device: str) -> str:
        return f"{self.trainer_status()}/+/{device}"

    # -- parcels ---------------------------------------------------------------------------------------
    def publisher(self, name: str, role: str = "device") -> str:
        """The tree a device's or trainer's parcels live in."""
        return self.trainer_status(name) if role == "trainer" else f"{self.prefix}/{name}"

    @staticmethod
    def share(publisher: str, kind: str, name: str) -> str:
        return f"{publisher}/share/{kind}/{name}"

    def every_share(self, kind: str, name: str = "#", role: str = "device") -> str:
        """Every publisher's parcels of one kind (and name)."""
        tree = self.trainer_status("+") if role == "trainer" else f"{self.prefix}/+"
        return f"{tree}/share/{kind}/{name}" + ("" if name == "#" else "/#")
