"""`edged events`: the events a daemon kept on disk (list, show one, write its snapshot or clip) and its states."""

from __future__ import annotations

import json
import shutil
import sys

from ..state.events import event_store
from .common import add_config_args, load, subcommand


def cmd_events(args) -> int:
    cfg = load(args)
    store = event_store(cfg)
    if args.events_command == "list":
        for record in store.list(args.limit, args.head, args.label):
            print(json.dumps(record))
        return 0
    record = store.get(args.id)
    print(json.dumps(record))
    if args.snapshot:
        jpeg = store.snapshot(args.id)
        if jpeg is None:
            print(f"event {args.id} has no snapshot", file=sys.stderr)
            return 1
        with open(args.snapshot, "wb") as f:
            f.write(jpeg)
    if args.clip:
        clip = store.clip_path(args.id)
        if clip is None:
            print(f"event {args.id} has no clip (events.clip_s = 0, or it is still being written)", file=sys.stderr)
            return 1
        shutil.copyfile(clip, args.clip)
    return 0


def add_parsers(sub) -> None:
    p = subcommand(sub, "events", cmd_events, help="events kept on disk: list, show (snapshot, clip)", config=False)
    esub = p.add_subparsers(dest="events_command", required=True)
    e = esub.add_parser("list", help="one JSON line per event, newest first")
    add_config_args(e)
    e.add_argument("--limit", type=int, default=20, help="at most this many")
    e.add_argument("--head", help="only this head's events")
    e.add_argument("--label", help="only this label's events")
    e = esub.add_parser("show", help="one event's record; --snapshot/--clip write its files")
    add_config_args(e)
    e.add_argument("id", help="event id (edged events list)")
    e.add_argument("--snapshot", metavar="FILE", help="write the best frame (JPEG) here")
    e.add_argument("--clip", metavar="FILE", help="write the clip here (MP4; WAV for a sound)")
