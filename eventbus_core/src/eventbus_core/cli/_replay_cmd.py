"""`eventbus replay`: read a range of the backend's log again and send it on.

The source is the configured bus's log (capability `ReadableLog`), selected by LogID, and by
time where the log keeps when each entry came (`time_index`: the Redis stream, NATS); a
backend that keeps several logs (`LogSources`: the Redis list `log` and `stream`) reads the
one `--source` names.

Destinations: a sink plugin (`--sink NAME --sink-opt key=value`), or, without `--sink`, stdout
as JSON lines in the wire format (what `eventbus publish` reads back).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from eventbus_core._bus import EventBus
from eventbus_core._errors import (
    PermanentSinkError,
    TransientSinkError,
    clipped,
    message_of,
    refused_alone,
    send_failure,
    stored_before_failing,
)
from eventbus_core._event import COUNTED_LOG_IDS_BELOW, Event
from eventbus_core._log import add_patterns, scrub
from eventbus_core._overrun import cancel_bounded
from eventbus_core._settings import EventBusSettings
from eventbus_core._sink import sink_figures
from eventbus_core.capabilities import LogSources, ReadableLog, capability
from eventbus_core.cli._ops import (
    EXIT_FAILED,
    EXIT_OK,
    UsageError,
    add_backend_options,
    exit_codes_help,
    open_bus,
    require_shared,
    settings_from_args,
    shown_location,
    with_backend_errors,
)
from eventbus_core.cli._output import OnePath
from eventbus_core.cli._printing import printable
from eventbus_core.cli._progress import Progress
from eventbus_core.cli._reach import ONE_SHOT_HELP
from eventbus_core.cli._replay_dead_letters import check_dead_letter_flags, replay_dead_letters
from eventbus_core.cli._sink_options import SinkOptions
from eventbus_core.dispatch._dispatcher import close_sink
from eventbus_core.dispatch._payload import PayloadPreparer
from eventbus_core.dispatch._setup import (
    build_sinks,
    redactor_from_settings,
    retry_policy_from_settings,
    transform_from_settings,
)
from eventbus_core.redact._redact import NO_REDACTION, Redactor

__all__ = ["add_parser", "parse_time", "run"]

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d)$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def add_parser(sub: Any) -> None:
    """Register the `replay` command."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "replay",
        help="send a range of the backend's log (any backend that keeps one) to a sink again",
        description="Read the events of a LogID range or a time range (where the log keeps "
        "when each entry came; one that does not says so, and which would) from the backend's "
        "log, oldest first, and send them to a sink, or print them as JSON lines when no "
        "--sink is given. Reading does not consume: consumer groups are left as they are. "
        "A sink gets each batch as from the dispatcher: what it says it stored counts, a "
        "transient failure is retried (EVENTBUS_RETRIES, with backoff: a batch that keeps "
        "failing takes seconds), and each failure names its LogIDs. Interrupted, or when "
        "stdout's reader leaves, the summary says the LogID to go on from (--from-id).",
        epilog="times: ISO 8601 ('2026-01-31T12:00:00Z'; without a zone, UTC) or an age such "
        "as 90s, 15m, 2h, 1d. A range whose start is after its end is refused (exit 2). "
        f"{ONE_SHOT_HELP} "
        + exit_codes_help(
            "an entry could not be decoded, a sink refused or failed a send, or the backend "
            "did not answer"
        ),
    )
    select = parser.add_argument_group("range (inclusive; default: everything retained)")
    select.add_argument("--from-id", type=int, metavar="LOGID", help="first LogID")
    select.add_argument("--to-id", type=int, metavar="LOGID", help="last LogID")
    select.add_argument("--since", type=parse_time, metavar="TIME", help="from (time-indexed logs)")
    select.add_argument(
        "--until", type=parse_time, metavar="TIME", help="until (time-indexed logs)"
    )
    select.add_argument(
        "--source",
        metavar="NAME",
        help="where the backend keeps several logs (a wrong name lists them), the one "
        "to read (default: the backend's own)",
    )
    letters = parser.add_argument_group(
        "dead letters (instead of the log: a memory bus keeps none, and scattered LogIDs "
        "are one range each)"
    )
    letters.add_argument(
        "--dead-letters",
        metavar="FILE",
        action=OnePath,
        help="send the payloads of a dead-letter file (EVENTBUS_DEAD_LETTER_PATH) again, as "
        "the sink would have got them (already transformed and redacted), in the file's order; "
        "the file is only read. Takes no range and no backend flags",
    )
    letters.add_argument(
        "--from-sink",
        metavar="NAME",
        help="with --dead-letters: the dead letters of this sink (their 'sink' field; default: "
        "the --sink name, or every sink's when printing)",
    )
    letters.add_argument(
        "--from-line",
        type=int,
        metavar="N",
        help="with --dead-letters: start at the file's line N (where an interrupted run says "
        "to go on)",
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
        "--no-redact",
        action="store_true",
        help="without --sink: print events as stored, credentials included (by default they "
        "are redacted as for sinks; EVENTBUS_REDACT=false does the same). A sink always gets "
        "what the dispatcher would send it",
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
        try:
            moment = datetime.now(UTC) - timedelta(**{unit: amount})
        except (OverflowError, ValueError):  # a traceback said it (trial 249)
            raise argparse.ArgumentTypeError(_BEFORE_LOGS.format(text=text)) from None
    else:
        try:
            moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a time: use ISO 8601 (2026-01-31T12:00:00Z) or an age (15m, 2h)"
            ) from None
        moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    try:
        before = moment < _EPOCH
    except OverflowError:
        before = True
    if before:
        # Redis was blamed for its "Invalid stream ID" (trial 249).
        raise argparse.ArgumentTypeError(_BEFORE_LOGS.format(text=text))
    return moment


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_BEFORE_LOGS: Final = (
    "{text!r} is before 1970-01-01, which no log's times reach: give a later time (ISO 8601, "
    "2026-01-31T12:00:00Z) or a shorter age (15m, 2h, 7d)"
)


