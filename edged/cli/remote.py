"""`edged cmd` and `edged status`: a running daemon, over the broker."""

from __future__ import annotations

import argparse
import json
import sys

from ..commands.schema import parse
from ..errors import CommandError
from ..mqtt.requests import BrokerClient, parse_cli_payload
from ..fleet.roster import list_devices
from ..mqtt.topics import Topics
from .common import load, progress_printer, subcommand


def cmd_command(args) -> int:
    """Send a command to a running daemon over the broker and wait for its final reply. The command is validated
    here first, as the daemon will (an unknown name or a bad payload is refused before anything is sent), and a
    device with no retained status is refused within seconds, naming the devices the broker knows."""
    cfg = load(args)
    payload = parse_cli_payload(args.payload)
    try:
        parse(args.name, json.dumps(payload).encode())
    except CommandError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    device = args.device or cfg.device
    topics = Topics(cfg.mqtt.prefix, device)
    where = f"{cfg.mqtt.host}:{cfg.mqtt.port}"
    with BrokerClient(cfg.mqtt) as client:
        last = client.retained(topics.status, 1.0)
        if last is None:
            seen = list_devices(client, cfg.mqtt.prefix, max_wait_s=3.0)
            known = ", ".join(f"{name} ({d.status.get('state', '?')})"
                              for name, d in sorted(seen.items())) or "none"
            print(f"error: no device {device!r} on {where} (no retained status on {topics.status}): nothing would "
                  f"answer {args.name!r}; devices there: {known}", file=sys.stderr)
            return 3
        if last.get("state") != "online":
            print(f"error: device {device!r} is {last.get('state')} (its retained status on {where}): nothing would "
                  f"answer {args.name!r}", file=sys.stderr)
            return 3
        reply = client.request(topics.command(args.name), topics.reply(args.name), payload, args.timeout,
                               progress_printer(), device=device)
    if reply.get("ok"):
        print(json.dumps(reply.get("result"), default=str))
        return 0
    print(f"error: {reply.get('error')}", file=sys.stderr)
    return 1


def cmd_status(args) -> int:
    """The daemon's retained status (its last word, or the broker's `offline` will)."""
    cfg = load(args)
    device = args.device or cfg.device
    with BrokerClient(cfg.mqtt) as client:
        status = client.retained(Topics(cfg.mqtt.prefix, device).status, args.timeout)
    if status is None:
        print(f"error: no status for device {device!r} on {cfg.mqtt.host}:{cfg.mqtt.port}: has it ever run here?",
              file=sys.stderr)
        return 1
    print(json.dumps(status, indent=2 if args.pretty else None, default=str))
    return 0 if status.get("state") == "online" else 3


def add_parsers(sub) -> None:
    p = subcommand(sub, "cmd", cmd_command, help="send a command to a running daemon and wait for its reply",
                       description="edged cmd [--config F] NAME [JSON | --key value ...], e.g. "
                                   "edged cmd capture --label mug --count 20, or edged cmd train '{\"head\": \"classifier\"}'")
    p.add_argument("--device", help="device to command (default: the config's device)")
    p.add_argument("--timeout", type=float, default=600.0,
                   help="seconds to wait without a word from the daemon (every progress message starts it again)")
    p.add_argument("name", help="capture, train, export, activate, rollback, forget, status, heads, review, label, ...")
    p.add_argument("payload", nargs=argparse.REMAINDER, help="a JSON object, or --key value pairs")
    p = subcommand(sub, "status", cmd_status, help="a running daemon's retained status")
    p.add_argument("--device", help="device (default: the config's device)")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the retained status")
    p.add_argument("--pretty", action="store_true", help="indent the JSON")
