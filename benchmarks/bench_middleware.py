"""What `EventBusMiddleware` costs a real server, beside the middleware Python users already run.

Starts one uvicorn server process per variant, all in the same run, each serving the same
Starlette chat-completions endpoint, in up to three shapes (`--endpoints`, see `_bench_apps.py`):

- `minimal`: answers at once with a canned completion: the least work per request a server can
  do, so the largest share any middleware can take;
- `minimal-no-id`: the same, answered without an `X-Request-ID` (the middleware generates ids);
- `realistic`: ~20 KB request and response bodies, parsed and encoded, plus ~1.5 ms of CPU work
  in the handler: an LLM proxy's request as the server's CPU sees it;
- `proxy`: forwards the request with httpx to a stand-in LLM API (a raw asyncio responder in
  its own process) and hands the answer back, as an LLM proxy does.

The variants (`--variants`):

- `plain`: no middleware (the baseline);
- `null`: the middleware publishing to a bus that discards: the middleware's own cost;
- `memory`: the middleware on an `InMemoryEventBus` drained by its thread
  (`publish_path="thread"`), with one consumer thread;
- `memory-asyncio`: the same bus drained by the server's event loop (`publish_path="asyncio"`),
  with one consumer task on that loop;
- `redis`: the middleware on the `RedisEventBus` log (when `eventbus_redis` and Redis are there),
  written from the server's event loop through an asyncio connection (the default path);
- `redis-thread`: the same bus written by its thread (`publish_path="thread"`);
- `otel`: OpenTelemetry's ASGI middleware, a span per request, a `BatchSpanProcessor` exporting
  to an exporter that discards;
- `sentry`: sentry-sdk's ASGI middleware, a transaction per request, a transport that discards.

A small keep-alive HTTP/1.1 load generator in this process then measures, in rounds that
rotate the order of the variants:

- throughput: `--connections` connections, `--depth` requests pipelined on each, `--seconds`
  per round; requests per second against `plain` in the same round (median and spread over the
  rounds), and the server process's CPU time per request (all threads), which is what a
  saturated server's throughput is the inverse of. `--load wrk` has wrk make this load instead
  (one thread, `--connections` connections, no pipelining), as an outside load test would;
- latency: one connection, sequential requests: the unloaded median (and its difference to
  `plain`'s) and p99;
- in process: the Starlette app called directly with and without the middleware (best of many
  short runs): the middleware's own µs per request, without network noise.

Bounded (rounds x seconds), loopback only. Prints a table; `--json` for all figures.

    .venv/bin/python benchmarks/bench_middleware.py
    .venv/bin/python benchmarks/bench_middleware.py --rounds 7 --json
    .venv/bin/python benchmarks/bench_middleware.py --endpoints minimal --variants plain,memory
    .venv/bin/python benchmarks/bench_middleware.py --load wrk --connections 16 --seconds 6
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import redis
import uvicorn
from _bench_apps import (
    ENDPOINTS,
    HAVE_REDIS_BUS,
    MINIMAL_RESPONSE,
    PATH,
    REDIS_URL,
    REDIS_VARIANTS,
    VARIANTS,
    asgi_scope,
    build_app,
    request_body,
)
from _proc_cpu import cpu_seconds
from _redis_keys import delete_run_keys

# ------------------------------------------------------------------------------ server side


def _pin(cpu: int) -> None:
    """Keep servers on one CPU and the load generator on another, so they do not compete."""
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {cpu})


class _Upstream(asyncio.Protocol):
    """A stand-in LLM API for the `proxy` endpoint: answers every request with a minimal completion.

    Raw asyncio, so it costs the machine far less per request than the server measured."""

    answer: bytes = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buffer[:head_end].lower()
            start = head.find(b"content-length:")
            length = int(head[start + 15 :].split(b"\r\n", 1)[0]) if start >= 0 else 0
            end = head_end + 4 + length
            if len(self.buffer) < end:
                return
            self.buffer = self.buffer[end:]
            self.transport.write(self.answer)


def serve_upstream() -> None:
    """Run the stand-in LLM API (child process); print its port."""
    body = json.dumps(MINIMAL_RESPONSE).encode()
    _Upstream.answer = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
        b"x-request-id: upstream-1\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
    )

    async def run() -> None:
        server = await asyncio.get_running_loop().create_server(_Upstream, "127.0.0.1", 0)
        print(json.dumps({"port": server.sockets[0].getsockname()[1]}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        server.close()

    asyncio.run(run())


def serve(variant: str, endpoint: str, redis_key: str, upstream: int = 0) -> None:
    """Run one variant's server (child process); print its port, then its stats at exit."""
    if os.environ.get("EVENTBUS_BENCH_PIN") == "1":
        _pin(0)
    app, bus = build_app(variant, endpoint, redis_key, upstream)
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY on accepted connections only for
    # sockets that say they are TCP; without it, Nagle plus delayed ACKs add 40 ms per response.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="on",
        http=os.environ.get("EVENTBUS_BENCH_HTTP", "h11"),
        loop=os.environ.get("EVENTBUS_BENCH_LOOP", "asyncio"),
    )
    server = uvicorn.Server(config)
    print(json.dumps({"port": sock.getsockname()[1]}), flush=True)

    def wait_for_eof() -> None:
        # The parent closes our stdin to stop us: no signal, so uvicorn exits quietly.
        sys.stdin.read()
        server.should_exit = True

    threading.Thread(target=wait_for_eof, daemon=True).start()
    server.run(sockets=[sock])
    stats: dict[str, Any] = {}
    if bus is not None:
        if hasattr(bus, "flush"):
            bus.flush(timeout=10.0)
        published, dropped = bus.stats()
        stats = {"published": published, "dropped": dropped}
        bus.stop()
        if variant in REDIS_VARIANTS:
            # The list, its counter and the writer's batch marker (`key:writer:<id>`).
            client = redis.Redis.from_url(REDIS_URL)
            delete_run_keys(client, redis_key)
    print(json.dumps({"stats": stats}), flush=True)