Replayed = tuple[int, dict[str, Any]]
"""One payload to send again, with where it came from: its LogID (or a dead letter's line)."""


class _SinkTarget:
    """A sink plugin fed as the dispatcher feeds it.

    Events from the log are made into payloads by the dispatcher's own `PayloadPreparer`
    (`payloads()`): the transformer and redaction come from the same settings as `eventbus
    dispatch` (`EVENTBUS_TRANSFORMER`, `EVENTBUS_BODY_*`, `EVENTBUS_REDACT*`), with the same
    fallback when the transformer raises, so a replayed event reaches the sink in the same shape
    as it did the first time. A dead letter's payload is that shape already (`prepare=False`).
    The sink's async methods run on a private loop. `describe` names the origins of a failed
    part in its message (`LogIDs 7 to 12`, `lines 3 to 9 of FILE`), for a narrower rerun.
    """

    def __init__(
        self,
        settings: EventBusSettings,
        name: str,
        options: dict[str, str],
        *,
        quiet: bool,
        prepare: bool = True,
        describe: Callable[[list[int]], str] | None = None,
    ) -> None:
        # Only the flag names a sink here: replay does not read EVENTBUS_SINKS.
        (self.sink,) = build_sinks(settings, [(name, options)], given_as="--sink")
        self.name = name
        redactor = redactor_from_settings(settings)
        self.payload = (
            PayloadPreparer(transform_from_settings(settings), redactor) if prepare else None
        )
        self.retry = retry_policy_from_settings(settings)
        self.quiet = quiet
        self.describe = describe or _log_ids
        add_patterns(redactor.extra_patterns)
        self.loop = asyncio.new_event_loop()

    def payloads(self, events: list[Event]) -> list[Replayed]:
        """`events` as the sink gets them from the dispatcher, each with its LogID."""
        assert self.payload is not None, "built with prepare=False"
        return [(e.log_id, self.payload(e)) for e in events]

    def send_with_retries(self, batch: list[Replayed]) -> tuple[int, int]:
        """Send `batch` as the dispatcher does: what the sink says it stored
        (`SinkError.delivered`) is not sent again, a transient failure is retried
        (`EVENTBUS_RETRIES`, with the backoff or the sink's `retry_after`), and an error about
        the first payloads alone (`refused`) fails only those. Return (stored, failed); each
        failure is reported on stderr with what it is about (`describe`)."""
        stored = failed = 0
        attempt = 0
        while batch:
            attempt += 1
            try:
                try:
                    self.loop.run_until_complete(self.sink.send([p for _, p in batch]))
                except KeyboardInterrupt:
                    raise  # Ctrl-C or SIGTERM (taken as Ctrl-C): the run ends, and says where
                except BaseException as raised:  # GeneratorExit, gevent's Timeout: a failure
                    raise send_failure(raised) from None
            except Exception as exc:  # a sink's failure is reported, then the run goes on
                done = stored_before_failing(exc, len(batch))
                stored += done
                batch = batch[done:]
                if not batch:
                    break  # it stored all of them, and said so with its error
                said = clipped(message_of(exc), scrub)
                if not isinstance(exc, PermanentSinkError) and attempt <= self.retry.retries:
                    retry_after = exc.retry_after if isinstance(exc, TransientSinkError) else None
                    delay = self.retry.delay(attempt, retry_after)
                    if not self.quiet:  # a wait of seconds, said as it begins
                        print(
                            f"eventbus replay: sink {self.name} failed for {len(batch)} "
                            f"event(s), {self.describe([k for k, _ in batch])} (attempt "
                            f"{attempt}: {said}); retrying in {delay:.1f} s",
                            file=sys.stderr,
                        )
                    time.sleep(delay)
                    continue
                gone = batch[: refused_alone(exc, len(batch)) or len(batch)]
                failed += len(gone)
                print(
                    f"eventbus replay: sink {self.name} failed for {len(gone)} event(s), "
                    f"{self.describe([k for k, _ in gone])}, after {attempt} attempt(s): {said}",
                    file=sys.stderr,
                )
                batch = batch[len(gone) :]
                attempt = 0
            else:
                stored += len(batch)
                break
        return stored, failed

    def rejected(self) -> int:
        """The sink's own count of events the destination rejected after taking the request
        (`SinkFigures`: the `otlp` sink's partial successes); 0 for a sink without one."""
        return sink_figures(self.sink).get("rejected", 0)

    def close(self) -> None:
        """Close the sink (bounded, as the dispatcher closes one) and the loop."""
        try:
            # A send that Ctrl-C cut off is still a task of this loop: ended first, its error
            # taken, or it failed as the sink closed and asyncio logged it as an ERROR with a
            # traceback after the summary (trial 118).
            cut_off = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
            if cut_off:
                self.loop.run_until_complete(cancel_bounded(cut_off))
                for task in cut_off:
                    if task.done() and not task.cancelled():
                        task.exception()
            self.loop.run_until_complete(close_sink(self.sink))
        finally:
            # A second Ctrl-C during the close leaves its task here: the summary said how far
            # the run got, so asyncio need not log it as destroyed while pending (trial 120).
            for task in asyncio.all_tasks(self.loop):
                with contextlib.suppress(AttributeError):
                    task._log_destroy_pending = False  # type: ignore[attr-defined]
            self.loop.close()


