"""Instructions per `publish()`, counted under valgrind's callgrind: figures that do not move
with the machine's load, for judging a change to the hot path on a noisy machine.

    .venv/bin/python benchmarks/callgrind_publish.py              # every bus below
    .venv/bin/python benchmarks/callgrind_publish.py --bus memory --calls 20000

Needs `valgrind` (apt-get install valgrind) and, for the Redis rows, Redis at `--redis-url` (a
dedicated key per run, deleted afterwards). Each bus is run twice under
`valgrind --tool=callgrind --separate-threads=yes`, with `--calls` and with twice as many
`publish()` calls of the same small event (`eventbus_core.testing.make_event()`); the
difference of the two counts, divided by the difference in calls, is the cost of one more
call, without interpreter start-up, imports and shutdown. The calling thread's count is
`publish()` itself (plus a `for` loop's step, shown as the "loop only" row); the background
threads' count is what the backend does afterwards per event (batching, encoding, the socket),
off the caller's thread. `memory-asyncio` and `redis-asyncio` publish on a running event loop,
which drains the bus itself: its drain (the fan-out; the encoding and the asyncio connection's
writes) is in the caller's count, and nothing is in the background.
`perf stat -e instructions` would do too where the CPU's counters are
readable; in containers and VMs they usually are not.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import time
from typing import Any, Literal

from _callgrind import count_instructions
from _redis_keys import delete_run_keys


def _child(bus_name: str, calls: int, url: str) -> None:
    """The measured process: `calls` publishes on `bus_name`, then flush and stop."""
    from eventbus_core.testing import make_event

    event = make_event()
    bus = _make_bus(bus_name, url)
    try:
        publish = bus.publish if bus is not None else None
        if publish is None:
            for _ in range(calls):
                pass
        elif bus_name.endswith("-asyncio"):
            # Published on a running loop, which drains the bus itself (loop timers; Redis
            # batches through its asyncio connection): what the backend does per event is on
            # the caller's thread, and no drainer thread runs.
            async def on_the_loop() -> None:
                for _ in range(calls):
                    publish(event)
                await asyncio.sleep(0.05)  # the loop's drain timer fires
                flush = getattr(bus, "flush", None)
                if callable(flush):  # waits in a helper thread while the loop writes
                    await asyncio.to_thread(flush, 60.0)

            asyncio.run(on_the_loop())
        else:
            for _ in range(calls):
                publish(event)
        if bus is not None:
            flush = getattr(bus, "flush", None)
            if callable(flush):
                flush(60.0)
    finally:
        if bus is not None:
            bus.stop(60.0)
            _cleanup(bus)


def _make_bus(name: str, url: str) -> Any:
    if name == "loop only":
        return None
    if name in ("memory", "memory-asyncio"):
        from eventbus_memory import InMemoryEventBus

        on_loop = name == "memory-asyncio"
        bus = InMemoryEventBus(
            buffer_size=1_000_000, publish_path="asyncio" if on_loop else "thread"
        )
        bus.subscribe("drain", buffer_size=1_000_000)  # one subscriber, as a dispatcher would be
        return bus
    import redis

    client = redis.Redis.from_url(url)
    key = f"eventbus-callgrind-{os.getpid()}"
    if name in ("redis", "redis-asyncio"):
        from eventbus_redis import RedisEventBus

        path: Literal["asyncio", "thread"] = "asyncio" if name == "redis-asyncio" else "thread"
        return RedisEventBus(client, key=key, buffer_size=1_000_000, publish_path=path)
    from eventbus_redis import RedisStreamsEventBus

    return RedisStreamsEventBus(
        client, stream=key, buffer_size=1_000_000, max_len=0, publish_path="thread"
    )


def _cleanup(bus: object) -> None:
    client = getattr(bus, "_client", None) or getattr(bus, "client", None)
    key = getattr(bus, "key", None) or getattr(bus, "stream", None)
    if client is not None and key:
        delete_run_keys(client, key)


def _count(bus_name: str, calls: int, url: str, valgrind: str) -> tuple[int, int]:
    """(calling thread, other threads) instructions of one run under callgrind."""
    args = ["--child", bus_name, "--calls", str(calls), "--redis-url", url]
    return count_instructions(valgrind, __file__, args)


def main(argv: list[str] | None = None) -> int:
    """Run each bus under callgrind and print instructions per `publish()`."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument(
        "--bus",
        action="append",
        choices=["memory", "memory-asyncio", "redis", "redis-asyncio", "redis-streams"],
    )
    parser.add_argument("--calls", type=int, default=10_000, help="calls of the smaller run")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child, args.calls, args.redis_url)
        return 0
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 2
    buses = [
        "loop only",
        *(args.bus or ["memory", "memory-asyncio", "redis", "redis-asyncio", "redis-streams"]),
    ]
    n1, n2 = args.calls, 2 * args.calls
    print(
        f"Python {sys.version.split()[0]}; instructions per call, from runs of {n1} and {n2} "
        "calls under callgrind\n"
    )
    print(f"{'bus':<16}{'publish() (caller)':>20}{'background/event':>18}{'seconds':>9}")
    for name in buses:
        started = time.monotonic()
        a_main, a_other = _count(name, n1, args.redis_url, valgrind)
        b_main, b_other = _count(name, n2, args.redis_url, valgrind)
        per_call = (b_main - a_main) / (n2 - n1)
        background = (b_other - a_other) / (n2 - n1)
        took = time.monotonic() - started
        print(f"{name:<16}{per_call:>20,.0f}{background:>18,.0f}{took:>9.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
