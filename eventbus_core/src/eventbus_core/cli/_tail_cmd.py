"""`eventbus tail`: follow events live from the configured backend, like `tail -f`."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any, Final

from eventbus_core._bus import EventBus
from eventbus_core._event import Event
from eventbus_core._settings import EventBusSettings
from eventbus_core._subscription import Subscription, SubscriptionClosed
from eventbus_core.capabilities import ReadableLog, capability
from eventbus_core.cli._ops import (
    EXIT_OK,
    UsageError,
    add_backend_options,
    exit_codes_help,
    flag_terms,
    format_event,
    open_bus,
    require_shared,
    settings_from_args,
    shown_location,
    with_backend_errors,
)
from eventbus_core.cli._printing import printable
from eventbus_core.cli._reach import LONG_RUNNING_HELP, BackendWatch
from eventbus_core.dispatch._setup import redactor_from_settings
from eventbus_core.redact._redact import NO_REDACTION, Redactor

__all__ = ["add_parser", "run"]


# More than any log holds; far past it, a backend may refuse the range ("value is not an integer
# or out of range"), which the command reported as a backend unreachable or misconfigured.
_LAST_MAX: Final = 1_000_000_000


def add_parser(sub: Any) -> None:
    """Register the `tail` command."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "tail",
        help="follow events live from the configured backend",
        description="Print every event appended to the configured backend (one shared "
        "between processes: 'eventbus plugins' lists the installed ones) from now on, one "
        "readable line "
        "each: LogID, status, method, path, duration, body sizes, request id (control "
        "characters written as \\xNN). Runs until "
        "interrupted (Ctrl-C) or --count events. "
        "It only reads: nothing is consumed or acknowledged.",
        epilog=f"{LONG_RUNNING_HELP} {exit_codes_help('the backend did not answer at the start')}",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print each event as one line of wire-format JSON (what 'publish' reads)",
    )
    parser.add_argument(
        "-n",
        "--last",
        type=int,
        default=0,
        metavar="N",
        help="first print the N newest events already in the log (backends that keep one); "
        "a live event identical to one of those, arriving within 2 s after them, is taken for "
        "it and not printed again",
    )
    parser.add_argument(
        "-c",
        "--count",
        type=int,
        metavar="N",
        help="exit after N live events (N >= 1; without --count, follow until Ctrl-C)",
    )
    parser.add_argument(
        "--no-redact",
        action="store_true",
        help="print events as stored, credentials included (by default headers, query strings "
        "and bodies are redacted as for sinks; EVENTBUS_REDACT=false does the same)",
    )
    add_backend_options(parser)
    parser.set_defaults(func=run)


def _emit(event: Event, as_json: bool, redactor: Redactor) -> None:
    shown = printable(event, redactor)
    line = shown.to_json().decode() if as_json else format_event(shown, stored=event)
    # Flush per line: a reader at the other end of a pipe wants each event as it comes.
    print(line, flush=True)


@with_backend_errors
def run(args: argparse.Namespace) -> int:
    """Print events as they arrive; exit 0 after --count events or at the end of the stream."""
    settings = settings_from_args(args)
    if not 0 <= args.last <= _LAST_MAX:
        raise UsageError(
            f"--last {args.last}: give a number from 0 to {_LAST_MAX:,} of past events to show "
            "first"
        )
    if args.count is not None and args.count < 1:
        raise UsageError(
            f"--count {args.count}: give N >= 1 to stop after N events, or leave --count out "
            "to follow until Ctrl-C"
        )
    bus = open_bus(args, settings, "eventbus tail")
    require_shared(bus, settings, "tail")
    sub = bus.subscribe("eventbus-tail")  # before the history: nothing falls in between
    try:
        with BackendWatch(bus, command="eventbus tail", say=flag_terms(args)):
            _follow(args, settings, bus, sub)
    finally:
        # Before the subscription closes: a closed one's figures leave the bus's (NATS's
        # undecodable count went unsaid, trial 142). At Ctrl-C and SIGTERM too.
        _say_what_was_missed(bus, sub)
        sub.close()
        bus.stop(timeout=1.0)
    return EXIT_OK


