"""Reading the stream again and describing it: `ReadableLog`, `Describable`, `Isolatable`.

`read_range()` reads through a throwaway consumer (no acknowledgements, in memory, deleted at
the end and by the server if the reader vanishes), from a stream sequence or from a time (the
stream keeps each message's time), up to the stream's last sequence when reading began: it
consumes nothing and does not follow new messages.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Final, cast

import nats.js.errors
from nats.js import JetStreamContext, api

from eventbus_core import BackendUnavailableError, Event, SettingsError, WireFormatError
from eventbus_nats._groups import DEFAULT_MAX_ACK_PENDING, open_group
from eventbus_nats._link import Link, LinkClosed
from eventbus_nats._options import safe_error

__all__ = ["LogReader"]

_CHUNK: Final = 500
_FETCH_WAIT: Final = 2.0
# Seconds without a read after which the server removes a reader (one of a process that died
# goes by itself); a replay whose sink is slower than that opens a new one where it was.
_READER_IDLE = 60.0
# Empty reads in a row, messages still pending, before a read of the log gives up (a server
# that keeps quiet to a reader; a slow one answers within the first or second).
_EMPTY_FETCHES: Final = 3
# Tries at creating a reader: with a server of the cluster down (and not yet seen so), JetStream
# may place the reader's one-replica consumer on it, and the creation times out; another try is
# placed anew (about half of the tries failed, trial 148).
_OPEN_TRIES: Final = 3


_FROZEN: Final = (
    "; a server that takes the connection and then says nothing (frozen, overloaded) does "
    "that too, and the client may have picked it among several (--wait-for-backend SECONDS "
    "retries)"
)
"""Said where a connection timed out: one server of a cluster frozen, the client picked it, and
the hint named only a missing -js (trial 209)."""

# JetStream's error codes (nats-server's errors.json) among its 503 answers.
_CLUSTER_UNAVAILABLE: Final = 10008  # "JetStream system temporarily unavailable"
_NOT_ENABLED: Final = (10039, 10076)  # "not enabled for account", "not enabled"


def _utc(moment: datetime | None) -> datetime | None:
    """`moment` in UTC; a naive datetime is local time, as `datetime.timestamp()` takes it."""
    return None if moment is None else moment.astimezone(UTC)


_SHORTEST_CHECK = 0.05  # seconds: a check is one round trip, never a negative wait


class LogReader:
    """Reads and describes the stream of one bus (blocking calls on the link's loop).

    Args:
        link: The connection.
        timeout: Seconds each request may take before `BackendUnavailableError`.
    """

    def __init__(self, link: Link, *, timeout: float = 10.0) -> None:
        self._link = link
        self._timeout = timeout

    def _call(self, coro: Any, timeout: float | None = None) -> Any:
        try:
            return self._link.call(coro, timeout or self._timeout)
        except nats.js.errors.ServiceUnavailableError as exc:
            raise self._unavailable(exc) from None
        except (nats.js.errors.APIError, LinkClosed):
            raise  # the server answered (not an outage), or the bus was stopped
        except (TimeoutError, ConnectionError, OSError, nats.errors.Error) as exc:
            raise self._unanswered(exc) from None

    def _unavailable(
        self, exc: nats.js.errors.ServiceUnavailableError
    ) -> BackendUnavailableError | SettingsError:
        """The server answered 503: JetStream is off there (no responders, no error code), or
        off for the account the credentials sign in to (a settings error: no wait helps), or
        the cluster cannot serve the stream for now (a leader election, a lost quorum: trial
        205 got nats-py's own error out of `read_range()` right after a frozen leader came back).
        """
        if exc.err_code == _CLUSTER_UNAVAILABLE:
            return BackendUnavailableError(
                f"NATS at {self._link.where} answered that JetStream is temporarily "
                f"unavailable ({safe_error(exc)}): the cluster is likely electing a leader, or "
                "has lost a majority of its servers; try again once it has (eventbus commands: "
                "--wait-for-backend SECONDS waits for it)"
            )
        if exc.err_code in _NOT_ENABLED:  # no wait helps: the account has no JetStream
            return SettingsError(
                f"NATS at {self._link.where} answered that JetStream is not enabled for this "
                f"account ({safe_error(exc)}): enable it for the account NATS_URL's "
                "credentials sign in to (jetstream in its server configuration), or use an "
                "account that has it"
            )
        # No code at all: no JetStream service answered ("no responders"); nats-py's text
        # for it is "code=None err_code=None description='None'" (trial 226). Not a settings
        # error: a server whose JetStream is still starting answers the same for a while.
        bare = exc.code is None and exc.err_code is None and not exc.description
        why = "no JetStream service answered" if bare else safe_error(exc)
        return BackendUnavailableError(
            f"NATS at {self._link.where} answered, but not as JetStream ({why}): start "
            "nats-server with JetStream enabled (-js), or set NATS_URL to a server that has "
            "it; a server still starting JetStream answers so for a moment "
            "(--wait-for-backend SECONDS waits for it)"
        )

    def _quiet(self, within: str) -> BackendUnavailableError:
        """Connected, yet JetStream kept quiet: a server of the cluster is down or frozen, and
        the stream waits for a new leader (trial 205: the hint said to enable -js)."""
        return BackendUnavailableError(
            f"NATS at {self._link.where} is connected, but JetStream did not answer {within}: "
            "the server is likely frozen or overloaded, or, in a cluster, a server is down "
            "and the cluster is electing a leader (that can take 15 s or more); try again "
            "(eventbus commands: --wait-for-backend SECONDS waits for it)"
        )

    def _unanswered(self, exc: BaseException) -> BackendUnavailableError:
        refused = self._link.refused
        if refused is not None:
            # Its cause and fix, as check() says them: "check that nats-server runs with -js"
            # for refused credentials or a server without TLS (trial 256).
            return BackendUnavailableError(str(refused))
        if isinstance(exc, TimeoutError) and self._link.connected:
            return self._quiet(f"({safe_error(exc)})")
        said = self._link.last_error  # the connection's own reason, where it has one
        frozen = _FROZEN if isinstance(exc, TimeoutError) and not said else ""
        return BackendUnavailableError(
            f"NATS at {self._link.where} did not answer ({safe_error(exc)}){frozen}; check "
            "that nats-server runs with JetStream enabled (-js) and that NATS_URL points at it"
        )

    # ------------------------------------------------------------------------------ reading

    def read_range(
        self,
        first_id: int | None = None,
        last_id: int | None = None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Iterator[Event | None]:
        """Yield the retained events with LogID in `[first_id, last_id]` added within
        `[since, until]`, oldest first; None for a message that does not decode."""
        since_utc, until_utc = _utc(since), _utc(until)
        layout = self._link.layout
        info = self._stream_info()
        if info is None:
            return
        end = info.state.last_seq if last_id is None else min(last_id, info.state.last_seq)
        start = max(first_id or 1, info.state.first_seq)
        if info.state.messages == 0 or end < start:
            return
        config = api.ConsumerConfig(
            ack_policy=api.AckPolicy.NONE,
            filter_subject=layout.subject,
            inactive_threshold=_READER_IDLE,
            mem_storage=True,
            num_replicas=1,
        )
        if since_utc is not None and first_id is None:
            config.deliver_policy = api.DeliverPolicy.BY_START_TIME
            # RFC 3339 text: nats-py before 2.10 cannot serialise a datetime here.
            config.opt_start_time = cast(Any, since_utc.isoformat().replace("+00:00", "Z"))
        else:
            config.deliver_policy = api.DeliverPolicy.BY_START_SEQUENCE
            config.opt_start_seq = start
        name, psub, pending = self._open_reader(config)
        try:
            if not pending:
                return  # nothing from that point on
            empty = 0
            read_to = start - 1  # the last stream sequence handed on
            reopened_at: int | None = None  # `read_to` when a reader was last opened again
            while True:
                try:
                    msgs = self._call(self._fetch(psub), _FETCH_WAIT + self._timeout)
                    # Nothing came: what is left up to `end` was removed meanwhile, or the
                    # server did not answer. Taken for the first, a server frozen or killed in
                    # the middle of `eventbus replay` ended it as if complete, exit 0 with 500
                    # of 1,100 sent (trial 270): the reader's own count says which.
                    left = msgs or self._call(self._pending(psub))
                except nats.js.errors.NotFoundError:
                    # The server removed the reader after `_READER_IDLE` without a read: a
                    # slow sink (trial 272: 500 events took a replay past a minute), or this
                    # process paused. A new one goes on after the last message handed on
                    # (once per message read at most: a reader removed at once again is not
                    # the idle one, and the error stands).
                    if reopened_at == read_to:
                        raise
                    reopened_at = read_to
                    self._drop_reader(name, psub)
                    config.deliver_policy = api.DeliverPolicy.BY_START_SEQUENCE
                    config.opt_start_time = None
                    config.opt_start_seq = read_to + 1
                    name, psub, pending = self._open_reader(config)
                    if not pending:
                        return
                    continue
                if not msgs:
                    if not left:
                        return
                    empty += 1
                    if empty >= _EMPTY_FETCHES:
                        raise self._quiet(
                            f"to {empty} reads of {_FETCH_WAIT:g} s each, with messages left "
                            "to read"
                        )
                    continue
                empty = 0
                for msg in msgs:
                    meta = msg.metadata
                    seq = read_to = meta.sequence.stream
                    if seq > end or (until_utc is not None and meta.timestamp > until_utc):
                        return
                    if since_utc is None or meta.timestamp >= since_utc:
                        try:
                            yield Event.from_json(msg.data).with_log_id(seq)
                        except WireFormatError:
                            yield None
                    if seq >= end or meta.num_pending == 0:
                        return
        finally:
            self._drop_reader(name, psub)

    def newest(self, n: int) -> list[Event]:
        """Return the `n` newest retained events, oldest first."""
        if n <= 0:
            return []
        info = self._stream_info()
        if info is None or info.state.messages == 0:
            return []
        start = max(info.state.first_seq, info.state.last_seq - n + 1)
        events = [e for e in self.read_range(start, info.state.last_seq) if e is not None]
        return events[-n:]

    def _stream_info(self) -> api.StreamInfo | None:
        try:
            info: api.StreamInfo = self._call(self._link.stream_info())
        except nats.js.errors.NotFoundError:
            return None  # nothing was ever published
        return info

    def _open_reader(self, config: api.ConsumerConfig) -> tuple[str, Any, int]:
        """The reader's consumer, tried `_OPEN_TRIES` times when its creation times out.

        Raises:
            BackendUnavailableError: every try timed out (the server answered the stream's
                information just before, so the message says what is likely instead), or
                the connection failed.
        """
        for _ in range(_OPEN_TRIES):
            try:
                opened: tuple[str, Any, int] = self._link.call(self._open(config), self._timeout)
            except TimeoutError:
                continue  # a consumer made meanwhile goes after its inactive_threshold
            except nats.js.errors.ServiceUnavailableError as exc:
                raise self._unavailable(exc) from None
            except (nats.js.errors.APIError, LinkClosed):
                raise
            except (ConnectionError, OSError, nats.errors.Error) as exc:
                raise self._unanswered(exc) from None
            return opened
        raise BackendUnavailableError(
            f"NATS at {self._link.where} answered, but creating a reader of stream "
            f"{self._link.layout.stream} timed out {_OPEN_TRIES} times ({self._timeout:g} s "
            "each): a server of the cluster is likely down, and JetStream placed the reader on "
            "it; try again (once the cluster has noticed, readers go to the live servers)"
        )

    async def _open(self, config: api.ConsumerConfig) -> tuple[str, Any, int]:
        js = await self._link.answering()
        info = await js.add_consumer(self._link.layout.stream, config)
        psub = await js.pull_subscribe_bind(info.name, stream=self._link.layout.stream)
        return info.name, psub, info.num_pending or 0

    @staticmethod
    async def _fetch(psub: JetStreamContext.PullSubscription) -> list[Any]:
        try:
            return await psub.fetch(_CHUNK, timeout=_FETCH_WAIT)
        except TimeoutError:
            return []

    @staticmethod
    async def _pending(psub: JetStreamContext.PullSubscription) -> int:
        """Messages the reader has yet to be handed, as the server counts them."""
        info = await psub.consumer_info()
        return int(info.num_pending or 0)

    def _drop_reader(self, name: str, psub: JetStreamContext.PullSubscription) -> None:
        """Remove the reader `name`, within 2 s, whatever answers (it goes by itself after
        `_READER_IDLE` anyway)."""
        with contextlib.suppress(Exception):
            self._link.call(self._close(name, psub), 2.0)

    async def _close(self, name: str, psub: JetStreamContext.PullSubscription) -> None:
        with contextlib.suppress(Exception):
            await psub.unsubscribe()
        js = await self._link.answering()
        await js.delete_consumer(self._link.layout.stream, name)

    # --------------------------------------------------------------------------- figures

    def check(self, timeout: float) -> None:
        """Return if JetStream answers within `timeout` seconds.

        Raises:
            BackendUnavailableError: it does not.
            SettingsError: the server refused the credentials, has no JetStream for their
                account, offers no TLS where the settings
                ask for it, or its certificate is not trusted, or the stream exists but does
                not take the bus's subject (no wait would help).
        """
        timeout = max(_SHORTEST_CHECK, timeout)  # the rest of a wait may have run out already
        try:
            self._link.call(self._probe(timeout), timeout)
        except SettingsError as exc:
            raise SettingsError(str(exc)) from None  # a fresh one, as below
        except LinkClosed as exc:
            raise LinkClosed(str(exc)) from None  # not the server's doing
        except Exception as exc:
            refused = self._link.refused
            if refused is not None:  # a fresh error: the link's is shared between threads
                raise SettingsError(str(refused)) from None
            if isinstance(exc, nats.js.errors.ServiceUnavailableError):
                # It answered at once, with 503: "did not answer within 2 s" was not so (trial
                # 125).
                raise self._unavailable(exc) from None
            if isinstance(exc, TimeoutError) and self._link.connected:
                raise self._quiet(f"within {round(timeout, 2):g} s") from None
            why = self._link.last_error or safe_error(exc)
            # Not where the connection said why (refused, a missing extra): trial 211.
            frozen = _FROZEN if isinstance(exc, TimeoutError) and "Timeout" in why else ""
            raise BackendUnavailableError(
                f"NATS JetStream at {self._link.where} did not answer within "
                f"{round(timeout, 2):g} s "
                f"({why}){frozen}; check that nats-server runs there with JetStream enabled "
                "(-js), or set NATS_URL"
            ) from None

    async def _probe(self, timeout: float) -> None:
        js = await self._link.answering(patience=timeout)
        await js.account_info()
        layout = self._link.layout
        try:  # an existing stream must take the bus's subject (a missing one is made later)
            info = await js.stream_info(layout.stream)
        except nats.js.errors.NotFoundError:
            if layout.replicas > 1 and self._link.server_is_single():
                # The server would refuse to create it (as it says: "replicas > 1 not supported
                # in non-clustered mode"): every write retried that for ever, and commands that
                # fail fast on configuration errors ran on.
                raise SettingsError(
                    f"EVENTBUS_NATS_REPLICAS={layout.replicas}: the NATS server at "
                    f"{self._link.where} is not part of a cluster, and a single server keeps "
                    f"one copy of stream {layout.stream} only; set EVENTBUS_NATS_REPLICAS=1, or "
                    "point NATS_URL at a JetStream cluster"
                ) from None
            try:  # another stream capturing the subject would make the server refuse ours
                other = await js.find_stream_name_by_subject(layout.subject)
            except nats.js.errors.NotFoundError:
                return
            raise SettingsError(
                f"NATS stream {other} already captures subject {layout.subject!r}, so stream "
                f"{layout.stream} cannot be created for it: give this stream a subject of its "
                f"own with EVENTBUS_NATS_SUBJECT, or use EVENTBUS_NATS_STREAM={other}"
            ) from None
        mismatch = layout.mismatch(info)
        if mismatch is not None:
            raise SettingsError(mismatch)

    def describe(self, group: str) -> dict[str, Any]:
        """Figures of the stream, its dead-letter stream and its consumer groups."""
        figures: dict[str, Any] = self._call(self._describe(group))
        return figures

    async def _describe(self, group: str) -> dict[str, Any]:
        link = self._link
        layout = link.layout
        js = await link.answering()
        out: dict[str, Any] = {
            "backend": "nats",
            "servers": link.where,
            "stream": layout.stream,
            "subject": layout.subject,
            "exists": False,
            "messages": 0,
            "bytes": 0,
            "group": group,
            # A default group that does not exist has no figures: "pending 0" beside the
            # per-sink groups a dispatcher makes (GROUP:SINK), 66 pending among them, read as
            # all clear (trial 233).
            "group_exists": False,
            "pending": None,
            "lag": None,
            "redelivered": None,
            "groups": [],
            "dead_letter_stream": layout.dead_stream,
            "dead_letters": 0,
        }
        try:
            info = await js.stream_info(layout.stream)
        except nats.js.errors.NotFoundError:
            return out
        state, config = info.state, info.config
        out.update(
            exists=True,
            messages=state.messages,
            bytes=state.bytes,
            first_log_id=state.first_seq,
            last_log_id=state.last_seq,
            deleted=state.num_deleted or 0,
            # As the settings spell them: 0 for "no limit" (NATS says -1; trial 131).
            limits={
                "max_msgs": _as_setting(config.max_msgs),
                "max_bytes": _as_setting(config.max_bytes),
                "max_age": config.max_age,
                "replicas": config.num_replicas,
                "duplicate_window": config.duplicate_window,
            },
        )
        if info.cluster is not None:
            out["cluster"] = {
                "name": info.cluster.name,
                "leader": info.cluster.leader,
                "replicas": [
                    {"name": p.name, "current": p.current, "lag": p.lag}
                    for p in info.cluster.replicas or []
                ],
            }
        groups = [c for c in await js.consumers_info(layout.stream) if c.config.durable_name]
        out["groups"] = [_group_figures(c) for c in groups]
        for row in out["groups"]:
            if row["group"] == group:
                out.update(
                    pending=row["pending"],
                    lag=row["lag"],
                    redelivered=row["redelivered"],
                    group_exists=True,
                )
        with contextlib.suppress(nats.js.errors.NotFoundError):
            dead = await js.stream_info(layout.dead_stream)
            out["dead_letters"] = dead.state.messages
        return out

    # ------------------------------------------------------------------- demo's groups

    def open_group_at_end(self, group: str, *, ack_wait: float) -> None:
        """Create consumer group `group` reading only what comes next (a demo run's own group
        on a stream the user named: the events already there are not the run's)."""
        most = DEFAULT_MAX_ACK_PENDING
        self._call(
            open_group(self._link, group, ack_wait=ack_wait, max_ack_pending=most, from_end=True)
        )

    def delete_group(self, group: str) -> None:
        """Delete consumer group `group` of the stream, if it is there."""
        self._call(self._delete_group(group))

    async def _delete_group(self, group: str) -> None:
        js = await self._link.answering()
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await js.delete_consumer(self._link.layout.stream, group)

    # ---------------------------------------------------------------------------- purge

    def purge(self) -> None:
        """Delete the stream and its dead-letter stream (with their consumer groups)."""
        self._call(self._purge())

    async def _purge(self) -> None:
        js = await self._link.answering()
        for name in (self._link.layout.stream, self._link.layout.dead_stream):
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.delete_stream(name)
        self._link.stream_lost()


def _group_figures(info: api.ConsumerInfo) -> dict[str, Any]:
    return {
        "group": info.name,
        "pending": info.num_ack_pending or 0,
        "lag": info.num_pending,
        "redelivered": info.num_redelivered or 0,
        "waiting": info.num_waiting or 0,
        "delivered_log_id": info.delivered.stream_seq if info.delivered else 0,
        "ack_floor_log_id": info.ack_floor.stream_seq if info.ack_floor else 0,
        "ack_wait": info.config.ack_wait,
    }


def _as_setting(limit: int | None) -> int:
    """A stream limit as `EVENTBUS_NATS_MAX_MSGS` and `..._MAX_BYTES` spell it: 0 for none
    (NATS reports -1)."""
    return 0 if limit is None or limit < 0 else limit