def _log_ids(log_ids: list[int]) -> str:
    """`LogID 7`, `LogIDs 7 to 12` (replay reads in LogID order), or `no LogIDs`."""
    ids = [i for i in log_ids if i]
    if not ids:
        return "no LogIDs"
    if len(ids) == 1:
        return f"LogID {ids[0]}"
    return f"LogIDs {min(ids)} to {max(ids)}"


def sink_target(
    args: argparse.Namespace, settings: EventBusSettings, options: dict[str, str], **kw: Any
) -> _SinkTarget | None:
    """The `--sink` to send to, None without one, or on a dry run: built then only to check its
    options (a missing key, an unknown option), so that a dry run says what the real one
    would refuse, then sends nothing."""
    if not args.sink:
        return None
    target = _SinkTarget(settings, args.sink, options, quiet=args.quiet, **kw)
    if args.dry_run:
        target.close()
        return None
    return target


def _options(pairs: list[str], sink: str | None) -> dict[str, str]:
    given = SinkOptions(sink)
    for pair in pairs:
        try:
            given.add(pair)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    return given.options


def _check(args: argparse.Namespace) -> None:
    if args.batch_size < 1:
        raise UsageError(f"--batch-size {args.batch_size}: must be at least 1")
    for label, value in (("--from-id", args.from_id), ("--to-id", args.to_id)):
        if value is not None and value < 0:
            raise UsageError(f"{label} {value}: must be >= 0")
    _check_range(args)


