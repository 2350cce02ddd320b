"""Which HTTP requests the teach page obeys: a browser page of another origin is an attacker, token or not.

* The `Host` header must name this daemon (loopback names, an IP address, this machine's host name, `web.host`,
  `web.allowed_hosts`): a page on attacker.example whose name was rebound to 127.0.0.1 gets nothing.
* A request that changes state (anything but GET/HEAD) must come from this origin: `Sec-Fetch-Site` same-origin
  (or none: typed by the user), else an `Origin` equal to this host; a client that is no browser sends neither.
  Its body must be declared JSON, which a cross-origin page cannot send without a CORS preflight this server
  never grants.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Mapping, Optional
from urllib.parse import urlsplit

from ..config import WebConfig

LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


def host_name(host: str) -> str:
    """`Host` header -> the name without port or brackets, lower case."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


class RequestGuard:
    def __init__(self, cfg: WebConfig):
        names = set(LOOPBACK_NAMES) | {h.lower() for h in cfg.allowed_hosts}
        if not is_ip(cfg.host):
            names.add(cfg.host.lower())
        if not is_ip(cfg.host) or not ipaddress.ip_address(cfg.host).is_loopback:
            machine = socket.gethostname().lower()  # bound beyond loopback: the names people reach it by
            names |= {machine, machine.split(".")[0], machine.split(".")[0] + ".local"}
        self.names = names

    def host_allowed(self, host: Optional[str]) -> bool:
        name = host_name(host or "")
        return bool(name) and (name in self.names or is_ip(name))

    def refusal(self, method: str, headers: Mapping[str, str]) -> Optional[str]:
        """Why a request is refused, or None."""
        host = headers.get("Host", "")
        if not self.host_allowed(host):
            return f"host {host[:100]!r} is not a name this teach page serves (web.allowed_hosts)"
        if method.upper() in SAFE_METHODS:
            return None
        site = headers.get("Sec-Fetch-Site")
        if site is not None and site not in ("same-origin", "none"):
            return f"a {site} request cannot change anything here"
        origin = headers.get("Origin")
        if origin is not None and (origin == "null" or urlsplit(origin).netloc.lower() != host.lower()):
            return f"origin {origin[:100]!r} is not this page's"
        content_type = headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            return "commands are JSON: send Content-Type: application/json"
        return None
