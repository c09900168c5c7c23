"""What `EventBusWSGIMiddleware` costs a WSGI application, beside the WSGI middleware Python
users already run (OpenTelemetry's, sentry-sdk's).

Each variant runs in a process of its own (sentry-sdk and OpenTelemetry set themselves up per
process), pinned to one core, serving the same plain WSGI chat-completions endpoint called
directly with a WSGI environ, as a server would call it, response read and closed:

- `minimal`: answers at once with a canned completion (~0.3 KB each way): the largest share any
  middleware can take;
- `realistic`: ~20 KB request and response bodies, the request parsed and the response encoded,
  plus ~1.5 ms of CPU work.

The variants: `plain` (no middleware), `null` (the middleware publishing to a bus that
discards: its own cost), `memory` (an `InMemoryEventBus`, drained by its thread, with one
consumer thread), `redis` (the `RedisEventBus` log, written to the local Redis by its thread:
the path of a sync application), `otel` (OpenTelemetry's WSGI middleware, a span per request, a
`BatchSpanProcessor` exporting to nowhere) and `sentry` (sentry-sdk's WSGI middleware, a
transaction per request, a transport that discards).

The figure is CPU time per request of the whole process (every thread: the bus's drain and
write threads count), measured over `--requests` requests per round, the rounds rotating the
order of the variants; a round ends with `bus.flush()`, so the bus's own work is inside it.
`ratio` is plain's CPU per request over the variant's (best round): the throughput ratio of a
worker whose CPU is saturated by the application alone. A real server adds its own CPU per
request (parsing, sockets: gunicorn's sync worker ~150-300 µs), so in a served application the
middleware's share is smaller than shown here.

    .venv/bin/python benchmarks/bench_wsgi.py
    .venv/bin/python benchmarks/bench_wsgi.py --rounds 7 --requests 3000 --json
    .venv/bin/python benchmarks/bench_wsgi.py --instructions 1000   # callgrind, needs valgrind

`--instructions N` counts instead the instructions per request (all threads) under valgrind's
callgrind, from runs of N and 2N requests: figures that do not move with the machine's load
(the redis variant is left out: its count is mostly the socket's).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any, Final

from _bench_apps import (
    MINIMAL_RESPONSE,
    PATH,
    REALISTIC_RESPONSE,
    REALISTIC_WORK,
    REDIS_URL,
    discarding_tracer_provider,
    init_discarding_sentry,
    request_body,
)
from _redis_keys import delete_run_keys

VARIANTS: Final = ("plain", "null", "memory", "redis", "otel", "sentry")
ENDPOINTS: Final = ("minimal", "realistic")
StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def _work(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def endpoint_app(endpoint: str) -> WSGIApp:
    """The plain WSGI endpoint: reads the request, answers a completion."""

    def minimal(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"]))
        body = json.dumps(MINIMAL_RESPONSE).encode()
        start_response(
            "200 OK",
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(body))),
                ("X-Request-Id", uuid.uuid4().hex),
            ],
        )
        return [body]

    def realistic(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        started = time.thread_time()
        chat = json.loads(environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"])))
        body = json.dumps(dict(REALISTIC_RESPONSE, model=chat["model"])).encode()
        start_response(
            "200 OK",
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(body))),
                ("X-Request-Id", uuid.uuid4().hex),
            ],
        )
        _work(REALISTIC_WORK - (time.thread_time() - started))
        return [body]

    return realistic if endpoint == "realistic" else minimal


class _NullBus:
    def publish(self, event: Any) -> None:
        pass


def _otel(app: WSGIApp) -> WSGIApp:
    from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware

    wrapped: WSGIApp = OpenTelemetryMiddleware(app, tracer_provider=discarding_tracer_provider())
    return wrapped


def _sentry(app: WSGIApp) -> WSGIApp:
    from sentry_sdk.integrations.wsgi import SentryWsgiMiddleware

    init_discarding_sentry()
    wrapped: WSGIApp = SentryWsgiMiddleware(app)
    return wrapped


def build(variant: str, endpoint: str, redis_key: str) -> tuple[WSGIApp, Any]:
    """The application of `variant` and its bus (None without one)."""
    from eventbus_core import EventBusWSGIMiddleware

    app = endpoint_app(endpoint)
    bus: Any = None
    if variant == "null":
        bus = _NullBus()
    elif variant == "memory":
        import threading

        from eventbus_memory import InMemoryEventBus

        bus = InMemoryEventBus(buffer_size=10_000, publish_path="thread")
        sub = bus.subscribe("bench-consumer")

        def consume() -> None:
            for _ in sub.batches(1000):
                pass

        threading.Thread(target=consume, daemon=True).start()
    elif variant == "redis":
        import redis

        from eventbus_redis import RedisEventBus

        client = redis.Redis.from_url(REDIS_URL)
        bus = RedisEventBus.log(client, redis_key, ttl=600, max_len=10_000, publish_path="thread")
    if bus is not None:
        return EventBusWSGIMiddleware(app, bus), bus
    if variant == "otel":
        return _otel(app), None
    if variant == "sentry":
        return _sentry(app), None
    return app, None


def _environ(body: bytes) -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "POST",
        "SCRIPT_NAME": "",
        "PATH_INFO": PATH,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_HOST": "127.0.0.1:8000",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }


def _server(variant: str, endpoint: str, redis_key: str) -> tuple[Callable[[int], None], Any]:
    """`serve(count)`, which calls the variant's app `count` times as a server would (ending with
    the bus's `flush()`), and the bus."""
    app, bus = build(variant, endpoint, redis_key)
    body = request_body(endpoint)

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Callable[[bytes], None]:
        return lambda data: None

    def serve(count: int) -> None:
        for _ in range(count):
            result = app(_environ(body), start_response)
            for _chunk in result:
                pass
            close = getattr(result, "close", None)
            if close is not None:
                close()
        flush = getattr(bus, "flush", None)
        if flush is not None:
            flush(30)

    return serve, bus


