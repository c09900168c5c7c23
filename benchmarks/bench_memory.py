"""Benchmark the in-memory backend against the standard library, in one run.

    .venv/bin/python benchmarks/bench_memory.py            # full run (about 20 s)
    .venv/bin/python benchmarks/bench_memory.py --quick    # smaller, for a smoke test

Table 1: cost of one call, in ns: p50 / p99 over individually timed calls (each sample includes
one `perf_counter_ns()` pair, whose own cost is printed), and the mean from timing blocks of
1,000 calls (no timer inside): `InMemoryEventBus.publish` with 4 subscribers being drained
by 4 threads, the same with eventbus's Prometheus collector registered and scraped in a loop
by another thread (every millisecond, far more often than any Prometheus; the row shows that
metrics add nothing to `publish()`: they are read from existing counters at scrape time),
beside
`queue.Queue(maxsize).put_nowait` (the standard library's bounded hand-off) and a bare
`collections.deque.append` (the floor). Ratios are to `Queue.put_nowait` measured in the same run.

Table 2: fan-out throughput: events/s delivered to *every* subscriber (each drained by its own
thread in batches), for 1, 4 and 16 subscribers, with drops reported (there should be none).
"""

from __future__ import annotations

import argparse
import collections
import gc
import queue
import statistics
import sys
import threading
import time
from collections.abc import Callable

from eventbus_core import Event
from eventbus_core.testing import make_event
from eventbus_memory import InMemoryEventBus


def _timer_overhead(clock: Callable[[], int]) -> int:
    samples = []
    for _ in range(20_000):
        t0 = clock()
        t1 = clock()
        samples.append(t1 - t0)
    return int(statistics.median(samples))


def _time_calls(call: Callable[[Event], object], event: Event, n: int) -> list[int]:
    clock = time.perf_counter_ns
    out = [0] * n
    for i in range(n):
        t0 = clock()
        call(event)
        out[i] = clock() - t0
    return out