# ------------------------------------------------------------------------------ client side


def _request_bytes(port: int, endpoint: str) -> bytes:
    body = request_body(endpoint)
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Content-Type: application/json\r\nAuthorization: Bearer sk-bench\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _one_connection(
    port: int,
    endpoint: str,
    deadline: float,
    latencies: list[int],
    max_requests: int | None = None,
    depth: int = 1,
) -> int:
    """Send requests on one keep-alive connection until `deadline` (or `max_requests`).

    `depth` > 1 pipelines that many requests per write: the server still answers them one by
    one, but the load generator spends far less CPU per request, so it is not what limits the
    throughput measured on a 2-core machine. Latencies are only recorded at depth 1.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = _request_bytes(port, endpoint) * depth
    done = 0
    try:
        while time.monotonic() < deadline and (max_requests is None or done < max_requests):
            t0 = time.perf_counter_ns()
            writer.write(request)
            for _ in range(depth):
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                if not head.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(f"unexpected response: {head[:40]!r}")
                await reader.readexactly(length)
            if depth == 1:
                latencies.append(time.perf_counter_ns() - t0)
            done += depth
    finally:
        writer.close()
        await writer.wait_closed()
    return done


async def _load(
    port: int, endpoint: str, connections: int, seconds: float, depth: int = 1
) -> tuple[float, list[int]]:
    latencies: list[int] = []
    start = time.perf_counter()
    deadline = time.monotonic() + seconds
    counts = await asyncio.gather(
        *(
            _one_connection(port, endpoint, deadline, latencies, depth=depth)
            for _ in range(connections)
        )
    )
    return sum(counts) / (time.perf_counter() - start), [sum(counts)]


_WRK_SCRIPT: Final = """
local f = io.open(%r, "rb"); local body = f:read("*a"); f:close()
wrk.method = "POST"; wrk.body = body
wrk.headers["Content-Type"] = "application/json"; wrk.headers["Authorization"] = "Bearer sk-bench"
"""
_WRK_DONE: Final = re.compile(r"(\d+) requests in ([\d.]+)(us|ms|s|m)\b")
_WRK_UNIT: Final = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def _wrk_seconds(seconds: float) -> int:
    """How long wrk runs for `--seconds`: whole seconds, at least one (wrk takes no fractions)."""
    return max(1, round(seconds))


def _wrk_load(port: int, endpoint: str, connections: int, seconds: float) -> tuple[float, int]:
    """Requests/s and requests done by `wrk` (one thread, `connections` keep-alive connections,
    no pipelining) posting the endpoint's request for `seconds` (see `_wrk_seconds`)."""
    with tempfile.TemporaryDirectory() as tmp:
        body = Path(tmp) / "body.json"
        body.write_bytes(request_body(endpoint))
        script = Path(tmp) / "post.lua"
        script.write_text(_WRK_SCRIPT % str(body))
        duration = f"{_wrk_seconds(seconds)}s"
        url = f"http://127.0.0.1:{port}{PATH}"
        command = ["wrk", "-t1", f"-c{connections}", f"-d{duration}", "-s", str(script), url]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    found = _WRK_DONE.search(out)
    if found is None or "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk reported errors or nothing to read:\n{out}")
    count = int(found.group(1))
    return count / (float(found.group(2)) * _WRK_UNIT[found.group(3)]), count