def _log(args: argparse.Namespace, settings: EventBusSettings, bus: EventBus) -> ReadableLog:
    """The log to read: the bus's own, or the one `--source` names."""
    sources = capability(bus, LogSources)
    if args.source is not None:
        if sources is None:
            raise UsageError(
                f"--source {args.source}: backend {settings.backend!r} offers no other log to "
                "read here (it declares no log sources); leave --source out. A backend that "
                "keeps dead letters elsewhere says in its documentation how to send them again"
            )
        try:
            log = sources.log_source(args.source)
        except ValueError as exc:
            raise UsageError(f"--source {args.source}: {exc}") from None
    else:
        found = capability(bus, ReadableLog)
        if found is None:
            raise UsageError(
                f"replay reads the backend's log again, but backend {settings.backend!r} keeps "
                "none it can read again (it does not offer the ReadableLog capability)"
            )
        log = found
    if (args.since or args.until) and not log.time_index:
        other = ""
        if sources is not None:
            # Only the logs that keep timestamps: naming this one sent the user back here.
            # Each with where it is: another place than this log's, or a setting to change
            # where they share a name (trial 229); the backend's reader then says which.
            timed = [
                f"--source {name}: the {_where(source)}"
                for name in sources.log_sources
                if (source := sources.log_source(name)).time_index
            ]
            if timed:
                other = f", or read a log that does, to select by time ({'; '.join(timed)})"
        # "select it by --from-id/--to-id to select by time" said the opposite of itself when
        # no other log was named (trial 152).
        raise UsageError(
            f"the {_where(log)} keeps no timestamps, so --since and --until cannot select in "
            f"it: select by LogID with --from-id/--to-id instead{other}"
        )
    return log


def _source_name(args: argparse.Namespace, bus: EventBus) -> str:
    """What the summary calls the log read: `--source`'s name, the bus's own log's, or `log`."""
    if args.source is not None:
        return str(args.source)
    sources = capability(bus, LogSources)
    return sources.log_sources[0] if sources is not None else "log"


def _where(log: ReadableLog) -> str:
    return shown_location(log) or "log"


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


@with_backend_errors
def run(args: argparse.Namespace) -> int:
    """Replay the range; exit 1 if an entry could not be decoded or a send failed."""
    if args.dead_letters is not None:
        check_dead_letter_flags(args)  # before the backend flags' own checks: none applies
    settings = settings_from_args(args)
    _check(args)
    options = _options(args.sink_opt, args.sink)
    if options and not args.sink:
        raise UsageError("--sink-opt needs --sink")
    if args.dead_letters is not None:
        return replay_dead_letters(args, settings, options)
    for flag, value in (("--from-sink", args.from_sink), ("--from-line", args.from_line)):
        if value is not None:
            raise UsageError(f"{flag} selects in a dead-letter file: it needs --dead-letters")
    # A broken EVENTBUS_TRANSFORMER is said now, dry run or not, as 'dispatch' says it.
    preparer = PayloadPreparer.from_settings(settings) if args.sink else None
    target = sink_target(args, settings, options)
    try:
        bus = open_bus(args, settings, "eventbus replay")  # answers, or exit 1 now
        try:
            require_shared(bus, settings, "replay")
            log = _log(args, settings, bus)
            events = log.read_range(args.from_id, args.to_id, since=args.since, until=args.until)
            source = _source_name(args, bus)
        except BaseException:
            bus.stop(timeout=0)
            raise
    except BaseException:
        if target is not None:
            target.close()
        raise
    try:
        redactor = NO_REDACTION if args.no_redact else redactor_from_settings(settings)
        return _replay(args, events, source, target, preparer, redactor)
    finally:
        bus.stop(timeout=1.0)


