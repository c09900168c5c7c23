"""`eventbus publish`: publish events given as JSON lines (the Go wire format) on stdin."""

from __future__ import annotations

import argparse
import json
import operator
import sys
from typing import Any, BinaryIO, Final, TextIO

from eventbus_core._bus import EventBus
from eventbus_core._errors import SettingsError, WireFormatError
from eventbus_core._event import Event, check_ranges
from eventbus_core._log import scrub
from eventbus_core._overrun import STOP_MARGIN, call_bounded
from eventbus_core._settings import EventBusSettings
from eventbus_core.capabilities import (
    Buffered,
    Describable,
    Flushable,
    capability,
    is_cross_process,
)
from eventbus_core.cli._ending import within_ending
from eventbus_core.cli._lines import TooLong, bounded_lines
from eventbus_core.cli._ops import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    UsageError,
    add_backend_options,
    exit_codes_help,
    open_bus,
    settings_from_args,
    shared_backend_example,
    with_backend_errors,
)
from eventbus_core.cli._output import OnePath, path_argument
from eventbus_core.cli._progress import Progress
from eventbus_core.cli._reach import ONE_SHOT_HELP

__all__ = ["add_parser", "run"]

_EMPTY: Final = Event()
_NO_FIELDS: Final = (
    "not an event: none of its fields is set (RequestID, Method, Path, Status, Duration, "
    "ResponseHeaders, ResponseBody, RequestBody, LogID); give lines in the Go wire format, as "
    "'eventbus tail --json' prints them (a sink's output lines are not)"
)
_ALL_ZERO: Final = (
    "an empty event: it is in the Go wire format, but every field holds its zero value (Go's "
    "zero-value Event); publish events that say something (a RequestID, a Method, a Status...)"
)
_WIRE_NAMES: Final = frozenset(
    name.lower()
    for name in (
        "LogID", "RequestID", "Method", "Path", "Status", "Duration", "ResponseHeaders",
        "ResponseBody", "RequestBody",
    )
)  # fmt: skip


# A sink's payload keys that the wire format spells otherwise: Go's decoder, ignoring unknown
# keys, read a jsonl sink's line (the demo's output) as method, path and status alone, its
# request id, duration and bodies gone without a word (trial 231).
_PAYLOAD_SPELLINGS: Final = {
    "request_id": "requestid",
    "log_id": "logid",
    "duration_ms": "duration",
    "response_headers": "responseheaders",
}


def _payload_line_error(line: str | bytes) -> WireFormatError | None:
    """Why a line that is a sink's payload, not an event, is refused; None if it is not one."""
    try:
        # Each key as the line spells it, by its lower-case form (Go matches in any case).
        keys = {k.lower(): k for k in json.loads(line) if isinstance(k, str)}
    except (ValueError, TypeError):
        return None
    misspelt = sorted(
        keys[k] for k, wire in _PAYLOAD_SPELLINGS.items() if k in keys and wire not in keys
    )
    if not misspelt:
        return None
    one = len(misspelt) == 1
    are, they = ("is a payload's key", "it") if one else ("are a payload's keys", "they")
    return WireFormatError(
        f"a sink's output line, not an event: {', '.join(misspelt)} {are}, which the Go wire "
        f"format spells otherwise (RequestID, LogID, Duration, ResponseHeaders), so {they} "
        "would be lost; give lines as 'eventbus tail --json' prints them"
    )


def _empty_event_error(line: str | bytes) -> WireFormatError:
    """Why a line that decodes to an event with no facts is refused: the Go wire format with
    every field zero, or an object that is not an event at all. Both said "give lines in the
    Go wire format", wrong for Go's own zero-value event (helper-108)."""
    try:
        keys = json.loads(line).keys()
    except (ValueError, AttributeError):
        return WireFormatError(_NO_FIELDS)
    # Go matches field names in any case, as `Event.from_json` does.
    named = any(isinstance(k, str) and k.lower() in _WIRE_NAMES for k in keys)
    return WireFormatError(_ALL_ZERO if named else _NO_FIELDS)


