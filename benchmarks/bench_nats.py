"""Benchmark the NATS JetStream backend against bare nats-py loops, all in one run.

    .venv/bin/python benchmarks/bench_nats.py            # full run (about a minute)
    .venv/bin/python benchmarks/bench_nats.py --quick    # smaller, for a smoke test

Starts its own throwaway `nats-server -js` (free port, store in a temporary directory), so the
shared server is never paused or flooded. Every row moves the same events, each with a 1 KB
response body and a 1 KB request body, in the Go wire format.

Table 1, events/s written (best of `--rounds`, rounds interleaved across rows, a fresh stream
per row):
- NatsEventBus: `publish()` every event, then `flush()`: batches of asynchronous publishes,
  every PubAck checked, a `Nats-Msg-Id` per event.
- bare publish_async loop: `js.publish_async()` of the same payloads with the same header, then
  `publish_async_completed()`, with the JSON encoded beforehand ("wire only") or in the loop.

Table 2, events/s consumed from a stream holding them (a new durable consumer per round):
- NatsEventBus consumer: `read()` batches, which decode each event and stamp its LogID, then
  `ack()` them (one flush per batch).
- bare pull-fetch loop: `fetch()` batches and `ack()` each message, with and without decoding.

Table 3, one `publish()` call in ns (p50 / p99), paced traffic, while the server is healthy,
slow (SIGSTOP: connected, never answering) and down (killed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import nats
from nats.js import api

from eventbus_core import Event
from eventbus_core.testing import make_event
from eventbus_nats import NatsEventBus

BATCH = 500


def start_server(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start a private nats-server with JetStream and wait until it listens."""
    binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    proc = subprocess.Popen(
        [binary, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(500):
        try:
            socket.create_connection(("127.0.0.1", port), 0.1).close()
            return proc, f"nats://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.01)
    raise SystemExit("nats-server did not start")


def events(n: int, size: int) -> list[Event]:
    """`n` events with a response body and a request body of `size` bytes each."""
    body = os.urandom(size)
    return [make_event(i, response_body=body, request_body=body[::-1]) for i in range(n)]


def subject(stream: str) -> str:
    """Each stream has a subject of its own (two streams may not share one)."""
    return f"{stream.lower()}.events"


async def fresh_stream(url: str, name: str) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    with contextlib.suppress(Exception):
        await js.delete_stream(name)
    await js.add_stream(api.StreamConfig(name=name, subjects=[subject(name)], max_msgs=-1))
    await nc.close()


# ------------------------------------------------------------------------------ writing


def bus_write(url: str, evs: list[Event]) -> float:
    asyncio.run(fresh_stream(url, "BENCH"))
    bus = NatsEventBus(
        url, stream="BENCH", subject=subject("BENCH"), buffer_size=len(evs), max_msgs=0
    )
    bus.check(10)
    t0 = time.perf_counter()
    for e in evs:
        bus.publish(e)
    if not bus.flush(120):
        raise SystemExit("flush timed out")
    took = time.perf_counter() - t0
    s = bus.stats()
    bus.stop()
    if s.dropped or s.lost or s.extra["written"] != len(evs):
        raise SystemExit(f"the bus did not write everything: {s!r}")
    return len(evs) / took


async def bare_async(url: str, evs: list[Event], encoded: list[bytes] | None) -> float:
    await fresh_stream(url, "BENCH")
    nc = await nats.connect(url)
    js = nc.jetstream(publish_async_max_pending=len(evs) + 1)
    prefix = "bare-"
    t0 = time.perf_counter()
    for i, e in enumerate(evs):
        data = encoded[i] if encoded is not None else e.to_json()
        await js.publish_async(subject("BENCH"), data, headers={"Nats-Msg-Id": f"{prefix}{i}"})
    await js.publish_async_completed()
    took = time.perf_counter() - t0
    await nc.close()
    return len(evs) / took


# ---------------------------------------------------------------------------- consuming


async def fill(url: str, name: str, encoded: list[bytes]) -> None:
    await fresh_stream(url, name)
    nc = await nats.connect(url)
    js = nc.jetstream(publish_async_max_pending=len(encoded) + 1)
    for data in encoded:
        await js.publish_async(subject(name), data)
    await js.publish_async_completed()
    await nc.close()


def bus_consume(url: str, n: int, group: str) -> float:
    bus = NatsEventBus(url, stream="BENCHC", subject=subject("BENCHC"), max_msgs=0)
    consumer = bus.consumer(group, "bench", batch_size=BATCH)
    got = 0
    t0 = time.perf_counter()
    while got < n:
        batch = consumer.read(BATCH, timeout=5)
        if not batch:
            raise SystemExit("the consumer timed out")
        consumer.ack([d.token for d in batch])
        got += len(batch)
    took = time.perf_counter() - t0
    consumer.close()
    bus.stop()
    return n / took


async def bare_fetch(url: str, n: int, group: str, decode: bool) -> float:
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_consumer(
        "BENCHC", api.ConsumerConfig(durable_name=group, ack_policy=api.AckPolicy.EXPLICIT)
    )
    psub = await js.pull_subscribe_bind(group, stream="BENCHC")
    got = 0
    t0 = time.perf_counter()
    while got < n:
        msgs = await psub.fetch(BATCH, timeout=5)
        for msg in msgs:
            if decode:
                Event.from_json(msg.data).with_log_id(msg.metadata.sequence.stream)
            await msg.ack()
        got += len(msgs)
    await nc.flush()
    took = time.perf_counter() - t0
    await nc.close()
    return n / took


# ------------------------------------------------------------------------ publish() cost


def publish_costs(bus: NatsEventBus, evs: list[Event], before: Callable[[], object]) -> list[int]:
    """Time single paced publish() calls, after `before()` set up the condition."""
    before()
    costs = []
    clock = time.perf_counter_ns
    for k, e in enumerate(evs):
        t0 = clock()
        bus.publish(e)
        costs.append(clock() - t0)
        if k % 50 == 49:
            time.sleep(0.0002)  # paced traffic: let the writer run between bursts
    return costs


def run_async(fn: Callable[..., Any], *args: Any) -> Any:
    """`asyncio.run(fn(*args))`."""
    return asyncio.run(fn(*args))


def pct(values: list[int], q: float) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer events, one round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--body", type=int, default=1024, help="bytes of each of the two bodies")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the "slow" and "down" rows log expected warnings
    n = 3_000 if args.quick else 20_000
    rounds = 1 if args.quick else args.rounds
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_server(Path(tmp))
        try:
            run(url, n, rounds, proc, args.body)
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
                proc.kill()
            proc.wait()


def run(url: str, n: int, rounds: int, proc: subprocess.Popen[bytes], size: int) -> None:
    evs = events(n, size)
    encoded = [e.to_json() for e in evs]
    writes: dict[str, Callable[[], float]] = {
        "NatsEventBus (batched publish_async, acks checked)": lambda: bus_write(url, evs),
        "bare publish_async loop, encoding in loop": lambda: asyncio.run(
            bare_async(url, evs, None)
        ),
        "bare publish_async loop, wire only": lambda: asyncio.run(bare_async(url, evs, encoded)),
    }
    write_rows: dict[str, float] = {}
    for _ in range(rounds):
        for name, fn in writes.items():
            write_rows[name] = max(write_rows.get(name, 0.0), fn())
    print(
        f"\nTable 1: events/s written, {n} events, bodies 2 x {size} B, best of {rounds}, "
        f"Python {sys.version.split()[0]}, nats-server -js on loopback"
    )
    bus_rate = write_rows["NatsEventBus (batched publish_async, acks checked)"]
    width = max(map(len, write_rows))
    for name, value in write_rows.items():
        print(f"  {name:<{width}}  {value:>9,.0f} ev/s  {bus_rate / value:5.2f}x bus")
    wire = write_rows["bare publish_async loop, wire only"]
    enc = write_rows["bare publish_async loop, encoding in loop"]
    print(f"  bare (wire only) / NatsEventBus: {wire / bus_rate:.2f}x;  "
          f"bare (encoding) / NatsEventBus: {enc / bus_rate:.2f}x")  # fmt: skip

    asyncio.run(fill(url, "BENCHC", encoded))
    consume_rows: dict[str, float] = {}
    for r in range(rounds):
        variants: dict[str, Callable[[], float]] = {
            "NatsEventBus consumer (read + decode + ack)": partial(bus_consume, url, n, f"b{r}"),
            "bare pull-fetch loop, ack each, no decoding": partial(
                run_async, bare_fetch, url, n, f"f{r}", False
            ),
            "bare pull-fetch loop, ack each, decoding": partial(
                run_async, bare_fetch, url, n, f"d{r}", True
            ),
        }
        for name, fn in variants.items():
            consume_rows[name] = max(consume_rows.get(name, 0.0), fn())
    print(f"\nTable 2: events/s consumed, {n} events in the stream, batches of {BATCH}")
    width = max(map(len, consume_rows))
    ours = consume_rows["NatsEventBus consumer (read + decode + ack)"]
    for name, value in consume_rows.items():
        print(f"  {name:<{width}}  {value:>9,.0f} ev/s  {ours / value:5.2f}x bus")

    samples = evs[: min(n, 20_000)]
    asyncio.run(fresh_stream(url, "BENCHP"))
    paced = NatsEventBus(
        url, stream="BENCHP", subject=subject("BENCHP"), buffer_size=len(samples) * 3, max_msgs=0
    )
    paced.check(10)
    costs = {"healthy": publish_costs(paced, samples, lambda: None)}
    paced.flush(30)
    costs["slow (server SIGSTOPped)"] = publish_costs(
        paced, samples, lambda: os.kill(proc.pid, signal.SIGSTOP)
    )
    os.kill(proc.pid, signal.SIGCONT)
    paced.flush(60)
    proc.kill()
    proc.wait()

    def until_down() -> None:
        for _ in range(500):
            if not paced.stats().extra["connected"]:
                return
            time.sleep(0.01)

    costs["down (server killed)"] = publish_costs(paced, samples, until_down)
    state = paced.stats().extra["connection"]
    paced.stop(0)
    print(
        f"\nTable 3: one publish() call in ns, {len(samples)} paced calls per condition "
        f"(connection at the end: {state})"
    )
    for name, values in costs.items():
        print(
            f"  {name:<26} p50 {pct(values, 0.5):>6,}  p99 {pct(values, 0.99):>7,}  "
            f"mean {statistics.fmean(values):>8,.0f}"
        )


if __name__ == "__main__":
    main()
