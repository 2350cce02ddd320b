"""Replies to commands that came over MQTT: on the MQTT 5 response topic when given, else `<device>/reply/<command>`."""

from __future__ import annotations

import logging

from ..errors import CorrelationId
from .link import IncomingCommand, MqttLink

log = logging.getLogger(__name__)


class MqttResponder:
    """A Responder (see edged.commands.dispatch) publishing `{"id", "device", "command", "ok", "final", "result" | "error"}`."""

    def __init__(self, link: MqttLink, incoming: IncomingCommand):
        self.link = link
        self.incoming = incoming
        self.corr_id: CorrelationId = None

    def _send(self, ok: bool, final: bool, result=None, error=None) -> None:
        payload = {"id": self.corr_id, "device": self.link.device, "command": self.incoming.name[:64], "ok": ok,
                   "final": final}
        if ok:
            payload["result"] = result
        else:
            payload["error"] = error
        self.link.reply(self.incoming, payload)

    def progress(self, result: dict) -> None:
        self._send(True, False, {"progress": result})

    def done(self, result: dict) -> None:
        self._send(True, True, result)

    def fail(self, error: str) -> None:
        log.info("command %s rejected: %s", self.incoming.name[:64], error)
        self._send(False, True, error=error)
