"""`edged fleet ls | send | publish`: the devices on the broker, and commands answered per device."""

from __future__ import annotations

import argparse
import json
import time

from ..config import Config
from ..errors import EdgedError
from ..mqtt.requests import BrokerClient, parse_cli_payload
from ..fleet.roster import Device, Outcome, list_devices, send
from .common import add_config_args, load
from .enrol import add_trust_parsers


def _age(ts) -> str:
    if not isinstance(ts, (int, float)):
        return "-"
    age = max(time.time() - ts, 0)
    return f"{age:.0f}s ago" if age < 120 else (f"{age / 60:.0f}m ago" if age < 7200 else f"{age / 3600:.0f}h ago")


def _models(row: dict) -> str:
    parts = [f"{name}:{m.get('version')}@{(m.get('sha256') or '')[:8]}" for name, m in sorted(row["models"].items())]
    parts += [f"{name}:{v}" for name, v in sorted(row["head_versions"].items()) if name not in row["models"]]
    return ",".join(parts) or "-"


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows)


def device_table(devices: dict[str, Device]) -> str:
    rows = [["DEVICE", "STATE", "VERSION", "SOURCE", "ACTIVE", "MODELS", "EXAMPLES", "FPS", "P99 MS", "LAST SEEN"]]
    for name in sorted(devices):
        r = devices[name].row()
        examples = r["examples"] if isinstance(r["examples"], dict) else {}
        source = ", ".join(f"{k} {v}" for k, v in r["sources"].items()) if r["sources"] else str(r["source"] or "-")
        rows.append([name, r["state"], str(r["version"] or "-"), source, ",".join(r["active"]) or "-",
                     _models(r), f"{sum(examples.values())} ({len(examples)} labels)" if examples else "0",
                     "-" if r["fps"] is None else f"{r['fps']:.1f}", "-" if r["p99_ms"] is None else f"{r['p99_ms']:.1f}",
                     _age(r["last_seen"])])
    return table(rows)


def outcome_table(outcomes: dict[str, Outcome]) -> str:
    rows = [["DEVICE", "RESULT", "MS", "DETAIL"]]
    for name in sorted(outcomes):
        o = outcomes[name]
        detail = o.error if o.ok is False else ("" if o.ok is None else json.dumps(o.result, default=str))
        rows.append([name, o.state, "-" if o.ms is None else f"{o.ms:.0f}", (detail or "")[:100]])
    return table(rows)


def cmd_ls(cfg: Config, args) -> int:
    with BrokerClient(cfg.mqtt, "fleet") as client:
        while True:
            trainers: dict = {}
            devices = list_devices(client, cfg.mqtt.prefix, max_wait_s=args.timeout, trainers=trainers)
            if args.json:
                print(json.dumps([devices[n].row() for n in sorted(devices)], default=str), flush=True)
            else:
                if args.watch:
                    print("\033[2J\033[H", end="")
                print(device_table(devices) if devices else f"no devices on {cfg.mqtt.host}:{cfg.mqtt.port} "
                      f"under {cfg.mqtt.prefix}/", flush=True)
                if trainers:
                    print("trainers: " + ", ".join(f"{name} ({t.get('state', '?')}, {t.get('jobs_done', 0)} jobs done"
                                                   + (", busy" if t.get("job") else "")
                                                   + ("" if t.get("announce") else ", unsigned") + ")"
                                                   for name, t in sorted(trainers.items())), flush=True)
            if not args.watch:
                return 0
            time.sleep(args.watch)


def send_and_report(cfg: Config, command: str, payload: dict, devices: list[str], timeout: float, as_json: bool) -> int:
    with BrokerClient(cfg.mqtt, "fleet") as client:
        known = None
        if not devices:
            known = [n for n, d in list_devices(client, cfg.mqtt.prefix, max_wait_s=min(timeout, 3.0)).items() if d.online]
        outcomes = send(client, cfg.mqtt.prefix, command, payload, devices or None, timeout, known)
    if as_json:
        print(json.dumps([{"device": o.device, "result": o.state, "ms": o.ms, "reply": o.result if o.ok else o.error}
                          for o in (outcomes[n] for n in sorted(outcomes))], default=str))
    else:
        print(outcome_table(outcomes) if outcomes else "no device answered and none is online")
    failed = [o for o in outcomes.values() if not o.ok]
    return 1 if failed or not outcomes else 0


def cmd_send(cfg: Config, args) -> int:
    payload = parse_cli_payload(args.payload)
    if not isinstance(payload, dict):
        raise EdgedError("the payload must be a JSON object")
    return send_and_report(cfg, args.name, payload, args.device or [], args.timeout, args.json)


def cmd_publish(cfg: Config, args) -> int:
    payload = {"model": args.model, "kind": args.kind}
    if args.version:
        payload["version"] = args.version
    return send_and_report(cfg, "publish", payload, [args.device], args.timeout, args.json)


def add_parsers(sub) -> None:
    p = sub.add_parser("fleet", help="the devices on the broker: list them, command them, share models")
    fsub = p.add_subparsers(dest="fleet_command", required=True)

    ls = fsub.add_parser("ls", help="every device from its retained status: state, models, examples, fps, p99")
    add_config_args(ls)
    ls.add_argument("--json", action="store_true", help="one JSON list instead of the table")
    ls.add_argument("--watch", type=float, default=0.0, metavar="S", help="refresh every S seconds")
    ls.add_argument("--timeout", type=float, default=5.0, help="longest wait for the retained statuses")
    ls.set_defaults(func=lambda args: cmd_ls(load(args), args))

    s = fsub.add_parser("send", help="send a command and collect one reply per device",
                        description="edged fleet send [options] NAME [JSON | --key value ...], e.g. edged fleet send status, "
                                    "edged fleet send --device cam2 capture --label mug (options before NAME); "
                                    "exit code 1 when a device answered with an error or not at all")
    add_config_args(s)
    s.add_argument("--device", action="append", help="a device to command (repeatable); default every device")
    s.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the replies")
    s.add_argument("--json", action="store_true", help="one JSON list instead of the table")
    s.add_argument("name", help="the command: status, capture, train, publish, share, ...")
    s.add_argument("payload", nargs=argparse.REMAINDER, help="a JSON object, or --key value pairs")
    s.set_defaults(func=lambda args: cmd_send(load(args), args))

    pub = fsub.add_parser("publish", help="make a device publish a model (or head version) to the fleet")
    add_config_args(pub)
    pub.add_argument("--device", required=True, help="the device whose model is shared")
    pub.add_argument("--kind", choices=["model", "head"], default="model",
                     help="model: an exported TFLite model; head: a head version trained on embeddings")
    pub.add_argument("--version", help="the version to share (default the current one)")
    pub.add_argument("--timeout", type=float, default=60.0)
    pub.add_argument("--json", action="store_true")
    pub.add_argument("model", help="the model (head) name, e.g. classifier")
    pub.set_defaults(func=lambda args: cmd_publish(load(args), args))

    add_trust_parsers(fsub)

