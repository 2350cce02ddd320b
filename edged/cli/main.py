"""The `edged` command line: run, collect, import, predict, train, export, versions, events, heads, doctor, config, bench.

Each group of subcommands lives in its own module (`add_parsers(sub)`) and is registered here by name: `edged cmd`
and `edged status` import their own group alone, so that talking to a daemon starts fast on a slow board (the
daemon's, TensorFlow's and OpenCV's modules are never loaded for it)."""

from __future__ import annotations

import argparse
import importlib
import sys

from .. import __version__
from ..errors import ConfigError, EdgedError
from .common import HelpfulParser

GROUPS = ("serving", "teaching", "events", "remote", "fleet", "tools")  # modules of edged.cli, in help order
ALONE = {"cmd": "remote", "status": "remote"}  # subcommands whose group is imported alone


def build_parser(groups: tuple[str, ...] = GROUPS) -> argparse.ArgumentParser:
    parser = HelpfulParser(prog="edged", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"edged {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in groups:
        importlib.import_module(f"{__package__}.{group}").add_parsers(sub)
    return parser


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    word = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser((ALONE[word],) if word in ALONE else GROUPS).parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"config error:\n{e}", file=sys.stderr)
        return 2
    except EdgedError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
