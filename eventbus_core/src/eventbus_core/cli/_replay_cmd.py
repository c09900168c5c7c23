"""`eventbus replay`: read a range of the Redis log or stream again and send it on.

Sources (the layout in `docs/backends/`):
- the LIST log (`redis` backend): selected by LogID; the list holds no timestamps;
- the stream (`redis-streams` backend): selected by LogID or by time, since a stream entry id
  is the millisecond it was added.

Destinations: a sink plugin (`--sink NAME --sink-opt key=value`), or, without `--sink`, stdout
as JSON lines in the wire format (what `eventbus publish` reads back).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from eventbus_core._errors import WireFormatError
from eventbus_core._event import Event
from eventbus_core._log import add_patterns, scrub
from eventbus_core._settings import EventBusSettings
from eventbus_core._stream_entry import event_from_stream_entry
from eventbus_core.cli._ops import (
    EXIT_CODES_HELP,
    EXIT_FAILED,
    EXIT_OK,
    UsageError,
    add_backend_options,
    open_bus,
    redis_client,
    refuse_memory,
    settings_from_args,
    with_redis_errors,
)
from eventbus_core.cli._progress import Progress
from eventbus_core.cli._reach import ONE_SHOT_HELP
from eventbus_core.dispatch._payload import PayloadPreparer
from eventbus_core.dispatch._setup import build_sinks

__all__ = ["add_parser", "parse_time", "read_log", "read_stream", "run"]

_PAGE = 1000
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d)$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def add_parser(sub: Any) -> None:
    """Register the `replay` command."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "replay",
        help="send a range of the Redis log or stream to a sink again",
        description="Read the events of a LogID range (log or stream) or a time range (stream "
        "only: the list log keeps no timestamps) from Redis, oldest first, and send them to a "
        "sink, or print them as JSON lines when no --sink is given. Reading does not consume: "
        "consumer groups are left as they are.",
        epilog="times: ISO 8601 ('2026-01-31T12:00:00Z'; without a zone, UTC) or an age such "
        "as 90s, 15m, 2h, 1d. A range whose start is after its end is refused (exit 2). "
        f"{ONE_SHOT_HELP} {EXIT_CODES_HELP}",
    )
    select = parser.add_argument_group("range (inclusive; default: everything retained)")
    select.add_argument("--from-id", type=int, metavar="LOGID", help="first LogID")
    select.add_argument("--to-id", type=int, metavar="LOGID", help="last LogID")
    select.add_argument("--since", type=parse_time, metavar="TIME", help="stream only: from")
    select.add_argument("--until", type=parse_time, metavar="TIME", help="stream only: until")
    select.add_argument(
        "--source",
        choices=["log", "stream"],
        help="read the list log or the stream (default: by backend; time needs the stream)",
    )
    out = parser.add_argument_group("destination")
    out.add_argument("--sink", metavar="NAME", help="sink plugin to send to (see 'plugins')")
    out.add_argument(
        "--sink-opt",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option of the sink (repeatable), e.g. path=events.jsonl",
    )
    out.add_argument(
        "--batch-size", type=int, default=100, metavar="N", help="events per send (100)"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="count what would be replayed, send nothing"
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="no progress and no summary on stderr"
    )
    add_backend_options(parser)
    parser.set_defaults(func=run)


def parse_time(text: str) -> datetime:
    """Parse an ISO 8601 time (UTC if no zone) or an age like `15m` (that long ago).

    Raises:
        argparse.ArgumentTypeError: neither form.
    """
    match = _RELATIVE.match(text.strip())
    if match:
        amount, unit = float(match.group(1)), _UNITS[match.group(2)]
        return datetime.now(UTC) - timedelta(**{unit: amount})
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time: use ISO 8601 (2026-01-31T12:00:00Z) or an age (15m, 2h)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _in_range(event: Event, first: int | None, last: int | None) -> bool:
    if first is not None and event.log_id < first:
        return False
    return last is None or event.log_id <= last


