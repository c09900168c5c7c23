"""`BatchSender`: sends encoded batches with JetStream's asynchronous publish (`PubAcks`) and
checks every acknowledgement, sending again what was not acknowledged until it is settled.

Each event carries `Nats-Msg-Id: <process id>-<n>`, so that an event sent again after all (its
PubAck was lost, not the event) is dropped by the stream's duplicate window. Events without an
acknowledgement (a timeout, a lost connection, a leader election, a missing stream, which is
created again) are sent again after a backoff with jitter, in their order within the batch. An
event is settled exactly once, through the `settle(written, lost)` callback: written
(acknowledged) or lost (refused by the server for good, never sent before the stop deadline, or
still unconfirmed when stop's confirmation window closed).

At stop, `confirm()` learns the fate of the events that were handed to nats-py but whose
PubAck had not been seen: it waits for the outstanding acknowledgements, then asks the server
again by publishing the same message ids, which the stream's duplicate window answers with the
sequence of the copy it stored already (or stores it now). Either answer proves the event is in
the stream, so `lost` counts only events that are not there.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any, Final

import nats.errors
import nats.js.errors

from eventbus_core import Backoff, Event, SettingsError, get_logger
from eventbus_core.batching import SaidEvery
from eventbus_nats._acks import PubAcks
from eventbus_nats._link import Link
from eventbus_nats._options import safe_error

__all__ = ["Batch", "BatchSender"]

log = get_logger("eventbus.nats")

_YIELD_EVERY: Final = 64  # events queued between two chances for the flusher to send
_MAX_REFUSALS: Final = 3  # a server that says no this often to one event means it
_REFUSED_EVERY: Final = 30.0  # seconds between lines about events the server refuses
_STREAM_NOT_FOUND: Final = 10059
_STREAM_LIMIT_REACHED: Final = 10077  # a stream with discard=new, full
_HALF_PENDING: Final = 4 * 1024 * 1024  # bytes queued in nats-py beyond which we do not add
_CONFIRM_ROUND: Final = 0.2  # seconds confirm() waits for acknowledgements before asking again
_CONFIRM_RETRY: Final = 0.02  # seconds between two attempts while the connection is down
_OPEN, _WRITTEN, _LOST = 0, 1, 2


class Batch:
    """Encoded events on their way, with each one's fate."""

    __slots__ = ("futures", "ids", "open", "payloads", "refusals", "status", "tried")

    def __init__(self, ids: list[str], payloads: list[bytes]) -> None:
        self.ids = ids
        self.payloads = payloads
        self.futures: list[asyncio.Future[Any] | None] = [None] * len(ids)
        self.status = [_OPEN] * len(ids)
        # Handed to nats-py at least once: it may be in the stream even without a PubAck.
        self.tried = [False] * len(ids)
        self.refusals = [0] * len(ids)
        self.open = len(ids)


