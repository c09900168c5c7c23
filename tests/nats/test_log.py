"""ReadableLog, Describable, Isolatable and Reachable on the real server."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from eventbus_core import BackendUnavailableError, Event
from eventbus_core.capabilities import (
    CrossProcess,
    Describable,
    Flushable,
    Isolatable,
    Reachable,
    ReadableLog,
    capability,
    is_cross_process,
)
from eventbus_core.testing import make_event
from eventbus_nats import NatsEventBus
from tests.nats._servers import free_port
from tests.nats.conftest import Names, delete_streams, publish_raw

pytestmark = pytest.mark.nats

MakeBus = Callable[..., NatsEventBus]


def test_declares_every_capability_that_applies(make_bus: MakeBus) -> None:
    bus = make_bus()
    for kind in (Flushable, CrossProcess, Reachable, ReadableLog, Describable, Isolatable):
        assert capability(bus, kind) is bus, kind.__name__
    assert is_cross_process(bus)
    assert bus.time_index is True
    bus.check(2.0)


def test_read_range_by_log_id(make_bus: MakeBus) -> None:
    bus = make_bus()
    for i in range(20):
        bus.publish(make_event(i))
    assert bus.flush(10)
    got = list(bus.read_range(5, 9))
    assert [e.log_id for e in got if e] == [5, 6, 7, 8, 9]
    assert [e.request_id for e in got if e] == [f"req-{i}" for i in range(4, 9)]
    assert [e.log_id for e in bus.read_range(18) if e] == [18, 19, 20]
    assert [e.log_id for e in bus.read_range(None, 2) if e] == [1, 2]
    assert list(bus.read_range(30, 40)) == []
    assert [e.log_id for e in bus.newest(3)] == [18, 19, 20]
    assert len(bus.newest(100)) == 20
    # Reading consumes nothing: a group still gets everything.
    consumer = bus.consumer("g", "c")
    deliveries = []
    while len(deliveries) < 20:
        deliveries += consumer.read(20, timeout=1)
    consumer.close()


def test_read_range_by_time(make_bus: MakeBus) -> None:
    bus = make_bus()
    for i in range(3):
        bus.publish(make_event(i))
    assert bus.flush(10)
    time.sleep(0.3)
    middle = datetime.now(UTC)
    time.sleep(0.3)
    for i in range(3, 6):
        bus.publish(make_event(i))
    assert bus.flush(10)
    assert [e.log_id for e in bus.read_range(since=middle) if e] == [4, 5, 6]
    assert [e.log_id for e in bus.read_range(until=middle) if e] == [1, 2, 3]
    # A naive datetime is local time, as datetime.timestamp() takes it.
    naive_local = middle.astimezone().replace(tzinfo=None)
    assert [e.log_id for e in bus.read_range(since=naive_local) if e] == [4, 5, 6]
    # Both bounds together, and LogIDs with times.
    assert [e.log_id for e in bus.read_range(5, None, since=middle) if e] == [5, 6]
    future = datetime.now(UTC) + timedelta(hours=1)
    assert list(bus.read_range(since=future)) == []


def test_reading_a_log_that_was_never_written(make_bus: MakeBus) -> None:
    bus = make_bus()
    assert list(bus.read_range(1, 10)) == []
    assert bus.newest(5) == []
    figures = bus.describe()
    assert figures["exists"] is False and figures["messages"] == 0


def test_describe_reports_stream_and_group_figures(make_bus: MakeBus) -> None:
    bus = make_bus(max_msgs=500, max_age=3600, group="dispatchers")
    for i in range(10):
        bus.publish(make_event(i))
    assert bus.flush(10)
    consumer = bus.consumer(name="c1")
    held = []
    while len(held) < 4:
        held += consumer.read(4 - len(held), timeout=1)
    figures = bus.describe()
    assert figures["backend"] == "nats" and figures["exists"] is True
    assert (figures["messages"], figures["first_log_id"], figures["last_log_id"]) == (10, 1, 10)
    assert figures["bytes"] > 10 * 300
    assert figures["limits"]["max_msgs"] == 500 and figures["limits"]["max_age"] == 3600
    assert figures["limits"]["max_bytes"] == 0  # no limit, as the setting says it (NATS: -1)
    assert figures["group"] == "dispatchers"
    assert (figures["pending"], figures["lag"], figures["redelivered"]) == (4, 6, 0)
    assert figures["dead_letters"] == 0
    consumer.close()


def test_isolate_and_purge(nats_url: str) -> None:
    base = NatsEventBus(nats_url, max_msgs=100)
    try:
        isolation = base.isolate("run 42/x", 500)
    finally:
        base.stop(0)
    assert isolation.env == {
        "EVENTBUS_NATS_STREAM": "EVENTBUS_RUN_run_42_x",
        "EVENTBUS_NATS_SUBJECT": "eventbus-run.run_42_x.events",
        "EVENTBUS_NATS_MAX_MSGS": "500",  # the whole run is kept
    }
    assert (isolation.kind, isolation.where) == ("nats stream", "EVENTBUS_RUN_run_42_x")
    stream, subject = isolation.env["EVENTBUS_NATS_STREAM"], isolation.env["EVENTBUS_NATS_SUBJECT"]
    bus = NatsEventBus(nats_url, stream=stream, subject=subject)
    try:
        bus.publish(make_event(1))
        assert bus.flush(10)
        consumer = bus.consumer(name="c")
        assert consumer.read(1, timeout=2)
        consumer.close()
        assert bus.describe()["messages"] == 1
        bus.purge()
        figures = bus.describe()
        assert figures["exists"] is False and figures["groups"] == []
        bus.purge()  # nothing left: still fine
        bus.publish(make_event(2))
        assert bus.flush(10)
        assert "deleted" in isolation.cleanup(False)  # a bus of its own deletes the stream
        assert bus.describe()["exists"] is False
    finally:
        bus.stop(1)
        delete_streams(nats_url, stream, f"{stream}_DEAD")


def test_check_and_reads_fail_fast_and_clearly_where_nothing_answers() -> None:
    url = f"nats://eve:hunter2@127.0.0.1:{free_port()}"
    bus = NatsEventBus(url, stream="NOWHERE")
    try:
        started = time.monotonic()
        with pytest.raises(BackendUnavailableError) as info:
            bus.check(1.0)
        assert time.monotonic() - started < 3.0
        text = str(info.value)
        assert "nats://eve:***@127.0.0.1" in text and "hunter2" not in text
        assert "JetStream" in text
        with pytest.raises(BackendUnavailableError):
            bus.describe()
        assert "hunter2" not in repr(bus) and "hunter2" not in repr(bus.stats())
    finally:
        bus.stop(0.5)


def test_a_stream_deleted_under_a_running_bus_is_created_again(make_bus: MakeBus) -> None:
    bus = make_bus()
    sub = bus.subscribe()
    for i in range(5):
        bus.publish(make_event(i))
    assert bus.flush(10)
    assert [sub.get(timeout=10).log_id for _ in range(5)] == [1, 2, 3, 4, 5]
    bus.purge()  # an operator deletes the stream
    for i in range(5, 8):
        bus.publish(make_event(i))
    assert bus.flush(20)  # the writer created it again
    s = bus.stats()
    assert (s.published, s.lost, s.extra["written"]) == (8, 0, 8)
    assert bus.describe()["messages"] == 3
    assert s.extra["last_log_id"] == 3  # the new stream's sequences started over
    # The subscription notices its consumer went with the stream and reads the new one.
    assert [sub.get(timeout=20).request_id for _ in range(3)] == ["req-5", "req-6", "req-7"]


def test_a_subscription_reads_a_recreated_stream_that_caught_up_with_the_old_one(
    make_bus: MakeBus, caplog: pytest.LogCaptureFixture
) -> None:
    # The new stream's sequences pass the old last one before the subscription looks again:
    # judged by sequences alone, it went on after LogID 3 and skipped the new stream's first
    # three events, uncounted (helper-73).
    bus = make_bus()
    sub = bus.subscribe()
    for i in range(3):
        bus.publish(make_event(i))
    assert bus.flush(10)
    assert [sub.get(timeout=10).log_id for _ in range(3)] == [1, 2, 3]
    bus.purge()  # an operator deletes the stream
    for i in range(3, 9):
        bus.publish(make_event(i))
    assert bus.flush(20)  # the writer created it again, and wrote LogIDs 1..6
    got = [sub.get(timeout=20) for _ in range(6)]
    assert [(e.log_id, e.request_id) for e in got] == [(n - 2, f"req-{n}") for n in range(3, 9)]
    assert sub.dropped == 0
    assert "was recreated (LogIDs restarted)" in caplog.text


def test_the_message_body_is_the_go_wire_format(
    make_bus: MakeBus, nats_url: str, names: Names
) -> None:
    """What a Go service reading the stream gets: the Go encoding of the event, as
    `Event.to_json()` writes it (LogID is the stream sequence, not stored in the body)."""
    import asyncio

    import nats

    sent = make_event(7, response_body=b'{"ok": true}', request_body=b"\x00\xff binary")
    bus = make_bus()
    bus.publish(sent)
    assert bus.flush(10)

    async def first_body() -> bytes:
        nc = await nats.connect(nats_url, connect_timeout=2, allow_reconnect=False)
        try:
            message = await nc.jetstream().get_msg(names.stream, 1)
            assert message.data is not None
            return message.data
        finally:
            await nc.close()

    body = asyncio.run(first_body())
    assert body == sent.to_json()
    assert Event.from_json(body) == sent


def test_a_stream_the_server_refuses_names_the_setting(
    make_bus: MakeBus, caplog: pytest.LogCaptureFixture
) -> None:
    # Three replicas on one server: refused for good, which is not "no connection".
    bus = make_bus(replicas=3)
    for i in range(5):
        bus.publish(make_event(i))
    assert not bus.flush(2.0)
    bus.stop(1.0)
    stats = bus.stats()
    assert stats.lost == 5
    assert "EVENTBUS_NATS_REPLICAS" in str(stats.extra.get("last_error")), stats.extra
    assert "EVENTBUS_NATS_REPLICAS" in caplog.text
    assert "no connection to NATS" not in caplog.text


def test_a_scheme_in_capitals_connects(make_bus: MakeBus, nats_url: str) -> None:
    # nats-py reads the scheme case-sensitively: NATS:// retried for ever ("Name or service not
    # known"). The bus writes it in lower case, as a URL's scheme means the same either way.
    bus = make_bus(url=nats_url.replace("nats://", "NATS://", 1))
    bus.publish(make_event(0))
    assert bus.flush(10)
    assert bus.stats().extra["written"] == 1


class _PlacedOnADeadServer:
    """A link whose reader creation times out `fails` times (JetStream placed the reader's
    consumer on a server of the cluster that is down), then works."""

    where = "nats://127.0.0.1:4222"
    layout = SimpleNamespace(stream="EVENTS")

    def __init__(self, fails: int) -> None:
        self.fails = fails
        self.tries = 0

    def call(self, coro: Any, timeout: float) -> Any:
        coro.close()
        self.tries += 1
        if self.tries <= self.fails:
            raise TimeoutError
        return ("reader", object(), 0)


@pytest.mark.parametrize("fails", [0, 1, 2])
def test_creating_a_reader_is_tried_again_when_it_times_out(fails: int) -> None:
    # With one server of three down, `eventbus replay` failed in about half the runs, saying
    # to check that JetStream is enabled (trial 148).
    from nats.js import api

    from eventbus_nats._log import LogReader

    link = _PlacedOnADeadServer(fails)
    reader = LogReader(cast(Any, link), timeout=5.0)
    assert reader._open_reader(api.ConsumerConfig())[0] == "reader"
    assert link.tries == fails + 1


def test_a_reader_that_never_gets_made_says_what_is_likely() -> None:
    from nats.js import api

    from eventbus_nats._log import LogReader

    reader = LogReader(cast(Any, _PlacedOnADeadServer(99)), timeout=5.0)
    with pytest.raises(BackendUnavailableError, match="a server of the cluster is likely down"):
        reader._open_reader(api.ConsumerConfig())


def test_a_subscription_says_what_it_skips_and_the_bus_keeps_the_count_after_it_closed(
    make_bus: Callable[..., NatsEventBus],
    nats_url: str,
    names: Names,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Skipped without a line, and the bus's `undecodable` went back down when the subscription
    # closed (trial 225, review 227).
    import logging

    caplog.set_level(logging.WARNING, logger="eventbus")
    bus = make_bus()
    bus.publish(make_event(1))  # the stream exists before the subscription follows it
    assert bus.flush(10)
    sub = bus.subscribe()

    publish_raw(nats_url, names.subject, b"not an event")
    bus.publish(make_event(2))
    assert bus.flush(10)
    assert sub.get(timeout=10).request_id == "req-2"
    assert sub.undecodable == 1
    said = [r.getMessage() for r in caplog.records if "not decode as" in r.getMessage()]
    assert said and "skipped 1 entry from stream sequence 2" in said[0], said
    sub.close()
    assert bus.stats().extra["undecodable"] == 1


def test_isolate_on_a_stream_named_in_code_sends_the_runs_processes_there(
    nats_url: str, make_bus: Callable[..., NatsEventBus], names: Names
) -> None:
    # Only EVENTBUS_NATS_GROUP was set: the demo's processes, reading the environment, went to
    # the default stream and left the run's group there (review 237).
    base = make_bus()
    try:
        isolation = base.isolate("r1", 10)
        assert isolation.env == {
            "EVENTBUS_NATS_STREAM": names.stream,
            "EVENTBUS_NATS_SUBJECT": names.subject,
            "EVENTBUS_NATS_GROUP": "eventbus-demo-r1",
        }
        assert [g["group"] for g in base.describe()["groups"]] == ["eventbus-demo-r1"]
    finally:
        base.stop(0)
    assert "removed" in isolation.cleanup(False)
    check = make_bus()
    assert check.describe()["groups"] == []


@pytest.mark.parametrize("fault", ["freeze", "kill"])
def test_a_read_the_server_stops_answering_fails_instead_of_ending(
    tmp_path: Path, fault: str
) -> None:
    # `eventbus replay` of 1,100 events from a server frozen or killed midway sent 500 and
    # exited 0, as if the range were complete (trial 270).
    from tests.nats._servers import ThrowawayNats

    server = ThrowawayNats(tmp_path)
    server.start()
    bus: NatsEventBus | None = None
    try:
        bus = NatsEventBus(
            server.url, stream="TREAD", subject="read.events", max_msgs=0, buffer_size=2_000
        )
        for i in range(1_100):
            bus.publish(make_event(i))
        assert bus.flush(20)
        reader = bus.read_range(1, 1_100)
        got = [next(reader) for _ in range(500)]  # the first read's batch
        if fault == "freeze":
            server.pause()
        else:
            server.kill()
        began = time.monotonic()
        with pytest.raises(BackendUnavailableError, match="NATS at "):
            got.extend(reader)
        assert len(got) == 500
        assert time.monotonic() - began < 60
    finally:
        if fault == "freeze":
            server.resume()
        if bus is not None:
            bus.stop(1)
        server.kill()


def test_a_read_slower_than_the_reader_s_idle_limit_goes_on_where_it_was(
    make_bus: MakeBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server removes a reader left a minute without a read: a replay to a slow sink died
    # with "consumer not found" after 500 events (trial 272).
    from eventbus_nats import _log

    monkeypatch.setattr(_log, "_READER_IDLE", 1.0)
    bus = make_bus(max_msgs=0, buffer_size=2_000)
    for i in range(1_100):
        bus.publish(make_event(i))
    assert bus.flush(20)
    reader = bus.read_range(1, 1_100)
    got = [next(reader) for _ in range(500)]  # the first read's batch
    time.sleep(3.5)  # the reader goes meanwhile
    got.extend(reader)
    assert [e.log_id for e in got if e is not None] == list(range(1, 1_101))
