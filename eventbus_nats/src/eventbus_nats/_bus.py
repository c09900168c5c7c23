"""`NatsEventBus`: events in a NATS JetStream stream, replicated across a cluster if asked.

Settings read by the `nats` backend factory: `OBSERVABILITY_BUFFER_SIZE` (buffer_size) and
`EVENTBUS_STOP_TIMEOUT` (stop_timeout) from `EventBusSettings`; `NATS_URL`, `EVENTBUS_NATS_*`
and the credential and TLS variables from `NatsSettings`.

Capabilities (`eventbus_core.capabilities`): Flushable, CrossProcess, Reachable,
ConsumerGroups, ReadableLog (by LogID and by time), Describable and Isolatable; its consumers
offer KeepAlive and SourceFigures.
"""

from __future__ import annotations

import contextlib
import threading
import time
import weakref
from collections.abc import Mapping
from typing import Any, Final, Self

from eventbus_core import (
    BaseEventBus,
    BusStats,
    Event,
    EventBusSettings,
    MaskedMapping,
    RedactedURL,
    StopInProgress,
    bind_publish,
    check_buffer_size,
    check_count,
    check_positive_seconds,
    check_seconds,
    get_logger,
    stop_wait,
)
from eventbus_core.batching import at_fork, check_fork, deliver_at_exit
from eventbus_nats._capabilities import StreamCapabilities
from eventbus_nats._consumer import GroupConsumer, default_consumer_name
from eventbus_nats._fanout import Follower, NatsSubscription
from eventbus_nats._groups import DEFAULT_MAX_ACK_PENDING
from eventbus_nats._layout import StreamLayout
from eventbus_nats._link import Link, LinkClosed
from eventbus_nats._log import LogReader
from eventbus_nats._options import ConnectOptions, check_connect_options, tls_wanted_by
from eventbus_nats._settings import (
    INT64,
    NatsSettings,
    check_name,
    check_nats_duration,
    check_servers,
)
from eventbus_nats._stopping import drain_followers
from eventbus_nats._writer import JetStreamWriter

__all__ = ["NatsEventBus"]

log = get_logger("eventbus.nats")

_DEFAULT_STREAM: Final = "LLM_PROXY_EVENTS"
# The end of stop()'s timeout (0.5 s, or half of a shorter one) is kept to learn whether events
# sent without a PubAck yet are in the stream and to hand subscriptions what this bus stored:
# counts must be true, not guesses. Within the timeout, not past it: every backend's stop()
# keeps to one deadline, which a gunicorn graceful_timeout is sized from (trial 254: 5.5 s).
# Half, not a tenth: stop(0.3) handed subscriptions few of thousands stored (review 258).
_CONFIRM: Final = 0.5
_CONFIRM_SHARE: Final = 0.5
_GRACE: Final = 0.25  # seconds stop() waits past the timeout only if its loop does not answer
_COUNT_WAIT: Final = 0.25  # seconds a close waits for NATS to say how far the stream goes
_SUBSCRIBE_WAIT: Final = 5.0  # seconds subscribe() waits for its consumer while NATS answers
_LIVE_BUSES: weakref.WeakSet[NatsEventBus] = weakref.WeakSet()


def _reinit_buses_after_fork() -> None:
    for bus in list(_LIVE_BUSES):
        bus._after_fork_in_child()


at_fork(after_in_child=_reinit_buses_after_fork)


