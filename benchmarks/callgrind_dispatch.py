"""Instructions per event of the dispatcher, counted under valgrind's callgrind: figures that do
not move with the machine's load, for judging a change to the dispatcher on a noisy machine.

    .venv/bin/python benchmarks/callgrind_dispatch.py                  # both rows
    .venv/bin/python benchmarks/callgrind_dispatch.py --skip redis     # no Redis needed

The events are `bench_dispatch.py`'s (issue 12's chat completions). Each row is run twice under
`valgrind --tool=callgrind --separate-threads=yes`, with `--events` and with twice as many; the
difference of the two counts, divided by `--events`, is the cost of one more event, without
interpreter start-up, imports and shutdown:

- stages: in one thread, each event's stream entry decoded (`event_from_stream_entry`), its
  payload prepared (`PayloadPreparer`: transform and redaction) and its `jsonl` line encoded;
  both runs make the same number of events first, so their making cancels out;
- redis: the dispatcher itself, from a stream pre-filled with the events (filled by this process,
  outside valgrind; a dedicated key, deleted afterwards) into a `jsonl` sink, until every event
  is acknowledged; the event loop's thread (distributing, encoding, acknowledging) and the other
  threads (the lane's reading thread: reading, decoding, preparing; the file writes) apart.

Callgrind runs one thread at a time, so what threads cost each other on a real machine (hand-overs
of the GIL, cold caches) is not in these counts: `bench_dispatch.py` times that.
Needs `valgrind` (apt-get install valgrind); about two minutes with the defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _callgrind import count_instructions
from _redis_keys import delete_run_keys
from bench_dispatch import BATCH, _fill_stream, chat_event


def _child_stages(n: int, made: int) -> None:
    """Make `made` events' wire JSON, then decode, prepare and encode the first `n`."""
    from eventbus_core._jsonl import dumps_line
    from eventbus_core.dispatch._heap import prepare_dispatch_heap
    from eventbus_core.dispatch._payload import PayloadPreparer
    from eventbus_redis._stream_entry import event_from_stream_entry

    rng = random.Random(12)
    wires = [chat_event(i, rng).to_json() for i in range(made)]
    prepare = PayloadPreparer()
    prepare_dispatch_heap()  # as `eventbus dispatch` does before it starts
    for i in range(n):
        event = event_from_stream_entry(f"{i + 1}-0", {b"data": wires[i]})
        dumps_line(prepare(event))


def _child_redis(n: int, url: str, key: str) -> None:
    """Dispatch the pre-filled stream `key` into a jsonl sink until `n` events are acked."""
    import redis

    from eventbus_core import Dispatcher
    from eventbus_core.dispatch._heap import prepare_dispatch_heap
    from eventbus_core.sinks.jsonl import JsonlSink
    from eventbus_redis import RedisStreamsEventBus

    client = redis.Redis.from_url(url)
    bus = RedisStreamsEventBus(client, stream=key, group="callgrind", max_len=0)
    prepare_dispatch_heap()

    async def run(dispatcher: Dispatcher) -> None:
        task = asyncio.create_task(dispatcher.run())
        while dispatcher.stats().acked < n and not task.done():
            # Seldom: callgrind slows the process ~50x, and each look costs the loop's thread.
            await asyncio.sleep(1.0)
        dispatcher.request_stop()
        await task

    try:
        with tempfile.TemporaryDirectory() as tmp:
            sink = JsonlSink(Path(tmp) / "out.jsonl", max_bytes=0)
            asyncio.run(run(Dispatcher(bus, [sink], stats_interval=0, batch_size=BATCH)))
    finally:
        bus.stop(5.0)
        client.close()


def _count(args: list[str], valgrind: str) -> tuple[int, int]:
    """(main thread, other threads) instructions of one child run under callgrind."""
    return count_instructions(valgrind, __file__, args)


def _redis_run(n: int, url: str, valgrind: str) -> tuple[int, int]:
    import redis

    client = redis.Redis.from_url(url)
    key = f"eventbus-callgrind-dispatch-{os.getpid()}-{n}"
    try:
        delete_run_keys(client, key)
        _fill_stream(client, key, n)
        return _count(
            ["--child", "redis", "--events", str(n), "--redis-url", url, "--key", key], valgrind
        )
    finally:
        delete_run_keys(client, key)
        client.close()


def main(argv: list[str] | None = None) -> int:
    """Count both rows under callgrind and print instructions per event."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=1_000, help="events of the smaller run")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--skip", choices=["stages", "redis"], action="append", default=[])
    parser.add_argument("--child", choices=["stages", "redis"], help=argparse.SUPPRESS)
    parser.add_argument("--made", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--key", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.events < 1:
        parser.error(f"--events must be at least 1, not {args.events}")
    if args.child == "stages":
        _child_stages(args.events, args.made)
        return 0
    if args.child == "redis":
        _child_redis(args.events, args.redis_url, args.key)
        return 0
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 2
    n1, n2 = args.events, 2 * args.events
    print(
        f"Python {sys.version.split()[0]}; instructions per event, from runs of {n1} and {n2} "
        "events under callgrind\n"
    )
    print(f"{'row':<8}{'loop thread':>14}{'other threads':>16}{'total':>12}{'seconds':>9}")
    for row in ("stages", "redis"):
        if row in args.skip:
            continue
        started = time.monotonic()
        if row == "stages":
            made = ["--made", str(n2)]
            a = _count(["--child", "stages", "--events", str(n1), *made], valgrind)
            b = _count(["--child", "stages", "--events", str(n2), *made], valgrind)
        else:
            a = _redis_run(n1, args.redis_url, valgrind)
            b = _redis_run(n2, args.redis_url, valgrind)
        loop, other = ((y - x) / (n2 - n1) for x, y in zip(a, b, strict=True))
        took = time.monotonic() - started
        print(f"{row:<8}{loop:>14,.0f}{other:>16,.0f}{loop + other:>12,.0f}{took:>9.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