def child(variant: str, endpoint: str, redis_key: str) -> None:
    """Serve rounds on request: read a count on stdin, answer `cpu_seconds wall_seconds`."""
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {1})
    serve, bus = _server(variant, endpoint, redis_key)
    serve(200)  # warm up: imports, caches, connections
    print("ready", flush=True)
    for line in sys.stdin:
        count = int(line)
        cpu, wall = time.process_time(), time.perf_counter()
        serve(count)
        print(f"{time.process_time() - cpu} {time.perf_counter() - wall}", flush=True)
    if bus is not None and hasattr(bus, "stop"):
        bus.stop()


def counted_run(variant: str, n: int) -> None:
    """The run callgrind counts: warm up, then `n` requests to the minimal endpoint."""
    serve, bus = _server(variant, "minimal", "unused")
    serve(200)
    serve(n)
    if bus is not None and hasattr(bus, "stop"):
        bus.stop()


def instructions(variants: list[str], n: int) -> None:
    """Print instructions per request of each variant (no Redis: its figures are the
    socket's), from callgrind runs of `n` and `2 n` requests."""
    import shutil

    from _callgrind import count_instructions

    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("--instructions needs valgrind (apt-get install valgrind)")
    print(
        f"instructions per request, minimal endpoint in process, all threads "
        f"({n} vs {2 * n} requests under callgrind, difference / {n})"
    )
    base = None
    for variant in variants:
        if variant == "redis":
            continue
        counts = [
            sum(count_instructions(valgrind, __file__, ["--counted-run", variant, str(size)]))
            for size in (n, 2 * n)
        ]
        per_request = (counts[1] - counts[0]) / n
        base = per_request if variant == "plain" else base
        added = "" if base is None else f"  {per_request - base:+,.0f} vs plain"
        print(f"  {variant:<8} {per_request:>10,.0f}{added}")


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=2000, help="requests per round")
    parser.add_argument("--endpoints", default=",".join(ENDPOINTS))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--json", action="store_true", help="print every figure as JSON")
    parser.add_argument(
        "--instructions",
        type=int,
        metavar="N",
        help="instead: instructions per request under valgrind's callgrind (N and 2N requests)",
    )
    parser.add_argument("--child", nargs=3, metavar=("VARIANT", "ENDPOINT", "KEY"))
    parser.add_argument("--counted-run", nargs=2, metavar=("VARIANT", "N"))
    return parser.parse_args()


def _redis_up() -> bool:
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except Exception:
        return False
    return True


def measure(endpoint: str, variants: list[str], rounds: int, requests: int) -> dict[str, Any]:
    key = f"eventbus-wsgi-bench:{uuid.uuid4().hex[:8]}"
    children = {
        v: subprocess.Popen(
            [sys.executable, __file__, "--child", v, endpoint, key],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for v in variants
    }
    cpu: dict[str, list[float]] = {v: [] for v in variants}
    try:
        for proc in children.values():
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
        for r in range(rounds):
            order = variants[r % len(variants) :] + variants[: r % len(variants)]
            for v in order:
                proc = children[v]
                assert proc.stdin is not None
                assert proc.stdout is not None
                proc.stdin.write(f"{requests}\n")
                proc.stdin.flush()
                seconds = float(proc.stdout.readline().split()[0])
                cpu[v].append(seconds / requests * 1e6)
    finally:
        for proc in children.values():
            if proc.stdin is not None:
                proc.stdin.close()
            proc.wait(60)
        if "redis" in variants:
            import redis

            delete_run_keys(redis.Redis.from_url(REDIS_URL), key)
    base = min(cpu["plain"]) if "plain" in cpu else None
    rows = {}
    for v in variants:
        best = min(cpu[v])
        rows[v] = {
            "cpu_us": best,
            "added_us": None if base is None else best - base,
            "ratio": None if base is None else base / best,
            "rounds_us": cpu[v],
        }
    return rows


def main() -> int:
    args = _parse_args()
    if args.child:
        child(*args.child)
        return 0
    if args.counted_run:
        counted_run(args.counted_run[0], int(args.counted_run[1]))
        return 0
    variants = [v for v in args.variants.split(",") if v]
    if args.instructions:
        instructions(variants, args.instructions)
        return 0
    if "redis" in variants and not _redis_up():
        print(f"# no Redis at {REDIS_URL}: the redis variant is left out", file=sys.stderr)
        variants.remove("redis")
    results = {}
    for endpoint in args.endpoints.split(","):
        rows = measure(endpoint, variants, args.rounds, args.requests)
        results[endpoint] = rows
        if args.json:
            continue
        print(
            f"[{endpoint}] WSGI app called in process, {args.rounds} rounds x {args.requests} "
            "requests, CPU of all threads per request (best round), pinned to one core"
        )
        print(f"{'variant':<10} {'CPU µs/req':>11} {'added µs':>9} {'ratio':>7}  rounds µs")
        for v, row in rows.items():
            added = "-" if row["added_us"] is None else f"{row['added_us']:+.1f}"
            ratio = "-" if row["ratio"] is None else f"{row['ratio']:.3f}"
            spread = " ".join(f"{x:.0f}" for x in row["rounds_us"])
            print(f"{v:<10} {row['cpu_us']:>11.1f} {added:>9} {ratio:>7}  {spread}")
        print()
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
