"""Every event read from a stream has a `log_id` unique per stream, whoever wrote the entry.

The Go llm-proxy publishes to the stream with LogID 0 on every event; our writers stamp LogIDs
from a counter. Entries with LogID 0 get one derived from their entry id, in a range the
counter never reaches (eventbus_redis._stream_entry). Every reader goes through that one helper:
consumer groups, fan-out subscriptions, and `eventbus replay`'s stream reader.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis

from eventbus_core import Event
from eventbus_core.testing import make_event
from eventbus_redis import (
    STREAM_LOG_ID_BASE,
    RedisStreamsEventBus,
    entry_id_from_log_id,
    event_from_stream_entry,
    log_id_from_entry_id,
)
from tests.core.test_go_interop import _go_roundtrip

INT64_MAX = (1 << 63) - 1


def go_json(vector: dict[str, Any], request_id: str) -> bytes:
    """An event as the Go proxy at HEAD publishes it: Go's encoding/json, LogID 0."""
    return json.dumps(dict(vector, LogID=0, RequestID=request_id), separators=(",", ":")).encode()


def test_the_mapping_is_disjoint_from_counters_within_int64_and_reversible() -> None:
    assert log_id_from_entry_id("1764345000000-0") == STREAM_LOG_ID_BASE + (1764345000000 << 19)
    assert log_id_from_entry_id(b"0-0") == STREAM_LOG_ID_BASE  # bytes, as redis-py returns
    assert log_id_from_entry_id(f"{(1 << 43) - 1}-{(1 << 19) - 1}") == INT64_MAX
    ids = ["1764345000000-0", "1764345000000-1", "1764345000001-0", "1764345000000-524287"]
    derived = [log_id_from_entry_id(i) for i in ids]
    assert len(set(derived)) == len(ids) and min(derived) >= STREAM_LOG_ID_BASE
    assert [entry_id_from_log_id(d) for d in derived] == ids
    assert entry_id_from_log_id(42) is None  # a counter's LogID
    # Outside the mapping (ids chosen by hand): no LogID rather than a colliding one.
    assert log_id_from_entry_id(f"{1 << 43}-0") == 0
    assert log_id_from_entry_id("5-524288") == 0
    assert log_id_from_entry_id("not-an-id") == 0


def test_only_entries_without_a_log_id_get_one_derived(go_vectors: list[dict[str, Any]]) -> None:
    ours = make_event(1).with_log_id(7)
    assert event_from_stream_entry("1-0", {b"data": ours.to_json()}) == ours  # unchanged
    go = event_from_stream_entry("1764345000000-3", {"data": go_json(go_vectors[1], "g")})
    assert go.log_id == log_id_from_entry_id("1764345000000-3")
    assert Event.from_json(go.to_json()) == go  # JSON carries it exactly


def test_go_decodes_a_derived_log_id(tmp_path: Path) -> None:
    events = [Event(log_id=INT64_MAX), Event(log_id=log_id_from_entry_id("1764345000000-3"))]
    answers = _go_roundtrip([e.to_json() for e in events], tmp_path)
    assert [a.get("LogID") for a in answers] == [e.log_id for e in events]


def mixed_stream(
    client: redis.Redis, bus: RedisStreamsEventBus, go_vectors: list[dict[str, Any]]
) -> None:
    """20 of ours (LogIDs 1..20) and 20 of Go's (LogID 0), interleaved, several per ms."""
    for round_no in range(4):
        for i in range(5):
            client.xadd(bus.stream, {"data": go_json(go_vectors[1], f"go-{round_no}-{i}")})
        for i in range(5):
            bus.publish(make_event(i, request_id=f"py-{round_no}-{i}"))
        assert bus.flush(10)