def _cpu_us(pid: int) -> float:
    """CPU time (user + system, all threads) a process has used so far, in microseconds."""
    return cpu_seconds(pid) * 1e6


@dataclass
class Result:
    """Measurements of one variant over all rounds."""

    name: str
    rps: list[float] = field(default_factory=list)
    cpu_per_request: list[float] = field(default_factory=list)
    redis_cpu_per_request: list[float] = field(default_factory=list)  # the Redis server's
    latencies: list[int] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    def p(self, q: float) -> float:
        """Latency percentile in microseconds."""
        data = sorted(self.latencies)
        return data[min(len(data) - 1, int(q * len(data)))] / 1000

    def summary(self) -> dict[str, Any]:
        """Figures for the table and for `--json`."""
        return {
            "variant": self.name,
            "requests_per_s": statistics.median(self.rps),
            "p50_us": self.p(0.50),
            "p99_us": self.p(0.99),
            # Best of the rounds: other work on the machine only ever adds time.
            "server_cpu_us_per_request": min(self.cpu_per_request),
            "redis_cpu_us_per_request": (
                min(self.redis_cpu_per_request) if self.redis_cpu_per_request else None
            ),
            **self.stats,
        }


def _start_server(
    variant: str, endpoint: str, redis_key: str, upstream: int = 0
) -> tuple[subprocess.Popen[str], int]:
    extra = ["--upstream", str(upstream)] if upstream else []
    command = [sys.executable, __file__, "--serve", variant, "--endpoint", endpoint]
    proc = subprocess.Popen(
        [*command, "--redis-key", redis_key, *extra],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(10)
        raise RuntimeError(f"server {variant} did not start (exit {proc.returncode})")
    return proc, int(json.loads(line)["port"])


def _stop_server(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=30)
    for line in out.splitlines():
        if line.startswith('{"stats"'):
            stats: dict[str, Any] = json.loads(line)["stats"]
            return stats
    return {}


def _redis_available() -> bool:
    if not HAVE_REDIS_BUS:
        return False
    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_timeout=1).ping())
    except redis.RedisError:
        return False


def _redis_server_pid() -> int | None:
    """The pid of the Redis server at REDIS_URL when it runs on this machine (its CPU time is
    then readable), else None."""
    try:
        pid = int(redis.Redis.from_url(REDIS_URL, socket_timeout=1).info("server")["process_id"])
        cpu_seconds(pid)
    except (redis.RedisError, KeyError, ValueError, OSError):
        return None
    return pid