def _say_what_was_missed(bus: EventBus, sub: Subscription) -> None:
    """One line on stderr with the events tail could not show: those the backend trimmed
    before it read them, and entries it could not decode. The subscription's warnings come at
    most every few seconds: a burst trimmed at once showed 318 of 2,762 missed, and nothing
    said undecodable entries were skipped (trial 140)."""
    try:
        missed = sub.missed
        extra = bus.stats().extra
    except Exception:  # the backend is gone: what it said before stands
        return
    undecodable = extra.get("undecodable", 0) if isinstance(extra, Mapping) else 0
    parts = []
    if missed:
        parts.append(f"{missed} event(s) were trimmed from the log before tail read them")
    if isinstance(undecodable, int) and undecodable:
        were = "entry was" if undecodable == 1 else "entries were"
        parts.append(f"{undecodable} undecodable {were} skipped")
    if parts:
        print(f"eventbus tail: {'; '.join(parts)}", file=sys.stderr, flush=True)


# Seconds after the history is printed during which a live event may be one of the history's,
# delivered again: the subscription hands those over first, at once.
_OVERLAP_WINDOW: Final = 2.0


def _identity(event: Event) -> tuple[object, ...]:
    """What tells an event read from the history from the same event delivered live."""
    return (
        event.log_id,
        event.request_id,
        event.method,
        event.path,
        event.status,
        event.duration_ns,
    )


def _follow(
    args: argparse.Namespace, settings: EventBusSettings, bus: EventBus, sub: Subscription
) -> None:
    history: list[Event] = []
    if args.last:
        log = capability(bus, ReadableLog)
        if log is None:
            print(
                f"eventbus tail: --last is not supported by backend {settings.backend!r} "
                "(it keeps no log it can read again)",
                file=sys.stderr,
            )
        else:
            history = log.newest(args.last)
    location = shown_location(bus)
    where = f" {location}" if location else ""
    # On stderr, so stdout stays pure data; it also tells scripts that tail is listening.
    print(
        f"eventbus tail: following {settings.backend}{where} (Ctrl-C to stop)",
        file=sys.stderr,
        flush=True,
    )
    redactor = NO_REDACTION if args.no_redact else redactor_from_settings(settings)
    seen = 0
    # The history's events that the subscription may deliver again: those appended between
    # subscribing and reading the history, which it delivers first, in the log's order, at
    # once. Each is skipped once, until the first live event the history did not print or
    # `_OVERLAP_WINDOW` seconds after the history: from then on the events are new (a copy of an
    # event pushed again later is printed). Not "LogID <= the newest shown": LogIDs follow no
    # order across writers (the Go proxy's, or an old counter's, are larger, or negative), and
    # every later event was skipped (trials 123, 127).
    shown = Counter(_identity(event) for event in history)
    try:
        for event in history:
            _emit(event, args.json, redactor)
        overlap_until = time.monotonic() + _OVERLAP_WINDOW
        while args.count is None or seen < args.count:
            try:
                event = sub.get()
            except SubscriptionClosed:
                break
            if shown and time.monotonic() > overlap_until:
                shown.clear()
            if shown:
                key = _identity(event)
                if shown[key]:
                    shown[key] -= 1
                    if not shown[key]:
                        del shown[key]
                    continue  # already printed from the history
                shown.clear()  # past the overlap: whatever comes now is new
            _emit(event, args.json, redactor)
            seen += 1
    except BrokenPipeError:
        # `eventbus tail | head`: the reader left, a normal end. Point stdout at devnull so
        # the interpreter's final flush does not fail as well.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    # Gaps (events trimmed away before we read them) are logged by the subscription, and
    # their total said at the end (`_say_what_was_missed`).