def _replay(
    args: argparse.Namespace,
    events: Iterator[Event | None],
    source: str,
    target: _SinkTarget | None,
    preparer: PayloadPreparer | None,
    stdout_redactor: Redactor,
) -> int:
    total = None
    undecodable = 0
    sent = 0
    failed = 0
    untransformable = 0
    handled_through = 0  # the newest LogID of the batches done (replayed, or said failed)
    counted_through = 0  # the same, of the counted LogIDs only (COUNTED_LOG_IDS_BELOW)
    batch: list[Event] = []

    def deliver() -> int:
        """Hand on `batch`; return how many of it were replayed."""
        nonlocal sent, failed, untransformable, handled_through, counted_through
        if args.dry_run and preparer is not None:
            # What the sink would get: a transformer that raises is reported, not hidden.
            untransformable += sum("transform_error" in preparer(e) for e in batch)
        if target is None:
            if not args.dry_run:
                for event in batch:
                    sys.stdout.write(printable(event, stdout_redactor).to_json().decode() + "\n")
                sys.stdout.flush()
            stored, refused = len(batch), 0
        else:
            stored, refused = target.send_with_retries(target.payloads(batch))
        sent += stored
        failed += refused
        handled_through = max(handled_through, *(e.log_id for e in batch))
        counted = [e.log_id for e in batch if e.log_id < COUNTED_LOG_IDS_BELOW]
        counted_through = max(counted_through, *counted) if counted else counted_through
        batch.clear()
        return stored

    show = not args.quiet  # on stderr: stdout stays for the events
    rejected_before = target.rejected() if target is not None else 0
    ended_by = ""  # what cut the run short, if anything
    try:
        with Progress("replayed", total, enabled=show) as progress:
            for event in events:
                if event is None:
                    undecodable += 1
                    continue
                batch.append(event)
                if len(batch) >= args.batch_size:
                    progress.advance(deliver())
            if batch:
                progress.advance(deliver())
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (taken as Ctrl-C): say how far it got
        ended_by = "interrupted"
        raise
    except BrokenPipeError:  # stdout's reader left (`| head`): the rest was not printed
        ended_by = "stdout closed by its reader"
        raise
    except Exception:  # the backend failed, or refused a setting: its message comes next
        ended_by = "stopped by the error below"
        raise
    finally:
        rejected = target.rejected() - rejected_before if target is not None else 0
        # An error before anything was read (a key of another type): no "replayed 0 ..."
        # summary ahead of it, as if something had been done (helper-113).
        nothing = not (sent or failed or undecodable or untransformable)
        try:
            if not args.quiet and not (ended_by == "stopped by the error below" and nothing):
                _summary(
                    args, source, sent, failed, undecodable, untransformable, rejected,
                    # Where to go on: the batch it was in the middle of, else after the last
                    # done.
                    (ended_by, handled_through,
                     _resume(batch, handled_through, counted_through, args.from_id or 0))
                    if ended_by
                    else None,
                )  # fmt: skip
        finally:
            # After the summary: what was sent is said even if closing the sink is cut short
            # (a second Ctrl-C), and the close is bounded (a sink's close() that never
            # returned kept a SIGTERM'd replay running for good, trial 116).
            if target is not None:
                target.close()
    return EXIT_FAILED if failed or undecodable or untransformable or rejected else EXIT_OK


def _resume(batch: list[Event], handled_through: int, counted_through: int, from_id: int) -> int:
    """The `--from-id` an interrupted replay goes on from: the batch it was in the middle of,
    else after the last done. A derived LogID there (a log that mixes counted LogIDs with
    derived ones, as a Redis stream shared with the Go llm-proxy does) would skip the counted
    entries not done yet, which come in increasing order: then it goes on after the last
    counted one done, or from where this run began if none was (trial 145, review 149)."""
    resume = batch[0].log_id if batch else handled_through + 1
    if resume >= COUNTED_LOG_IDS_BELOW:
        resume = counted_through + 1 if counted_through else max(from_id, 1)
    return resume


def _summary(
    args: argparse.Namespace,
    source: str,
    sent: int,
    failed: int,
    undecodable: int,
    untransformable: int,
    rejected: int,
    cut_short: tuple[str, int, int] | None,
) -> None:
    """The last line on stderr: what was replayed, and, when the run was cut short (`(why,
    the newest LogID done, the LogID to go on from)`), where to go on."""
    where = f"sink {args.sink}" if args.sink else "stdout"
    verb = "would replay" if args.dry_run else "replayed"
    head = "eventbus replay: "
    if cut_short is not None:
        head += f"{cut_short[0]}: "
    line = (
        f"{head}{verb} {sent} event(s) from the {source} to {where}; "
        f"{failed} failed, {undecodable} undecodable "
        f"entr{'y' if undecodable == 1 else 'ies'} skipped"
        + (f", {untransformable} the transformer failed on" if untransformable else "")
        + (
            f", {rejected} rejected by the destination after it took the request"
            if rejected
            else ""
        )
    )
    if cut_short is not None:
        _, done, resume = cut_short
        if done and resume and done >= resume:
            # LogIDs out of reading order: a Redis stream shared with the Go llm-proxy reads
            # Go's entries (LogIDs derived from their entry ids, above every counter) among
            # the counted ones, and --from-id selects by value (trial 145).
            line += (
                f"; done up to LogID {resume - 1} of this log's counted LogIDs, and some "
                f"entries with derived ones (from 2^62 up, as the Go llm-proxy's entries get; "
                f"up to {done}): go on with --from-id {resume}, which gives those again "
                "(de-duplicate by log_id)"
            )
        else:
            line += f"; done up to LogID {done}" if done else "; no batch was done yet"
            line += f": go on with --from-id {resume}" if resume else ""
    print(line, file=sys.stderr)