def read_log(client: Any, key: str, first: int | None, last: int | None) -> tuple[list[Event], int]:
    """Events of the LIST log at `key` with LogID in [first, last], oldest first.

    Returns the events and the number of undecodable entries skipped. The list is read from its
    newest end in pages. Entries pushed meanwhile shift it, so pages may overlap: LogIDs already
    seen are skipped. A Go writer stamps (INCR) and pushes (LPUSH) in two commands, so the list
    is only roughly in LogID order: reading stops after a page entirely older than the range,
    and the result is sorted by LogID.
    """
    found: list[Event] = []
    seen: set[int] = set()
    bad = 0
    start = 0
    while True:
        page = client.lrange(key, start, start + _PAGE - 1)
        if not page:
            break
        newest_on_page = 0
        for raw in page:
            try:
                event = Event.from_json(raw)
            except WireFormatError:
                bad += 1
                continue
            if event.log_id:
                if event.log_id in seen:
                    continue  # read on the previous page already (the list grew at the head)
                seen.add(event.log_id)
                newest_on_page = max(newest_on_page, event.log_id)
            if _in_range(event, first, last):
                found.append(event)
        if first is not None and 0 < newest_on_page < first:
            break  # everything further is older than the range
        start += _PAGE
    found.reverse()  # oldest first; events without a LogID keep their list order
    found.sort(key=lambda e: e.log_id)
    return found, bad


def _stream_id(moment: datetime | None, default: str) -> str:
    if moment is None:
        return default
    return str(int(moment.timestamp() * 1000))


