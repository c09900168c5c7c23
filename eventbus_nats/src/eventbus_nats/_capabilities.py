"""`StreamCapabilities`: what a bus offers through its stream, beyond publishing and reading.

Reachable (`check`), ReadableLog (`read_range`, `newest`, `time_index`), Describable
(`describe`), Isolatable (`isolated_settings`, `purge`) and CrossProcess, each delegating to
the bus's `LogReader`. A mixin of `NatsEventBus`, kept apart so each module stays readable.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

from eventbus_core import Event
from eventbus_nats._layout import StreamLayout
from eventbus_nats._log import LogReader

__all__ = ["StreamCapabilities"]


class StreamCapabilities:
    """Capabilities of a bus backed by one JetStream stream (see `eventbus_core.capabilities`)."""

    _log: LogReader
    layout: StreamLayout
    group: str

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

    def isolated_settings(self, run: str) -> Mapping[str, Any]:
        """Settings that put a bus in a stream of its own for run `run` (the demo)."""
        token = re.sub(r"[^A-Za-z0-9_-]", "_", run) or "run"
        return {
            "nats_stream": f"EVENTBUS_RUN_{token}",
            "nats_subject": f"eventbus-run.{token}.events",
        }

    def purge(self) -> None:
        """Delete this bus's stream and dead-letter stream, with their consumer groups.

        Raises:
            BackendUnavailableError: NATS does not answer.
        """
        self._log.purge()
