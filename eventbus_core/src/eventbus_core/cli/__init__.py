"""The `eventbus` command line.

Each sub-command lives in its own module exposing `add_parser(subparsers)`, which registers the
command and sets `func(args) -> int` as its handler; `COMMANDS` lists those modules in the
order `--help` shows them.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import Final

__all__ = ["build_parser", "main"]

COMMANDS: Final = (
    "eventbus_core.cli._plugins_cmd",
    "eventbus_core.cli._demo_cmd",
    "eventbus_core.cli._tail_cmd",
    "eventbus_core.cli._publish_cmd",
    "eventbus_core.cli._stats_cmd",
    "eventbus_core.cli._replay_cmd",
    "eventbus_core.cli._dispatch_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every available sub-command."""
    parser = argparse.ArgumentParser(
        prog="eventbus",
        description="Observability events for LLM proxies: inspect plugins, run the demo, "
        "and operate the pipeline.",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log more (-v info, -vv debug)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMANDS:
        module = importlib.import_module(module_name)
        module.add_parser(sub)
    return parser


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit code."""
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:
        # Reported by the sub-command's parser, so the usage shown is the command's own.
        commands = _subcommands(parser)
        (commands.get(args.command) or parser).error(f"unrecognized arguments: {' '.join(extras)}")
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        code: int = func(args)
    except KeyboardInterrupt:
        return 130
    except (LookupError, ValueError, ImportError) as exc:
        # Configuration mistakes: say what is wrong without a traceback.
        print(f"eventbus: error: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    raise SystemExit(main())