def add_parser(sub: Any) -> None:
    """Register the `publish` command."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "publish",
        help="publish events given as JSON lines on stdin",
        description="Read events as JSON lines in the Go llm-proxy wire format (one object per "
        "line, as 'eventbus tail --json' prints them) and publish them to the configured "
        "backend. Blank lines are skipped; a line that is not a valid event (not JSON, no event "
        "field set, a sink's output line such as the demo's, a value no event can have, such "
        "as Status 99999, or a line longer than 64 MiB, which is never held whole) is reported "
        "on stderr "
        "and skipped (or ends the run with --strict); bytes that are not UTF-8 are read as "
        "U+FFFD, as Go's decoder reads them. Waits for the backend to take each half buffer "
        "(the bus's own size, else OBSERVABILITY_BUFFER_SIZE) and, at the end, everything, "
        "each wait bounded by EVENTBUS_STOP_TIMEOUT; once a wait runs out (the backend is "
        "down), the rest is published without waiting, and what the buffer cannot hold is "
        "dropped and counted.",
        epilog=f"{ONE_SHOT_HELP} "
        + exit_codes_help(
            "an input line was rejected, an event was dropped or lost, or the backend did not "
            "answer",
            delivers=True,
        ),
    )
    parser.add_argument(
        "-f",
        "--file",
        type=path_argument,
        action=OnePath,
        metavar="PATH",
        help="read from this file instead of stdin",
    )
    parser.add_argument(
        "--strict", action="store_true", help="stop at the first invalid line (exit 1)"
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="no progress and no summary on stderr"
    )
    add_backend_options(parser)
    parser.set_defaults(func=run)


@with_backend_errors
def run(args: argparse.Namespace) -> int:
    """Publish every valid line; exit 1 if a line was rejected or an event dropped or lost."""
    settings = settings_from_args(args)
    if args.file is None:
        if sys.stdin is None:
            raise UsageError(
                "standard input is closed: give the events on stdin, or name a file with --file"
            )
        # Bytes, as a file is read: one line that is not UTF-8 must not end the whole input.
        return _publish(args, settings, getattr(sys.stdin, "buffer", sys.stdin))
    try:
        source = args.file.open("rb")
    except FileNotFoundError as exc:
        raise UsageError(f"--file {str(args.file)!r}: no such file") from exc
    except OSError as exc:
        raise UsageError(f"--file {str(args.file)!r}: cannot read it ({exc.strerror})") from exc
    with source:
        return _publish(args, settings, source)


def _without_bom(line: bytes | str) -> bytes | str:
    """`line` without the UTF-8 byte-order mark some editors put at the start of a file."""
    if isinstance(line, bytes):
        return line.removeprefix(b"\xef\xbb\xbf")
    return line.removeprefix("\ufeff")


def _check_destination(bus: EventBus) -> None:
    """Read the backend's figures once (`Describable`) before publishing: a destination set up
    wrong (a Redis key that holds another type of value) is refused now, with exit 2, as
    `stats`, `tail` and `dispatch` refuse it. It was found by the writer instead, which retried
    for the stop's timeout and counted every event lost (exit 1, trial 123).

    Raises:
        SettingsError: the backend says its destination is set up wrong.
    """
    describable = capability(bus, Describable)
    if describable is None:
        return
    try:
        describable.describe()
    except SettingsError:
        bus.stop(timeout=0)
        raise
    except Exception:
        pass


def _buffer_size(bus: object, settings: EventBusSettings) -> int:
    """The events `bus` holds before it drops: its own `buffer_size` (`Buffered`), which a
    plugin may size from a setting of its own, else OBSERVABILITY_BUFFER_SIZE."""
    size: object
    try:
        buffered = capability(bus, Buffered)
        if buffered is None:
            return settings.buffer_size
        size = buffered.buffer_size
    except Exception as exc:  # a property of the plugin's that raises: its fault, said below
        size = f"<{type(exc).__name__} raised>"
    try:
        whole = operator.index(size) if not isinstance(size, bool) else 0  # type: ignore[arg-type]
    except TypeError:
        whole = 0
    if whole > 0:
        # The smaller: a large buffer of the plugin's own may take longer than
        # EVENTBUS_STOP_TIMEOUT to flush half of, which would end the pacing (review 181).
        return min(whole, settings.buffer_size)
    # Said, not taken silently: the old pacing drops most of a file on a smaller buffer
    # (trial 180: 10.7, True, 0).
    print(
        f"eventbus publish: warning: the backend's buffer_size is {size!r}, not a whole number "
        f"of events above 0 (a fault of its plugin): waiting for it every half "
        f"OBSERVABILITY_BUFFER_SIZE ({settings.buffer_size}) instead, so it may drop events",
        file=sys.stderr,
    )
    return settings.buffer_size


def _publish(
    args: argparse.Namespace, settings: EventBusSettings, source: BinaryIO | TextIO
) -> int:
    bus = open_bus(args, settings, "eventbus publish")
    _check_destination(bus)
    if not is_cross_process(bus) and not args.quiet:
        print(
            f"eventbus publish: note: the {settings.backend} backend lives in this process "
            "only; nothing else will see these events (to share them, set "
            f"LLM_PROXY_EVENT_BUS to a shared backend; {shared_backend_example(settings.backend)})",
            file=sys.stderr,
        )
    # publish() never waits, so a fast reader would overrun the bus's buffer and drop. Where
    # the bus can flush, wait for it every half buffer: back-pressure for a batch tool.
    flushable = capability(bus, Flushable)
    flush = flushable.flush if flushable is not None else None
    every = max(1, _buffer_size(bus, settings) // 2)
    rejected = 0
    sent = 0
    interrupted = False
    try:
        with Progress("published", enabled=not (args.quiet or args.json)) as progress:
            for number, raw in enumerate(bounded_lines(source), start=1):
                if isinstance(raw, TooLong):
                    rejected += 1
                    print(f"eventbus publish: line {number}: {raw}", file=sys.stderr)
                    if args.strict:
                        break
                    continue
                line = _without_bom(raw) if number == 1 else raw
                if not line.strip():
                    continue
                try:
                    # Bytes that are not UTF-8 become U+FFFD, as Go's decoder reads them.
                    event = Event.from_json(line)
                    if event == _EMPTY:
                        # Go's decoder ignores unknown keys, so a sink's output line or any
                        # other JSON object decodes to an event with no facts at all.
                        raise _empty_event_error(line)
                    if not event.request_id and (payload := _payload_line_error(line)):
                        raise payload
                    check_ranges(event)
                except ValueError as exc:  # WireFormatError, or a value no event can have
                    rejected += 1
                    # The error quotes the start of the line, which may hold a credential.
                    print(f"eventbus publish: line {number}: {scrub(str(exc))}", file=sys.stderr)
                    if args.strict:
                        break
                    continue
                bus.publish(event)
                sent += 1
                if flush is not None and sent % every == 0 and not flush(settings.stop_timeout):
                    # The backend did not catch up within EVENTBUS_STOP_TIMEOUT: it is down (or
                    # far too slow). Waiting again at every half buffer would hold the command
                    # that long each time (a 200,000-line file: 400 waits); the rest goes in
                    # without waiting, a full buffer drops and counts, and the final stop is
                    # bounded as ever.
                    flush = None
                    print(
                        "eventbus publish: the backend did not catch up within "
                        f"{settings.stop_timeout:g} s (EVENTBUS_STOP_TIMEOUT); publishing the "
                        "rest without waiting for it (what its buffer cannot hold is dropped "
                        "and counted)",
                        file=sys.stderr,
                    )
                progress.advance()
    except KeyboardInterrupt:
        # Ctrl-C: what was accepted is still delivered (bounded) and the figures said, as at
        # the end of the input; the exit code says it was interrupted.
        interrupted = True
    finally:
        # stop() writes what was accepted (bounded) and counts what it could not. A plugin's
        # stop() that overruns its own bound is left behind, with a warning (`_overrun`).
        with within_ending(interrupted=interrupted):
            stopped = call_bounded(
                bus.stop,
                settings.stop_timeout + STOP_MARGIN,
                f"backend {settings.backend!r}: stop()",
            )
    stats = bus.stats()
    published, dropped, lost = stats.published, stats.dropped, stats.lost
    summary = {
        "backend": settings.backend,
        "accepted": published,
        "dropped": dropped,
        "rejected": rejected,
    }
    if lost:  # accepted, then given up by stop() (the backend did not answer in time)
        summary["lost"] = lost
    if interrupted:
        summary["interrupted"] = True
    if args.json:
        print(json.dumps(summary))
    elif not args.quiet:
        print(
            "eventbus publish: "
            + ("interrupted: " if interrupted else "")
            + f"{published} accepted, {dropped} dropped, "
            + (f"{lost} lost (accepted, not written: the log above says why), " if lost else "")
            + f"{rejected} rejected line(s) (backend {settings.backend})",
            file=sys.stderr,
        )
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_FAILED if rejected or dropped or lost or not stopped else EXIT_OK
