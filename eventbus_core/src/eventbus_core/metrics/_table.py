"""THE table of eventbus's own metrics: names, kinds, units, labels, and how each is read.

Both exporters (Prometheus, OpenTelemetry) build their instruments from `METRICS` and nothing
else, and `docs/operations.md` documents the same list (a test compares them). Names follow
OpenTelemetry's semantic-convention style (`eventbus.<thing>.<figure>`, UCUM units); the
Prometheus exporter derives its names the way OpenTelemetry's own Prometheus exporter does
(`eventbus_sink_sent_total`, `eventbus_batch_duration_seconds`).

Every value is read from counters the bus and the dispatcher keep anyway (`stats()`), at
scrape time: nothing here runs in `publish()`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final, Literal

from eventbus_core.metrics._figures import Figures
from eventbus_core.metrics._readers import (
    WRITER_STATES,
    Sample,
    backlog,
    batch_duration,
    bus,
    dropped,
    lane,
    sink,
    sink_failed,
    sink_figure,
    source_dropped,
    writer_failures,
    writer_state,
)

__all__ = ["METRICS", "WRITER_STATES", "Metric", "Sample"]

Kind = Literal["counter", "gauge", "summary"]


@dataclass(frozen=True, slots=True)
class Metric:
    """One metric: what it is called, what it counts, and how to read it from `Figures`."""

    name: str
    kind: Kind
    unit: str
    description: str
    labels: tuple[str, ...]
    scope: Literal["bus", "dispatcher"]
    read: Callable[[Figures], Iterable[Sample]]

    @property
    def prometheus_name(self) -> str:
        """`eventbus.batch.duration` (s) -> `eventbus_batch_duration_seconds`; counters get
        `_total` from the client library."""
        base = self.name.replace(".", "_")
        suffix = f"_{self.prometheus_unit}" if self.prometheus_unit else ""
        return base + suffix if suffix and not base.endswith(suffix) else base

    @property
    def prometheus_unit(self) -> str:
        """The base unit Prometheus names (`seconds`, `bytes`), or "" for counts: OpenMetrics
        scrapes carry it as `# UNIT`."""
        return {"s": "seconds", "By": "bytes"}.get(self.unit, "")


# -------------------------------------------------------------------------------- the table

_E = "{event}"

METRICS: Final[tuple[Metric, ...]] = (
    # The bus: what publish() accepted, refused, and what became of it.
    Metric(
        "eventbus.events.published",
        "counter",
        _E,
        "Events accepted by publish().",
        (),
        "bus",
        bus(lambda s: s.published),
    ),
    Metric(
        "eventbus.events.dropped",
        "counter",
        _E,
        "Events dropped: refused by publish() (buffer full or bus stopped), or missed by an "
        "in-process subscriber whose buffer stayed full.",
        ("reason",),
        "bus",
        dropped,
    ),
    Metric(
        "eventbus.events.lost",
        "counter",
        _E,
        "Accepted events the backend gave up later (its stop deadline passed while it was "
        "unreachable).",
        (),
        "bus",
        bus(lambda s: s.lost),
    ),
    Metric(
        "eventbus.buffer.depth",
        "gauge",
        _E,
        "Accepted events not yet handed on by the backend.",
        (),
        "bus",
        bus(lambda s: s.queue_depth),
    ),
    Metric(
        "eventbus.writer.state",
        "gauge",
        "1",
        "1 for the backend writer's current state, 0 for the others (backends with a writer).",
        ("state",),
        "bus",
        writer_state,
    ),
    Metric(
        "eventbus.writer.failures",
        "counter",
        "{attempt}",
        "Failed writes of the backend writer (each is retried).",
        (),
        "bus",
        writer_failures,
    ),
    # The dispatcher, per sink.
    Metric(
        "eventbus.sink.received",
        "counter",
        _E,
        "Events queued for the sink.",
        ("sink",),
        "dispatcher",
        sink("received"),
    ),
    Metric(
        "eventbus.sink.sent",
        "counter",
        _E,
        "Events the sink accepted.",
        ("sink",),
        "dispatcher",
        sink("sent"),
    ),
    Metric(
        "eventbus.sink.failed",
        "counter",
        "{attempt}",
        "Failed send attempts, by error type (an HTTP status, timeout, connection, or an "
        "exception's class name).",
        ("sink", "error_type"),
        "dispatcher",
        sink_failed,
    ),
    Metric(
        "eventbus.sink.retried",
        "counter",
        _E,
        "Events of a batch sent again after a failed attempt, all of those the sink had not "
        "stored (a sink that stopped at the batch's first event counts the events after it "
        "too; counted as they are sent again: a stop during the retry delay hands them back, "
        "in `requeued`).",
        ("sink",),
        "dispatcher",
        sink("retried"),
    ),
    Metric(
        "eventbus.sink.dead_lettered",
        "counter",
        _E,
        "Events written to the dead-letter file (refused, or failed after every retry).",
        ("sink",),
        "dispatcher",
        sink("dead_lettered"),
    ),
    Metric(
        "eventbus.sink.dropped",
        "counter",
        _E,
        "Events lost for the sink: not even the dead-letter file took them (memory bus).",
        ("sink",),
        "dispatcher",
        sink("dropped"),
    ),
    Metric(
        "eventbus.sink.requeued",
        "counter",
        _E,
        "Events left unacknowledged for redelivery (shutdown deadline, failed dead letter).",
        ("sink",),
        "dispatcher",
        sink("requeued"),
    ),
    Metric(
        "eventbus.sink.rejected",
        "counter",
        _E,
        "Events whose request the destination accepted but which it refused to store (an "
        "OTLP partial success; counted sent, not retried). Sinks that report it: otlp.",
        ("sink",),
        "dispatcher",
        sink_figure("rejected"),
    ),
    Metric(
        "eventbus.sink.queued",
        "gauge",
        _E,
        "Events not yet sent by the sink: its queue, and the batch it is sending.",
        ("sink",),
        "dispatcher",
        sink("queued"),
    ),
    Metric(
        "eventbus.sink.lag",
        "gauge",
        "s",
        "Age of the sink's oldest event not yet sent (0 when its queue is empty).",
        ("sink",),
        "dispatcher",
        sink("lag_seconds"),
    ),
    Metric(
        "eventbus.batch.duration",
        "summary",
        "s",
        "Time from a batch's first send attempt to its outcome (sent or given up).",
        ("sink",),
        "dispatcher",
        batch_duration,
    ),
    # The dispatcher's sources (consumers), per lane: a sink's name, or `shared`.
    Metric(
        "eventbus.consumer.read",
        "counter",
        _E,
        "Deliveries the dispatcher read from the source.",
        ("lane",),
        "dispatcher",
        lane("read"),
    ),
    Metric(
        "eventbus.consumer.acked",
        "counter",
        _E,
        "Deliveries acknowledged to the source (every sink of the lane was done with them).",
        ("lane",),
        "dispatcher",
        lane("acked"),
    ),
    Metric(
        "eventbus.consumer.redelivered",
        "counter",
        _E,
        "Deliveries the source had handed out before (a restart, or reclaimed from a peer).",
        ("lane",),
        "dispatcher",
        lane("redelivered"),
    ),
    Metric(
        "eventbus.consumer.lag",
        "gauge",
        _E,
        "Entries of the stream not yet delivered to the lane's consumer group (reported by "
        "sources that read through a consumer group), or, for a lane reading a subscription "
        "of a log that can count it, the entries not yet handed to that subscription.",
        ("lane",),
        "dispatcher",
        backlog("lag"),
    ),
    Metric(
        "eventbus.consumer.pending",
        "gauge",
        _E,
        "Entries delivered to the lane's consumer group and not yet acknowledged (reported "
        "by sources that read through a consumer group).",
        ("lane",),
        "dispatcher",
        backlog("pending"),
    ),
    Metric(
        "eventbus.consumer.dead_lettered",
        "counter",
        _E,
        "Entries the source itself dead-lettered: undecodable, or delivered too often "
        "(reported by sources that dead-letter entries themselves).",
        ("lane",),
        "dispatcher",
        lane("dead_lettered"),
    ),
    Metric(
        "eventbus.consumer.dropped",
        "counter",
        _E,
        "Events the bus dropped for the lane's subscription before they were read (memory "
        "bus: the dispatcher was slower than the publishers).",
        ("lane",),
        "dispatcher",
        source_dropped,
    ),
    Metric(
        "eventbus.consumer.missed",
        "counter",
        _E,
        "Events the backend lost before the lane read them: trimmed by its limits, or lost "
        "by its server (reported by sources that can tell).",
        ("lane",),
        "dispatcher",
        lane("missed"),
    ),
    Metric(
        "eventbus.consumer.missed_unknown",
        "counter",
        "{loss}",
        "Times the backend lost events before the lane read them without being able to tell "
        "how many (its server lost its data, as by a restart without persistence).",
        ("lane",),
        "dispatcher",
        lane("missed_unknown"),
    ),
    Metric(
        "eventbus.consumer.undecodable",
        "counter",
        "{entry}",
        "Entries the lane's source skipped because they do not decode as events (something "
        "else writes to its key), left in the backend (reported by sources that do not "
        "dead-letter them).",
        ("lane",),
        "dispatcher",
        lane("undecodable"),
    ),
)
