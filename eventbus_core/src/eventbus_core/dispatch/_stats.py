"""Figures of the dispatcher, per sink.

Invariant once the dispatcher has stopped: `received == sent + dead_lettered + dropped +
requeued` for every sink (`requeued`: handed back unacknowledged to a durable source at
shutdown, to be delivered again). While it runs, the difference is `in_flight`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["DispatcherStats", "SinkStats"]


@dataclass
class SinkStats:
    """Counters of one sink (events, not batches, unless the name says otherwise).

    Attributes:
        received: Events queued for this sink.
        sent: Events the sink accepted.
        retried: Event sends retried, counted as sent again (a batch of 10 retried twice adds 20).
        dead_lettered: Events written to the dead-letter destination.
        dropped: Events lost because even the dead-letter destination failed (logged at
            ERROR), or left over at shutdown from a source that cannot take them back.
        requeued: Events left unacknowledged at shutdown; a durable source delivers them again.
        shed: Events dead-lettered for this sink without a send because it was stalled (shared
            consumer mode; also counted in `dead_lettered`, or in `dropped`/`requeued` if the
            dead letter could not be written).
        stalls: Times the sink was declared stalled (its queue full for `stall_timeout`).
        stalled: True while it is stalled.
        batches: Batches the sink accepted.
        failures: Failed send attempts (batches).
        queued: Events not yet sent by this sink now: its queue, and the batch it is sending.
        lag_seconds: Age of the oldest event not yet sent (0 when the queue is empty).
        last_batch_seconds: Time from a batch's first send attempt to its outcome.
        max_batch_seconds: Longest such time so far.
        total_batch_seconds: Sum of those times (divide by `finished_batches`).
        finished_batches: Batches that reached an outcome (sent or given up).
        failed_by_type: Failed send attempts by error type (an HTTP status such as `"503"`,
            `"timeout"`, `"connection"`, or an exception's class name); they add up to
            `failures`.
        failed_since_sent: Events given up (dead-lettered, or not even that) since this sink
            last sent a batch; 0 while it delivers. Readiness (`/readyz`) watches it.
        figures: The sink's own counters, for a sink that offers them (`SinkFigures`: the
            `otlp` sink's `rejected`).
    """

    received: int = 0
    sent: int = 0
    retried: int = 0
    dead_lettered: int = 0
    dropped: int = 0
    requeued: int = 0
    shed: int = 0
    stalls: int = 0
    stalled: bool = False
    batches: int = 0
    failures: int = 0
    queued: int = 0
    lag_seconds: float = 0.0
    last_batch_seconds: float = 0.0
    max_batch_seconds: float = 0.0
    total_batch_seconds: float = 0.0
    finished_batches: int = 0
    failed_by_type: dict[str, int] = field(default_factory=dict)
    failed_since_sent: int = 0
    figures: dict[str, int] = field(default_factory=dict)

    @property
    def in_flight(self) -> int:
        """Events received but not yet sent, dead-lettered, dropped or requeued."""
        return self.received - self.sent - self.dead_lettered - self.dropped - self.requeued

    def record_latency(self, seconds: float) -> None:
        """Account one batch's latency."""
        self.last_batch_seconds = seconds
        self.max_batch_seconds = max(self.max_batch_seconds, seconds)
        self.total_batch_seconds += seconds
        self.finished_batches += 1

    def record_failure(self, error_type: str) -> None:
        """Account one failed send attempt of type `error_type`."""
        self.failures += 1
        self.failed_by_type[error_type] = self.failed_by_type.get(error_type, 0) + 1

    def record_sent(self, events: int, *, batch: bool = True) -> None:
        """Account `events` the sink accepted (a whole batch, or the part of one it stored)."""
        self.sent += events
        self.batches += 1 if batch else 0
        self.failed_since_sent = 0

    def as_dict(self) -> dict[str, Any]:
        """Plain data (for logs and JSON)."""
        data = asdict(self)
        data["in_flight"] = self.in_flight
        return data


@dataclass
class DispatcherStats:
    """A snapshot of the dispatcher's figures.

    Attributes:
        sinks: Per-sink counters, by sink name.
        read: Deliveries read from the sources.
        acked: Deliveries acknowledged to the sources.
        source_dropped: Events the bus dropped for the dispatcher's subscriptions (memory bus
            with a full subscriber buffer), as the source reports them.
        lanes: Per lane (a sink's name, or `shared`): its source's name, deliveries read and
            acknowledged, failed acknowledgements, `never_read` (events a memory subscription
            held past the stop), and the source's own figures when it has them (a Redis
            streams consumer: delivered, claimed, dead_lettered, ...; a subscription:
            `dropped` and `missed`, events its backend lost before it read them).
    """

    sinks: dict[str, SinkStats]
    read: int = 0
    acked: int = 0
    source_dropped: int = 0
    lanes: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def missed(self) -> int:
        """Events the backends lost before the lanes read them: the lanes' `missed` (trimmed by
        a limit, or lost by the server), where their sources can tell, summed over the lanes
        (with a lane per sink, an event every lane missed counts once for each)."""
        return sum(_count(figures, "missed") for figures in self.lanes.values())

    @property
    def missed_unknown(self) -> list[str]:
        """Lanes whose backend lost events before they were read without being able to tell
        how many (a server that lost its data): the lanes' `missed_unknown` figure."""
        return [name for name, figures in self.lanes.items() if _count(figures, "missed_unknown")]

    @property
    def uncounted(self) -> list[str]:
        """Lanes whose source could not say, at its close, how many events it left unread
        (a Redis list whose server did not answer): those events are in no figure."""
        return [name for name, figures in self.lanes.items() if figures.get("uncounted_at_close")]

    def as_dict(self) -> dict[str, Any]:
        """Plain data (for logs and JSON)."""
        return {
            "read": self.read,
            "acked": self.acked,
            "source_dropped": self.source_dropped,
            "missed": self.missed,
            "sinks": {name: s.as_dict() for name, s in self.sinks.items()},
            "lanes": self.lanes,
        }


def _count(figures: Mapping[str, Any], key: str) -> int:
    """A lane's count `key` from its source's figures; 0 where the source gives none, or not
    a whole number (figures are a plugin's plain data)."""
    value = figures.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
