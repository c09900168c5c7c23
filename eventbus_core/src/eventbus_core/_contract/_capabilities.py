"""Optional contract tests, one class per capability of `eventbus_core.capabilities`.

A backend's test module subclasses the classes of the capabilities it declares, next to
`BusContractTests`, implementing the same `make_bus(buffer_size)`. Within one test, every bus
`make_bus()` returns must share one namespace (a key, stream or file of the test's own, fresh
for each test), as two processes configured alike would: that is what `CrossProcessContract`
checks, and the others count on a log holding only what the test published.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from eventbus_core._bus import EventBus
from eventbus_core._contract._base import ContractBase, make_event
from eventbus_core._errors import BackendUnavailableError
from eventbus_core._event import Event
from eventbus_core._source import AckableSource, Delivery
from eventbus_core.capabilities import (
    CrossProcess,
    Describable,
    Isolatable,
    Isolation,
    Reachable,
    ReadableLog,
    capability,
)

__all__ = [
    "CrossProcessContract",
    "DescribableContract",
    "IsolatableContract",
    "ReachableContract",
    "ReadableLogContract",
]


def require(bus: EventBus, kind: type[object]) -> object:
    """The bus as `kind`, failing the test (the class was chosen for it) if it is not one."""
    found = capability(bus, kind)
    assert found is not None, f"{type(bus).__name__} does not offer {kind.__name__}"
    return found


class CapabilityContract(ContractBase):
    """Plumbing of the capability classes: publish events with unique request ids, stored."""

    def read_all(self, source: AckableSource, n: int) -> list[Delivery]:
        """Read until `n` deliveries came, failing the test if they do not."""
        got: list[Delivery] = []
        for _ in range(int(self.receive_timeout * 10)):
            got += source.read(n - len(got), timeout=0.1)
            if len(got) >= n:
                return got
        raise AssertionError(f"read only {len(got)} of {n} deliveries in {self.receive_timeout} s")

    def publish_stored(self, bus: EventBus, n: int) -> list[str]:
        """Publish `n` events with request ids of this call's own; settle; return the ids."""
        tag = uuid.uuid4().hex[:8]
        ids = [f"req-{tag}-{i}" for i in range(n)]
        for i, request_id in enumerate(ids):
            bus.publish(make_event(i, request_id=request_id))
        self.settle(bus)
        return ids


class CrossProcessContract(CapabilityContract):
    """`CrossProcess`: a second bus on the same backend sees what the first publishes."""

    def test_declares_cross_process(self) -> None:
        with self.bus() as bus:
            shared = require(bus, CrossProcess)
            assert isinstance(shared, CrossProcess) and shared.cross_process is True

    def test_another_bus_on_the_backend_receives_the_events(self) -> None:
        with self.bus() as reader, self.bus() as writer:
            self.settle(writer)
            sub = reader.subscribe("contract-cross")
            ids = self.publish_stored(writer, 3)
            got = [e.request_id for e in self.receive(sub, 3)]
            assert got == ids, f"the other bus's subscriber got {got}, expected {ids}"


class ReachableContract(CapabilityContract):
    """`Reachable`: `check()` returns while the backend answers, and raises
    `BackendUnavailableError` (within its timeout, give or take `stop_slack`) when it does not.

    Override `make_unreachable_bus()` to return a bus pointed where nothing answers; without
    it, that half is skipped.
    """

    def make_unreachable_bus(self) -> EventBus | None:
        """A bus of your backend where nothing answers (None: not tested)."""
        return None

    def test_check_returns_while_the_backend_answers(self) -> None:
        with self.bus() as bus:
            reachable = require(bus, Reachable)
            assert isinstance(reachable, Reachable)
            reachable.check(timeout=self.receive_timeout)

    def test_check_raises_where_nothing_answers(self) -> None:
        import pytest

        bus = self.make_unreachable_bus()
        if bus is None:
            pytest.skip("make_unreachable_bus() not implemented")
        try:
            reachable = require(bus, Reachable)
            assert isinstance(reachable, Reachable)
            began = time.monotonic()
            with pytest.raises(BackendUnavailableError):
                reachable.check(timeout=1.0)
            assert time.monotonic() - began < 1.0 + self.stop_slack, "check() overran"
        finally:
            self.stop_bus(bus, 0)


