"""Consumer groups on the real server: at-least-once, keep_alive, dead letters, restart."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nats
import pytest

from eventbus_core import Delivery, Dispatcher, EventBusSettings, MemoryDeadLetter, SettingsError
from eventbus_core.capabilities import ConsumerGroups, KeepAlive, SourceFigures, capability
from eventbus_core.testing import make_event
from eventbus_nats import NatsEventBus
from tests.nats.conftest import Names, delete_streams

pytestmark = pytest.mark.nats

MakeBus = Callable[..., NatsEventBus]


def read_all(consumer: Any, n: int, timeout: float = 10.0) -> list[Delivery]:
    got: list[Delivery] = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        got += consumer.read(n - len(got), timeout=0.5)
    return got


def published(bus: NatsEventBus, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        bus.publish(make_event(i))
    assert bus.flush(10)


async def _dead_letters(url: str, names: Names) -> list[tuple[bytes, dict[str, str]]]:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(f"{names.stream}_DEAD")
        out = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(f"{names.stream}_DEAD", seq)
            out.append((msg.data or b"", dict(msg.headers or {})))
        return out
    finally:
        await nc.close()


def test_bus_offers_consumer_groups_with_keep_alive_and_figures(make_bus: MakeBus) -> None:
    bus = make_bus()
    assert capability(bus, ConsumerGroups) is bus
    assert bus.default_group == "llm-proxy-dispatchers"
    consumer = bus.consumer(name="c1")
    try:
        assert isinstance(consumer, KeepAlive) and isinstance(consumer, SourceFigures)
    finally:
        consumer.close()


def test_group_delivers_everything_once_stamped_with_log_ids(make_bus: MakeBus) -> None:
    bus = make_bus()
    published(bus, 10)  # before the group exists: it starts from the oldest entry held
    a, b = bus.consumer("g", "a", batch_size=4), bus.consumer("g", "b", batch_size=4)
    got = read_all(a, 4) + read_all(b, 6)
    assert sorted(d.event.log_id for d in got) == list(range(1, 11))
    assert {d.event.request_id for d in got} == {f"req-{i}" for i in range(10)}
    assert all(d.attempts == 1 for d in got)
    a.ack([d.token for d in got[:4]])
    b.ack([d.token for d in got[4:]])
    assert a.read(10, 0.3) == [] and b.read(10, 0.3) == []
    figures = bus.describe()
    row = next(g for g in figures["groups"] if g["group"] == "g")
    assert (row["pending"], row["lag"]) == (0, 0)
    a.close()
    b.close()


def test_ack_refuses_what_is_no_token_and_acknowledges_the_rest(make_bus: MakeBus) -> None:
    # 'bogus' and None were "acknowledged" and counted in `acked`; one str was taken for a
    # token per character (trial 150).
    bus = make_bus()
    published(bus, 1)
    member = bus.consumer("g", "a")
    (got,) = read_all(member, 1)
    with pytest.raises(TypeError, match=r"one str: ack\(\[token\]\)"):
        member.ack(got.token)
    with pytest.raises(ValueError, match=r"reply subjects.*\['bogus', 'None'\]"):
        member.ack([got.token, "bogus", None])
    assert member.figures()["acked"] == 1
    assert member.read(10, 0.3) == []
    member.close()


@pytest.mark.parametrize(
    "options",
    [{"ack_wait": float("nan")}, {"ack_wait": float("inf")}, {"ack_wait": "5"}, {"ack_wait": 0},
     {"max_deliveries": 2.5},
     {"batch_size": float("nan")}],
)  # fmt: skip
def test_a_member_refuses_counts_and_seconds_it_cannot_use(
    make_bus: MakeBus, options: dict[str, Any]
) -> None:
    bus = make_bus()
    with pytest.raises(ValueError, match=next(iter(options))):
        bus.consumer("g", "a", **options)


def test_unacknowledged_entries_come_back_after_ack_wait(make_bus: MakeBus) -> None:
    bus = make_bus()
    published(bus, 3)
    crashed = bus.consumer("g", "crashed", ack_wait=1.0)
    first = read_all(crashed, 3)
    assert len(first) == 3
    # "crashed" never acknowledges nor closes (a process that died): AckWait hands them on.
    survivor = bus.consumer("g", "survivor", ack_wait=1.0)
    # Under load the survivor's own unacknowledged deliveries may come to it once more
    # (ack_wait is 1 s) before the last entry does: keep each entry's latest delivery.
    latest: dict[int, Delivery] = {}
    deadline = time.monotonic() + 15
    while len(latest) < 3 and time.monotonic() < deadline:
        for delivery in survivor.read(3, timeout=0.5):
            latest[delivery.event.log_id] = delivery
    assert sorted(latest) == [1, 2, 3]
    again = list(latest.values())
    # 2, or more when the server handed some back to "crashed" first (its read was still
    # open, under load) before they came to the survivor.
    assert all(d.attempts >= 2 for d in again)
    survivor.ack([d.token for d in again])
    assert survivor.figures()["redelivered"] >= 3
    survivor.close()


def test_a_member_closed_cleanly_hands_back_what_it_held_at_once(make_bus: MakeBus) -> None:
    bus = make_bus()
    published(bus, 5)
    first = bus.consumer("g", "worker-1", ack_wait=60.0)
    held = read_all(first, 5)
    first.ack([held[0].token])
    first.close()
    restarted = bus.consumer("g", "worker-1", ack_wait=60.0)  # same name, after a restart
    again = read_all(restarted, 4, timeout=5)  # far less than AckWait
    assert sorted(d.event.log_id for d in again) == [2, 3, 4, 5]
    assert all(d.attempts == 2 for d in again)
    restarted.ack([d.token for d in again])
    restarted.close()


def test_keep_alive_stops_a_slow_batch_from_being_redelivered(make_bus: MakeBus) -> None:
    bus = make_bus()
    published(bus, 2)
    slow = bus.consumer("g", "slow", ack_wait=1.0)
    peer = bus.consumer("g", "peer", ack_wait=1.0)
    held = read_all(slow, 2)
    deadline = time.monotonic() + 3.0  # three AckWaits
    while time.monotonic() < deadline:
        slow.keep_alive()
        assert peer.read(10, timeout=0.2) == []
    slow.ack([d.token for d in held])
    time.sleep(1.2)
    assert peer.read(10, timeout=0.3) == []
    slow.close()
    peer.close()


def test_an_entry_delivered_too_often_is_dead_lettered_with_the_reason(
    make_bus: MakeBus, names: Names, nats_url: str
) -> None:
    bus = make_bus()
    published(bus, 1)
    consumer = bus.consumer("g", "flaky", ack_wait=0.5, max_deliveries=2)
    attempts = []
    deadline = time.monotonic() + 15
    while consumer.figures()["dead_lettered"] == 0 and time.monotonic() < deadline:
        attempts += [d.attempts for d in consumer.read(10, timeout=0.5)]  # never acknowledged
    assert attempts == [1, 2]
    assert consumer.figures()["dead_lettered"] == 1
    # Both deliveries it held (never acknowledged) are over: nothing is counted as held.
    assert consumer.figures()["in_flight"] == 0
    dead = asyncio.run(_dead_letters(nats_url, names))
    assert len(dead) == 1
    data, headers = dead[0]
    assert b'"req-0"' in data
    assert headers["Eventbus-Reason"] == "delivered 3 times (max_deliveries=2)"
    assert (headers["Eventbus-Sequence"], headers["Eventbus-Group"]) == ("1", "g")
    assert headers["Eventbus-Deliveries"] == "3"
    time.sleep(0.7)
    assert consumer.read(10, timeout=0.5) == []  # terminated: never delivered again
    assert bus.describe()["dead_letters"] == 1
    consumer.close()


def test_a_dead_letter_of_a_stream_made_anew_is_kept_beside_the_old_one(
    make_bus: MakeBus, names: Names, nats_url: str
) -> None:
    # The dead letter's Nats-Msg-Id named the stream, sequence and group only: once the stream
    # was deleted and made again, its LogID 1 was another event, and the dead-letter stream
    # dropped that one as a duplicate of the first within its window (trial 246).
    for round_ in ("one", "two"):
        bus = make_bus()
        bus.publish(make_event(0, request_id=f"round-{round_}"))
        assert bus.flush(10)
        consumer = bus.consumer("g", "flaky", ack_wait=0.5, max_deliveries=1)
        deadline = time.monotonic() + 15
        while consumer.figures()["dead_lettered"] == 0 and time.monotonic() < deadline:
            consumer.read(10, timeout=0.5)  # never acknowledged
        assert consumer.figures()["dead_lettered"] == 1
        consumer.close()
        bus.stop(5)
        delete_streams(nats_url, names.stream)  # the event stream only: its dead letters stay
    dead = asyncio.run(_dead_letters(nats_url, names))
    assert [h["Eventbus-Sequence"] for _, h in dead] == ["1", "1"]
    assert [b'"round-one"' in d for d, _ in dead] == [True, False]
    assert b'"round-two"' in dead[1][0]


async def _add_stream(url: str, stream: str, subjects: list[str]) -> None:
    nc = await nats.connect(url)
    try:
        await nc.jetstream().add_stream(name=stream, subjects=subjects)
    finally:
        await nc.close()


async def _add_consumer(url: str, stream: str, **config: Any) -> None:
    from nats.js import api

    nc = await nats.connect(url)
    try:
        await nc.jetstream().add_consumer(stream, api.ConsumerConfig(**config))
    finally:
        await nc.close()


@pytest.mark.parametrize(
    ("config", "said"),
    [
        ({"deliver_subject": "elsewhere.push"}, "push consumer"),
        ({"ack_policy": "none"}, "ack policy is 'none'"),
        ({"ack_policy": "explicit", "filter_subject": "{subject}.other"}, "takes subject eventbus"),
        ({"ack_policy": "explicit", "max_deliver": 3}, "MaxDeliver is 3"),
    ],
)
def test_an_existing_consumer_unfit_for_a_group_is_refused_naming_it(
    make_bus: MakeBus, names: Names, nats_url: str, config: dict[str, Any], said: str
) -> None:
    # Used as it was found (trial 246): a push consumer gave members nothing, for ever, with
    # /readyz saying "reading"; one acknowledging nothing lost a dead dispatcher's batch.
    # A stream of two subjects (an operator's), so that a filter can take the other one.
    asyncio.run(_add_stream(nats_url, names.stream, [names.subject, f"{names.subject}.other"]))
    bus = make_bus()
    published(bus, 3)
    config = {k: v.format(subject=names.subject) if isinstance(v, str) else v
              for k, v in config.items()}  # fmt: skip
    asyncio.run(_add_consumer(nats_url, names.stream, durable_name="odd", **config))
    consumer = bus.consumer("odd", "c", max_deliveries=5)
    with pytest.raises(SettingsError) as raised:
        read_all(consumer, 3, timeout=5)
    text = str(raised.value)
    assert said in text and "consumer group odd" in text and "EVENTBUS_NATS_GROUP" in text
    assert f"nats consumer rm {names.stream} odd" in text
    consumer.close()


def test_an_existing_group_with_room_for_the_members_own_limit_is_used(
    make_bus: MakeBus, names: Names, nats_url: str
) -> None:
    bus = make_bus()
    published(bus, 3)
    asyncio.run(
        _add_consumer(
            nats_url,
            names.stream,
            durable_name="roomy",
            ack_policy="explicit",
            max_deliver=6,
            filter_subject=names.subject,
        )
    )
    consumer = bus.consumer("roomy", "c", max_deliveries=5)
    got = read_all(consumer, 3)
    assert [d.event.log_id for d in got] == [1, 2, 3]
    consumer.ack([d.token for d in got])
    consumer.close()


async def _publish_raw(url: str, subject: str, data: bytes) -> None:
    nc = await nats.connect(url)
    try:
        await nc.jetstream().publish(subject, data)
    finally:
        await nc.close()


def test_an_undecodable_entry_is_dead_lettered_and_the_rest_delivered(
    make_bus: MakeBus, names: Names, nats_url: str
) -> None:
    bus = make_bus()
    published(bus, 1)
    asyncio.run(_publish_raw(nats_url, names.subject, b"{not an event"))
    published(bus, 1, start=1)
    consumer = bus.consumer("g", "c")
    got = read_all(consumer, 2)
    assert [d.event.log_id for d in got] == [1, 3]
    consumer.ack([d.token for d in got])
    assert consumer.figures()["dead_lettered"] == 1
    ((data, headers),) = asyncio.run(_dead_letters(nats_url, names))
    assert data == b"{not an event"
    assert headers["Eventbus-Reason"].startswith("undecodable:")
    assert headers["Eventbus-Sequence"] == "2"
    consumer.close()


CONSUMER_PROCESS = """
    import sys
    from eventbus_nats import NatsEventBus
    url, stream, subject = sys.argv[1:4]
    bus = NatsEventBus(url, stream=stream, subject=subject)
    consumer = bus.consumer("g", "worker", ack_wait=2.0)  # the group is created here
    got = []
    while len(got) < 5:
        got += consumer.read(5 - len(got), timeout=1)
    consumer.ack([d.token for d in got[:2]])
    print(" ".join(str(d.event.log_id) for d in got), flush=True)
    import os; os._exit(1)  # dies holding three unacknowledged entries