async def _asgi_cost(rounds: int, endpoint: str = "minimal") -> dict[str, float]:
    """µs per request of the Starlette app called directly (no server), with and without the
    middleware (on a discarding bus): the middleware's own cost, free of network noise."""
    scope_template = asgi_scope()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Any) -> None:
        return None

    body = request_body(endpoint)
    n = 300 if endpoint == "realistic" else 3000  # the realistic handler spins 1.5 ms
    apps = {v: build_app(v, endpoint, "")[0] for v in ("plain", "null")}
    best = {name: float("inf") for name in apps}
    for _ in range(rounds * 3):
        for name, app in apps.items():
            t0 = time.perf_counter_ns()
            for _ in range(n):
                await app(dict(scope_template), receive, send)
            best[name] = min(best[name], (time.perf_counter_ns() - t0) / n / 1000)
    return best


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    parser.add_argument(
        "--seconds",
        type=float,
        default=1.5,
        help="seconds of throughput load per variant per round (default 1.5)",
    )
    parser.add_argument(
        "--latency-requests",
        type=int,
        default=400,
        help="sequential requests per variant per round for latency (default 400)",
    )
    parser.add_argument(
        "--connections", type=int, default=8, help="concurrent connections (default 8)"
    )
    parser.add_argument(
        "--depth",
        type=int,
        default=4,
        help="requests pipelined per connection for throughput (default 4)",
    )
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma-separated, plain first (default {','.join(VARIANTS)}; the redis variants are "
        "skipped when Redis or RedisEventBus is missing)",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="pin the servers to CPU 0 and the load generator to CPU 1 (steadier on an idle "
        "machine, worse on a shared one)",
    )
    parser.add_argument(
        "--http",
        choices=["h11", "httptools"],
        default="h11",
        help="uvicorn's HTTP parser (default h11; httptools needs `pip install httptools`, as "
        "uvicorn[standard] brings, and makes every request cheaper, so each middleware's share "
        "larger)",
    )
    parser.add_argument(
        "--loop",
        choices=["asyncio", "uvloop"],
        default="asyncio",
        help="uvicorn's event loop (default asyncio; uvloop needs `pip install uvloop`)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--load",
        choices=["python", "wrk"],
        default="python",
        help="what makes the throughput load: this script's own asyncio client, which pipelines "
        "--depth requests per connection (default), or wrk (apt-get install wrk: one thread, "
        "no pipelining, --seconds rounded to whole seconds); latency is always measured by "
        "this script, one request at a time",
    )
    parser.add_argument(
        "--endpoints",
        default="minimal,realistic",
        help="comma-separated: minimal (answers at once: the worst case for the middleware's "
        "share), minimal-no-id (the same without an X-Request-ID: the middleware makes ids), "
        "realistic (20 KB bodies, 1.5 ms of CPU work) and proxy (forwards to a "
        "stand-in LLM API with httpx, as a proxy does); default minimal,realistic",
    )
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", default="minimal", help=argparse.SUPPRESS)
    parser.add_argument("--serve-upstream", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--upstream", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--redis-key", default="", help=argparse.SUPPRESS)
    return parser.parse_args()