class ReadableLogContract(CapabilityContract):
    """`ReadableLog`: the events read again by LogID (and by time, with `time_index`), oldest
    first, without consuming them; `newest(n)`."""

    def _read(self, log: ReadableLog, **kwargs: object) -> list[Event]:
        items = list(log.read_range(**kwargs))  # type: ignore[arg-type]
        return [e for e in items if e is not None]

    def test_read_range_gives_every_event_in_order_with_log_ids(self) -> None:
        with self.bus() as bus:
            log = require(bus, ReadableLog)
            assert isinstance(log, ReadableLog)
            ids = self.publish_stored(bus, 5)
            got = self._read(log)
            assert [e.request_id for e in got] == ids
            log_ids = [e.log_id for e in got]
            assert all(i > 0 for i in log_ids), f"LogIDs must be stamped: {log_ids}"
            assert log_ids == sorted(set(log_ids)), f"LogIDs must increase: {log_ids}"
            again = self._read(log)
            assert [e.request_id for e in again] == ids, "reading must consume nothing"

    def test_read_range_selects_by_log_id_inclusive(self) -> None:
        with self.bus() as bus:
            log = require(bus, ReadableLog)
            assert isinstance(log, ReadableLog)
            self.publish_stored(bus, 5)
            log_ids = [e.log_id for e in self._read(log)]
            got = [e.log_id for e in self._read(log, first_id=log_ids[1], last_id=log_ids[3])]
            assert got == log_ids[1:4]
            assert [e.log_id for e in self._read(log, first_id=log_ids[4])] == log_ids[4:]
            assert self._read(log, first_id=log_ids[-1] + 1000) == []

    def test_newest_gives_the_last_events_oldest_first(self) -> None:
        with self.bus() as bus:
            log = require(bus, ReadableLog)
            assert isinstance(log, ReadableLog)
            ids = self.publish_stored(bus, 4)
            assert [e.request_id for e in log.newest(2)] == ids[2:]
            assert [e.request_id for e in log.newest(100)] == ids

    def test_time_range(self) -> None:
        import pytest

        with self.bus() as bus:
            log = require(bus, ReadableLog)
            assert isinstance(log, ReadableLog)
            ids = self.publish_stored(bus, 2)
            now = datetime.now(UTC)
            if not log.time_index:
                with pytest.raises(ValueError, match=r"(?i)time"):
                    list(log.read_range(since=now - timedelta(hours=1)))
                return
            hour = timedelta(hours=1)
            assert [e.request_id for e in self._read(log, since=now - hour)] == ids
            assert self._read(log, since=now + hour) == []
            assert self._read(log, until=now - hour) == []


class DescribableContract(CapabilityContract):
    """`Describable`: a `location` without credentials, and `describe()` figures that are
    plain data (JSON), with `groups` a list of mappings when present."""

    def test_location_is_a_short_line(self) -> None:
        with self.bus() as bus:
            described = require(bus, Describable)
            assert isinstance(described, Describable)
            location = described.location
            assert isinstance(location, str) and location and "\n" not in location
            assert "@" not in location, "a location must not carry credentials"

    def test_describe_is_plain_data(self) -> None:
        with self.bus() as bus:
            described = require(bus, Describable)
            assert isinstance(described, Describable)
            self.publish_stored(bus, 2)
            figures = described.describe()
            assert isinstance(figures, Mapping) and figures
            json.dumps(dict(figures))  # raises if it is not plain data
            groups = figures.get("groups")
            if groups is not None:
                assert isinstance(groups, list)
                assert all(isinstance(g, Mapping) for g in groups)


class IsolatableContract(CapabilityContract):
    """`Isolatable`: `isolate()` gives environment overrides, a name and a cleanup that runs
    (twice over is fine) and says what it did."""

    def test_isolate_gives_a_namespace_and_cleans_up(self) -> None:
        with self.bus() as bus:
            isolatable = require(bus, Isolatable)
            assert isinstance(isolatable, Isolatable)
            run = uuid.uuid4().hex[:12]
            isolation = isolatable.isolate(run, 100)
            assert isinstance(isolation, Isolation)
            assert isolation.env and all(
                isinstance(k, str) and isinstance(v, str) for k, v in isolation.env.items()
            ), f"env must map variable names to strings: {isolation.env!r}"
            assert isinstance(isolation.where, str) and isolation.where
            kept = isolation.cleanup(True)
            assert isinstance(kept, str) and kept
            done = isolation.cleanup(False)
            assert isinstance(done, str) and done
