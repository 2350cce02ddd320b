"""The `edged` command line: run, collect, import, predict, train, export, versions, events, heads, doctor, config, bench.

Each group of subcommands lives in its own module and registers itself here."""

from __future__ import annotations

import argparse
import sys

from .. import __version__
from ..errors import ConfigError, EdgedError
from .common import HelpfulParser
from .events import add_parsers as add_events_parsers
from .fleet import add_parsers as add_fleet_parsers
from .remote import add_parsers as add_remote_parsers
from .serving import add_parsers as add_serving_parsers
from .teaching import add_parsers as add_teaching_parsers
from .tools import add_parsers as add_tool_parsers


def build_parser() -> argparse.ArgumentParser:
    parser = HelpfulParser(prog="edged", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"edged {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    add_serving_parsers(sub)
    add_teaching_parsers(sub)
    add_events_parsers(sub)
    add_remote_parsers(sub)
    add_fleet_parsers(sub)
    add_tool_parsers(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
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