class NatsEventBus(StreamCapabilities, BaseEventBus):
    """Event bus on a NATS JetStream stream.

    `publish()` only appends to a bounded buffer; a background writer sends batches with
    JetStream's asynchronous publish and checks every acknowledgement. The LogID of an event is
    its stream sequence. `subscribe()` gives each subscriber an ephemeral ordered consumer of
    what is published from then on; `consumer()` joins a consumer group (a durable consumer)
    for at-least-once processing.

    Args:
        url: Server URL, or a comma-separated list of a cluster's servers (credentials in it
            are never shown).
        stream: Stream name (created if missing, with the limits below).
        subject: Subject events are published on.
        group: Default consumer group of `consumer()`.
        buffer_size: Events `publish()` buffers before refusing and counting more.
        stop_timeout: Seconds `stop()` waits at most to write what was accepted.
        max_msgs: Newest events the stream keeps (0: no limit).
        max_bytes: Bytes the stream keeps (0: no limit).
        max_age: Seconds the stream keeps an event (0: no limit).
        replicas: Copies of the stream in a cluster.
        duplicate_window: Seconds the stream remembers message ids (retries land once).
        ack_wait: AckWait of consumer groups created by `consumer()`.
        max_deliveries: Deliveries of one entry before a consumer dead-letters it.
        max_batch: Most events per batch the writer sends.
        connect_options: Further keyword arguments for nats-py's `connect()` (`user`,
            `password`, `token`, `user_credentials`, `tls`, ...).
    """

    def __init__(
        self,
        url: str = "nats://127.0.0.1:4222",
        *,
        stream: str = _DEFAULT_STREAM,
        subject: str = "llm-proxy.events",
        group: str = "llm-proxy-dispatchers",
        buffer_size: int = 1000,
        stop_timeout: float = 5.0,
        max_msgs: int = 10_000,
        max_bytes: int = 0,
        max_age: float = 86_400.0,
        replicas: int = 1,
        duplicate_window: float = 120.0,
        ack_wait: float = 30.0,
        max_deliveries: int = 5,
        max_batch: int = 500,
        connect_options: Mapping[str, Any] | None = None,
    ) -> None:
        layout = StreamLayout(
            stream, subject, max_msgs, max_bytes, max_age, replicas, duplicate_window
        )
        check_name(group, "group")
        if isinstance(buffer_size, bool) or not isinstance(buffer_size, int) or buffer_size < 1:
            raise ValueError(
                f"buffer_size must be a positive int, got {buffer_size!r} "
                "(OBSERVABILITY_BUFFER_SIZE when built from settings)"
            )
        check_seconds("stop_timeout", stop_timeout)
        check_positive_seconds("ack_wait", ack_wait)
        check_nats_duration(ack_wait, "ack_wait")
        check_count("max_deliveries", max_deliveries, 1, maximum=INT64)
        check_count("max_batch", max_batch, 1)

        try:
            servers = tuple(check_servers(url))
        except ValueError as exc:
            raise ValueError(f"url {exc}") from None  # the message masks any credential
        connect_options = check_connect_options(connect_options, servers)
        self.layout = layout
        self.group = group
        # Whether the user named the stream (the demo then runs on it; see `isolate()`): a bus
        # built in code with a stream other than the default did; `from_settings()` says
        # whether EVENTBUS_NATS_STREAM was set.
        self.stream_given = stream != _DEFAULT_STREAM
        # A str whose repr masks the password: vars(bus) showed it (trial 139).
        self._url = RedactedURL(url)
        self._connect_options = MaskedMapping(connect_options or {})
        self.buffer_size = buffer_size
        self.stop_timeout = stop_timeout
        self.ack_wait = ack_wait
        self.max_deliveries = max_deliveries
        self._stopped = False
        self._stopping = StopInProgress()  # what a stop() made meanwhile waits for
        self._subs_lock = threading.Lock()  # subscribe() against stop()
        self._followers: list[Follower] = []
        # Closed subscriptions, for their figures: the bus's `missed` and `undecodable` went
        # down when one closed (review 227; the Redis backends keep theirs likewise).
        self._closed_subs: list[NatsSubscription] = []
        self._consumers: weakref.WeakSet[GroupConsumer] = weakref.WeakSet()
        auth = dict(connect_options or {})
        options = ConnectOptions(servers, auth, tls_wanted_by(servers, auth))
        # Everything is checked: only now start the connection's thread.
        self._link = Link(options, layout, name=f"eventbus-nats[{layout.stream}]")
        self._writer = JetStreamWriter(
            self._link, buffer_size=buffer_size, max_batch=max_batch, exit_timeout=stop_timeout
        )
        # The writer's own bound method: its True/False, as the other buses give it (trial
        # 235), in one Python call per event, not two.
        bind_publish(self, NatsEventBus.publish, self._writer.publish)
        # A process that exits without stop() waits for the writer, as for the core's batchers.
        deliver_at_exit(self._writer)
        self._writer.hold = self._a_follower_is_unstarted
        self._log = LogReader(self._link)
        _LIVE_BUSES.add(self)

    @classmethod
    def from_settings(
        cls, settings: EventBusSettings, nats_settings: NatsSettings | None = None
    ) -> Self:
        """Build the `nats` backend: `buffer_size` and `stop_timeout` from `settings`, the rest
        from `nats_settings` (when omitted: those `settings` carry, e.g.
        `EventBusSettings(nats_replicas=3)`, else the environment). Does not block: the
        connection is made in the background, so the application starts while NATS is down.

        Raises:
            SettingsError: a setting is invalid (the message names the variable).
        """
        settings = EventBusSettings.expect(settings, "NatsEventBus.from_settings()")
        nats_settings = nats_settings or settings.plugin_settings(NatsSettings)
        _warn_of_publish_path(settings.publish_path)
        options = ConnectOptions.from_settings(nats_settings)
        bus = cls(
            ",".join(options.servers),
            stream=nats_settings.nats_stream,
            subject=nats_settings.nats_subject,
            group=nats_settings.nats_group,
            buffer_size=settings.buffer_size,
            stop_timeout=settings.stop_timeout,
            max_msgs=nats_settings.nats_max_msgs,
            max_bytes=nats_settings.nats_max_bytes,
            max_age=nats_settings.nats_max_age,
            replicas=nats_settings.nats_replicas,
            duplicate_window=nats_settings.nats_duplicate_window,
            ack_wait=nats_settings.nats_ack_wait,
            max_deliveries=nats_settings.nats_max_deliveries,
            connect_options=options.auth,
        )
        bus.stream_given = "nats_stream" in nats_settings.model_fields_set
        return bus

    def _after_fork_in_child(self) -> None:
        """Give a forked child a bus of its own: a new connection, writer id and counters.

        A subscription made before the fork reads on in the child, through a consumer of the
        child's own, after the last event it had been handed (the parent's consumer stays the
        parent's): as on the other backends, it gets what the child and others publish, and
        the child's `stop()` ends it. (Dropped, it was never ended: a reader of it in the
        child waited for ever, trial 124.)
        """
        self._subs_lock = threading.Lock()
        self._stopping = self._stopping.after_fork_in_child(self._stopped)
        self._link.after_fork_in_child()
        self._writer.after_fork_in_child()
        inherited = [f for f in self._followers if not f.sub.finished]
        self._followers = [Follower(self._link, f.sub, start_after=f.last_seq) for f in inherited]
        for follower in self._followers:
            with contextlib.suppress(LinkClosed):
                # Not waited for: the consumer is made once the child's connection is up.
                self._link.submit(follower.start(_SUBSCRIBE_WAIT))
        for consumer in list(self._consumers):
            consumer.after_fork_in_child()

    # --------------------------------------------------------------------- capabilities

    def _on_stream(self, stream: str, subject: str) -> Self:
        """A bus like this one (servers, credentials) on another stream (the demo's)."""
        return type(self)(
            self._url, stream=stream, subject=subject, connect_options=self._connect_options
        )

    @property
    def default_group(self) -> str:
        """The group `consumer()` joins when none is named."""
        return self.group

    # -------------------------------------------------------------------------- publishing

    def publish(self, event: Event) -> bool:
        """Buffer `event` for the writer and return at once (True); never blocks, never raises.

        A full buffer (NATS slow or down) or a stopped bus counts the event as dropped (False).
        (Each instance replaces this method with its writer's `publish`, which does exactly
        this: `eventbus_core.bind_publish`.)
        """
        return self._writer.publish(event)

    def flush(self, timeout: float | None = 5.0) -> bool:
        """Return True once every event published so far is acknowledged by the stream (or
        given up at stop: a flush that a stop ends returns True too); False if `timeout`
        seconds passed first (None: no limit)."""
        return self._writer.flush(timeout)

    # --------------------------------------------------------------------------- reading

    def subscribe(
        self, name: str | None = None, *, buffer_size: int | None = None
    ) -> NatsSubscription:
        """Return a subscription to every event published to the stream from now on, by any
        process, in stream order, each stamped with its LogID.

        Waits for its consumer to be created (up to 5 s while NATS answers); if NATS is down,
        it starts after the last event this bus wrote once NATS answers again (if this bus
        wrote none yet, its writer waits for that consumer, at most 5 s, so that the
        subscription misses none of this bus's events).
        """
        sub = NatsSubscription(
            check_buffer_size(buffer_size, self.buffer_size),
            name=name,
            on_close=self._unsubscribe,
        )
        with self._subs_lock:
            if self._stopped:
                sub.finish()
                return sub
            start_after = self._writer.last_seq or None
            follower = Follower(self._link, sub, start_after=start_after)
            self._followers.append(follower)
        # On failure the follower keeps trying in the background.
        with contextlib.suppress(TimeoutError, LinkClosed):
            self._link.call(follower.start(_SUBSCRIBE_WAIT), _SUBSCRIBE_WAIT + 1.0)
        return sub

    def _a_follower_is_unstarted(self) -> bool:
        """True while a subscription made before this bus stored anything has no consumer yet
        (NATS was unreachable): the writer waits, so that it misses none of this bus's events."""
        return any(f.last_seq is None and not f.sub.finished for f in self._followers)

    def _unsubscribe(self, sub: Any) -> None:
        with self._subs_lock:
            gone = [f for f in self._followers if f.sub is sub]
            self._followers = [f for f in self._followers if f.sub is not sub]
            self._closed_subs.extend(f.sub for f in gone)
        for follower in gone:
            # Closed behind the stream, it never gets those events: counted as dropped for
            # it, as the Redis backends count theirs (trial 213: 2,000 of another process's
            # events went uncounted).
            if not follower.sub.finished and follower.last_seq is not None:
                self._count_behind(follower)
            with contextlib.suppress(LinkClosed):
                self._link.submit(follower.close())

    def _count_behind(self, follower: Follower) -> None:
        sub = follower.sub
        try:
            behind = self._link.call(follower.count_behind(_COUNT_WAIT), _COUNT_WAIT + 0.25)
        except Exception:  # the link closed, called on its own thread, or no answer in time
            behind = None
        if behind is None:
            if self._link.subject_alone:  # else no count is possible, and docs say so
                sub.uncounted_at_close = True
                log.warning(
                    "eventbus nats subscription %s closed, but NATS did not say in time how "
                    "many events the stream holds past what it was handed: those are counted "
                    "nowhere (they stay in the stream, for eventbus replay)",
                    sub.name,
                )
            return
        if behind:  # counted by count_behind(), on the loop
            log.info(
                "eventbus nats subscription %s closed %d event(s) behind the stream: it never "
                "received them (counted in its dropped; the stream still holds them, for "
                "eventbus replay)",
                sub.name,
                behind,
            )

    def consumer(
        self,
        group: str | None = None,
        name: str | None = None,
        *,
        batch_size: int = 100,
        ack_wait: float | None = None,
        max_deliveries: int | None = None,
        max_ack_pending: int = DEFAULT_MAX_ACK_PENDING,
    ) -> GroupConsumer:
        """Return member `name` (default `host-pid`) of consumer group `group` (default: the
        bus's group), a durable consumer created if missing, from the oldest entry the stream
        holds. Acknowledge with `ack()` after processing; call `keep_alive()` while a batch
        takes long. Entries delivered more than `max_deliveries` times, or undecodable, go to
        the dead-letter stream.

        Raises:
            ValueError: a name or number is invalid (`SettingsError`, naming
                `EVENTBUS_NATS_GROUP`, for a group name NATS would refuse).
            LinkClosed: the bus was stopped and its connection closed.
        """
        consumer = GroupConsumer(
            self._link,
            group or self.group,
            name or default_consumer_name(),
            batch_size=batch_size,
            ack_wait=self.ack_wait if ack_wait is None else ack_wait,
            max_deliveries=self.max_deliveries if max_deliveries is None else max_deliveries,
            max_ack_pending=max_ack_pending,
        )
        self._consumers.add(consumer)
        return consumer

    # --------------------------------------------------------------------------- lifecycle

    def stop(self, timeout: float | None = None) -> None:
        """Write what was accepted (bounded by `timeout`, default `stop_timeout`; `math.inf`: no
        limit; NaN raises `ValueError` and stops nothing), deliver it to this bus's
        subscriptions, then end them. Idempotent.

        Returns within `timeout` (and the few milliseconds of handing the figures over): its
        last 0.5 s (half of a shorter one) confirms with the server
        which events sent without an acknowledgement yet it holds and lets the subscriptions
        read up to the newest event this bus stored; only if the connection's own loop does
        not answer does it wait 0.25 s more, for the counts to settle. Events not in the stream are
        counted in `stats().lost`; those a subscription was not handed, in its `dropped`.
        Consumers are separate: close them yourself.
        """
        wait = stop_wait(timeout, self.stop_timeout)  # a NaN raises before anything stops
        check_fork()  # a child no fork hook told of would wait on its parent's loop
        with self._subs_lock:
            first = not self._stopped
            self._stopped = True
            if first:
                self._stopping.start()
            followers = list(self._followers)
        if not first:
            self._stopping.wait(wait + _GRACE)
            return
        try:
            confirm_by = time.monotonic() + wait
            deadline = confirm_by - min(_CONFIRM, wait * _CONFIRM_SHARE)
            self._writer.close_intake()
            settled = False
            try:
                future = self._link.submit(self._shutdown(followers, deadline, confirm_by))
                future.result(max(0.0, confirm_by - time.monotonic()) + _GRACE)
                settled = True
            except Exception:  # the loop did not answer in time: settle from here
                pass
            self._writer.finish(settled=settled)
            if not settled:
                for follower in followers:
                    follower.sub.finish()
            self._link.release(confirm_by)
        finally:
            self._stopping.finish()

    async def _shutdown(
        self, followers: list[Follower], deadline: float, confirm_by: float
    ) -> None:
        await self._writer.drain(deadline, confirm_by)
        await drain_followers(followers, self._writer.last_seq, confirm_by, self._link)

    def stats(self) -> BusStats:
        """`(published, dropped)` with `lost`, writer and connection figures (no I/O)."""
        accepted, refused, lost = self._writer.counts()
        subs = [f.sub for f in self._followers]
        counted = [*subs, *self._closed_subs]
        extra: dict[str, Any] = {
            "backend": "nats",
            "servers": self._link.where,
            "stream": self.layout.stream,
            "subject": self.layout.subject,
            "group": self.group,
            "connection": self._link.state,
            **self._writer.figures(),
            "missed": sum(s.missed for s in counted),
            "unhanded": sum(s.unhanded for s in counted),
            "undecodable": sum(s.undecodable for s in counted),
            "consumers": [c.figures() for c in list(self._consumers)],
            "stopped": self._stopped,
        }
        return BusStats(
            accepted,
            refused,
            lost=lost,
            queue_depth=self._writer.queue_depth(),
            subscribers=tuple(s.stats() for s in subs),
            extra=extra,
        )

    def __repr__(self) -> str:
        state = "stopped" if self._stopped else self._link.state
        return (
            f"<NatsEventBus {state} {self._link.where} stream={self.layout.stream!r} "
            f"subject={self.layout.subject!r} buffer_size={self.buffer_size}>"
        )


_said_publish_path = False


def _warn_of_publish_path(path: str) -> None:
    """`EVENTBUS_PUBLISH_PATH=asyncio` asks for the loop to write, which this backend cannot do:
    its writer is a thread with the connection's own loop (nats-py is asyncio only, and one
    connection serves every loop). Said once per process; it was ignored without a word
    (trial 192). `thread` is what it does anyway, and `auto` asks for nothing in particular."""
    global _said_publish_path
    if path != "asyncio" or _said_publish_path:
        return
    _said_publish_path = True
    log.warning(
        "EVENTBUS_PUBLISH_PATH=asyncio has no effect on the nats backend: its writer runs on a "
        "thread of its own (with the connection's event loop) whatever the setting; unset it "
        "or set it to auto to end this warning"
    )
