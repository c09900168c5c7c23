"""Benchmark the dispatcher end to end, and each stage of its per-event work, in one run.

    .venv/bin/python benchmarks/bench_dispatch.py            # full run (about a minute)
    .venv/bin/python benchmarks/bench_dispatch.py --quick    # smaller, for a smoke test

The workload is the one of issue 12: chat-completion events, each a realistic OpenAI request
body and response body (~900 bytes of JSON each) and 12 response headers, `Authorization:
Bearer sk-...` among them, read, transformed (`LLMTransformer`), redacted (the default rules)
and written to a `jsonl` sink in a temporary directory.

Table 1, µs per event of each stage, best of `--rounds` interleaved rounds over the same events:
decode (`Event.from_json` of the wire bytes), transform, redact, encode (the jsonl line) and
sink write (one append per batch of 100, divided by 100). The baseline column is the way the
stage was done before the fast paths (the careful decoder, the recursive `Redactor.json`, the
`json` module), still reachable for the tests that compare them; "-" where there is no second
way. (The redaction gate's earlier twenty searches, which its one pass replaced, are kept by
tests/core/test_redact_differential.py as the reference it is compared with.)

Table 2, the redaction of payloads that carry a credential (or words that look like one), which
the gate does not clear: "prose" (a message with `=`, `?b=2` and "key" in it, but no credential),
"request field" (`api_key` in the request body), "key in prose" (an `sk-` key in a message),
"path" (`?api_key=` in the path); the walk (`Redactor.json`) against `Redactor.payload`.

Table 3, events/s end to end, the dispatcher process pinned to one core (`--cpu`); the baseline
rows put the same earlier stages back (what is not a stage, such as the heap freeze that
`eventbus dispatch` does before it starts, done here too, applies to both):
- redis: a stream pre-filled with `--events` entries (the key `eventbus-bench-dispatch-<pid>`,
  deleted afterwards) on the Redis at `--redis-url`, read through a consumer group, from the
  start of `run()` until every event is acknowledged;
- memory: the same events published to an `InMemoryEventBus` before the dispatcher starts, until
  every event is written (made before the heap freeze, as a dispatcher never holds them all);
- eventbus dispatch (CLI): the command itself, in a process of its own on the same core, from a
  stream pre-filled the same way into its jsonl sink; events/s from its first line written to
  its last (its start-up is not in it), CPU µs per event of the whole process (start-up
  included); `--skip cli` leaves it out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from _proc_cpu import cpu_seconds
from _redis_keys import delete_run_keys

from eventbus_core import Dispatcher, Event
from eventbus_core._jsonl import JsonlFile, dumps_line
from eventbus_core.dispatch._heap import prepare_dispatch_heap
from eventbus_core.redact._redact import Redactor
from eventbus_core.sinks.jsonl import JsonlSink
from eventbus_core.transform._llm import LLMTransformer

BATCH = 100
_PROMPT = (
    "Hi, my order #{n} arrived with a cracked screen protector and the invoice shows the wrong "
    "billing address. Can you help me get a replacement shipped and the invoice corrected? I'd "
    "also like to know the return window for the case I bought with it, and whether the "
    "replacement ships to my office instead. Thanks a lot for your help!"
)
_ANSWER = (
    "I'm sorry about order #{n}! I've requested a replacement screen protector, which ships "
    "within 2 business days, and flagged the invoice so billing can correct the address; you'll "
    "receive an updated copy by email. Accessories such as the case can be returned within 30 "
    "days of delivery, unused and in their original packaging."
)


def chat_event(n: int, rng: random.Random) -> Event:
    """One chat-completion event of the issue-12 workload (bodies ~900 bytes each)."""
    request = {
        "model": "gpt-4o-mini",
        "messages": [
            {
                "role": "system",
                "content": "You are a helpful assistant for an e-commerce support desk. Answer "
                "briefly, cite the order number, and never reveal internal notes.",
            },
            {"role": "user", "content": _PROMPT.format(n=100_000 + n)},
        ],
        "temperature": 0.2,
        "max_tokens": 512,
        "top_p": 1,
        "stream": False,
        "user": f"customer-{rng.randint(1, 10**6)}",
        "metadata": {"tenant": "acme-retail", "channel": "web-chat", "session": f"s-{n:08d}"},
    }
    response = {
        "id": f"chatcmpl-{n:010d}AbCdEfGhIjKl",
        "object": "chat.completion",
        "created": 1_764_000_000 + n,
        "model": "gpt-4o-mini-2024-07-18",
        "system_fingerprint": "fp_0ba0d124f1",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": _ANSWER.format(n=100_000 + n),
                    "refusal": None,
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 118 + rng.randint(0, 50),
            "completion_tokens": 84,
            "total_tokens": 250,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        },
    }
    headers = {
        "Content-Type": ["application/json"],
        "Authorization": [f"Bearer sk-proj-Ab3dEf6hIj9lMn2pQr5tUv8x{n:08d}"],
        "Date": ["Thu, 03 Dec 2026 05:40:00 GMT"],
        "Openai-Organization": ["acme-retail-prod"],
        "Openai-Processing-Ms": [str(rng.randint(200, 2000))],
        "Openai-Version": ["2020-10-01"],
        "X-Request-Id": [f"req_{n:032x}"],
        "X-Ratelimit-Limit-Requests": ["10000"],
        "X-Ratelimit-Remaining-Requests": ["9999"],
        "X-Ratelimit-Limit-Tokens": ["200000"],
        "X-Ratelimit-Remaining-Tokens": ["199798"],
        "Cf-Ray": ["8f1e2d3c4b5a6978-FRA"],
    }
    return Event(
        request_id=f"req-{n:08d}",
        method="POST",
        path="/v1/chat/completions",
        status=200,
        duration=rng.randint(200, 2000) * 1_000_000,
        response_headers=headers,
        response_body=json.dumps(response).encode(),
        request_body=json.dumps(request).encode(),
        log_id=n + 1,
    )


# ------------------------------------------------------------------------------- stages


def _old_dumps_line(obj: Any) -> bytes:
    """The jsonl line as it was encoded before orjson."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=str).encode() + b"\n"