class BatchSender:
    """Encodes, sends and settles batches for one process (a forked child makes its own).

    Args:
        link: The connection (its loop runs every method but `encode`'s callers' code).
        ack_timeout: Seconds to wait for a batch's acknowledgements before sending the missing
            ones again.
        settle: Called with `(written, lost)` as events are settled.
    """

    def __init__(
        self, link: Link, *, ack_timeout: float, settle: Callable[[int, int], None]
    ) -> None:
        self._link = link
        self._subject = link.layout.subject
        self._ack_timeout = ack_timeout
        self._settle = settle
        # Message ids are unique per process: a forked child gets its own prefix.
        self._id_prefix = uuid.uuid4().hex[:16] + "-"
        self._next_id = 0
        self._backoff = Backoff()
        self._acks = PubAcks()
        self._open: list[Batch] = []
        self._send_problem: BaseException | None = None  # why the last send() stopped short
        self.state = "idle"
        self.last_error: str | None = None
        self.last_seq = 0
        self._stream_epoch = link.stream_epoch
        self.refused = 0  # events the stream cannot take, refused or too large (counted lost)
        self._refused_why = ""
        self._refused_said = SaidEvery(self._say_refused, _REFUSED_EVERY)
        self.batches = 0
        self.failures = 0
        self.resent = 0
        self.duplicates = 0
        self.unconfirmed = 0

    def encode(self, events: list[Event]) -> Batch | None:
        """The events as Go wire JSON with their message ids (None if none could be encoded)."""
        ids: list[str] = []
        payloads: list[bytes] = []
        prefix, n = self._id_prefix, self._next_id
        for event in events:
            try:
                payloads.append(event.to_json())
            except Exception:  # an event that cannot be encoded must not stop the writer
                log.exception("eventbus nats writer could not encode an event; it is lost")
                self._settle(0, 1)
                continue
            ids.append(f"{prefix}{n}")
            n += 1
        self._next_id = n
        if not ids:
            return None
        batch = Batch(ids, payloads)
        self._open.append(batch)
        return batch

    async def send(self, batch: Batch) -> None:
        """Publish the batch's open events, in order; those not sent stay open for a retry."""
        link = self._link
        nc, js = link.nc, link.js
        if nc is None or js is None or not nc.is_connected:
            return  # nats-py would only pile copies up until it reconnects
        if nc.pending_data_size > _HALF_PENDING:
            return  # the server is not reading (stopped, overloaded): wait, do not add more
        try:
            async with asyncio.timeout(self._ack_timeout):
                await link.ensure_stream()
                for i, status in enumerate(batch.status):
                    if status != _OPEN or batch.futures[i] is not None:
                        continue
                    if i % _YIELD_EVERY == _YIELD_EVERY - 1:
                        # Let nats-py's flusher put what is queued on the wire, so the server
                        # works on it (and acknowledges) while the rest is being queued.
                        await asyncio.sleep(0)
                    if 0 < link.layout.max_bytes < len(batch.payloads[i]):
                        # The stream would take it and remove it at once (acknowledged, so
                        # counted written): larger than all it may hold.
                        self._refused_for_good(
                            f"{len(batch.payloads[i])} bytes, more than the stream may hold "
                            f"(EVENTBUS_NATS_MAX_BYTES={link.layout.max_bytes})"
                        )
                        self._close_item(batch, i, _LOST)
                        continue
                    # Before the await: a cancellation inside it may leave the event queued.
                    batch.tried[i] = True
                    try:
                        batch.futures[i] = await self._acks.publish(
                            nc,
                            self._subject,
                            batch.payloads[i],
                            {"Nats-Msg-Id": batch.ids[i]},
                        )
                    except nats.errors.MaxPayloadError:
                        self._refused_for_good(
                            f"{len(batch.payloads[i])} bytes, more than the server's max_payload"
                        )
                        self._close_item(batch, i, _LOST)
        except Exception as exc:  # unsent events stay open; complete() retries them
            self._send_problem = exc
            self._note_failure(exc)
        else:
            self._send_problem = None

    async def complete(self, batch: Batch) -> None:
        """Check every acknowledgement of `batch`; resend what is missing until all settled."""
        while True:
            waiting = [f for f in batch.futures if f is not None and not f.done()]
            if waiting:
                await asyncio.wait(waiting, timeout=self._ack_timeout)
            problem = self._collect(batch)
            if batch.open == 0:
                self.batches += 1
                # Writing again only if the stream took some: a batch the stream refused for
                # good (full, discarding new messages) is settled too, every event lost, and
                # said "writing again" after each "cannot write", 16 lines a second (trial
                # 256). `last_error` is kept after a recovery, as the Redis writer's.
                if self.state != "connected" and _WRITTEN in batch.status:
                    if self.state != "idle":  # a WARNING, as the failure was (trial 216)
                        log.warning("eventbus nats writer is writing again")
                    self.state = "connected"
                self._backoff.reset()
                self._open.remove(batch)
                return
            self._note_failure(problem)
            await asyncio.sleep(self._backoff.next())
            self.resent += batch.open
            await self.send(batch)

    def _collect(self, batch: Batch) -> BaseException | str:
        """Settle the acknowledged events of `batch`; return why some are still open."""
        # Why events were not sent, if send() knew (a refused stream, say), else the usual.
        problem: BaseException | str = self._send_problem or "not sent: no connection to NATS"
        if self._stream_epoch != self._link.stream_epoch:
            # The stream was created again: its sequences start over.
            self._stream_epoch = self._link.stream_epoch
            self.last_seq = 0
        written = 0
        for i, future in enumerate(batch.futures):
            if batch.status[i] != _OPEN:
                continue
            if future is None:
                continue
            batch.futures[i] = None
            if not future.done():
                future.cancel()
                problem = f"no acknowledgement within {self._ack_timeout} s"
                continue
            exc = None if future.cancelled() else future.exception()
            if exc is None and not future.cancelled():
                ack = future.result()
                if ack.duplicate:  # stored by an earlier attempt, under its first sequence
                    self.duplicates += 1
                # The highest, not the latest: a batch retried after an outage can be stored
                # after a later one, and its acknowledgements then come with lower sequences.
                self.last_seq = max(self.last_seq, ack.seq)
                batch.status[i] = _WRITTEN
                batch.open -= 1
                written += 1
                continue
            if exc is not None:
                problem = exc
                if _stream_missing(exc):
                    self._link.stream_lost()
                elif _refused(exc):
                    batch.refusals[i] += 1
                    if batch.refusals[i] >= _MAX_REFUSALS:
                        self._refused_for_good(str(exc))
                        self._close_item(batch, i, _LOST)
        if written:
            self._settle(written, 0)
        return problem

    def _refused_for_good(self, why: str) -> None:
        """Log an event the stream cannot take (a full stream that discards new messages, one
        larger than the server's `max_payload` or than the stream may hold): the first at
        once, then at most one line every `_REFUSED_EVERY` seconds with how many more, whatever
        the cause, and what is left at the stop (`say_refused_now`); one line per event flooded
        the log at a proxy's request rate (trials 125 and 183). Each is counted in `lost`
        either way."""
        self.refused += 1
        self._refused_why = why  # the latest cause, for the next line
        self._refused_said.add(1)

    def _say_refused(self, new: int, total: int) -> None:
        since = "" if new == total else f" ({new} since the last such line)"
        log.error(
            "eventbus nats: the stream cannot take an event (%s): lost%s; such events so far: %d",
            self._refused_why,
            since,
            total,
        )

    def say_refused_now(self) -> None:
        """Say the refusals the last line's period held back (at the stop)."""
        self._refused_said.say_now()

    def _close_item(self, batch: Batch, i: int, status: int) -> None:
        batch.status[i] = status
        batch.open -= 1
        self._settle(int(status == _WRITTEN), int(status == _LOST))

    async def confirm(self) -> None:
        """At stop, once the writer task is cancelled: settle every open event whose fate can be
        learnt. Never-sent events are lost; sent ones are written as soon as a PubAck (the
        first one, or the duplicate window's answer to the same message id sent again) says
        the stream holds them. Runs until all are settled: the caller bounds it in time."""
        self._lose_unsent()
        while self._open:
            waiting = [f for b in self._open for f in b.futures if f is not None and not f.done()]
            if waiting:
                await asyncio.wait(waiting, timeout=_CONFIRM_ROUND)
            else:  # every pass yields to the loop, or the caller's timeout could never fire
                await asyncio.sleep(_CONFIRM_RETRY)
            for batch in list(self._open):
                self._collect(batch)
                if batch.open == 0:
                    self._open.remove(batch)
            nc = self._link.nc
            if nc is None or not nc.is_connected:
                continue  # nats-py may reconnect within the window: look again
            for batch in list(self._open):
                unasked = _unasked(batch)
                if unasked:
                    await self.send(batch)
                    self.resent += unasked - _unasked(batch)

    def sent_open(self) -> int:
        """Open events handed to nats-py at least once (the server may hold them): read from
        any thread, for the exit's warning, so a count of the moment, not a settled one."""
        count = 0
        for batch in list(self._open):
            count += sum(
                1
                for status, tried in zip(list(batch.status), list(batch.tried), strict=False)
                if status == _OPEN and tried
            )
        return count

    def _lose_unsent(self) -> None:
        """Count as lost the open events never handed to nats-py: they cannot be stored."""
        for batch in list(self._open):
            for i in range(len(batch.ids)):
                if batch.status[i] == _OPEN and not batch.tried[i]:
                    self._close_item(batch, i, _LOST)
            if batch.open == 0:
                self._open.remove(batch)

    def give_up_open(self) -> None:
        """Count every event still open as lost (stop's confirmation window closed, or the
        writer failed); those sent at least once are also counted in `unconfirmed`: the server
        may hold them, it did not say."""
        lost = unconfirmed = 0
        for batch in self._open:
            # Acknowledgements that came meanwhile still count, and every error an answer
            # brought is read (asyncio logs each one never read, with a traceback); those
            # still awaited are cancelled.
            self._collect(batch)
            for i in range(len(batch.status)):
                if batch.status[i] == _OPEN:
                    batch.status[i] = _LOST
                    lost += 1
                    unconfirmed += batch.tried[i]
            batch.open = 0
        self._open.clear()
        if unconfirmed:
            self.unconfirmed += unconfirmed
            log.warning(
                "eventbus nats writer: %d event(s) were sent but NATS did not confirm them "
                "before stop's deadline; counted lost, though the stream may hold them",
                unconfirmed,
            )
        if lost:
            self._settle(0, lost)

    def _note_failure(self, problem: BaseException | str) -> None:
        self.failures += 1
        message = problem if isinstance(problem, str) else safe_error(problem)
        refused = isinstance(problem, SettingsError) or (
            isinstance(problem, nats.js.errors.APIError) and not _stream_missing(problem)
        )
        state = "failing" if refused else "reconnecting"
        if state != self.state or message != self.last_error:
            log.warning("eventbus nats writer cannot write (%s); retrying", message)
        self.state = state
        self.last_error = message


def _unasked(batch: Batch) -> int:
    """Open events of `batch` without a PubAck future (none sent, or the last one given up)."""
    return sum(1 for i, f in enumerate(batch.futures) if f is None and batch.status[i] == _OPEN)


def _stream_missing(exc: BaseException) -> bool:
    if isinstance(exc, nats.js.errors.NoStreamResponseError):
        return True
    return isinstance(exc, nats.js.errors.APIError) and exc.err_code == _STREAM_NOT_FOUND


def _refused(exc: BaseException) -> bool:
    """The server answered and said no for good, not "not now": a bad request (an event over
    the stream's `max_msg_size`), or a stream at one of its limits that discards new messages
    (503, err_code 10077: "maximum messages exceeded", "maximum bytes exceeded", per subject)."""
    return isinstance(exc, nats.js.errors.APIError) and (
        exc.code == 400 or exc.err_code == _STREAM_LIMIT_REACHED
    )
