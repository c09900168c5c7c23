"""`eventbus replay --dead-letters FILE`: send the payloads of a dead-letter file again.

A dead letter (`EVENTBUS_DEAD_LETTER_PATH`, one JSON line per event) holds the payload its
sink would have received: already transformed and redacted, so it goes to the sink as it is.
This is the way back for dead letters of a memory bus, which keeps no log to replay from,
and for a scattering of LogIDs that a range of the log would cover only with events the sink
already has. The file is only read: the user keeps it, or moves it aside once the replay
succeeded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from eventbus_core._settings import EventBusSettings
from eventbus_core.cli._backend_flags import plugin_overrides
from eventbus_core.cli._lines import TooLong, bounded_lines
from eventbus_core.cli._ops import EXIT_FAILED, EXIT_OK, UsageError
from eventbus_core.cli._progress import Progress

__all__ = ["check_dead_letter_flags", "replay_dead_letters"]

# Flags that select in the backend's log: a dead-letter file has none of it.
_LOG_FLAGS = {
    "from_id": "--from-id",
    "to_id": "--to-id",
    "since": "--since",
    "until": "--until",
    "source": "--source",
    "backend": "--backend",
}


def check_dead_letter_flags(args: argparse.Namespace) -> None:
    """Refuse the flags that mean nothing with `--dead-letters` (they would be ignored)."""
    given = [flag for field, flag in _LOG_FLAGS.items() if getattr(args, field) is not None]
    given += sorted(set(plugin_overrides(args)[1].values()))  # as typed: --redis-url
    if args.wait_for_backend:
        given.append("--wait-for-backend")
    if given:
        raise UsageError(
            f"{', '.join(given)}: --dead-letters reads a dead-letter file, not the backend's "
            "log; leave them out (select what to send again with --from-sink)"
        )
    if args.no_redact:
        raise UsageError(
            "--no-redact: a dead letter holds its payload as the sink would have got it, "
            "redacted already; leave --no-redact out"
        )
    if args.from_sink is not None and not args.from_sink.strip():
        raise UsageError("--from-sink is empty: give the name of the sink the dead letters name")
    if args.from_line is not None and args.from_line < 1:
        raise UsageError(f"--from-line {args.from_line}: lines are numbered from 1")


_NAMED_UNREADABLE = 5  # the first unreadable lines the summary names


class DeadLetterFile:
    """The dead letters of `path` for sink `sink` (all of them when None), read line by line
    from line `first` on, up to the file's end when it was opened.

    `unreadable` counts lines that are no dead letter (not JSON, no `payload` object: a line
    cut short by a crash, say), the first few of them by number in `unreadable_lines`; `others`
    the dead letters of other sinks, by sink.
    """

    def __init__(self, path: Path, sink: str | None, first: int = 1) -> None:
        self.path = path
        self.sink = sink
        self.first = first
        self.unreadable = 0
        self.unreadable_lines: list[int] = []
        self.others: Counter[str] = Counter()
        self.last_line = 0  # the last line read so far

    def open(self) -> Any:
        """The file, open for reading; a path that cannot be read is a usage error."""
        try:
            return self.path.open("rb")
        except OSError as exc:
            raise UsageError(
                f"--dead-letters {self.path}: cannot read it ({exc.strerror or exc}); give the "
                "dead-letter file (EVENTBUS_DEAD_LETTER_PATH of the dispatcher)"
            ) from None

    def entries(self, lines: Any) -> Iterator[tuple[int, dict[str, Any]]]:
        """(line number, payload) of each dead letter for the sink, in the file's order. Only
        what the file held when opened: a dispatcher appending meanwhile, or a sink writing
        into the same file, must not make the run read its own output (trial 203)."""
        try:
            size = os.fstat(lines.fileno()).st_size
        except (AttributeError, OSError, ValueError):
            size = None  # not a regular file (a pipe): read to its end
        consumed = 0
        for number, raw in enumerate(bounded_lines(lines), start=1):
            consumed += raw.length if isinstance(raw, TooLong) else len(raw)
            if size is not None and consumed > size:
                return  # a line written after the start
            self.last_line = number
            if number < self.first or (not isinstance(raw, TooLong) and not raw.strip()):
                continue
            record: Any = None
            if not isinstance(raw, TooLong):  # one past the bound is unreadable, as below
                with contextlib.suppress(ValueError):
                    record = json.loads(raw)
            payload = record.get("payload") if isinstance(record, dict) else None
            if not isinstance(payload, dict):
                self.unreadable += 1
                if len(self.unreadable_lines) < _NAMED_UNREADABLE:
                    self.unreadable_lines.append(number)
                continue
            sink = str(record.get("sink", ""))
            if self.sink is not None and sink != self.sink:
                self.others[sink] += 1
                continue
            yield number, payload


def _lines(path: Path) -> Any:
    """How a failure names its dead letters: `lines 3 to 9 of FILE`, for a narrower look."""

    def describe(numbers: list[int]) -> str:
        if len(numbers) == 1:
            return f"line {numbers[0]} of {path}"
        return f"lines {min(numbers)} to {max(numbers)} of {path}"

    return describe


def replay_dead_letters(
    args: argparse.Namespace, settings: EventBusSettings, options: dict[str, str]
) -> int:
    """Send the payloads of `--dead-letters` to `--sink` with its `options` (or print them);
    exit 1 if a line was unreadable or a send failed. The flags were checked
    (`check_dead_letter_flags`) before the settings were read."""
    from eventbus_core.cli._replay_cmd import sink_target  # one sending path for both modes

    path = Path(args.dead_letters)
    wanted = args.from_sink if args.from_sink is not None else args.sink
    letters = DeadLetterFile(path, wanted, args.from_line or 1)
    handle = letters.open()  # a file that cannot be read is said before the sink is built
    try:
        target = sink_target(args, settings, options, prepare=False, describe=_lines(path))
    except BaseException:
        handle.close()
        raise
    sent = failed = 0
    ended_by = ""
    batch: list[tuple[int, dict[str, Any]]] = []

    def deliver() -> int:
        nonlocal sent, failed
        if target is not None:
            stored, refused = target.send_with_retries(batch)
        else:
            if not args.dry_run:
                for _, payload in batch:
                    sys.stdout.write(json.dumps(payload, ensure_ascii=False) + "\n")
                sys.stdout.flush()
            stored, refused = len(batch), 0
        sent += stored
        failed += refused
        batch.clear()
        return stored

    try:
        with handle, Progress("replayed", None, enabled=not args.quiet) as progress:
            for entry in letters.entries(handle):
                batch.append(entry)
                if len(batch) >= args.batch_size:
                    progress.advance(deliver())
            if batch:
                progress.advance(deliver())
    except KeyboardInterrupt:
        ended_by = "interrupted"
        raise
    except BrokenPipeError:
        ended_by = "stdout closed by its reader"
        raise
    finally:
        try:
            if not args.quiet:
                _summary(args, letters, wanted, sent, failed, ended_by, batch)
        finally:
            if target is not None:
                target.close()
    # Nothing for the sink named, where the file holds others' (a typo in --from-sink, say):
    # not a success.
    missed = not sent and not failed and bool(letters.others)
    return EXIT_FAILED if failed or letters.unreadable or missed else EXIT_OK


def _summary(
    args: argparse.Namespace,
    letters: DeadLetterFile,
    wanted: str | None,
    sent: int,
    failed: int,
    ended_by: str,
    batch: list[tuple[int, dict[str, Any]]],
) -> None:
    """The last line on stderr: what was sent again, what was left, and where it stopped."""
    where = f"sink {args.sink}" if args.sink else "stdout"
    verb = "would replay" if args.dry_run else "replayed"
    of = f" of sink {wanted}" if wanted is not None else ""
    line = "eventbus replay: " + (f"{ended_by}: " if ended_by else "")
    line += (
        f"{verb} {sent} dead letter(s){of} from {letters.path} to {where}; {failed} failed, "
        f"{letters.unreadable} unreadable line(s) skipped"
    )
    if letters.unreadable_lines:
        named = ", ".join(str(n) for n in letters.unreadable_lines)
        more = ", ..." if letters.unreadable > len(letters.unreadable_lines) else ""
        line += f" (line {named}{more})" if letters.unreadable == 1 else f" (lines {named}{more})"
    if letters.others:
        named = ", ".join(f"{name or '(none)'} ({n})" for name, n in sorted(letters.others.items()))
        line += f"; left the dead letters of other sinks: {named} (--from-sink NAME takes them)"
    if ended_by:
        # The batch it was in the middle of comes again: some of it may have been taken.
        upto = batch[0][0] - 1 if batch else letters.last_line
        line += f"; done up to line {upto} of the file: go on with --from-line {upto + 1}"
    print(line, file=sys.stderr)