def check_log_ids(events: list[Event], entry_ids: list[str] | None = None) -> None:
    assert len(events) == 40
    log_ids = [e.log_id for e in events]
    assert len(set(log_ids)) == 40  # unique per stream: what de-duplication relies on
    ours = [e.log_id for e in events if e.request_id.startswith("py-")]
    assert ours == list(range(1, 21))  # our LogIDs unchanged
    theirs = [e for e in events if e.request_id.startswith("go-")]
    assert all(STREAM_LOG_ID_BASE <= e.log_id <= INT64_MAX for e in theirs)
    if entry_ids is not None:
        for event, entry_id in zip(events, entry_ids, strict=True):
            if event.request_id.startswith("go-"):
                assert event.log_id == log_id_from_entry_id(entry_id)


def test_consumer_groups_give_go_entries_unique_log_ids(
    client: redis.Redis, prefix: str, go_vectors: list[dict[str, Any]]
) -> None:
    bus = RedisStreamsEventBus(client, f"{prefix}:s", f"{prefix}:g")
    mixed_stream(client, bus, go_vectors)
    consumer = bus.consumer(name="c")
    got = []
    for _ in range(100):
        got += consumer.read(100, timeout=0.1)
        if len(got) >= 40:
            break
    check_log_ids([d.event for d in got], [d.token for d in got])
    bus.stop(5)


def test_subscriptions_give_go_entries_unique_log_ids_and_see_no_false_gap(
    client: redis.Redis, prefix: str, go_vectors: list[dict[str, Any]]
) -> None:
    bus = RedisStreamsEventBus(client, f"{prefix}:s", f"{prefix}:g")
    sub = bus.subscribe()
    mixed_stream(client, bus, go_vectors)
    got = [sub.get(timeout=10) for _ in range(40)]
    entry_ids = [client_id.decode() for client_id, _ in client.xrange(bus.stream)]
    check_log_ids(got, entry_ids)
    assert not sub.gaps and sub.stats().dropped == 0 and sub.last_log_id == 20
    bus.stop(5)


def test_replay_gives_go_entries_unique_log_ids(
    client: redis.Redis, prefix: str, go_vectors: list[dict[str, Any]]
) -> None:
    bus = RedisStreamsEventBus(client, f"{prefix}:s", f"{prefix}:g")
    mixed_stream(client, bus, go_vectors)
    bus.stop(5)
    replayed = [e for e in bus.read_range() if e is not None]  # what `eventbus replay` reads
    entry_ids = [client_id.decode() for client_id, _ in client.xrange(bus.stream)]
    check_log_ids(replayed, entry_ids)
    # A LogID range selects the counter's LogIDs, as before; Go's entries are selected by time.
    assert len([e for e in bus.read_range(1, 20) if e is not None]) == 20


@pytest.mark.parametrize("decode", [True, False])
def test_clients_that_decode_responses_get_the_same_log_ids(
    prefix: str, go_vectors: list[dict[str, Any]], decode: bool
) -> None:
    fakeredis = pytest.importorskip("fakeredis")
    pytest.importorskip("lupa")
    client = fakeredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=decode)
    entry_id = client.xadd(f"{prefix}:s", {"data": go_json(go_vectors[1], "go")})
    ((got_id, fields),) = client.xrange(f"{prefix}:s")
    event = event_from_stream_entry(got_id, fields)
    text_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    assert event.log_id == log_id_from_entry_id(text_id)


def test_an_entry_id_outside_the_mapping_keeps_log_id_0_and_says_so_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Ids chosen by hand (XADD 1-600000 ...): every such entry got LogID 0, which sinks
    # de-duplicate by, without a word (trial 178).
    import logging

    from eventbus_redis import _stream_entry

    monkeypatch.setattr(_stream_entry, "_warned_underived", [])
    caplog.set_level(logging.WARNING, logger="eventbus")
    fields = {b"data": json.dumps({"LogID": 0, "RequestID": "x"}).encode()}
    for entry_id in ("1-600000", "18446744073709551615-5"):
        assert event_from_stream_entry(entry_id, fields).log_id == 0
    assert event_from_stream_entry("1-5", fields).log_id == log_id_from_entry_id("1-5")
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and "1-600000 carries LogID 0" in warned[0], warned