def _stage_ways() -> dict[str, tuple[Callable[[Any], Any] | None, Callable[[Any], Any]]]:
    """Stage name -> (baseline way or None, current way)."""
    from eventbus_core import _wire
    from eventbus_core._event import _restore

    careful = getattr(_wire, "decode_event_careful", None)
    redactor = Redactor()
    fast_redact = getattr(redactor, "payload", None)
    return {
        "decode": (
            (lambda data: careful(data, _restore)) if careful is not None else None,
            Event.from_json,
        ),
        "transform": (None, LLMTransformer()),
        "redact": (
            redactor.json if fast_redact is not None else None,
            fast_redact or redactor.json,
        ),
        "encode": (_old_dumps_line, dumps_line),
    }


def _best_per_item(fn: Callable[[Any], Any], items: Sequence[Any], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for item in items:
            fn(item)
        best = min(best, (time.perf_counter() - start) / len(items))
    return best * 1e6


def stage_table(events: list[Event], rounds: int) -> list[tuple[str, float | None, float]]:
    """(stage, baseline µs, current µs) per event, rounds interleaved across stages."""
    ways = _stage_ways()
    wires = [e.to_json() for e in events]
    decoded = [Event.from_json(w) for w in wires]
    transform = ways["transform"][1]
    payloads = [dict(transform(e)) for e in decoded]
    redacted = [ways["redact"][1](p) for p in payloads]
    inputs: dict[str, Sequence[Any]] = {
        "decode": wires,
        "transform": decoded,
        "redact": payloads,
        "encode": redacted,
    }
    best: dict[tuple[str, int], float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        file = JsonlFile(Path(tmp) / "stage.jsonl", max_bytes=0)
        lines = [dumps_line(p) for p in redacted]
        batches = [lines[i : i + BATCH] for i in range(0, len(lines), BATCH)]
        for _ in range(rounds):
            for stage, (old, new) in ways.items():
                for which, fn in ((0, old), (1, new)):
                    if fn is not None:
                        t = _best_per_item(fn, inputs[stage], 1)
                        best[stage, which] = min(best.get((stage, which), t), t)
            t = _best_per_item(file.append_lines, batches, 1) / BATCH
            best["sink write", 1] = min(best.get(("sink write", 1), t), t)
        file.close()
    rows: list[tuple[str, float | None, float]] = [
        (stage, best.get((stage, 0)), best[stage, 1]) for stage in [*ways, "sink write"]
    ]
    return rows


def _with_credentials(event: Event, where: str) -> Event:
    """`event` with a credential (or, for "prose", only words that look like one) put where
    real traffic carries one."""
    if where == "path":
        return event.replace(path=event.path + "?api_key=ak-1234567890abcdef")
    request = json.loads(event.request_body or b"{}")
    if where == "request field":
        request["api_key"] = "s3cr3t-value-1234567890"
    elif where == "prose":
        note = "Is x = 1? The key points: see https://example.com/a?b=2 for the monkey story."
        request["messages"].append({"role": "user", "content": note})
    else:  # "key in prose"
        note = "My key is sk-proj-Zy9xWv8uTs7rQp6oNm5lKj4i, does it still work?"
        request["messages"].append({"role": "user", "content": note})
    return event.replace(request_body=json.dumps(request).encode())


CREDENTIAL_CASES = ("prose", "request field", "key in prose", "path")


def credential_table(events: list[Event], rounds: int) -> list[tuple[str, float, float]]:
    """(case, the walk's µs, `Redactor.payload`'s µs) per payload carrying a credential: the
    gate does not clear such a payload, and what it costs then is what this shows."""
    redactor = Redactor()
    transform = LLMTransformer()
    cases = {
        case: [dict(transform(_with_credentials(e, case))) for e in events[:500]]
        for case in CREDENTIAL_CASES
    }
    best: dict[tuple[str, int], float] = {}
    for _ in range(rounds):
        for case, payloads in cases.items():
            for which, fn in ((0, redactor.json), (1, redactor.payload)):
                t = _best_per_item(fn, payloads, 1)
                best[case, which] = min(best.get((case, which), t), t)
    return [(case, best[case, 0], best[case, 1]) for case in cases]


# ---------------------------------------------------------------------------- end to end


@contextlib.contextmanager
def slow_paths() -> Iterator[bool]:
    """The dispatcher as it was before the fast paths: the careful event decoder, `json` for
    bodies and lines, the recursive redaction walk. Yields False (and changes nothing) where
    the fast paths do not exist."""
    from eventbus_core import _event, _wire
    from eventbus_core.sinks import jsonl
    from eventbus_core.transform import _llm

    careful = getattr(_wire, "decode_event_careful", None)
    if careful is None or not hasattr(Redactor, "payload"):
        yield False
        return
    patches: list[tuple[Any, str, Any]] = [
        (_event, "_decode_event", careful),
        (Redactor, "payload", Redactor.json),
        (jsonl, "dumps_line", _old_dumps_line),
        (_llm, "_loads", lambda raw, text: json.loads(text)),
    ]
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
    for owner, name, value in patches:
        setattr(owner, name, value)
    try:
        yield True
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)


def _run_until_acked(dispatcher: Dispatcher, n: int) -> tuple[float, float]:
    """Run `dispatcher` until `n` events are acknowledged; seconds taken and CPU seconds of the
    process meanwhile (every thread: reading, preparing, writing)."""

    async def main() -> tuple[float, float]:
        cpu = time.process_time()
        start = time.perf_counter()
        task = asyncio.create_task(dispatcher.run())
        end = None
        while not task.done():
            if dispatcher.stats().acked >= n:
                end = time.perf_counter()
                dispatcher.request_stop()
                break
            await asyncio.sleep(0.02)  # stats() copies queues: not too often
        await task
        return (end or time.perf_counter()) - start, time.process_time() - cpu

    return asyncio.run(main())


def run_redis(n: int, url: str) -> tuple[float, float, int]:
    """Events/s through a stream pre-filled with `n` events, CPU µs per event, and how many
    were written. The events are made as the stream is filled, so the process holds no more
    than a dispatcher does."""
    import redis

    from eventbus_redis import RedisStreamsEventBus

    key = f"eventbus-bench-dispatch-{os.getpid()}"
    client = redis.Redis.from_url(url)
    try:
        delete_run_keys(client, key)
        _fill_stream(client, key, n)
        bus = RedisStreamsEventBus(client, stream=key, group="bench", max_len=0)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "out.jsonl"
                dispatcher = Dispatcher(
                    bus, [JsonlSink(path, max_bytes=0)], stats_interval=0, batch_size=BATCH
                )
                seconds, cpu = _run_until_acked(dispatcher, n)
                written = sum(1 for _ in path.open("rb"))
        finally:
            bus.stop(5.0)
        return n / seconds, cpu * 1e6 / n, written
    finally:
        delete_run_keys(client, key)
        client.close()


def _fill_stream(client: Any, key: str, n: int) -> None:
    rng = random.Random(12)
    for i in range(0, n, 1000):
        pipe = client.pipeline(transaction=False)
        for j in range(i, min(n, i + 1000)):
            pipe.xadd(key, {"data": chat_event(j, rng).to_json()})
        pipe.execute()


def run_cli(n: int, url: str) -> tuple[float, float, int]:
    """`eventbus dispatch` as an operator runs it (a process of its own, on this process's
    core), from a stream pre-filled with `n` events into the jsonl sink: events/s from its
    first line written to its last (start-up and imports are not counted there), CPU µs per
    event of the whole process (they are counted there), and the lines written."""
    import redis

    key = f"eventbus-bench-cli-{os.getpid()}"
    client = redis.Redis.from_url(url)
    try:
        delete_run_keys(client, key)
        _fill_stream(client, key, n)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "out.jsonl"
            env = {
                **os.environ,
                "LLM_PROXY_EVENT_BUS": "redis-streams",
                "REDIS_URL": url,
                "EVENTBUS_REDIS_STREAM": key,
                "EVENTBUS_LOG_LEVEL": "WARNING",
            }
            command = [str(Path(sys.executable).with_name("eventbus")), "dispatch"]
            # max_bytes=0: no rotation (100 MB by default, about 40,000 of these events), so
            # every line is in the one file counted below.
            command += ["--sink", "jsonl", "--sink-opt", f"path={out}", "--sink-opt", "max_bytes=0"]
            command += ["--dead-letter", str(Path(tmp) / "dead.jsonl")]
            started = time.perf_counter()
            child = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
            try:
                first: tuple[float, int] | None = None
                written = 0
                deadline = time.monotonic() + 600
                # Count new lines only (this process shares the dispatcher's core: reading the
                # whole file again each time would slow the dispatcher down).
                with contextlib.ExitStack() as stack:
                    reader = None
                    while written < n and time.monotonic() < deadline and child.poll() is None:
                        time.sleep(0.02)
                        if reader is not None and _replaced(reader, out):
                            # The dispatcher's start-up check creates the path and removes it
                            # again: opened in between, the file read was never written to (the
                            # run then waited out its deadline). Read the one it writes.
                            reader.close()
                            reader, written, first = None, 0, None
                        if reader is None:
                            if not out.exists():
                                continue
                            reader = stack.enter_context(out.open("rb"))
                        chunks = iter(functools.partial(reader.read, 1 << 20), b"")
                        written += sum(chunk.count(b"\n") for chunk in chunks)
                        if written and first is None:
                            first = (time.perf_counter(), written)
                last = time.perf_counter()
                cpu = None
                with contextlib.suppress(OSError):  # no /proc: no CPU figure
                    cpu = cpu_seconds(child.pid)
            finally:
                child.terminate()
                child.wait(30)
        if first is None or written <= first[1]:
            # All of it came at once (a tiny run): time it from the start, start-up included.
            rate = written / (last - started)
        else:
            rate = (written - first[1]) / (last - first[0])
        return rate, (cpu or 0.0) * 1e6 / written, written
    finally:
        delete_run_keys(client, key)
        client.close()


def _replaced(reader: Any, path: Path) -> bool:
    """True if `path` no longer names the file `reader` has open (gone, or another one)."""
    try:
        return os.stat(path).st_ino != os.fstat(reader.fileno()).st_ino
    except OSError:
        return True


def run_memory(events: list[Event]) -> tuple[float, float, int]:
    """Events/s from a memory bus holding every event when the dispatcher starts, CPU µs per
    event, and how many were written."""
    from eventbus_memory import InMemoryEventBus

    bus = InMemoryEventBus(buffer_size=len(events) + 1)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "out.jsonl"
            dispatcher = Dispatcher(
                bus,
                [JsonlSink(path, max_bytes=0)],
                stats_interval=0,
                batch_size=BATCH,
                subscription_buffer=len(events) + 1,
            )
            for e in events:
                bus.publish(e)
            _wait_delivered(dispatcher, len(events))
            seconds, cpu = _run_until_acked(dispatcher, len(events))
            written = sum(1 for _ in path.open("rb"))
    finally:
        bus.stop(5.0)
    return len(events) / seconds, cpu * 1e6 / len(events), written


def _wait_delivered(dispatcher: Dispatcher, n: int) -> None:
    """Wait until the memory bus has handed all `n` events to the dispatcher's subscription."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        held = sum(
            getattr(getattr(src, "subscription", None), "qsize", lambda: 0)()
            for src in dispatcher.sources.values()
        )
        if held >= n:
            return
        time.sleep(0.01)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--events", type=int, default=50_000, help="events end to end")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the stage table")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--cpu", type=int, default=None, help="core to pin to (default: last)")
    parser.add_argument("--skip", choices=["redis", "memory", "cli"], action="append", default=[])
    args = parser.parse_args(argv)
    n = 5_000 if args.quick else args.events
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if cpus:
        cpu = cpus[-1] if args.cpu is None else args.cpu
        os.sched_setaffinity(0, {cpu})
        where = f"pinned to CPU {cpu}"
    else:
        where = "not pinned"
    rng = random.Random(12)
    events = [chat_event(i, rng) for i in range(2000)]
    sample = events[0]
    print(
        f"Python {sys.version.split()[0]}; {n} events, {where}; request body "
        f"{len(sample.request_body or b'')} B, response body {len(sample.response_body or b'')} "
        f"B, wire {len(sample.to_json())} B\n"
    )
    rows = stage_table(events, 1 if args.quick else args.rounds)
    print(f"{'stage (µs/event, best of rounds)':<36}{'baseline':>10}{'now':>10}{'ratio':>8}")
    total_old = total_new = 0.0
    for stage, old, new in rows:
        total_new += new
        total_old += old if old is not None else new
        old_s = "-" if old is None else f"{old:.2f}"
        ratio = "" if old is None else f"{new / old:.2f}"
        print(f"{stage:<36}{old_s:>10}{new:>10.2f}{ratio:>8}")
    print(f"{'sum':<36}{total_old:>10.2f}{total_new:>10.2f}{total_new / total_old:>8.2f}")
    label = "(events/s one core could do at that)"
    print(f"{label:<36}{1e6 / total_old:>10,.0f}{1e6 / total_new:>10,.0f}")
    print(f"\n{'redact, payload carrying (µs/event)':<36}{'walk':>10}{'now':>10}{'ratio':>8}")
    for case, walk, now in credential_table(events, 1 if args.quick else args.rounds):
        print(f"{case:<36}{walk:>10.2f}{now:>10.2f}{now / walk:>8.2f}")
    # The memory row's input is made before the freeze, so the collector does not scan the
    # benchmark's own n events over and over (a dispatcher never holds a whole run of them).
    memory_input = [] if "memory" in args.skip else [chat_event(i, rng) for i in range(n)]
    prepare_dispatch_heap()  # as `eventbus dispatch` does before it starts
    print(f"\n{'end to end (one core)':<36}{'events/s':>10}{'CPU µs/ev':>10}{'written':>10}")
    runs: list[tuple[str, str, Callable[[], tuple[float, float, int]]]] = [
        ("redis stream -> jsonl", "redis", lambda: run_redis(n, args.redis_url)),
        ("memory bus -> jsonl", "memory", lambda: run_memory(memory_input)),
    ]
    for label, kind, run in runs:
        if kind in args.skip:
            continue
        with slow_paths() as slow:
            if slow:
                rate, cpu_us, written = run()
                print(f"{label + ' (baseline)':<36}{rate:>10,.0f}{cpu_us:>10.1f}{written:>10}")
        rate, cpu_us, written = run()
        print(f"{label:<36}{rate:>10,.0f}{cpu_us:>10.1f}{written:>10}")
    if "cli" not in args.skip:
        rate, cpu_us, written = run_cli(n, args.redis_url)
        print(f"{'eventbus dispatch (CLI), redis':<36}{rate:>10,.0f}{cpu_us:>10.1f}{written:>10}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
