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
from eventbus_core._contract._bounded import Bound, Watch, run_watched
from eventbus_core._errors import BackendUnavailableError
from eventbus_core._event import Event
from eventbus_core._log import scrub, scrub_data
from eventbus_core._source import AckableSource, Delivery
from eventbus_core.capabilities import (
    CrossProcess,
    Describable,
    Isolatable,
    Isolation,
    Reachable,
    ReadableLog,
    capability,
    is_cross_process,
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
        read = self.timed_limit(
            "read(n, timeout=0.1)",
            0.1,
            "its timeout",
            "read() must return what it has, or nothing, once its timeout has passed",
        )
        total = Bound(
            f"reading {n} deliveries",
            self.receive_timeout + self.stop_slack,
            "receive_timeout + stop_slack",
            verb="did not finish",
        )

        def run(watch: Watch) -> list[Delivery]:
            got: list[Delivery] = []
            for _ in range(int(self.receive_timeout * 10)):
                got += watch.call(read, source.read, n - len(got), timeout=0.1)
                if len(got) >= n:
                    return got
            raise AssertionError(
                f"read only {len(got)} of {n} deliveries in {self.receive_timeout} s "
                "(receive_timeout)"
            )

        return run_watched(run, total)

    def publish_stored(self, bus: EventBus, n: int) -> list[str]:
        """Publish `n` events with request ids of this call's own; settle; return the ids."""
        tag = uuid.uuid4().hex[:8]
        ids = [f"req-{tag}-{i}" for i in range(n)]
        self.publish_each(bus, (make_event(i, request_id=r) for i, r in enumerate(ids)))
        self.settle_bounded(bus)
        return ids


class CrossProcessContract(CapabilityContract):
    """`CrossProcess`: a second bus on the same backend sees what the first publishes."""

    def test_declares_cross_process(self) -> None:
        with self.bus() as bus:
            shared = require(bus, CrossProcess)
            assert isinstance(shared, CrossProcess) and shared.cross_process is True, (
                f"cross_process is {getattr(shared, 'cross_process', None)!r}, not True"
            )

    def test_another_bus_on_the_backend_receives_the_events(self) -> None:
        with self.bus() as reader, self.bus() as writer:
            # At once for a bus that does not declare it, as every other capability test
            # fails (it waited out receive_timeout, then said "received only 0 of 3",
            # helper-112).
            assert is_cross_process(writer), (
                f"{type(writer).__name__} does not offer CrossProcess (cross_process True)"
            )
            self.settle_bounded(writer)
            sub = self.subscribe_bounded(reader, "contract-cross")
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
            self.bounded(
                self.timed_limit(
                    f"check(timeout={self.receive_timeout:g})",
                    self.receive_timeout,
                    "receive_timeout",
                ),
                reachable.check,
                timeout=self.receive_timeout,
            )

    def test_check_raises_where_nothing_answers(self) -> None:
        import pytest

        bus = self.make_unreachable_bus()
        if bus is None:
            pytest.skip("make_unreachable_bus() not implemented")
        with self.stopping(bus, 0):
            reachable = require(bus, Reachable)
            assert isinstance(reachable, Reachable)
            began = time.monotonic()
            check = self.timed_limit(
                "check(timeout=1) where nothing answers",
                1.0,
                "its timeout",
                "check() must raise BackendUnavailableError once its timeout has passed",
            )
            with pytest.raises(BackendUnavailableError):
                self.bounded(check, reachable.check, timeout=1.0)
            took = time.monotonic() - began
            assert took < 1.0 + self.stop_slack, (
                f"check(timeout=1) took {took:.1f} s to raise (bound: 1 s + stop_slack)"
            )
            self.stop_bus(bus, 0)


class ReadableLogContract(CapabilityContract):
    """`ReadableLog`: the events read again by LogID (and by time, with `time_index`), oldest
    first, without consuming them; `newest(n)`."""

    def _read(self, log: ReadableLog, **kwargs: object) -> list[Event]:
        items = self.call_within(
            "reading read_range() to its end",
            lambda: list(log.read_range(**kwargs)),  # type: ignore[arg-type]
        )
        return [e for e in items if e is not None]

    def _newest(self, log: ReadableLog, n: int) -> list[str]:
        return [e.request_id for e in self.call_within(f"newest({n})", log.newest, n)]

    def test_read_range_gives_every_event_in_order_with_log_ids(self) -> None:
        with self.bus() as bus:
            log = require(bus, ReadableLog)
            assert isinstance(log, ReadableLog)
            ids = self.publish_stored(bus, 5)
            got = self._read(log)
            assert [e.request_id for e in got] == ids, (
                f"read_range() gave {[e.request_id for e in got]}, expected {ids}"
            )
            log_ids = [e.log_id for e in got]
            assert all(i > 0 for i in log_ids), f"LogIDs must be stamped: {log_ids}"
            assert log_ids == sorted(set(log_ids)), f"LogIDs must increase: {log_ids}"
            again = self._read(log)
            assert [e.request_id for e in again] == ids, (
                f"reading must consume nothing: read again, read_range() gave "
                f"{[e.request_id for e in again]}, expected {ids}"
            )

    def test_read_range_selects_by_log_id_inclusive(self) -> None:
        with self.bus() as bus:
            log = require(bus, ReadableLog)
            assert isinstance(log, ReadableLog)
            self.publish_stored(bus, 5)
            log_ids = [e.log_id for e in self._read(log)]
            # Said, not an IndexError below (trial 176: a flush() that returned True early).
            assert len(log_ids) == 5, (
                f"read_range() gave LogIDs {log_ids} after 5 events were published and "
                "flush() returned True: expected all five"
            )
            got = [e.log_id for e in self._read(log, first_id=log_ids[1], last_id=log_ids[3])]
            assert got == log_ids[1:4], (
                f"read_range(first_id={log_ids[1]}, last_id={log_ids[3]}) gave LogIDs {got}, "
                f"expected {log_ids[1:4]}"
            )
            tail = [e.log_id for e in self._read(log, first_id=log_ids[4])]
            assert tail == log_ids[4:], (
                f"read_range(first_id={log_ids[4]}) gave LogIDs {tail}, expected {log_ids[4:]}"
            )
            beyond = self._read(log, first_id=log_ids[-1] + 1000)
            assert beyond == [], (
                f"read_range(first_id={log_ids[-1] + 1000}), past the newest, gave "
                f"{[e.log_id for e in beyond]}"
            )

    def test_newest_gives_the_last_events_oldest_first(self) -> None:
        with self.bus() as bus:
            log = require(bus, ReadableLog)
            assert isinstance(log, ReadableLog)
            ids = self.publish_stored(bus, 4)
            two = self._newest(log, 2)
            assert two == ids[2:], f"newest(2) gave {two}, expected {ids[2:]}"
            every = self._newest(log, 100)
            assert every == ids, f"newest(100) gave {every}, expected {ids}"

    def test_time_range(self) -> None:
        import pytest

        with self.bus() as bus:
            log = require(bus, ReadableLog)
            assert isinstance(log, ReadableLog)
            ids = self.publish_stored(bus, 2)
            now = datetime.now(UTC)
            if not log.time_index:
                with pytest.raises(ValueError, match=r"(?i)time"):
                    self._read(log, since=now - timedelta(hours=1))
                return
            hour = timedelta(hours=1)
            recent = [e.request_id for e in self._read(log, since=now - hour)]
            assert recent == ids, f"read_range(since=an hour ago) gave {recent}, expected {ids}"
            future = self._read(log, since=now + hour)
            assert future == [], f"read_range(since=in an hour) gave {len(future)} events"
            past = self._read(log, until=now - hour)
            assert past == [], f"read_range(until=an hour ago) gave {len(past)} events"


class DescribableContract(CapabilityContract):
    """`Describable`: a `location` without credentials, and `describe()` figures that are
    plain data (JSON), with `groups` a list of mappings when present."""

    def test_location_is_a_short_line(self) -> None:
        with self.bus() as bus:
            described = require(bus, Describable)
            assert isinstance(described, Describable)
            location = described.location
            assert isinstance(location, str) and location and "\n" not in location, (
                f"location must be a short line, not {location!r}"
            )
            # The masking every log line gets: a password in a query string passed a look
            # for "@" alone (trial 152). Compared apart: pytest's report of a failed
            # comparison would print the credential itself (trial 155).
            carries = "@" in location or scrub(location) != location
            assert not carries, (
                f"a location must not carry credentials: {scrub(location)!r} (masked here)"
            )

    def test_describe_is_plain_data(self) -> None:
        with self.bus() as bus:
            described = require(bus, Describable)
            assert isinstance(described, Describable)
            self.publish_stored(bus, 2)
            figures = self.call_within("describe()", described.describe)
            assert isinstance(figures, Mapping) and figures, (
                f"describe() must give a non-empty mapping, not {figures!r}"
            )
            try:
                json.dumps(dict(figures))
            except (TypeError, ValueError) as exc:  # said, not the encoder's bare error (176)
                raise AssertionError(
                    f"describe() must give plain data that JSON can write (eventbus stats "
                    f"prints it): {exc}"
                ) from None
            # `eventbus stats` masks them, but another program that prints them would not.
            masked = scrub_data(dict(figures))
            # As JSON text: a NaN figure never equals itself (review 158).
            plain = json.loads(json.dumps(dict(figures)))
            carries = json.dumps(masked, sort_keys=True) != json.dumps(plain, sort_keys=True)
            assert not carries, f"describe() must carry no credentials; masked, it reads {masked!r}"
            groups = figures.get("groups")
            if groups is not None:
                assert isinstance(groups, list), f"describe()['groups'] is not a list: {groups!r}"
                assert all(isinstance(g, Mapping) for g in groups), (
                    f"describe()['groups'] must be a list of mappings: {groups!r}"
                )


class IsolatableContract(CapabilityContract):
    """`Isolatable`: `isolate()` gives environment overrides, a name and a cleanup that runs
    (twice over is fine) and says what it did."""

    def test_isolate_gives_a_namespace_and_cleans_up(self) -> None:
        with self.bus() as bus:
            isolatable = require(bus, Isolatable)
            assert isinstance(isolatable, Isolatable)
            run = uuid.uuid4().hex[:12]
            isolation = self.call_within("isolate()", isolatable.isolate, run, 100)
            assert isinstance(isolation, Isolation), f"isolate() returned {isolation!r}"
            assert isolation.env and all(
                isinstance(k, str) and isinstance(v, str) for k, v in isolation.env.items()
            ), f"env must map variable names to strings: {isolation.env!r}"
            assert isinstance(isolation.where, str) and isolation.where, (
                f"isolation.where must name the namespace, not {isolation.where!r}"
            )
            kept = self.call_within("cleanup(True)", isolation.cleanup, True)
            assert isinstance(kept, str) and kept, f"cleanup(True) returned {kept!r}"
            done = self.call_within("cleanup(False)", isolation.cleanup, False)
            assert isinstance(done, str) and done, f"cleanup(False) returned {done!r}"
