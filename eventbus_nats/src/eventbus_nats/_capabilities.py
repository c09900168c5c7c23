"""`StreamCapabilities`: what a bus offers through its stream, beyond publishing and reading.

Reachable (`check`), ReadableLog (`read_range`, `newest`, `time_index`), Describable
(`describe`, `location`), Isolatable (`isolate`; `purge`) and CrossProcess, each delegating to
the bus's `LogReader`. A mixin of `NatsEventBus`, kept apart so each module stays readable.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any, Self

from eventbus_core import Event
from eventbus_core.capabilities import Isolation
from eventbus_nats._layout import StreamLayout
from eventbus_nats._log import LogReader

__all__ = ["StreamCapabilities"]


class StreamCapabilities:
    """Capabilities of a bus backed by one JetStream stream (see `eventbus_core.capabilities`)."""

    _log: LogReader
    layout: StreamLayout
    group: str
    stream_given: bool
    ack_wait: float

    def _on_stream(self, stream: str, subject: str) -> Self:
        raise NotImplementedError  # the bus: a bus like this one on another stream

    def stop(self, timeout: float | None = None) -> None:
        raise NotImplementedError  # the bus's

    @property
    def location(self) -> str:
        """`stream STREAM`."""
        return f"stream {self.layout.stream}"

    @property
    def cross_process(self) -> bool:
        """True: every process connected to the same stream sees these events."""
        return True

    @property
    def time_index(self) -> bool:
        """True: `read_range()` accepts `since`/`until` (JetStream keeps each message's time)."""
        return True

    @property
    def dead_letter_stream(self) -> str:
        """Name of the dead-letter stream (subject `dead.<subject>`)."""
        return self.layout.dead_stream

    def check(self, timeout: float = 2.0) -> None:
        """Return if NATS JetStream answers within `timeout` seconds.

        Raises:
            BackendUnavailableError: it does not (the message names the servers, without
                credentials, and what to check).
        """
        self._log.check(timeout)

    def read_range(
        self,
        first_id: int | None = None,
        last_id: int | None = None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Iterator[Event | None]:
        """Yield the retained events with LogID in `[first_id, last_id]` (and stored within
        `[since, until]`; a naive datetime is local time), oldest first; None for a message
        that does not decode. Reading consumes nothing.

        Raises:
            BackendUnavailableError: NATS does not answer.
        """
        return self._log.read_range(first_id, last_id, since=since, until=until)

    def newest(self, n: int) -> list[Event]:
        """Return the `n` newest retained events, oldest first.

        Raises:
            BackendUnavailableError: NATS does not answer.
        """
        return self._log.newest(n)

    def describe(self) -> Mapping[str, Any]:
        """Figures of the stream (messages, bytes, LogIDs, limits, cluster), its consumer
        groups (pending, lag, redelivered) and dead letters, read from the server.

        Raises:
            BackendUnavailableError: NATS does not answer.
        """
        return self._log.describe(self.group)

    def isolate(self, run: str, events: int) -> Isolation:
        """A stream of run `run`'s own (`EVENTBUS_RUN_<run>`, subject `eventbus-run.<run>.events`)
        for the demo's processes, keeping all `events`; `cleanup` deletes it (with its dead
        letters and consumer groups). A stream the user named (`EVENTBUS_NATS_STREAM`) is used
        as it is, with a consumer group of the run's own (`eventbus-demo-<run>`) that starts
        at its end; `cleanup` deletes only that group (it ran on a stream the demo was told to
        use, which an account may allow alone: trial 233).

        Raises:
            BackendUnavailableError: NATS does not answer (a stream the user named).
        """
        token = re.sub(r"[^A-Za-z0-9_-]", "_", run) or "run"
        if self.stream_given:
            return self._isolate_on_own_stream(token)
        stream, subject = f"EVENTBUS_RUN_{token}", f"eventbus-run.{token}.events"
        kept = self.layout.max_msgs
        env = {
            "EVENTBUS_NATS_STREAM": stream,
            "EVENTBUS_NATS_SUBJECT": subject,
            "EVENTBUS_NATS_MAX_MSGS": str(max(kept, events) if kept else 0),
        }

        def cleanup(keep: bool) -> str:
            if keep:
                return (
                    f"kept (--keep): EVENTBUS_NATS_STREAM={stream} "
                    f"EVENTBUS_NATS_SUBJECT={subject} eventbus stats (or tail, replay) shows it"
                )
            bus = self._on_stream(stream, subject)
            try:
                bus.purge()
            finally:
                bus.stop(0)
            return "deleted at the end (the stream, its dead letters and groups)"

        return Isolation(env=env, where=stream, kind="nats stream", cleanup=cleanup)

    def _isolate_on_own_stream(self, token: str) -> Isolation:
        """`isolate()` on the stream the user named: a group of the run's own, at its end."""
        stream, subject = self.layout.stream, self.layout.subject
        group = f"eventbus-demo-{token}"
        self._log.open_group_at_end(group, ack_wait=self.ack_wait)

        def cleanup(keep: bool) -> str:
            if keep:
                return (
                    f"yours (EVENTBUS_NATS_STREAM): left in place, with the demo's group "
                    f"{group} (--keep): EVENTBUS_NATS_STREAM={stream} "
                    f"EVENTBUS_NATS_SUBJECT={subject} EVENTBUS_NATS_GROUP={group} eventbus "
                    "stats shows it"
                )
            bus = self._on_stream(stream, subject)  # this bus is stopped by now
            try:
                bus._log.delete_group(group)
            finally:
                bus.stop(0)
            return f"yours (EVENTBUS_NATS_STREAM): left in place, the demo's group {group} removed"

        # The stream and subject too: a bus built in code names them where the environment
        # may not, and the demo's processes read the environment (review 237).
        env = {
            "EVENTBUS_NATS_STREAM": stream,
            "EVENTBUS_NATS_SUBJECT": subject,
            "EVENTBUS_NATS_GROUP": group,
        }
        return Isolation(env=env, where=stream, kind="nats stream", cleanup=cleanup)

    def purge(self) -> None:
        """Delete this bus's stream and dead-letter stream, with their consumer groups.

        Raises:
            BackendUnavailableError: NATS does not answer.
        """
        self._log.purge()
