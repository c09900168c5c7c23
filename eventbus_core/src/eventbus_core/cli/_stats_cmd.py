"""`eventbus stats`: what the configured backend holds: published, retained, pending, lag.

A backend that is `Describable` (see `eventbus_core.capabilities`) reads its figures from the
backend itself, so they cover every process that publishes or consumes there (for Redis: Go
and Python alike); any other shared backend shows what this process's bus reports.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from typing import Any

from eventbus_core._bus import EventBus
from eventbus_core._log import scrub_data
from eventbus_core._settings import EventBusSettings
from eventbus_core.capabilities import Describable, capability
from eventbus_core.cli._ops import (
    EXIT_OK,
    add_backend_options,
    exit_codes_help,
    open_bus,
    require_shared,
    settings_from_args,
    with_backend_errors,
)
from eventbus_core.cli._reach import ONE_SHOT_HELP

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    """Register the `stats` command."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "stats",
        help="published, dropped, stream length, pending and lag of the configured backend",
        description="Show the figures of the configured backend, read from the backend itself "
        "where it can report them (capability Describable): for a log, the events it holds and "
        "its newest and oldest LogID; for consumer groups, each group's consumers, pending "
        "(delivered, not acknowledged) and lag (not yet delivered). Each backend's docs list "
        "its figures. Drops happen inside each publishing process and are counted there.",
        epilog=f"{ONE_SHOT_HELP} {exit_codes_help('the backend did not answer')}",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    add_backend_options(parser)
    parser.set_defaults(func=run)


def _figures(settings: EventBusSettings, bus: EventBus) -> dict[str, Any]:
    describable = capability(bus, Describable)
    if describable is not None:
        # Masked as `tail` masks the location: a plugin's figures should carry no credential,
        # yet one that returned its URL with the password got it printed (trial 152).
        return {"backend": settings.backend, **scrub_data(dict(describable.describe()))}
    # A backend without figures of its own: what this process's bus reports, said as such
    # (printed alone, its zeros read as the backend's: nothing published, nothing held).
    print(
        f"eventbus stats: backend {settings.backend!r} does not report what it holds (no "
        "Describable capability): these are this process's own figures, not the backend's",
        file=sys.stderr,
    )
    return {"backend": settings.backend, **bus.stats().as_dict()}


def _group_line(group: Mapping[str, Any]) -> str:
    row = dict(group)
    name = row.pop("name", None) or row.pop("group", "?")
    words = {"last_delivered_id": "last delivered"}
    parts = [
        f"{words.get(k, k.replace('_', ' '))} {'?' if v is None else v}" for k, v in row.items()
    ]
    return f"group {name:<14} " + "  ".join(parts)


def _print_text(figures: dict[str, Any]) -> None:
    groups = figures.pop("groups", None)
    note = figures.pop("dropped_note", None)
    first = ("backend", "key", "stream", "exists", "published", "dropped", "length")
    ordered = sorted(figures, key=lambda k: first.index(k) if k in first else len(first))
    for key in ordered:
        value = figures[key]
        shown = "-" if value is None else value
        if key == "dropped" and value is None and note:
            shown = note
        print(f"{key.replace('_', ' '):<20} {shown}")
    if groups is not None:
        if not groups:
            print("groups               none")
        for g in groups:
            print(_group_line(g))


@with_backend_errors
def run(args: argparse.Namespace) -> int:
    """Print the backend's figures."""
    settings = settings_from_args(args)
    bus = open_bus(args, settings, "eventbus stats")
    require_shared(bus, settings, "stats")
    try:
        figures = _figures(settings, bus)
    finally:
        bus.stop(timeout=1.0)
    if args.json:
        print(json.dumps(figures, indent=2, default=str))
    else:
        _print_text(figures)
    return EXIT_OK
