"""Which sources a dispatcher reads: one per sink, or one shared by every sink."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

from eventbus_core._bus import subscribe_sized
from eventbus_core._sink import Sink
from eventbus_core._source import AckableSource, SubscriptionSource
from eventbus_core._subscription import Subscription
from eventbus_core.capabilities import ConsumerGroups, capability

__all__ = ["GroupMode", "Source", "resolve_sources"]


@runtime_checkable
class _Subscribable(Protocol):
    """Any bus: what the dispatcher needs of one without consumer groups."""

    def subscribe(self, name: str | None = None) -> Subscription: ...


GroupMode = Literal["per-sink", "shared"]
"""`per-sink`: each sink reads its own subscription / consumer group and sees every event;
`shared`: one reader feeds every sink, and a delivery is acknowledged when all are done."""

Source = AckableSource | Subscription | Mapping[str, AckableSource] | Any
"""What a dispatcher reads: a bus (`consumer()` where it offers `ConsumerGroups`, else
`subscribe()`), one subscription or acknowledged source shared by all sinks, or a mapping sink
name -> source."""


def resolve_sources(
    source: Source,
    sinks: Sequence[Sink],
    mode: GroupMode,
    group: str | None,
    consumer: str | None,
    *,
    batch_size: int,
    subscription_buffer: int | None = None,
) -> list[tuple[str, AckableSource, list[Sink]]]:
    """Return `(lane name, source, sinks it feeds)` for each lane.

    A bus with `ConsumerGroups` (Redis streams, NATS) gets consumer group `GROUP:SINK` per
    sink, or `GROUP` when shared (GROUP: `group`, or the bus's `default_group`); any other bus
    gets a subscription per sink, or one when shared, whose buffer holds `subscription_buffer`
    events where the backend offers that.

    Raises:
        ValueError: a mapping lacks a source for some sink.
        TypeError: `source` is none of the accepted kinds.
    """
    by_name = {s.name: s for s in sinks}
    by_lane: list[tuple[str, AckableSource, list[Sink]]] = []
    if isinstance(source, Mapping):
        missing = set(by_name) - set(source)
        if missing:
            raise ValueError(f"no source given for sink(s) {sorted(missing)}")
        by_lane = [(n, source[n], [by_name[n]]) for n in by_name]
    elif isinstance(source, Subscription):
        by_lane = [("shared", SubscriptionSource(source), list(sinks))]
    elif (groups := capability(source, ConsumerGroups)) is not None:
        base = group or groups.default_group
        if mode == "shared":
            by_lane = [
                (
                    "shared",
                    groups.consumer(group=base, name=consumer, batch_size=batch_size),
                    list(sinks),
                )
            ]
        else:
            by_lane = [
                (
                    n,
                    groups.consumer(group=f"{base}:{n}", name=consumer, batch_size=batch_size),
                    [s],
                )
                for n, s in by_name.items()
            ]
    elif isinstance(source, _Subscribable):
        if mode == "shared":
            sub = subscribe_sized(source, "dispatch", subscription_buffer)
            by_lane = [("shared", SubscriptionSource(sub), list(sinks))]
        else:
            by_lane = [
                (
                    n,
                    SubscriptionSource(
                        subscribe_sized(source, f"dispatch:{n}", subscription_buffer)
                    ),
                    [s],
                )
                for n, s in by_name.items()
            ]
    elif isinstance(source, AckableSource):
        by_lane = [("shared", source, list(sinks))]
    else:
        raise TypeError(
            f"cannot dispatch from {type(source).__name__}: pass a bus, a "
            "Subscription, an AckableSource or a mapping of them by sink"
        )
    return by_lane
