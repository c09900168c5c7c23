"""RedisStreamsEventBus: layout, consumer groups, reclaim, dead letters, group re-creation."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from eventbus_core import AckableSource, Delivery, Event, Subscription
from eventbus_core.testing import make_event
from eventbus_redis import RedisStreamsEventBus, StreamConsumer, log_id_from_entry_id
from tests._services import close_client
from tests.redis._servers import ThrowawayRedis


def read_all(consumer: StreamConsumer, n: int, *, rounds: int = 200) -> list[Delivery]:
    """Read until `n` deliveries arrived (each read waits at most 0.1 s for its first)."""
    got: list[Delivery] = []
    for _ in range(rounds):
        got += consumer.read(n - len(got), timeout=0.1)
        if len(got) >= n:
            break
    return got


def test_entries_carry_go_json_in_field_data_with_atomic_log_ids(
    client: redis.Redis, prefix: str
) -> None:
    stream = f"{prefix}:s"
    with RedisStreamsEventBus(client, stream, max_len=1000) as bus:
        for i in range(30):
            bus.publish(make_event(i))
        assert bus.flush(10)
    entries: Any = client.xrange(stream)
    assert [set(fields) for _, fields in entries] == [{b"data"}] * 30
    docs = [json.loads(fields[b"data"]) for _, fields in entries]
    assert [d["LogID"] for d in docs] == list(range(1, 31))
    assert [d["RequestID"] for d in docs] == [f"req-{i}" for i in range(30)]


def test_consumer_is_an_ackable_source_and_acked_entries_do_not_return(
    client: redis.Redis, prefix: str
) -> None:
    with RedisStreamsEventBus(client, f"{prefix}:s", f"{prefix}:g") as bus:
        consumer = bus.consumer(name="c1", claim_idle=60)
        assert isinstance(consumer, AckableSource)
        for i in range(10):
            bus.publish(make_event(i))
        assert bus.flush(10)
        got = read_all(consumer, 10)
        assert [d.event.request_id for d in got] == [f"req-{i}" for i in range(10)]
        assert {d.attempts for d in got} == {1}
        assert bus.stream_info()["pending"] == 10
        consumer.ack([d.token for d in got])
        info = bus.stream_info()
        assert (info["length"], info["pending"], info["lag"], info["exists"]) == (10, 0, 0, True)
        assert consumer.read(10, timeout=0) == []


def test_group_starts_at_zero_so_earlier_entries_are_delivered(
    client: redis.Redis, prefix: str
) -> None:
    with RedisStreamsEventBus(client, f"{prefix}:s", f"{prefix}:g") as bus:
        for i in range(3):
            bus.publish(make_event(i))
        assert bus.flush(10)
        assert bus.stream_info()["exists"] is False
        consumer = bus.consumer(name="late")
        assert len(read_all(consumer, 3)) == 3


def test_restart_under_the_same_name_rereads_own_pending_first(
    client: redis.Redis, prefix: str
) -> None:
    with RedisStreamsEventBus(client, f"{prefix}:s", f"{prefix}:g") as bus:
        for i in range(5):
            bus.publish(make_event(i))
        assert bus.flush(10)
        first = bus.consumer(name="worker-1", claim_idle=60)
        assert len(read_all(first, 5)) == 5
        first.close()  # "crashed" before acknowledging anything
        bus.publish(make_event(99))
        assert bus.flush(10)
        again = bus.consumer(name="worker-1", claim_idle=60)
        backlog = again.read(10, timeout=1)
        assert [d.event.request_id for d in backlog] == [f"req-{i}" for i in range(5)]
        assert {d.attempts for d in backlog} == {2}
        fresh = read_all(again, 1)
        assert [d.event.request_id for d in fresh] == ["req-99"]


def test_peer_reclaims_entries_of_a_dead_consumer_under_steady_traffic(
    client: redis.Redis, prefix: str
) -> None:
    with RedisStreamsEventBus(client, f"{prefix}:s", f"{prefix}:g") as bus:
        for i in range(4):
            bus.publish(make_event(i))
        assert bus.flush(10)
        dead = bus.consumer(name="dead", claim_idle=0.05)
        assert len(read_all(dead, 4)) == 4  # taken, never acknowledged
        peer = bus.consumer(name="peer", claim_idle=0.05)
        seen: dict[str, Delivery] = {}
        for round_no in range(200):
            bus.publish(make_event(100 + round_no))  # new entries keep coming
            for d in peer.read(10, timeout=0.05):
                seen[d.event.request_id] = d
                peer.ack([d.token])
            if all(f"req-{i}" in seen for i in range(4)):
                break
        assert all(seen[f"req-{i}"].attempts == 2 for i in range(4))
        assert peer.claimed >= 4


def test_keep_alive_keeps_entries_being_processed_from_being_reclaimed(
    client: redis.Redis, prefix: str
) -> None:
    with RedisStreamsEventBus(client, f"{prefix}:s", f"{prefix}:g") as bus:
        for i in range(3):
            bus.publish(make_event(i))
        assert bus.flush(10)
        slow = bus.consumer(name="slow", claim_idle=0.2, claim_interval=0.05)
        held = read_all(slow, 3)  # still being processed: not acknowledged yet
        peer = bus.consumer(name="peer", claim_idle=0.2, claim_interval=0.05)
        deadline = time.monotonic() + 0.8  # four times claim_idle
        while time.monotonic() < deadline:
            slow.keep_alive()
            assert slow.read(10, timeout=0.02) == []  # not handed to itself again either
            assert peer.read(10, timeout=0.02) == []
        slow.ack([d.token for d in held])
        info = bus.stream_info()
        assert info["pending"] == 0 and slow.claimed == peer.claimed == 0
        assert slow.delivered == 3  # one delivery each: keep_alive counts none


def test_poison_and_overdelivered_entries_go_to_the_dead_letter_stream(
    client: redis.Redis, prefix: str
) -> None:
    stream = f"{prefix}:s"
    with RedisStreamsEventBus(client, stream, f"{prefix}:g") as bus:
        client.xadd(stream, {"data": b"{not json"})
        client.xadd(stream, {"other": b"x"})
        # Nested past the JSON reader's recursion limit: refused like any bad entry (it was a
        # RecursionError, which a dispatcher took for an outage and retried for ever).
        client.xadd(stream, {"data": b'{"LogID":1,"X":' + b"[" * 5000 + b"]" * 5000 + b"}"})
        bus.publish(make_event(1))
        assert bus.flush(10)
        consumer = bus.consumer(name="c", claim_idle=0, max_deliveries=2)
        got = read_all(consumer, 1)
        assert [d.event.request_id for d in got] == ["req-1"]
        # Never acknowledged: delivered again and again until max_deliveries is passed. (Read
        # until then: fakeredis claims nothing idle 0 ms within the millisecond of its last
        # delivery, so a fixed count of reads failed there one run in seven.)
        for _ in range(40):
            got = consumer.read(10, timeout=0.05) or got
            if client.xlen(bus.dead_letter_stream) == 4:
                break
        dead: Any = client.xrange(bus.dead_letter_stream)
        reasons = [fields[b"reason"].decode() for _, fields in dead]
        assert len(dead) == 4
        assert reasons[0].startswith("undecodable") and "data" in reasons[1]
        assert reasons[2].startswith("undecodable") and "nested deeper" in reasons[2]
        assert reasons[3].startswith("delivered 3 times")
        assert dead[0][1][b"data"] == b"{not json"
        # An entry without data keeps its own fields there: its content outlives the stream's
        # trimming (it was dead-lettered empty, trial 154).
        assert json.loads(dead[1][1][b"data"]) == {"other": "x"}
        assert Event.from_json(dead[3][1][b"data"]).request_id == "req-1"
        info = bus.stream_info()
        assert (info["pending"], info["dead_letters"]) == (0, 4)


def test_go_written_stream_entries_are_consumed(
    client: redis.Redis, prefix: str, go_vectors: list[dict[str, Any]]
) -> None:
    stream = f"{prefix}:s"
    for vector in go_vectors:  # what the Go proxy's XADD writes: one field, data
        client.xadd(stream, {"data": json.dumps(vector)})
    with RedisStreamsEventBus(client, stream, f"{prefix}:g") as bus:
        got = read_all(bus.consumer(name="c"), len(go_vectors))
        expected = [Event.from_json(json.dumps(v)) for v in go_vectors]
        # An entry's own LogID is kept; LogID 0 (the Go proxy's) becomes one from the entry id.
        expected = [
            e if e.log_id else e.with_log_id(log_id_from_entry_id(d.token))
            for e, d in zip(expected, got, strict=True)
        ]
        assert [d.event for d in got] == expected


def test_group_is_recreated_after_redis_lost_it(client: redis.Redis, prefix: str) -> None:
    stream = f"{prefix}:s"
    with RedisStreamsEventBus(client, stream, f"{prefix}:g") as bus:
        consumer = bus.consumer(name="c")
        bus.publish(make_event(1))
        assert bus.flush(10)
        consumer.ack([d.token for d in read_all(consumer, 1)])
        client.delete(stream)  # a flushed Redis: the stream and its group are gone
        bus.publish(make_event(2))
        assert bus.flush(10)
        got = read_all(consumer, 1)
        assert [d.event.request_id for d in got] == ["req-2"]
        assert consumer.groups_created == 2
        assert consumer.figures()["ack_unheld"] == 0


def test_acknowledgements_redis_no_longer_holds_are_counted(
    client: redis.Redis, prefix: str
) -> None:
    # Read, then the stream goes (a flushed Redis) before the acknowledgement: `delivered`
    # and `acked + ack_unheld` still add up.
    stream = f"{prefix}:s"
    with RedisStreamsEventBus(client, stream, f"{prefix}:g") as bus:
        consumer = bus.consumer(name="c")
        for i in range(5):
            bus.publish(make_event(i))
        assert bus.flush(10)
        got = read_all(consumer, 5)
        consumer.ack([d.token for d in got[:2]])
        client.delete(stream)
        consumer.ack([d.token for d in got[2:]])
        figures = consumer.figures()
        assert (figures["delivered"], figures["acked"], figures["ack_unheld"]) == (5, 2, 3)


def test_subscribe_fans_out_without_a_group(client: redis.Redis, prefix: str) -> None:
    with RedisStreamsEventBus(client, f"{prefix}:s", f"{prefix}:g") as bus:
        bus.publish(make_event(0))  # before subscribing: not delivered
        assert bus.flush(10)
        subs = [bus.subscribe(), bus.subscribe()]
        for i in range(1, 4):
            bus.publish(make_event(i))
        assert bus.flush(10)
        for sub in subs:
            assert [sub.get(timeout=10).log_id for _ in range(3)] == [2, 3, 4]


def test_stream_subscriber_is_told_when_entries_were_trimmed_before_it_read_them(
    client: redis.Redis, prefix: str
) -> None:
    stream = f"{prefix}:s"

    def entry(log_id: int) -> dict[str, bytes]:
        return {"data": make_event(log_id).with_log_id(log_id).to_json()}

    with RedisStreamsEventBus(client, stream, f"{prefix}:g") as bus:
        sub = bus.subscribe()
        for log_id in (1, 2):  # another writer's entries
            client.xadd(stream, entry(log_id))
        assert [sub.get(timeout=10).log_id for _ in range(2)] == [1, 2]
        with client.pipeline(transaction=True) as pipe:  # 3..5 trimmed before anyone reads
            for log_id in (3, 4, 5, 6):
                pipe.xadd(stream, entry(log_id))
            pipe.xtrim(stream, maxlen=1, approximate=False)
            pipe.execute()
        assert sub.get(timeout=10).log_id == 6
        assert [(g.after, g.missed) for g in sub.gaps] == [(2, 3)]
        assert (sub.trimmed, sub.stats().dropped) == (3, 0)  # trimmed, not a full buffer


def five_read(bus: RedisStreamsEventBus) -> Subscription:
    """A subscription of `bus` that received LogIDs 1 to 5, published after it."""
    sub = bus.subscribe()
    for i in range(5):
        bus.publish(make_event(i))
    assert bus.flush(10)
    assert [sub.get(timeout=10).log_id for _ in range(5)] == [1, 2, 3, 4, 5]
    return sub


def test_a_stream_whose_counter_went_back_is_reported_and_new_events_still_arrive(
    client: redis.Redis, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Redis restarted without persistence: LogIDs 1, 2, 3 came again after 5, with no gap and
    # no warning (the list backend says so; trial 147).
    stream = f"{prefix}:reset"
    with RedisStreamsEventBus(client, stream, f"{prefix}:g") as bus:
        sub = five_read(bus)
        client.delete(stream, f"{stream}:seq")  # what a flushed or restarted Redis looks like
        # A stream made anew numbers its entries from the current millisecond: within the one
        # of the entry read last, they would sort before it, and XREAD past it would never see
        # them (a restarted Redis is seconds later). Ruled out here, as a suspect of the one
        # failure the CI floor run met (no event in 10 s), which 30 runs here did not repeat.
        time.sleep(0.005)
        for i in range(5, 8):
            bus.publish(make_event(i))
        assert bus.flush(10)
        again = [sub.get(timeout=10) for _ in range(3)]
        assert [(e.log_id, e.request_id) for e in again] == [
            (1, "req-5"), (2, "req-6"), (3, "req-7")
        ]  # fmt: skip
        assert [(g.after, g.missed) for g in sub.gaps] == [(5, None)]
        assert "went back from 5 to 1" in sub.gaps[0].reason
    assert any("went back from 5 to 1" in r.getMessage() for r in caplog.records)
    # stop() waited for LogID 5 of the old counter, then counted the 3 received as dropped
    # (trial 151).
    assert sub.stats().dropped == 0
    assert not [r for r in caplog.records if "did not answer in time" in r.getMessage()]


def _go_entry(client: redis.Redis, stream: str, n: int) -> None:
    """`n` entries as the Go proxy writes them: XADD with LogID 0."""
    for i in range(n):
        go = Event(request_id=f"go-{i}", method="POST", path="/v1/chat/completions", status=200)
        client.xadd(stream, {"data": go.to_json()})


def test_go_entries_read_after_redis_lost_its_data_are_not_counted_dropped(
    client: redis.Redis, prefix: str
) -> None:
    # Read, and counted again at the close: the reset, seen at eventbus's next LogID, forgot
    # the Go entries read before it (trial 259: delivered 22 of 22, dropped 7).
    stream = f"{prefix}:goreset"
    with RedisStreamsEventBus(client, stream, f"{prefix}:g") as bus:
        sub = five_read(bus)
        client.delete(stream, f"{stream}:seq")  # Redis lost its data
        time.sleep(0.005)  # a restarted Redis is seconds later (see above)
        _go_entry(client, stream, 7)
        assert [sub.get(timeout=10).request_id for _ in range(7)] == [f"go-{i}" for i in range(7)]
        for i in range(5, 10):
            bus.publish(make_event(i))
        assert bus.flush(10)
        assert [sub.get(timeout=10).log_id for _ in range(5)] == [1, 2, 3, 4, 5]
    assert (sub.stats().delivered, sub.stats().dropped) == (17, 0)


def test_go_entries_alone_through_a_redis_that_lost_its_data_are_counted_at_close(
    client: redis.Redis, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    # No counter to tell the reset: the count of entries added went back, and the close said
    # Redis "did not answer in time, or keeps no count" (trial 259). Counted directly.
    stream = f"{prefix}:goonly"
    bus = RedisStreamsEventBus(client, stream, f"{prefix}:g")
    sub = bus.subscribe()
    _go_entry(client, stream, 30)
    assert len([sub.get(timeout=10) for _ in range(30)]) == 30
    client.delete(stream)  # Redis lost its data
    time.sleep(0.005)
    _go_entry(client, stream, 10)
    assert len([sub.get(timeout=10) for _ in range(8)]) == 8  # 2 left unread
    bus.stop(5)
    left = list(sub)
    assert (sub.stats().delivered, sub.stats().dropped) == (38 + len(left), 2 - len(left))
    assert not sub.uncounted_at_close
    assert not [r for r in caplog.records if "did not answer in time" in r.getMessage()]


def test_trimming_then_another_writers_lower_log_id_is_not_taken_for_lost_data(
    client: redis.Redis, prefix: str
) -> None:
    # Review 149: "the entry read last is gone" alone took MAXLEN trimming plus a LogID of
    # another writer's counter for Redis having lost its data.
    stream = f"{prefix}:s"
    with RedisStreamsEventBus(client, stream, f"{prefix}:g") as bus:
        sub = five_read(bus)
        client.xtrim(stream, maxlen=0)  # trimmed, as MAXLEN does, after they were read
        other = Event(request_id="other-1", status=200).with_log_id(3)
        client.xadd(stream, {"data": other.to_json()})
        assert sub.get(timeout=10).request_id == "other-1"
        bus.publish(make_event(6))
        assert bus.flush(10)
        assert sub.get(timeout=10).log_id == 6
        assert not sub.gaps, [g.reason for g in sub.gaps]


def test_stream_log_ids_that_do_not_follow_on_are_not_taken_for_a_gap(
    client: redis.Redis, prefix: str, go_vectors: list[dict[str, Any]]
) -> None:
    # The Go samples carry LogIDs of another counter (and far apart); nothing was trimmed.
    stream = f"{prefix}:s"
    with RedisStreamsEventBus(client, stream, f"{prefix}:g") as bus:
        sub = bus.subscribe()
        for vector in go_vectors:
            client.xadd(stream, {"data": json.dumps(vector)})
        got = [sub.get(timeout=10) for _ in go_vectors]
        entry_ids = [entry_id for entry_id, _ in client.xrange(stream)]
        expected = [Event.from_json(json.dumps(v)) for v in go_vectors]
        assert got == [
            e if e.log_id else e.with_log_id(log_id_from_entry_id(i))
            for e, i in zip(expected, entry_ids, strict=True)
        ]
        assert not sub.gaps and sub.stats().dropped == 0


def test_subscribe_then_stop_with_nothing_new_counts_nothing_as_dropped(
    client: redis.Redis, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    bus = RedisStreamsEventBus(client, f"{prefix}:s", f"{prefix}:g")
    for i in range(5):  # older entries: not the subscription's to receive
        bus.publish(make_event(i))
    assert bus.flush(10)
    sub = bus.subscribe()
    bus.stop(5)
    assert list(sub) == []
    assert sub.stats().dropped == 0 and bus.stats().subscribers[0].dropped == 0
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_entry_data_and_raw_entries_take_every_reply_shape() -> None:
    from eventbus_redis._entries import entry_data, raw_stream_entries

    assert entry_data([b"data", b"x"]) == b"x"
    assert entry_data(["other", "y", "data", "x"]) == "x"  # decode_responses, fields in any order
    assert entry_data([b"other", b"y"]) is None and entry_data([]) is None
    assert entry_data(None) is None
    assert entry_data({b"data": b"x"}) == b"x" and entry_data({"data": "x"}) == "x"
    assert entry_data([b"data"]) is None  # a field without a value is no data
    entries = [[b"1-0", [b"data", b"x"]]]
    assert raw_stream_entries([[b"s", entries]]) == entries  # RESP2
    assert raw_stream_entries({b"s": entries}) == entries  # RESP3
    assert raw_stream_entries(None) == [] and raw_stream_entries([]) == []


@pytest.mark.redis
@pytest.mark.parametrize("protocol", [2, 3])
@pytest.mark.parametrize("decode", [False, True])
def test_consumer_reads_and_acknowledges_over_resp2_and_resp3(
    real: redis.Redis, prefix: str, protocol: int, decode: bool
) -> None:
    """New entries are read, and acknowledged, on the consumer's own connection, whose raw
    replies differ by protocol and decoding: each way gives the same deliveries, and refuses
    the same bad entries."""
    from tests._services import redis_url

    client = redis.Redis.from_url(redis_url(), protocol=protocol, decode_responses=decode)
    stream = f"{prefix}:p{protocol}{int(decode)}"
    try:
        with RedisStreamsEventBus(client, stream, f"{prefix}:g") as bus:
            consumer = bus.consumer(name="c", batch_size=3)
            read_all(consumer, 0)  # joins the group before the entries come
            for i in range(1, 5):
                bus.publish(make_event(i))
            assert bus.flush(10)
            client.xadd(stream, {"other": "x", "data": make_event(5).to_json()})
            client.xadd(stream, {"other": "no data here"})
            client.xadd(stream, {"data": "{not json"})
            got = read_all(consumer, 5)
            assert [d.event.request_id for d in got] == [f"req-{i}" for i in range(1, 6)]
            assert all(isinstance(d.token, str) for d in got)
            assert consumer.read(10, timeout=0.1) == []  # the two bad ones: dead-lettered
            consumer.ack([d.token for d in got])
            figures = consumer.figures()
            assert (figures["delivered"], figures["acked"], figures["dead_lettered"]) == (5, 5, 2)
            assert bus.stream_info()["pending"] == 0
            consumer.close()
    finally:
        close_client(client)


def _publish(bus: RedisStreamsEventBus, n: int) -> None:
    for i in range(n):
        bus.publish(make_event(i))
    assert bus.flush(10)


@contextlib.contextmanager
def _first_reply_lost(command_name: str) -> Iterator[list[Any]]:
    """Within the block, the first `command_name` a consumer sends on its own connection (or,
    for "XREADGROUP", its first read of new entries) runs in Redis but its reply is lost on the
    way (a ConnectionError, as on a cut connection); yields the list the lost reply is put in."""
    from eventbus_redis._consumer import StreamConsumer
    from eventbus_redis._own_connection import OwnConnection

    real_call = OwnConnection.call
    real_read_new = StreamConsumer._read_new
    lost: list[Any] = []

    def losing_call(self: OwnConnection, command: tuple[Any, ...]) -> Any:
        reply = real_call(self, command)
        if command[0] == command_name and not lost:
            lost.append(reply)
            raise redis.ConnectionError("reply lost on the way")
        return reply

    def losing_read_new(self: StreamConsumer, count: int, block_ms: int) -> list[Any]:
        reply = real_read_new(self, count, block_ms)
        if not lost:
            lost.append(reply)
            self._conn.reset()  # as a read that failed on its way leaves it
            raise redis.ConnectionError("reply lost on the way")
        return reply

    OwnConnection.call = losing_call  # type: ignore[method-assign]
    if command_name == "XREADGROUP":
        StreamConsumer._read_new = losing_read_new  # type: ignore[method-assign]
    try:
        yield lost
    finally:
        OwnConnection.call = real_call  # type: ignore[method-assign]
        StreamConsumer._read_new = real_read_new  # type: ignore[method-assign]


def test_read_ahead_hands_the_next_batch_to_the_next_read_and_counts_it_pending(
    client: redis.Redis, prefix: str
) -> None:
    with RedisStreamsEventBus(client, f"{prefix}:s", f"{prefix}:g") as bus:
        _publish(bus, 10)
        consumer = bus.consumer(name="c", batch_size=4, claim_idle=60)
        first = read_all(consumer, 4)
        consumer.read_ahead(4)
        assert bus.stream_info()["pending"] == 8  # asked for: pending from then on
        consumer.ack([d.token for d in first])  # on the same connection, after the reply
        assert consumer.figures()["acked"] == 4
        second = consumer.read(4, timeout=0)  # at once, without waiting
        assert [d.event.request_id for d in first + second] == [f"req-{i}" for i in range(8)]
        assert all(d.attempts == 1 for d in second)
        consumer.ack([d.token for d in second])
        assert bus.stream_info()["pending"] == 0
        consumer.read_ahead(10)  # at most batch_size: the last two
        third = consumer.read(1, timeout=0)  # what a read does not take waits for the next
        third += consumer.read(10, timeout=0)
        assert [d.event.request_id for d in third] == ["req-8", "req-9"]
        consumer.ack([d.token for d in third])
        figures = consumer.figures()
        assert (figures["delivered"], figures["acked"], figures["claimed"]) == (10, 10, 0)
        consumer.close()


def test_entries_read_ahead_and_never_returned_are_given_back_at_close(
    client: redis.Redis, prefix: str
) -> None:
    with RedisStreamsEventBus(client, f"{prefix}:s", f"{prefix}:g") as bus:
        _publish(bus, 6)
        leaving = bus.consumer(name="leaving", batch_size=3, claim_idle=60)
        done = read_all(leaving, 3)
        leaving.ack([d.token for d in done])
        leaving.read_ahead(3)
        leaving.close()  # never returned them: given back, claimable at once
        assert bus.stream_info()["pending"] == 3
        peer = bus.consumer(name="peer", claim_idle=60)  # a whole minute of claim_idle
        got = read_all(peer, 3, rounds=20)
        assert sorted(d.event.request_id for d in got) == ["req-3", "req-4", "req-5"]
        assert peer.claimed == 3 and leaving.delivered == 3
        peer.ack([d.token for d in got])
        assert bus.stream_info()["pending"] == 0
        peer.close()


def test_keep_alive_also_keeps_what_was_read_ahead(client: redis.Redis, prefix: str) -> None:
    with RedisStreamsEventBus(client, f"{prefix}:s", f"{prefix}:g") as bus:
        _publish(bus, 6)
        slow = bus.consumer(name="slow", batch_size=3, claim_idle=0.2, claim_interval=0.05)
        held = read_all(slow, 3)
        # A reclaim due comes before reading ahead; none is due for the next ten seconds.
        slow._next_claim = time.monotonic() + 10
        slow.read_ahead(3)
        assert bus.stream_info()["pending"] == 6
        peer = bus.consumer(name="peer", claim_idle=0.2, claim_interval=0.05)
        deadline = time.monotonic() + 0.8  # four times claim_idle
        while time.monotonic() < deadline:
            slow.keep_alive()
            assert peer.read(10, timeout=0.02) == []
        assert peer.claimed == 0
        later = slow.read(3, timeout=0)
        assert [d.event.request_id for d in later] == ["req-3", "req-4", "req-5"]
        slow.ack([d.token for d in held + later])
        assert bus.stream_info()["pending"] == 0
        slow.close()
        peer.close()


def test_read_alone_never_reads_ahead(client: redis.Redis, prefix: str) -> None:
    with RedisStreamsEventBus(client, f"{prefix}:s", f"{prefix}:g") as bus:
        _publish(bus, 8)
        consumer = bus.consumer(name="c", batch_size=4, claim_idle=60)
        for _ in range(3):
            got = read_all(consumer, 4)
            assert bus.stream_info()["pending"] == len(got) == 4
            consumer.ack([d.token for d in got])
            if bus.stream_info()["lag"] == 0:
                break
        consumer.close()


def test_entries_of_a_lost_reply_come_back_at_once_not_after_claim_idle(
    client: redis.Redis, prefix: str
) -> None:
    # Redis delivered the entries, but the reply never arrived (a cut connection, a server
    # paused past the socket's timeout): the next reads take them from this consumer's own
    # pending entries, without waiting claim_idle (an outside trial saw 30 s), and do not hand
    # over again what the caller still holds.
    with RedisStreamsEventBus(client, f"{prefix}:s", f"{prefix}:g") as bus:
        _publish(bus, 6)
        consumer = bus.consumer(name="c", batch_size=3, claim_idle=60)
        held = read_all(consumer, 3)  # with the caller, not acknowledged yet
        with _first_reply_lost("XREADGROUP") as lost:
            got = read_all(consumer, 3, rounds=10)
        assert lost  # Redis did hand them over
        assert [d.event.request_id for d in got] == ["req-3", "req-4", "req-5"]
        assert all(d.attempts == 2 for d in got) and consumer.claimed == 0
        consumer.ack([d.token for d in held + got])
        assert bus.stream_info()["pending"] == 0
        assert consumer.figures()["delivered"] == 6  # nothing handed over twice
        consumer.close()


def test_an_acknowledgement_whose_reply_was_lost_is_not_counted_as_unheld(
    client: redis.Redis, prefix: str
) -> None:
    # Redis applied the XACK, its reply never came; sent again, Redis confirms none of them:
    # they were acknowledged, not lost with Redis's data (an outside trial saw ack_unheld 100).
    with RedisStreamsEventBus(client, f"{prefix}:s", f"{prefix}:g") as bus:
        _publish(bus, 3)
        consumer = bus.consumer(name="c", claim_idle=60)
        got = read_all(consumer, 3)
        with _first_reply_lost("XACK") as lost:
            consumer.ack([d.token for d in got])  # applied; kept to be sent again
        assert lost == [3] and bus.stream_info()["pending"] == 0
        assert consumer.read(10, timeout=0) == []  # sends it again first
        figures = consumer.figures()
        assert (figures["acked"], figures["ack_unheld"]) == (3, 0)
        consumer.close()


def test_entries_of_a_read_that_ran_late_come_back_without_a_claim(
    client: redis.Redis, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A read whose connection timed out on a frozen server runs when the server resumes, maybe
    # after the re-read of its own pending entries that followed the failure: a second re-read,
    # RECHECK_OWN_PENDING_AFTER later, finds its entries (an outside trial saw them wait for a
    # claim, 30 s, after a 12 s pause).
    from eventbus_redis import _consumer
    from eventbus_redis._consumer import StreamConsumer

    monkeypatch.setattr(_consumer, "RECHECK_OWN_PENDING_AFTER", 0.5)
    stream, group = f"{prefix}:s", f"{prefix}:g"
    with RedisStreamsEventBus(client, stream, group) as bus:
        consumer = bus.consumer(name="c", batch_size=3, claim_idle=60)
        assert consumer.read(3, timeout=0) == []  # joins the group
        _publish(bus, 3)
        real_read_new = StreamConsumer._read_new
        failures = []

        def frozen_read_new(self: StreamConsumer, count: int, block_ms: int) -> list[Any]:
            if not failures:
                failures.append(count)
                raise redis.TimeoutError("Timeout reading from socket")
            return []  # while frozen, new reads see nothing

        monkeypatch.setattr(StreamConsumer, "_read_new", frozen_read_new)
        assert consumer.read(3, timeout=0.2) == []  # failed, then re-read its own: none yet
        client.xreadgroup(group, "c", {stream: ">"}, count=3)  # the timed-out read runs late
        monkeypatch.setattr(StreamConsumer, "_read_new", real_read_new)
        assert consumer.read(3, timeout=0) == []  # not yet: nothing new, own pending read before
        time.sleep(0.5)
        got = read_all(consumer, 3, rounds=10)
        assert [d.event.request_id for d in got] == ["req-0", "req-1", "req-2"]
        assert all(d.attempts == 2 for d in got) and consumer.claimed == 0
        consumer.ack([d.token for d in got])
        assert bus.stream_info()["pending"] == 0
        consumer.close()


def test_acknowledgements_redis_never_took_before_close_are_said(
    throwaway: ThrowawayRedis, caplog: pytest.LogCaptureFixture
) -> None:
    # Redis killed during a dispatcher's stop: the acknowledgements kept for later were
    # dropped at close without a word, and the entries came again as unannounced duplicates
    # (trial 103).
    client = redis.Redis.from_url(throwaway.url, socket_timeout=1)
    with RedisStreamsEventBus(client, "s", "g") as bus:
        consumer = bus.consumer(name="c1", batch_size=10, claim_idle=60)
        for i in range(5):
            bus.publish(make_event(i))
        assert bus.flush(10)
        got = read_all(consumer, 5)
        throwaway.kill()
        consumer.ack([d.token for d in got])  # kept, to be sent with the next call
        with caplog.at_level(logging.WARNING, logger="eventbus"):
            consumer.close()
        bus.stop(timeout=0.5)
    assert consumer.figures()["acks_unsent"] == 5
    said = [r.getMessage() for r in caplog.records if "did not confirm" in r.getMessage()]
    assert len(said) == 1 and "5 acknowledgement(s)" in said[0], said
    assert "delivered again" in said[0]


@pytest.mark.parametrize("option", ["block", "claim_idle"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1.0])
def test_a_consumer_refuses_seconds_that_are_not_finite(
    client: redis.Redis, prefix: str, option: str, value: float
) -> None:
    # block=nan passed the check (`nan < 0` is False) and reads then waited without end
    # (trial 147).
    bus = RedisStreamsEventBus(client, f"{prefix}:s", f"{prefix}:g")
    try:
        with pytest.raises(ValueError, match="must be a finite number of seconds"):
            bus.consumer(**{option: value})
    finally:
        bus.stop()


def test_a_bad_token_does_not_lose_the_good_ones_acknowledged_with_it(
    client: redis.Redis, prefix: str
) -> None:
    # Redis refused the whole XACK for one bad id: the good entry stayed pending, unsaid
    # (trial 147).
    stream = f"{prefix}:acks"
    bus = RedisStreamsEventBus(client, stream, f"{prefix}:g")
    try:
        bus.publish(make_event(1))
        assert bus.flush(10)
        consumer = bus.consumer(name="c1")
        (delivery,) = consumer.read(10, 5.0)
        with pytest.raises(ValueError, match=r"stream entry ids .*\['bogus'\]"):
            consumer.ack([delivery.token, "bogus"])
        assert int(client.xpending(stream, f"{prefix}:g")["pending"]) == 0
        assert consumer.figures()["acked"] == 1
        consumer.close()
    finally:
        bus.stop()


@pytest.mark.parametrize("option", ["batch_size", "max_deliveries"])
def test_a_consumer_refuses_counts_that_are_not_whole_numbers(
    client: redis.Redis, prefix: str, option: str
) -> None:
    # max_deliveries=nan turned dead-lettering off (trial 150).
    bus = RedisStreamsEventBus(client, f"{prefix}:s", f"{prefix}:g")
    try:
        with pytest.raises(ValueError, match=f"{option} must be an int >= 1"):
            bus.consumer(**{option: float("nan")})
    finally:
        bus.stop()


def test_ack_of_one_token_alone_is_refused(client: redis.Redis, prefix: str) -> None:
    # ack("1-0") acknowledged "1", "-" and "0" (trial 150).
    bus = RedisStreamsEventBus(client, f"{prefix}:s", f"{prefix}:g")
    try:
        with pytest.raises(TypeError, match=r"ack\(\[token\]\)"):
            bus.consumer(name="c1").ack("1-0")
    finally:
        bus.stop()


def test_entries_given_back_are_claimable_in_the_same_millisecond(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given back with IDLE exactly claim_idle, they stayed with the closed consumer when the
    # peer's reclaim ran in the same millisecond on a server that compares strictly (fakeredis's
    # XPENDING IDLE does): one run in four of CI's floor run. A frozen clock makes it every time.
    import fakeredis
    import fakeredis.model._stream as model_stream
    from fakeredis.commands_mixins import streams_mixin

    frozen = fakeredis._helpers.current_time()
    for module in (streams_mixin, model_stream):
        monkeypatch.setattr(module, "current_time", lambda: frozen)
    client = fakeredis.FakeRedis()
    with RedisStreamsEventBus(client, "t:s", "t:g") as bus:
        _publish(bus, 6)
        leaving = bus.consumer(name="leaving", batch_size=3, claim_idle=60)
        leaving.ack([d.token for d in read_all(leaving, 3)])
        leaving.read_ahead(3)
        leaving.close()
        peer = bus.consumer(name="peer", claim_idle=60)
        got = read_all(peer, 3, rounds=3)
        assert sorted(d.event.request_id for d in got) == ["req-3", "req-4", "req-5"]
        peer.close()


def test_a_hand_back_that_fails_at_close_is_said(
    client: redis.Redis, prefix: str, caplog: pytest.LogCaptureFixture, monkeypatch: Any
) -> None:
    # A frozen Redis held close() its socket timeout and nothing said the read-ahead entries
    # were not handed back (trial 230); a failed acknowledgement was said as "cannot read".
    import logging

    caplog.set_level(logging.WARNING, logger="eventbus")
    with RedisStreamsEventBus(client, f"{prefix}:s", f"{prefix}:g") as bus:
        consumer = bus.consumer(name="c")

        def frozen() -> None:
            raise redis.TimeoutError("Timeout reading from 127.0.0.1:6379")

        monkeypatch.setattr(consumer, "_give_back", frozen)
        consumer.close()
    said = [r.getMessage() for r in caplog.records if "could not hand back" in r.getMessage()]
    assert said and "claims them after claim_idle" in said[0], said
    assert consumer.figures()["last_error"] and "Timeout" in consumer.figures()["last_error"]


def test_max_deliveries_and_claim_idle_come_from_the_settings(
    monkeypatch: pytest.MonkeyPatch, prefix: str
) -> None:
    # A dispatcher killed while it held a batch counts a delivery: six kills over a slow sink
    # dead-lettered healthy events, and no setting could raise the limit (trial 244).
    from eventbus_core import EventBusSettings, SettingsError
    from tests._services import redis_url

    monkeypatch.setenv("REDIS_URL", redis_url())
    monkeypatch.setenv("EVENTBUS_REDIS_STREAM", f"{prefix}:s")
    monkeypatch.setenv("EVENTBUS_REDIS_MAX_DELIVERIES", "12")
    monkeypatch.setenv("EVENTBUS_REDIS_CLAIM_IDLE", "7.5")
    bus = RedisStreamsEventBus.from_settings(EventBusSettings(backend="redis-streams"))
    try:
        consumer = bus.consumer(name="c")
        assert (consumer.max_deliveries, consumer.claim_idle) == (12, 7.5)
        given = bus.consumer(name="d", max_deliveries=2, claim_idle=1.0)
        assert (given.max_deliveries, given.claim_idle) == (2, 1.0)
        consumer.close()
        given.close()
    finally:
        bus.stop(5)
    for name, value in (
        ("EVENTBUS_REDIS_MAX_DELIVERIES", "0"),
        ("EVENTBUS_REDIS_CLAIM_IDLE", "nan"),
        ("EVENTBUS_REDIS_CLAIM_IDLE", "0.001"),  # live batches reclaimed (trial 251)
    ):
        monkeypatch.setenv(name, value)
        with pytest.raises(SettingsError, match=name):
            EventBusSettings(backend="redis-streams")
        monkeypatch.delenv(name)


@pytest.mark.redis
def test_dead_letters_go_through_again_with_replay_source_dead(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    real: redis.Redis,
    prefix: str,
) -> None:
    client = real
    from eventbus_core.cli import main
    from tests._services import redis_url

    stream = f"{prefix}:s"
    with RedisStreamsEventBus(client, stream, f"{prefix}:g") as bus:
        client.xadd(stream, {"data": b"{not json"})
        bus.publish(make_event(1))
        assert bus.flush(10)
        consumer = bus.consumer(name="c", claim_idle=0, max_deliveries=1)
        for _ in range(40):  # never acknowledged: dead-lettered at its second delivery
            consumer.read(10, timeout=0.05)
            if client.xlen(bus.dead_letter_stream) == 2:
                break
        assert client.xlen(bus.dead_letter_stream) == 2
        consumer.close()
    monkeypatch.setenv("REDIS_URL", redis_url())
    monkeypatch.setenv("EVENTBUS_REDIS_STREAM", stream)
    capsys.readouterr()
    code = main(["replay", "--backend", "redis-streams", "--source", "dead", "--no-redact"])
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(d["RequestID"], d["LogID"]) for d in lines] == [("req-1", 1)], (out, err)
    assert "undecodable" in err and code == 1, err  # the entry that is no event: counted


@pytest.mark.redis
def test_stats_says_whether_the_configured_group_exists(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    real: redis.Redis,
    prefix: str,
) -> None:
    # A misspelt EVENTBUS_REDIS_GROUP listed the other groups and said nothing of its own
    # (trial 244); NATS said "group exists False".
    from eventbus_core.cli import main
    from tests._services import redis_url

    stream = f"{prefix}:s"
    real.xadd(stream, {"data": make_event(1).to_json()})
    real.xgroup_create(stream, "real-group", id="0")
    monkeypatch.setenv("REDIS_URL", redis_url())
    monkeypatch.setenv("EVENTBUS_REDIS_STREAM", stream)
    for group, exists in (("real-group", "True"), ("misspelt-group", "False")):
        monkeypatch.setenv("EVENTBUS_REDIS_GROUP", group)
        assert main(["stats", "--backend", "redis-streams"]) == 0
        out = capsys.readouterr().out
        assert f"group                {group}" in out, out
        assert f"group exists         {exists}" in out, out
    # Per sink (the dispatcher's default) the group itself does not exist: its sinks' do.
    real.xgroup_create(stream, "misspelt-group:jsonl", id="0")
    assert main(["stats", "--backend", "redis-streams"]) == 0
    assert "sink groups          misspelt-group:jsonl" in capsys.readouterr().out
