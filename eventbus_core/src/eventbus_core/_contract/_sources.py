"""`LogSourcesContract` and `BacklogContract`: the optional contract test classes of
`capabilities.LogSources` and of the `capabilities.Backlog` of consumer-group sources."""

from __future__ import annotations

import uuid

from eventbus_core._contract._capabilities import CapabilityContract, require
from eventbus_core.capabilities import (
    Backlog,
    ConsumerGroups,
    LogSources,
    ReadableLog,
    capability,
)

__all__ = ["BacklogContract", "LogSourcesContract"]


class LogSourcesContract(CapabilityContract):
    """`LogSources`: names that `log_source()` accepts, the first being the bus's own log;
    each gives a `ReadableLog`; an unknown name is refused with the known ones."""

    def sources(self, bus: object) -> LogSources:
        found = require(bus, LogSources)  # type: ignore[arg-type]
        assert isinstance(found, LogSources)
        return found

    def test_the_first_source_is_the_bus_own_log(self) -> None:
        with self.bus() as bus:
            sources = self.sources(bus)
            names = sources.log_sources
            assert names and all(isinstance(n, str) and n for n in names), names
            ids = self.publish_stored(bus, 3)
            log = self.call_within(f"log_source({names[0]!r})", sources.log_source, names[0])
            assert isinstance(log, ReadableLog), f"{names[0]!r} is not a ReadableLog"
            newest = [e.request_id for e in self.call_within("newest(3)", log.newest, 3)]
            assert newest == ids, f"newest(3) of {names[0]!r} gave {newest}, expected {ids}"

    def test_every_named_source_is_a_readable_log(self) -> None:
        with self.bus() as bus:
            sources = self.sources(bus)
            for name in sources.log_sources:
                log = self.call_within(f"log_source({name!r})", sources.log_source, name)
                assert isinstance(log, ReadableLog), f"{name!r} gave {log!r}, not a ReadableLog"

    def test_an_unknown_name_is_refused_naming_the_known_ones(self) -> None:
        import pytest

        with self.bus() as bus:
            sources = self.sources(bus)
            unknown = f"no-such-log-{uuid.uuid4().hex[:8]}"
            # The message must list the known names (the first, at least), so a typo in
            # `replay --source` is answered with what to type instead.
            with pytest.raises(ValueError, match=sources.log_sources[0]):
                self.call_within(f"log_source({unknown!r})", sources.log_source, unknown)


class BacklogContract(CapabilityContract):
    """`Backlog` of the sources `ConsumerGroups.consumer()` gives: `pending` counts what the
    group was handed and did not acknowledge, `lag` what it was not handed yet (or None where
    the backend cannot tell)."""

    def test_backlog_counts_what_is_pending_and_what_is_not_delivered_yet(self) -> None:
        with self.bus() as bus:
            groups = require(bus, ConsumerGroups)
            assert isinstance(groups, ConsumerGroups)
            self.publish_stored(bus, 5)
            group = f"contract-{uuid.uuid4().hex[:8]}"
            source = self.call_within(
                f"consumer({group!r}, 'backlog')", groups.consumer, group, "backlog"
            )
            try:
                backlog = capability(source, Backlog)
                assert backlog is not None, f"{type(source).__name__} does not offer Backlog"
                got = self.read_all(source, 2)
                assert len(got) == 2, f"asked for 2 deliveries, got {len(got)}"
                held = self.call_within("backlog()", backlog.backlog)
                assert held["pending"] == 2, f"holding 2 deliveries, backlog() says {held}"
                assert held["lag"] in (None, 3), f"3 not handed out yet, backlog() says {held}"
                self.call_within("ack()", source.ack, [d.token for d in got])
                acked = self.call_within("backlog()", backlog.backlog)
                assert acked["pending"] == 0, f"all acknowledged, backlog() says {acked}"
                assert acked["lag"] in (None, 3), f"3 not handed out yet, backlog() says {acked}"
            finally:
                self.call_within("close() of a consumer-group source", source.close)