def _quantiles(samples: list[int]) -> tuple[float, float]:
    data = sorted(samples)
    return data[len(data) // 2], data[int(len(data) * 0.99)]


def _block_mean(call: Callable[[Event], object], event: Event, n: int) -> float:
    clock = time.perf_counter_ns
    means = []
    for _ in range(max(1, n // 1000)):
        t0 = clock()
        for _ in range(1000):
            call(event)
        means.append((clock() - t0) / 1000)
    return statistics.median(means)


def _drain(sub: object, stop: threading.Event) -> None:
    get_batch = sub.get_batch  # type: ignore[attr-defined]
    while not stop.is_set() or sub.qsize():  # type: ignore[attr-defined]
        get_batch(None, 0.05)


def _scrape_loop(registry: object, stop: threading.Event, scrapes: list[int]) -> None:
    from prometheus_client import generate_latest

    while not stop.is_set():
        generate_latest(registry)  # type: ignore[arg-type]
        scrapes[0] += 1
        stop.wait(0.001)


def _publish_round(n: int, event: Event, *, scraped: bool) -> tuple[float, float, float, int]:
    """publish() with 4 drained subscribers; with `scraped`, a collector scraped in a loop."""
    gc.collect()
    bus = InMemoryEventBus(buffer_size=n * 3)
    stop = threading.Event()
    subs = [bus.subscribe(f"s{i}") for i in range(4)]
    threads = [threading.Thread(target=_drain, args=(s, stop), daemon=True) for s in subs]
    scrapes = [0]
    if scraped:
        from prometheus_client import CollectorRegistry

        from eventbus_core.metrics import register_prometheus

        registry = CollectorRegistry()
        register_prometheus(bus, registry=registry)
        threads.append(
            threading.Thread(target=_scrape_loop, args=(registry, stop, scrapes), daemon=True)
        )
    for t in threads:
        t.start()
    p50, p99 = _quantiles(_time_calls(bus.publish, event, n))
    mean = _block_mean(bus.publish, event, n)
    stop.set()
    bus.stop()
    for t in threads:
        t.join()
    assert bus.stats().dropped == 0, "benchmark buffer too small: publish dropped events"
    return p50, p99, mean, scrapes[0]


SCRAPES = [0]
"""Scrapes of the collector during the scraped rounds (printed under the table)."""


def bench_publish_cost(n: int, rounds: int) -> list[tuple[str, float, float, float]]:
    """Per-call cost of publish vs Queue.put_nowait vs deque.append: (name, p50, p99, mean)."""
    event = make_event(1)
    results: dict[str, list[tuple[float, float, float]]] = collections.defaultdict(list)
    try:
        import prometheus_client  # noqa: F401  (optional: eventbus-core[prometheus])

        with_metrics = True
    except ImportError:
        with_metrics = False
    scraped_name = "InMemoryEventBus.publish (4 subs, scraped)"
    for _ in range(rounds):
        p50, p99, mean, _ = _publish_round(n, event, scraped=False)
        results["InMemoryEventBus.publish (4 subscribers)"].append((p50, p99, mean))
        if with_metrics:
            p50, p99, mean, scrapes = _publish_round(n, event, scraped=True)
            assert scrapes > 0, "the scraper thread never ran"
            SCRAPES[0] += scrapes
            results[scraped_name].append((p50, p99, mean))

        q: queue.Queue[Event] = queue.Queue(maxsize=n * 3)
        results["queue.Queue(maxsize).put_nowait"].append(
            (*_quantiles(_time_calls(q.put_nowait, event, n)), _block_mean(q.put_nowait, event, n))
        )
        dq: collections.deque[Event] = collections.deque()
        results["collections.deque.append"].append(
            (*_quantiles(_time_calls(dq.append, event, n)), _block_mean(dq.append, event, n))
        )
    rows: list[tuple[str, float, float, float]] = []
    for name, vals in results.items():
        p50, p99, mean = (statistics.median(v[i] for v in vals) for i in range(3))
        rows.append((name, p50, p99, mean))
    return rows


def bench_fan_out(n: int, subscribers: int) -> tuple[float, int]:
    """Events/s delivered to all `subscribers`; returns (rate, drops)."""
    bus = InMemoryEventBus(buffer_size=n)
    subs = [bus.subscribe(f"s{i}") for i in range(subscribers)]
    remaining = [n] * subscribers
    done = threading.Barrier(subscribers + 1)

    def consume(index: int) -> None:
        sub = subs[index]
        while remaining[index] > 0:
            batch = sub.get_batch(None, 5.0)
            if not batch and sub.exhausted:
                break
            remaining[index] -= len(batch)
        done.wait()

    threads = [threading.Thread(target=consume, args=(i,), daemon=True) for i in range(subscribers)]
    for t in threads:
        t.start()
    events = [make_event(i) for i in range(n)]
    publish = bus.publish
    start = time.perf_counter()
    for event in events:
        publish(event)
    done.wait()
    elapsed = time.perf_counter() - start
    bus.stop()
    drops = bus.stats().dropped + sum(s.stats().dropped for s in subs)
    return n / elapsed, drops


def main(argv: list[str] | None = None) -> int:
    """Run both benchmarks and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer calls, for a smoke run")
    args = parser.parse_args(argv)
    n = 20_000 if args.quick else 200_000
    rounds = 1 if args.quick else 5

    print(f"Python {sys.version.split()[0]}; {n} calls per round, median of {rounds} rounds\n")
    overhead = _timer_overhead(time.perf_counter_ns)
    rows = bench_publish_cost(n, rounds)
    baseline = next(row for row in rows if row[0].startswith("queue.Queue"))
    print(
        f"{'call':<44}{'p50 ns':>8}{'p99 ns':>8}{'mean ns':>9}{'p50/Queue':>11}{'mean/Queue':>11}"
    )
    for name, p50, p99, mean in rows:
        print(
            f"{name:<44}{p50:>8.0f}{p99:>8.0f}{mean:>9.0f}"
            f"{p50 / baseline[1]:>11.2f}{mean / baseline[3]:>11.2f}"
        )
    print(f"(p50/p99 samples include the timer pair itself: {overhead} ns median)")
    if SCRAPES[0]:
        print(f"(scraped rows: the Prometheus collector was scraped {SCRAPES[0]} times meanwhile)")

    print(f"\n{'fan-out':<44}{'events/s to all':>18}{'drops':>8}")
    fan_n = 50_000 if args.quick else 300_000
    for k in (1, 4, 16):
        rate, drops = bench_fan_out(fan_n, k)
        print(f"{f'{k} subscriber(s), {fan_n} events':<44}{rate:>18,.0f}{drops:>8}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