def read_stream(
    client: Any,
    stream: str,
    first: int | None,
    last: int | None,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Iterator[Event | None]:
    """Yield the events of `stream` in order, within the LogID and time ranges.

    Yields None for an entry that does not decode (so the caller can count it).
    """
    start = _stream_id(since, "-")
    end = _stream_id(until, "+")
    if until is not None:
        end += "-18446744073709551615"  # every entry of that last millisecond
    while True:
        entries = client.xrange(stream, start, end, count=_PAGE)
        if not entries:
            return
        for entry_id, fields in entries:
            try:
                event: Event | None = event_from_stream_entry(entry_id, fields)
            except WireFormatError:
                event = None
            if event is None:
                yield None
            elif _in_range(event, first, last):
                yield event
        last_id = entries[-1][0]
        start = "(" + (last_id.decode() if isinstance(last_id, bytes) else last_id)


class _SinkTarget:
    """A sink plugin fed as the dispatcher feeds it, by the dispatcher's own `PayloadPreparer`.

    The transformer and redaction come from the same settings as `eventbus dispatch`
    (`EVENTBUS_TRANSFORMER`, `EVENTBUS_BODY_*`, `EVENTBUS_REDACT*`), with the same fallback when
    the transformer raises, so a replayed event reaches the sink in the same shape as it did
    the first time. The sink's async methods run on a private loop.
    """

    def __init__(self, settings: EventBusSettings, name: str, options: dict[str, str]) -> None:
        (self.sink,) = build_sinks(settings, [(name, options)])
        self.name = name
        self.payload = PayloadPreparer.from_settings(settings)
        add_patterns(self.payload.redactor.extra_patterns)
        self.loop = asyncio.new_event_loop()

    def send(self, batch: list[Event]) -> None:
        """Send one batch; raises what the sink raises."""
        self.loop.run_until_complete(self.sink.send([self.payload(e) for e in batch]))

    def close(self) -> None:
        """Close the sink and the loop."""
        try:
            self.loop.run_until_complete(self.sink.close())
        finally:
            self.loop.close()


def _options(pairs: list[str]) -> dict[str, str]:
    options: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--sink-opt {pair!r}: write it as KEY=VALUE, e.g. path=out.jsonl")
        options[key.strip()] = value
    return options


def _check(args: argparse.Namespace, settings: EventBusSettings) -> str:
    refuse_memory(settings, "replay")
    source: str = args.source or ("stream" if settings.backend == "redis-streams" else "log")
    if settings.backend not in ("redis", "redis-streams") and args.source is None:
        raise UsageError(
            f"replay reads Redis, but the backend is {settings.backend!r}: pass --source log "
            "or --source stream with --redis-url"
        )
    if source == "log" and (args.since or args.until):
        raise UsageError(
            "the list log keeps no timestamps: select it by --from-id/--to-id, or read the "
            "stream (--source stream) to select by time"
        )
    if args.batch_size < 1:
        raise UsageError(f"--batch-size {args.batch_size}: must be at least 1")
    for label, value in (("--from-id", args.from_id), ("--to-id", args.to_id)):
        if value is not None and value < 0:
            raise UsageError(f"{label} {value}: must be >= 0")
    _check_range(args)
    return source


def _check_range(args: argparse.Namespace) -> None:
    """Refuse a range that ends before it starts: it would select nothing, silently."""
    if args.from_id is not None and args.to_id is not None and args.from_id > args.to_id:
        raise UsageError(
            f"--from-id {args.from_id} is after --to-id {args.to_id}: the range would select "
            "nothing. Give the lower LogID to --from-id (both ends are inclusive)"
        )
    if args.since is not None and args.until is not None and args.since > args.until:
        raise UsageError(
            f"--since ({args.since.isoformat(timespec='seconds')}) is after --until "
            f"({args.until.isoformat(timespec='seconds')}): "
            "the range would select nothing. Give the earlier time to --since; an age such as "
            "2h means 2 hours ago, so --since 2h --until 1h is the hour before the last"
        )


def _events(
    args: argparse.Namespace, settings: EventBusSettings, source: str
) -> tuple[Iterator[Event | None], int | None]:
    client = redis_client(settings)
    if source == "log":
        events, bad = read_log(client, settings.redis_key, args.from_id, args.to_id)
        items: list[Event | None] = [None] * bad
        items.extend(events)
        return iter(items), len(events)
    it = read_stream(
        client, settings.redis_stream, args.from_id, args.to_id, since=args.since, until=args.until
    )
    return it, None


@with_redis_errors
def run(args: argparse.Namespace) -> int:
    """Replay the range; exit 1 if an entry could not be decoded or a send failed."""
    settings = settings_from_args(args)
    source = _check(args, settings)
    options = _options(args.sink_opt)
    if options and not args.sink:
        raise UsageError("--sink-opt needs --sink")
    target = _SinkTarget(settings, args.sink, options) if args.sink and not args.dry_run else None
    try:
        open_bus(args, settings, "eventbus replay").stop(timeout=1.0)  # answers, or exit 1 now
    except BaseException:
        if target is not None:
            target.close()
        raise
    events, total = _events(args, settings, source)
    undecodable = 0
    sent = 0
    failed = 0
    batch: list[Event] = []

    def deliver() -> None:
        nonlocal sent, failed
        if target is None:
            if not args.dry_run:
                for event in batch:
                    sys.stdout.write(event.to_json().decode() + "\n")
                sys.stdout.flush()
            sent += len(batch)
        else:
            try:
                target.send(batch)
                sent += len(batch)
            except Exception as exc:  # a sink's failure is reported, then the run goes on
                failed += len(batch)
                print(
                    f"eventbus replay: sink {target.name} failed: {scrub(str(exc))}",
                    file=sys.stderr,
                )
        batch.clear()

    show = not args.quiet  # on stderr: stdout stays for the events
    try:
        with Progress("replayed", total, enabled=show) as progress:
            for event in events:
                if event is None:
                    undecodable += 1
                    continue
                batch.append(event)
                if len(batch) >= args.batch_size:
                    n = len(batch)
                    deliver()
                    progress.advance(n)
            if batch:
                n = len(batch)
                deliver()
                progress.advance(n)
    finally:
        if target is not None:
            target.close()
    if not args.quiet:
        where = f"sink {args.sink}" if args.sink else "stdout"
        verb = "would replay" if args.dry_run else "replayed"
        print(
            f"eventbus replay: {verb} {sent} event(s) from the {source} to {where}; "
            f"{failed} failed, {undecodable} undecodable entries skipped",
            file=sys.stderr,
        )
    return EXIT_FAILED if failed or undecodable else EXIT_OK