def _measure(
    args: argparse.Namespace, variants: list[str], endpoint: str, upstream: int
) -> dict[str, Result]:
    redis_key = f"eventbus-bench:{uuid.uuid4().hex[:8]}:events"
    if args.pin:
        os.environ["EVENTBUS_BENCH_PIN"] = "1"  # inherited by the servers
    os.environ["EVENTBUS_BENCH_HTTP"] = args.http
    os.environ["EVENTBUS_BENCH_LOOP"] = args.loop
    servers = {v: _start_server(v, endpoint, redis_key, upstream) for v in variants}
    if args.pin:
        _pin(1)
    results = {v: Result(v) for v in variants}
    # The Redis server's CPU per request, where it can be read: work the server process does
    # not see, which shares the machine's cores with it and the load generator.
    redis_pid = _redis_server_pid() if set(variants) & set(REDIS_VARIANTS) else None
    try:
        for v in variants:  # warm up: imports, first-request paths, caches
            asyncio.run(_load(servers[v][1], endpoint, args.connections, 0.3, args.depth))
        for n in range(args.rounds):
            # Rotate the order each round, so no variant always runs first or last.
            order = variants[n % len(variants) :] + variants[: n % len(variants)]
            for v in order:
                proc, port = servers[v]
                cpu_before = _cpu_us(proc.pid)
                redis_before = _cpu_us(redis_pid) if redis_pid and v in REDIS_VARIANTS else None
                if args.load == "wrk":
                    rps, count = _wrk_load(port, endpoint, args.connections, args.seconds)
                else:
                    rps, (count,) = asyncio.run(
                        _load(port, endpoint, args.connections, args.seconds, args.depth)
                    )
                results[v].cpu_per_request.append((_cpu_us(proc.pid) - cpu_before) / count)
                if redis_before is not None and redis_pid:
                    spent = _cpu_us(redis_pid) - redis_before
                    results[v].redis_cpu_per_request.append(spent / count)
                results[v].rps.append(rps)
            for v in order:
                lat: list[int] = []
                deadline = time.monotonic() + 60
                asyncio.run(
                    _one_connection(servers[v][1], endpoint, deadline, lat, args.latency_requests)
                )
                results[v].latencies.extend(lat)
    finally:
        for v, (proc, _port) in servers.items():
            results[v].stats = _stop_server(proc)
    return results


def _rows(results: dict[str, Result], variants: list[str]) -> list[dict[str, Any]]:
    base = results[variants[0]]
    rows = []
    for v in variants:
        row = results[v].summary()
        # Ratio per round against the baseline of the same round, then the median: drift of
        # a shared machine between rounds cancels out.
        ratios = [r / b for r, b in zip(results[v].rps, base.rps, strict=True)]
        row["throughput_ratio"] = statistics.median(ratios)
        row["throughput_ratio_spread"] = [min(ratios), max(ratios)]
        row["added_p50_us"] = row["p50_us"] - base.p(0.50)
        # A saturated server's throughput is 1 / (CPU per request): the CPU ratio is the
        # throughput ratio without the noise of whatever else runs on the machine.
        row["cpu_throughput_ratio"] = min(base.cpu_per_request) / row["server_cpu_us_per_request"]
        rows.append(row)
    return rows


def _start_upstream() -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve-upstream"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, int(json.loads(proc.stdout.readline())["port"])


_WHAT: Final = {
    "minimal": "answered at once",
    "minimal-no-id": "answered at once, no X-Request-ID (generated)",
    "realistic": "20 KB bodies each way, 1.5 ms of CPU work",
    "proxy": "forwarded upstream with httpx",
}


def _print_table(args: argparse.Namespace, endpoint: str, rows: list[dict[str, Any]]) -> None:
    load = (
        f"wrk, {args.connections} connections, {args.rounds} rounds x "
        f"{_wrk_seconds(args.seconds)} s"
        if args.load == "wrk"
        else f"{args.connections} connections x {args.depth} pipelined, {args.rounds} rounds x "
        f"{args.seconds:g} s"
    )
    print(
        f"\n[{endpoint}] uvicorn ({args.http}, {args.loop}) + Starlette, POST {PATH} "
        f"{_WHAT[endpoint]}; throughput: "
        f"{load}; latency: 1 connection, {args.rounds} x {args.latency_requests} "
        f"requests; {os.cpu_count()} CPUs{', server and client pinned apart' if args.pin else ''}"
    )
    print(
        f"{'variant':<14} {'req/s':>7} {'ratio':>6} {'spread':>11} {'CPU µs/req':>10} "
        f"{'CPU ratio':>9} {'Redis µs':>8} {'p50 µs':>7} {'+p50 µs':>8} {'p99 µs':>7} "
        f"{'events':>7} {'dropped':>7}"
    )
    for row in rows:
        low, high = row["throughput_ratio_spread"]
        print(
            f"{row['variant']:<14} {row['requests_per_s']:>7.0f} {row['throughput_ratio']:>6.3f} "
            f"{low:>5.3f}-{high:<5.3f} "
            f"{row['server_cpu_us_per_request']:>10.1f} {row['cpu_throughput_ratio']:>9.3f} "
            f"{_shown_us(row['redis_cpu_us_per_request']):>8} "
            f"{row['p50_us']:>7.0f} {row['added_p50_us']:>+8.0f} {row['p99_us']:>7.0f} "
            f"{row.get('published', '-'):>7} {row.get('dropped', '-'):>7}"
        )


