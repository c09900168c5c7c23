"""Benchmark the Redis backends' writers against the Go design and the bare pipeline, in one run.

    .venv/bin/python benchmarks/bench_redis.py            # full run (about a minute)
    .venv/bin/python benchmarks/bench_redis.py --quick    # smaller, for a smoke test

Starts its own throwaway `redis-server` (free port, no persistence), so the shared server is
never paused or flooded. Every row writes the same events, each with a 1 KB response body and a
1 KB request body, in the Go wire format; rows that start from `Event` objects pay the JSON
encoding, as a writer must.

Table 1, events/s written (best of `--rounds`, rounds interleaved across rows):
- Go original: per event INCR, then LPUSH, LTRIM, EXPIRE, one round trip each.
- pipelined INCRBY + LPUSH (not atomic): a batch per round trip, but LogIDs reserved in one
  command and pushed in another, so with several writers list order and LogID order disagree.
- RedisEventBus: `publish()` all events, then `flush()`; LogIDs stamped by the client inside
  an optimistic WATCH/MULTI transaction (the Lua script takes over after a conflict).
- RedisStreamsEventBus: the same into a stream (one XADD per event inside the transaction).
- bare pipeline ceilings: LPUSH / XADD of batches of 500 with no bus around it, with encoding
  in the loop, and "wire only" with the JSON encoded beforehand.

Table 2, a thread that never waits (a saturated server) publishing between bursts of CPU work:
what the writer thread still gets out, against the memory bus, which has no I/O.

Table 3, one `publish()` call in ns (p50 / p99), paced traffic, while Redis is healthy, slow
(`CLIENT PAUSE WRITE`) and down (killed).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from eventbus_core import Event
from eventbus_core.testing import make_event
from eventbus_memory import InMemoryEventBus
from eventbus_redis import RedisEventBus, RedisStreamsEventBus

BATCH = 500


def start_server(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Start a private redis-server and wait until it answers."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
            "--loglevel",
            "warning",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    for _ in range(500):
        try:
            client.ping()
            return proc, port
        except redis.ConnectionError:
            time.sleep(0.01)
    raise SystemExit("redis-server did not start")


def events(n: int, size: int) -> list[Event]:
    """`n` events with a response body and a request body of `size` bytes each."""
    body = os.urandom(size)
    return [make_event(i, response_body=body, request_body=body[::-1]) for i in range(n)]


def rate(n: int, fn: Callable[[], None], client: redis.Redis) -> float:
    """Events/s of `fn` writing `n` events, on an empty database."""
    client.flushdb()
    t0 = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t0)


def go_original(client: redis.Redis, evs: list[Event]) -> None:
    for e in evs:
        log_id = int(client.incr("go:seq"))
        client.lpush("go", e.with_log_id(log_id).to_json())
        client.ltrim("go", 0, 9999)
        client.expire("go", 86400)


def pipelined_not_atomic(client: redis.Redis, evs: list[Event]) -> None:
    for i in range(0, len(evs), BATCH):
        chunk = evs[i : i + BATCH]
        last = int(client.incrby("p:seq", len(chunk)))
        first = last - len(chunk)
        pipe = client.pipeline(transaction=False)
        pipe.lpush("p", *(e.with_log_id(first + k + 1).to_json() for k, e in enumerate(chunk)))
        pipe.ltrim("p", 0, 9999)
        pipe.expire("p", 86400)
        pipe.execute()


def bus_rate(bus: RedisEventBus | RedisStreamsEventBus, evs: list[Event]) -> None:
    for e in evs:
        bus.publish(e)
    if not bus.flush(120):
        raise SystemExit("flush timed out")
    _, dropped = bus.stats()
    if dropped:
        raise SystemExit(f"the bus dropped {dropped} events: raise --buffer")


def bare_lpush(client: redis.Redis, payloads: list[bytes]) -> None:
    for i in range(0, len(payloads), BATCH):
        client.lpush("bare", *payloads[i : i + BATCH])


def bare_lpush_encoding(client: redis.Redis, evs: list[Event]) -> None:
    for i in range(0, len(evs), BATCH):
        client.lpush("bare", *(e.to_json() for e in evs[i : i + BATCH]))


def bare_xadd(client: redis.Redis, evs: list[Event], encoded: list[bytes] | None) -> None:
    for i in range(0, len(evs), BATCH):
        pipe = client.pipeline(transaction=False)
        for k, e in enumerate(evs[i : i + BATCH]):
            data = encoded[i + k] if encoded is not None else e.to_json()
            pipe.xadd("bare-s", {"data": data}, maxlen=100_000, approximate=True)
        pipe.execute()


def publish_costs(bus: RedisEventBus, evs: list[Event], pause: Callable[[], object]) -> list[int]:
    """Time single paced publish() calls, after `pause()` set up the condition."""
    pause()
    costs = []
    clock = time.perf_counter_ns
    for k, e in enumerate(evs):
        t0 = clock()
        bus.publish(e)
        costs.append(clock() - t0)
        if k % 50 == 49:
            time.sleep(0.0002)  # paced traffic: let the writer run between bursts
    return costs


BUSY_WORK_US = 200


def busy_publisher(bus: Any, evs: list[Event], seconds: float) -> tuple[int, int, int | None]:
    """Publish from a thread that spins `BUSY_WORK_US` between calls; (calls, dropped, batches)."""
    calls = 0
    end = time.perf_counter() + seconds
    clock = time.perf_counter
    while clock() < end:
        spin_until = clock() + BUSY_WORK_US / 1e6
        while clock() < spin_until:
            pass
        bus.publish(evs[calls % len(evs)])
        calls += 1
    _, dropped = bus.stats()
    batches = bus.stats().extra.get("batches")
    bus.stop()
    return calls, dropped, batches


def pct(values: list[int], q: float) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer events, one round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--body", type=int, default=1024, help="bytes of each of the two bodies")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the "down" row logs expected warnings
    n = 5_000 if args.quick else 30_000
    n_go = 500 if args.quick else 2_000
    rounds = 1 if args.quick else args.rounds
    with tempfile.TemporaryDirectory() as tmp:
        proc, port = start_server(Path(tmp))
        try:
            run(port, n, n_go, rounds, proc, args.body)
        finally:
            proc.kill()
            proc.wait()


def run(
    port: int, n: int, n_go: int, rounds: int, proc: subprocess.Popen[bytes], size: int
) -> None:
    client = redis.Redis(port=port)
    evs = events(n, size)
    encoded = [e.to_json() for e in evs]
    rows: dict[str, float] = {}

    def log_bus() -> None:
        bus = RedisEventBus.log(client, "bus", 86400, 10_000, buffer_size=n)
        bus_rate(bus, evs)
        bus.stop()

    def streams_bus() -> None:
        bus = RedisStreamsEventBus(client, "bus-s", buffer_size=n, max_len=100_000)
        bus_rate(bus, evs)
        bus.stop()

    variants: list[tuple[str, int, Callable[[], None]]] = [
        ("Go original (4 round trips per event)", n_go, lambda: go_original(client, evs[:n_go])),
        ("pipelined INCRBY + LPUSH (not atomic)", n, lambda: pipelined_not_atomic(client, evs)),
        ("RedisEventBus (WATCH/MULTI batch, atomic)", n, log_bus),
        ("RedisStreamsEventBus (WATCH/MULTI XADDs)", n, streams_bus),
        ("bare LPUSH pipeline, encoding in loop", n, lambda: bare_lpush_encoding(client, evs)),
        ("bare LPUSH pipeline, wire only", n, lambda: bare_lpush(client, encoded)),
        ("bare XADD pipeline, encoding in loop", n, lambda: bare_xadd(client, evs, None)),
        ("bare XADD pipeline, wire only", n, lambda: bare_xadd(client, evs, encoded)),
    ]
    # Rounds go across all rows, so that a busy spell of the machine hits every row alike.
    for _ in range(rounds):
        for name, count, fn in variants:
            rows[name] = max(rows.get(name, 0.0), rate(count, fn, client))

    print(
        f"\nTable 1: events/s written, {n} events (Go row: {n_go}), bodies 2 x {size} B, "
        f"best of {rounds}, Python {sys.version.split()[0]}, redis-server on loopback"
    )
    width = max(map(len, rows))
    go = rows["Go original (4 round trips per event)"]
    for name, value in rows.items():
        print(f"  {name:<{width}}  {value:>10,.0f} ev/s  {value / go:7.1f}x Go")
    log_rate = rows["RedisEventBus (WATCH/MULTI batch, atomic)"]
    stream_rate = rows["RedisStreamsEventBus (WATCH/MULTI XADDs)"]
    print("\nRatios:")
    print(f"  RedisEventBus / Go original:                      {log_rate / go:6.1f}x")
    print(
        f"  bare LPUSH (encoding) / RedisEventBus:            "
        f"{rows['bare LPUSH pipeline, encoding in loop'] / log_rate:6.2f}x"
    )
    print(
        f"  bare LPUSH (wire only) / RedisEventBus:           "
        f"{rows['bare LPUSH pipeline, wire only'] / log_rate:6.2f}x"
    )
    print(
        f"  bare XADD (encoding) / RedisStreamsEventBus:      "
        f"{rows['bare XADD pipeline, encoding in loop'] / stream_rate:6.2f}x"
    )
    print(
        f"  bare XADD (wire only) / RedisStreamsEventBus:     "
        f"{rows['bare XADD pipeline, wire only'] / stream_rate:6.2f}x"
    )

    # -------------------------------------------------- next to a CPU-bound publisher
    # An application thread that never waits (a saturated server) holds the GIL: the writer
    # thread must still get its batches out. The memory bus (no I/O) is the baseline.
    client.flushdb()
    seconds = 1.0 if n < 30_000 else 2.0
    busy_rows = {
        "InMemoryEventBus (no I/O)": busy_publisher(InMemoryEventBus(), evs, seconds),
        "RedisEventBus": busy_publisher(RedisEventBus.log(client, "busy", 86400, 0), evs, seconds),
    }
    print(
        f"\nTable 2: a thread doing {BUSY_WORK_US} µs of CPU work between publishes for "
        f"{seconds:g} s, default buffer (1000)"
    )
    for name, (calls, dropped, batches) in busy_rows.items():
        extra = f"  {batches} batches" if batches is not None else ""
        print(f"  {name:<28} {calls:>7,} publishes  {dropped:>6,} dropped{extra}")

    # ------------------------------------------------------------------ publish() cost
    samples = evs[: min(n, 20_000)]
    client.flushdb()
    paced = RedisEventBus.log(client, "cost", 86400, 10_000, buffer_size=len(samples) * 3)
    costs = {"healthy": publish_costs(paced, samples, lambda: None)}
    paced.flush(30)
    costs["slow (CLIENT PAUSE WRITE)"] = publish_costs(
        paced, samples, lambda: client.client_pause(3_000, all=False)
    )
    paced.flush(30)
    proc.kill()
    proc.wait()

    def until_down() -> None:
        for _ in range(500):
            if paced.stats().extra["state"] == "reconnecting":
                return
            paced.publish(samples[0])
            time.sleep(0.01)

    costs["down (server killed)"] = publish_costs(paced, samples, until_down)
    state = paced.stats().extra["state"]
    paced.stop(0)
    print(
        f"\nTable 3: one publish() call in ns, {len(samples)} paced calls per condition "
        f"(writer state at the end: {state})"
    )
    for name, values in costs.items():
        print(
            f"  {name:<28} p50 {pct(values, 0.5):>6,}  p99 {pct(values, 0.99):>7,}  "
            f"mean {statistics.fmean(values):>8,.0f}"
        )


if __name__ == "__main__":
    main()
