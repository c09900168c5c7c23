"""Replacing the Go dispatcher with `eventbus dispatch` on the same stream, as docs/go-interop.md
describes it: neither re-sending what Go's group acknowledged nor skipping anything else.

Go's side is made with raw commands, as the Go dispatcher leaves it: group
`llm-proxy-dispatchers` created at 0, two consumers that read entries, acknowledged some, and left
others pending when they stopped (long ago: idle for an hour). Then the real `Dispatcher`, built
from settings with only Go's `REDIS_ADDR` set and the jsonl sink, takes over.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from eventbus_core import Dispatcher, DispatcherStats, EventBusSettings
from eventbus_core.testing import make_event
from eventbus_redis import RedisStreamsEventBus
from tests._services import close_client
from tests.core.conftest_dispatch import read_written_lines
from tests.redis._servers import ThrowawayRedis

pytestmark = pytest.mark.redis

STREAM = "llm-proxy-events"  # the defaults of both sides
GO_GROUP = "llm-proxy-dispatchers"


def go_entry(vector: dict[str, Any], request_id: str) -> dict[str, bytes]:
    """A stream entry as the Go proxy publishes it: field data, Go's JSON, LogID 0."""
    doc = dict(vector, LogID=0, RequestID=request_id)
    return {"data": json.dumps(doc, separators=(",", ":")).encode()}


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def dispatch_until(
    settings: EventBusSettings, jsonl: Path, done: Callable[[], bool]
) -> DispatcherStats:
    """Run the dispatcher built from `settings` until `done()`, then stop it cleanly."""
    dispatcher = Dispatcher.from_settings(settings, sinks=[("jsonl", {"path": str(jsonl)})])
    task = asyncio.ensure_future(dispatcher.run())
    for _ in range(1500):  # polling a file another task writes: there is no event to await
        if done() or task.done():
            break
        await asyncio.sleep(0.02)
    dispatcher.request_stop()
    return await asyncio.wait_for(task, 30)


async def test_eventbus_dispatch_takes_over_from_the_go_dispatcher_then_moves_to_per_sink_groups(
    throwaway: ThrowawayRedis, tmp_path: Path, go_vectors: list[dict[str, Any]]
) -> None:
    go = redis.Redis(host="127.0.0.1", port=throwaway.port)
    post = go_vectors[1]  # a POST: the dispatcher's transformer keeps it
    for i in range(30):
        go.xadd(STREAM, go_entry(post, f"go-{i}"))
    # The Go dispatcher's group and consumers, as it leaves them.
    go.xgroup_create(STREAM, GO_GROUP, id="0", mkstream=True)
    first = go.xreadgroup(GO_GROUP, "dispatcher-file-host-111", {STREAM: ">"}, count=20)
    ids_a = [entry_id for entry_id, _ in first[0][1]]
    go.xack(STREAM, GO_GROUP, *ids_a[:12])  # go-0..11: sent and acknowledged
    second = go.xreadgroup(GO_GROUP, "dispatcher-file-host-222", {STREAM: ">"}, count=3)
    ids_b = [entry_id for entry_id, _ in second[0][1]]  # go-20..22: pending, like go-12..19
    # Both Go dispatchers stopped an hour ago: their pending entries have been idle that long.
    for consumer, ids in (
        ("dispatcher-file-host-111", ids_a[12:]),
        ("dispatcher-file-host-222", ids_b),
    ):
        go.xclaim(STREAM, GO_GROUP, consumer, 0, ids, idle=3_600_000, justid=True)
    assert go.xpending(STREAM, GO_GROUP)["pending"] == 11

    # Step 1: eventbus dispatch in Go's group (shared mode), only Go's REDIS_ADDR set.
    jsonl = tmp_path / "events.jsonl"
    settings = EventBusSettings(
        backend="redis-streams",
        redis_addr=f"127.0.0.1:{throwaway.port}",
        consumer_groups="shared",
        sinks="jsonl",
        batch_size=10,
        flush_interval=0.05,
        dead_letter_path=str(tmp_path / "dead.jsonl"),
    )
    expected = {f"go-{i}" for i in range(12, 30)}  # pending (reclaimed) and never delivered
    await dispatch_until(settings, jsonl, lambda: len(read_written_lines(jsonl)) >= len(expected))
    rows = read_jsonl(jsonl)
    assert sorted(r["request_id"] for r in rows) == sorted(expected)  # each exactly once
    assert len({r["log_id"] for r in rows}) == len(rows)  # Go's LogID 0, made unique
    assert go.xpending(STREAM, GO_GROUP)["pending"] == 0
    assert not (tmp_path / "dead.jsonl").exists()

    # Step 2: per-sink groups, created where the shared group stands (the documented
    # XGROUP CREATE), so nothing is sent again.
    (group,) = [g for g in go.xinfo_groups(STREAM) if g["name"] == GO_GROUP.encode()]
    go.xgroup_create(STREAM, f"{GO_GROUP}:jsonl", id=group["last-delivered-id"])
    for i in range(30, 32):
        go.xadd(STREAM, go_entry(post, f"go-{i}"))
    ours = RedisStreamsEventBus(redis.Redis(host="127.0.0.1", port=throwaway.port))
    for i in range(3):
        ours.publish(make_event(i, request_id=f"py-{i}"))
    assert ours.flush(10)
    ours.stop(5)
    per_sink = settings.model_copy(update={"consumer_groups": "per-sink"})
    total = len(expected) + 5
    await dispatch_until(per_sink, jsonl, lambda: len(read_written_lines(jsonl)) >= total)
    rows = read_jsonl(jsonl)
    new = {"go-30", "go-31", "py-0", "py-1", "py-2"}
    assert sorted(r["request_id"] for r in rows) == sorted(expected | new)
    assert len({r["log_id"] for r in rows}) == total
    assert go.xpending(STREAM, f"{GO_GROUP}:jsonl")["pending"] == 0
    close_client(go)
