"""`edged fleet init | id | enroll | join | revoke`: who belongs to the fleet.

The fleet key lives on an admin machine (`init`). A device or trainer prints its public identity (`id`), the admin
certifies it (`enroll`) and the device keeps the certificate (`join`); `enroll --config` does both where the admin
key and the device share a machine. `revoke` publishes the fleet-signed list of names no one takes parcels from.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..config import Config
from ..errors import EdgedError
from ..files import read_json_object, write_atomic
from ..mqtt.requests import BrokerClient
from ..mqtt.topics import FleetTopics
from ..state.layout import StateLayout
from ..fleet.trust import FleetAuthority, Identity, key_id, trainer_identity
from .common import add_config_args, load


def _identity(cfg: Config, trainer: str | None) -> Identity:
    return trainer_identity(cfg, trainer) if trainer else Identity(StateLayout(cfg.state_path).keys, cfg.device, "device")


def _read_json(source: str, what: str) -> dict:
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text()
        data = json.loads(text)
    except (OSError, ValueError) as e:
        raise EdgedError(f"{what}: cannot read {source!r} as JSON ({e})") from None
    if not isinstance(data, dict):
        raise EdgedError(f"{what}: {source!r} is not a JSON object")
    return data


def cmd_init(args) -> int:
    authority = FleetAuthority.create(args.dir)
    print(f"fleet key {key_id(authority.public)} in {Path(args.dir) / 'fleet.key'} (keep it off the devices)\n"
          f"next, for each device or trainer: `edged fleet id --config DEVICE.toml > req.json` there, "
          f"`edged fleet enroll --dir {args.dir} --role device req.json > cert.json` here (--role trainer for a "
          f"trainer), `edged fleet join --config DEVICE.toml "
          f"cert.json` there")
    return 0


def cmd_id(cfg: Config, args) -> int:
    print(json.dumps(_identity(cfg, args.trainer).request()))
    return 0


def cmd_enroll(args) -> int:
    authority = FleetAuthority(args.dir)
    # the certificate carries the fleet's newest revocation list: a device enrolled after a revocation knows it,
    # whatever the broker holds
    revocation = read_json_object(_revocations(args.dir)).get("envelope")
    extra = {"revocation": revocation} if isinstance(revocation, dict) else {}
    if args.config:
        identity = _identity(load(args), args.trainer)
        identity.install({**authority.certify(identity.request(), identity.role, args.days), **extra})
        print(f"{identity.role} {identity.name!r} enrolled in fleet {key_id(authority.public)} "
              f"({identity.folder / 'cert.json'})")
        return 0
    if not args.request:
        raise EdgedError("enroll: give the request file printed by `edged fleet id` (or - for stdin), or --config")
    print(json.dumps({**authority.certify(_read_json(args.request, "enroll"), args.role, args.days), **extra}))
    return 0


def cmd_join(cfg: Config, args) -> int:
    identity = _identity(cfg, args.trainer)
    cert = identity.install(_read_json(args.certificate, "join"))
    print(f"{cert.role} {cert.name!r} joined fleet {key_id(identity.fleet_key)}; restart it to use the certificate")
    return 0


def _revocations(folder) -> Path:
    return Path(folder) / "revoked.json"


def cmd_revoke(cfg: Config, args) -> int:
    authority = FleetAuthority(args.dir)
    kept = read_json_object(_revocations(args.dir))
    names = (set(kept.get("names", [])) - set(args.restore or [])) | set(args.names)
    seq = int(kept.get("seq", 0)) + 1  # devices take a list only when its number is higher than theirs
    envelope = authority.revocation(sorted(names), seq=seq)
    write_atomic(_revocations(args.dir), json.dumps({"names": sorted(names), "seq": seq, "envelope": envelope}).encode())
    with BrokerClient(cfg.mqtt, "revoke") as client:
        info = client.client.publish(FleetTopics(cfg.mqtt.prefix).revoked, json.dumps(envelope), qos=1, retain=True)
        info.wait_for_publish(10)
    print(f"revoked: {', '.join(sorted(names)) or 'nobody'} (retained on {FleetTopics(cfg.mqtt.prefix).revoked})")
    return 0


def add_trust_parsers(fsub) -> None:
    def trainer_arg(p):
        p.add_argument("--trainer", metavar="NAME", help="the identity of trainer node NAME (default: the device's)")

    p = fsub.add_parser("init", help="make the fleet key (on an admin machine, once)")
    p.add_argument("--dir", required=True, help="folder for fleet.key (0600) and fleet.pub")
    p.set_defaults(func=cmd_init)

    p = fsub.add_parser("id", help="print this device's (or trainer's) public identity for `fleet enroll`")
    add_config_args(p)
    trainer_arg(p)
    p.set_defaults(func=lambda args: cmd_id(load(args), args))

    p = fsub.add_parser("enroll", help="certify a device or trainer with the fleet key (prints the certificate)")
    p.add_argument("--dir", required=True, help="the fleet key's folder")
    p.add_argument("--role", choices=["device", "trainer"],
                   help="the role it gets (needed for a request file: what a request claims is not taken)")
    p.add_argument("--days", type=float, default=3650, help="how long the certificate is valid")
    add_config_args(p)
    trainer_arg(p)
    p.add_argument("request", nargs="?", help="the JSON `edged fleet id` printed (- for stdin); with --config, none: "
                                               "the local device is enrolled directly")
    p.set_defaults(func=cmd_enroll)

    p = fsub.add_parser("join", help="keep the certificate `fleet enroll` made for this device (or trainer)")
    add_config_args(p)
    trainer_arg(p)
    p.add_argument("certificate", help="the certificate JSON file (- for stdin)")
    p.set_defaults(func=lambda args: cmd_join(load(args), args))

    p = fsub.add_parser("revoke", help="publish the fleet-signed list of revoked devices and trainers (retained)")
    p.add_argument("--dir", required=True, help="the fleet key's folder (it keeps the list)")
    p.add_argument("--restore", action="append", metavar="NAME", help="take NAME off the list")
    add_config_args(p)
    p.add_argument("names", nargs="*", help="names to revoke")
    p.set_defaults(func=lambda args: cmd_revoke(load(args), args))