"""


def test_a_restarted_process_resumes_the_pending_entries(
    make_bus: MakeBus, names: Names, nats_url: str
) -> None:
    bus = make_bus()
    published(bus, 8)
    child = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CONSUMER_PROCESS), nats_url, names.stream,
         names.subject],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert child.returncode == 1, child.stderr
    assert child.stdout.split() == ["1", "2", "3", "4", "5"]
    # Nothing says the process died: its entries come back once the group's AckWait passes.
    restarted = bus.consumer("g", "worker")
    seen: dict[int, int] = {}
    deadline = time.monotonic() + 45
    while len(seen) < 6 and time.monotonic() < deadline:
        for d in restarted.read(10, timeout=0.5):
            seen[d.event.log_id] = d.attempts
            restarted.ack([d.token])
    assert seen == {3: 2, 4: 2, 5: 2, 6: 1, 7: 1, 8: 1}
    assert restarted.ack_wait == 2.0
    restarted.close()


class Recorder:
    """A sink that records the LogIDs it was sent."""

    name = "recorder"

    def __init__(self) -> None:
        self.log_ids: list[int] = []

    async def send(self, batch: list[dict[str, Any]]) -> None:
        self.log_ids += [p["log_id"] for p in batch]

    async def close(self) -> None:
        return None


def test_the_dispatcher_reads_a_consumer_group(make_bus: MakeBus) -> None:
    bus = make_bus()
    published(bus, 50)
    sink = Recorder()
    dispatcher = Dispatcher(bus, [sink], group="dispatchers", batch_size=10, flush_interval=0.1,
                            dead_letter=MemoryDeadLetter())  # fmt: skip
    dispatcher.start()
    deadline = time.monotonic() + 20
    while len(sink.log_ids) < 50 and time.monotonic() < deadline:
        time.sleep(0.05)
    dispatcher.stop()
    assert sorted(sink.log_ids) == list(range(1, 51))
    row = next(g for g in bus.describe()["groups"] if g["group"] == "dispatchers:recorder")
    assert row["pending"] == 0


def test_dispatch_from_settings_joins_the_group_of_eventbus_nats_group(
    make_bus: MakeBus,
    names: Names,
    nats_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for var, value in {
        "LLM_PROXY_EVENT_BUS": "nats",
        "NATS_URL": nats_url,
        "EVENTBUS_NATS_STREAM": names.stream,
        "EVENTBUS_NATS_SUBJECT": names.subject,
        "EVENTBUS_NATS_GROUP": "nats-dispatchers",
        "EVENTBUS_REDIS_GROUP": "redis-dispatchers",  # the other backend's: not for NATS
        "EVENTBUS_SINK_JSONL_PATH": str(tmp_path / "events.jsonl"),
        "EVENTBUS_FLUSH_INTERVAL": "0.05",
    }.items():
        monkeypatch.setenv(var, value)
    published(make_bus(), 5)
    dispatcher = Dispatcher.from_settings(EventBusSettings(sinks="jsonl"))
    dispatcher.start()
    try:
        out = tmp_path / "events.jsonl"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (
            not out.exists() or len(out.read_text().splitlines()) < 5
        ):
            time.sleep(0.05)
    finally:
        dispatcher.stop()
    assert len(out.read_text().splitlines()) == 5
    groups = {g["group"] for g in make_bus().describe()["groups"]}
    assert groups == {"nats-dispatchers:jsonl"}


def test_a_group_name_too_long_for_nats_names_the_setting(make_bus: MakeBus) -> None:
    # EVENTBUS_NATS_GROUP may hold 255 characters, but per-sink dispatch adds ":SINK": the
    # error names the variable to shorten (it was an "internal error" naming nothing).
    bus = make_bus(group="G" * 255)
    with pytest.raises(SettingsError, match=r"261 characters.*EVENTBUS_NATS_GROUP.*:SINK"):
        bus.consumer(group="G" * 255 + ":jsonl")


def test_a_stream_whose_subject_another_stream_captures_names_the_subject_setting(
    make_bus: MakeBus, names: Names, nats_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Renaming only EVENTBUS_NATS_STREAM leaves the old stream capturing the subject: the hint
    # is EVENTBUS_NATS_SUBJECT, not the replicas and limits.
    first = make_bus()
    first.publish(make_event(1))
    assert first.flush(10)
    other = f"{names.stream}_B"
    try:
        second = make_bus(stream=other)
        second.publish(make_event(2))
        deadline = time.monotonic() + 10
        while "subjects overlap" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)  # the writer logs it from its own thread: nothing to wait on
        assert "EVENTBUS_NATS_SUBJECT" in caplog.text
        assert "EVENTBUS_NATS_REPLICAS" not in caplog.text
    finally:
        delete_streams(nats_url, other)  # never created: the server refused it


def test_a_group_filtering_on_several_other_subjects_is_unfit() -> None:
    # NATS 2.10's filter_subjects (several): only the single filter was looked at (review
    # 252). The servers here are 2.9, which has no such field: the check itself.
    from nats.js import api

    from eventbus_nats._groups import _unfit

    other = api.ConsumerConfig(ack_policy=api.AckPolicy.EXPLICIT, filter_subjects=["a.b", "c.d"])
    assert "takes subject a.b, c.d, not the bus's x.y" in str(_unfit(other, "x.y", 5))
    mine = api.ConsumerConfig(ack_policy=api.AckPolicy.EXPLICIT, filter_subjects=["a.b", "x.*"])
    assert _unfit(mine, "x.y", 5) is None