def _shown_us(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def main() -> int:
    """Run the benchmark (or, with --serve, one server)."""
    args = _parse_args()
    if args.serve_upstream:
        serve_upstream()
        return 0
    if args.serve:
        serve(args.serve, args.endpoint, args.redis_key, args.upstream)
        return 0
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    endpoints = [e.strip() for e in args.endpoints.split(",") if e.strip()]
    if unknown := set(endpoints) - set(ENDPOINTS):
        raise SystemExit(f"unknown endpoint(s) {sorted(unknown)}: use {', '.join(ENDPOINTS)}")
    if unknown := set(variants) - set(VARIANTS):
        raise SystemExit(f"unknown variant(s) {sorted(unknown)}: use {', '.join(VARIANTS)}")
    if any(v in REDIS_VARIANTS for v in variants) and not _redis_available():
        variants = [v for v in variants if v not in REDIS_VARIANTS]
        print("(redis variants skipped: no Redis at", REDIS_URL, "or no RedisEventBus)")
    tables: dict[str, list[dict[str, Any]]] = {}
    upstream = _start_upstream() if "proxy" in endpoints else None
    try:
        for endpoint in endpoints:
            port = upstream[1] if upstream is not None and endpoint == "proxy" else 0
            tables[endpoint] = _rows(_measure(args, variants, endpoint, port), variants)
    finally:
        if upstream is not None:
            upstream[0].communicate(timeout=30)
    asgi = {e: asyncio.run(_asgi_cost(args.rounds, e)) for e in endpoints if e != "proxy"}
    if args.json:
        settings = {k: getattr(args, k) for k in ("rounds", "seconds", "connections", "depth")}
        asgi_figures = {
            "asgi_us_per_request": asgi,
            "middleware_added_us": {e: a["null"] - a["plain"] for e, a in asgi.items()},
        }
        print(
            json.dumps(
                {"endpoints": tables, **asgi_figures, **settings, "cpus": os.cpu_count()},
                indent=2,
            )
        )
        return 0
    for endpoint, rows in tables.items():
        _print_table(args, endpoint, rows)
    print(
        "\nplain: no middleware; null: the middleware publishing to a bus that discards (its own "
        "cost); memory: InMemoryEventBus drained by a thread, one consumer thread; "
        "memory-asyncio: drained by the server's loop, one consumer task; redis: RedisEventBus "
        "log; otel: OpenTelemetry ASGI + BatchSpanProcessor (discarding exporter); sentry: "
        "sentry-sdk ASGI, tracing every request (discarding transport).\n"
        "ratio: median over rounds of req/s against plain in the same round; spread: the lowest "
        "and highest round. CPU µs/req: the server process's CPU time (all threads) per request, "
        "best round; CPU ratio: plain's over this variant's, i.e. the throughput ratio of a "
        "saturated server, which other load on the machine disturbs far less than req/s. "
        "Redis µs: the Redis server's CPU time per request (redis variants, when the server "
        "runs on this machine), best round: work on the machine's other cores"
    )
    for endpoint, rows in tables.items():
        if endpoint not in asgi:
            continue
        plain_cpu = rows[0]["server_cpu_us_per_request"]
        cost = asgi[endpoint]
        added = cost["null"] - cost["plain"]
        print(
            f"in process [{endpoint}] (Starlette app called directly, best of {args.rounds * 3} "
            f"runs): {cost['plain']:.1f} µs/request plain, {cost['null']:.1f} with the "
            f"middleware: +{added:.1f} µs, {added / plain_cpu:.1%} of the plain server's "
            f"{plain_cpu:.0f} µs CPU per request"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
