"""What `EventBusMiddleware` costs a real server: uvicorn on loopback, with and without it.

Starts one uvicorn server process per variant, all in the same run, each serving the same
Starlette chat-completions endpoint, in two shapes (`--endpoints`):

- `minimal`: answers at once with a canned completion: the least work per request a server can
  do, so the largest share the middleware can take;
- `proxy`: forwards the request with httpx to a stand-in LLM API (a raw asyncio responder in
  its own process) and hands the answer back, as an LLM proxy does.

The variants:

- `plain`: no middleware (the baseline);
- `null`: the middleware publishing to a bus that discards: the middleware's own cost;
- `memory`: the middleware on an `InMemoryEventBus` with one consumer thread;
- `redis`: the middleware on the `RedisEventBus` log (when `eventbus_redis` and Redis are there).

A small keep-alive HTTP/1.1 load generator in this process then measures, in rounds that
rotate the order of the variants:

- throughput: `--connections` connections, `--depth` requests pipelined on each, `--seconds`
  per round; requests per second, and the server process's CPU time per request (all threads),
  which is what a saturated server's throughput is the inverse of;
- latency: one connection, sequential requests: the unloaded median and p99;
- in process: the Starlette app called directly with and without the middleware (best of many
  short runs): the middleware's own µs per request, without network noise.

Bounded (rounds x seconds), loopback only. Prints a table; `--json` for all figures.

    .venv/bin/python benchmarks/bench_middleware.py
    .venv/bin/python benchmarks/bench_middleware.py --rounds 7 --json
    .venv/bin/python benchmarks/bench_middleware.py --endpoints minimal
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Final

import httpx
import redis
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from eventbus_core import EventBusMiddleware
from eventbus_memory import InMemoryEventBus

try:
    from eventbus_redis import RedisEventBus

    HAVE_REDIS_BUS = True
except ImportError:  # the Redis backend is optional: its variant is skipped without it
    HAVE_REDIS_BUS = False

REQUEST_BODY = json.dumps(
    {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Say hello to the benchmark, please." * 3}],
        "temperature": 0.2,
    }
).encode()

RESPONSE = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 1_700_000_000,
    "model": "gpt-4o-mini",
    "choices": [
        {
            "index": 0,
            "finish_reason": "stop",
            "message": {"role": "assistant", "content": "Hello, benchmark! " * 12},
        }
    ],
    "usage": {"prompt_tokens": 31, "completion_tokens": 36, "total_tokens": 67},
}

PATH = "/v1/chat/completions"
REDIS_URL = os.environ.get("EVENTBUS_BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")


# ------------------------------------------------------------------------------ server side


def _build_app(variant: str, redis_key: str, upstream: int = 0) -> tuple[Any, Any]:
    async def completions(request: Request) -> JSONResponse:
        await request.body()
        return JSONResponse(RESPONSE, headers={"x-request-id": uuid.uuid4().hex})

    llm: httpx.AsyncClient | None = None

    async def proxied(request: Request) -> Response:
        # What an LLM proxy does: forward the request upstream, hand the answer back.
        nonlocal llm
        if llm is None:
            llm = httpx.AsyncClient(base_url=f"http://127.0.0.1:{upstream}", timeout=30)
        answer = await llm.post(
            PATH, content=await request.body(), headers={"content-type": "application/json"}
        )
        return Response(
            answer.content,
            status_code=answer.status_code,
            headers={"x-request-id": answer.headers.get("x-request-id", "")},
            media_type="application/json",
        )

    endpoint = proxied if upstream else completions
    app = Starlette(routes=[Route(PATH, endpoint, methods=["POST"])])
    bus: Any = None
    if variant == "null":

        class _Null:
            def publish(self, event: Any) -> None:
                pass

            def stats(self) -> tuple[int, int]:
                return (0, 0)

            def stop(self) -> None:
                pass

        bus = _Null()
    if variant == "memory":
        bus = InMemoryEventBus(buffer_size=10_000)
    elif variant == "redis":
        client = redis.Redis.from_url(REDIS_URL)
        bus = RedisEventBus.log(client, redis_key, ttl=600, max_len=10_000)
    if bus is not None:
        app.add_middleware(EventBusMiddleware, bus=bus)
    return app, bus


def _pin(cpu: int) -> None:
    """Keep servers on one CPU and the load generator on another, so they do not compete."""
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {cpu})


def _drain(bus: Any) -> Any:
    """A consumer as a dispatcher would be: takes batches off a subscription in a thread."""
    sub = bus.subscribe("bench-consumer")

    def run() -> None:
        for _ in sub.batches(1000):
            pass

    thread = threading.Thread(target=run, name="bench-consumer", daemon=True)
    thread.start()
    return sub


class _Upstream(asyncio.Protocol):
    """A stand-in LLM API for the `proxy` endpoint: answers every request with `RESPONSE`.

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
    body = json.dumps(RESPONSE).encode()
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


def serve(variant: str, redis_key: str, upstream: int = 0) -> None:
    """Run one variant's server (child process); print its port, then its stats at exit."""
    if os.environ.get("EVENTBUS_BENCH_PIN") == "1":
        _pin(0)
    app, bus = _build_app(variant, redis_key, upstream)
    if variant == "memory":
        _drain(bus)
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY on accepted connections only for
    # sockets that say they are TCP; without it, Nagle plus delayed ACKs add 40 ms per response.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
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
        if variant == "redis":
            # The list, its counter and the writer's batch marker (`key:writer:<id>`).
            client = redis.Redis.from_url(REDIS_URL)
            client.delete(*client.scan_iter(match=f"{redis_key}*", count=1000), redis_key)
    print(json.dumps({"stats": stats}), flush=True)


# ------------------------------------------------------------------------------ client side


def _request_bytes(port: int) -> bytes:
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Content-Type: application/json\r\nAuthorization: Bearer sk-bench\r\n"
        f"Content-Length: {len(REQUEST_BODY)}\r\n\r\n"
    )
    return head.encode() + REQUEST_BODY


async def _one_connection(
    port: int,
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
    request = _request_bytes(port) * depth
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
    port: int, connections: int, seconds: float, depth: int = 1
) -> tuple[float, list[int]]:
    latencies: list[int] = []
    start = time.perf_counter()
    deadline = time.monotonic() + seconds
    counts = await asyncio.gather(
        *(_one_connection(port, deadline, latencies, depth=depth) for _ in range(connections))
    )
    return sum(counts) / (time.perf_counter() - start), [sum(counts)]


_TICK_US: Final = 1_000_000 / os.sysconf("SC_CLK_TCK")


def _cpu_us(pid: int) -> float:
    """CPU time (user + system, all threads) a process has used so far, in microseconds.

    Unlike requests per second, this does not move when other work shares the machine.
    """
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * _TICK_US


@dataclass
class Result:
    """Measurements of one variant over all rounds."""

    name: str
    rps: list[float] = field(default_factory=list)
    cpu_per_request: list[float] = field(default_factory=list)
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
            **self.stats,
        }


def _start_server(
    variant: str, redis_key: str, upstream: int = 0
) -> tuple[subprocess.Popen[str], int]:
    extra = ["--upstream", str(upstream)] if upstream else []
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", variant, "--redis-key", redis_key, *extra],
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


async def _asgi_cost(rounds: int, n: int = 3000) -> dict[str, float]:
    """µs per request of the Starlette app called directly (no server), with and without the
    middleware (on a discarding bus): the middleware's own cost, free of network noise."""
    scope_template: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": PATH,
        "raw_path": PATH.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 2),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": REQUEST_BODY, "more_body": False}

    async def send(message: Any) -> None:
        return None

    apps = {"plain": _build_app("plain", "")[0], "null": _build_app("null", "")[0]}
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
        default="plain,null,memory,redis",
        help="comma-separated, plain first (default plain,null,memory,redis; redis is "
        "skipped when Redis or RedisEventBus is missing)",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="pin the servers to CPU 0 and the load generator to CPU 1 (steadier on an idle "
        "machine, worse on a shared one)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--endpoints",
        default="minimal,proxy",
        help="comma-separated: minimal (answers at once: the worst case for the middleware's "
        "share) and proxy (forwards to a stand-in LLM API with httpx, as a proxy does)",
    )
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--serve-upstream", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--upstream", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--redis-key", default="", help=argparse.SUPPRESS)
    return parser.parse_args()


def _measure(args: argparse.Namespace, variants: list[str], upstream: int) -> dict[str, Result]:
    redis_key = f"eventbus-bench:{uuid.uuid4().hex[:8]}:events"
    if args.pin:
        os.environ["EVENTBUS_BENCH_PIN"] = "1"  # inherited by the servers
    servers = {v: _start_server(v, redis_key, upstream) for v in variants}
    if args.pin:
        _pin(1)
    results = {v: Result(v) for v in variants}
    try:
        for v in variants:  # warm up: imports, first-request paths, caches
            asyncio.run(_load(servers[v][1], args.connections, 0.3, args.depth))
        for n in range(args.rounds):
            # Rotate the order each round, so no variant always runs first or last.
            order = variants[n % len(variants) :] + variants[: n % len(variants)]
            for v in order:
                proc, port = servers[v]
                cpu_before = _cpu_us(proc.pid)
                rps, (count,) = asyncio.run(_load(port, args.connections, args.seconds, args.depth))
                results[v].cpu_per_request.append((_cpu_us(proc.pid) - cpu_before) / count)
                results[v].rps.append(rps)
            for v in order:
                lat: list[int] = []
                deadline = time.monotonic() + 60
                asyncio.run(_one_connection(servers[v][1], deadline, lat, args.latency_requests))
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


def _print_table(args: argparse.Namespace, endpoint: str, rows: list[dict[str, Any]]) -> None:
    what = "forwarded upstream with httpx" if endpoint == "proxy" else "answered at once"
    print(
        f"\n[{endpoint}] uvicorn (h11) + Starlette, POST {PATH} {what}; throughput: "
        f"{args.connections} connections x {args.depth} pipelined, {args.rounds} rounds x "
        f"{args.seconds:g} s; latency: 1 connection, {args.rounds} x {args.latency_requests} "
        f"requests; {os.cpu_count()} CPUs{', server and client pinned apart' if args.pin else ''}"
    )
    print(
        f"{'variant':<8} {'req/s':>7} {'ratio':>6} {'CPU µs/req':>10} {'CPU ratio':>9} "
        f"{'p50 µs':>7} {'+p50 µs':>8} {'p99 µs':>7} {'events':>7} {'dropped':>7}"
    )
    for row in rows:
        print(
            f"{row['variant']:<8} {row['requests_per_s']:>7.0f} {row['throughput_ratio']:>6.3f} "
            f"{row['server_cpu_us_per_request']:>10.1f} {row['cpu_throughput_ratio']:>9.3f} "
            f"{row['p50_us']:>7.0f} {row['added_p50_us']:>+8.0f} {row['p99_us']:>7.0f} "
            f"{row.get('published', '-'):>7} {row.get('dropped', '-'):>7}"
        )


def main() -> int:
    """Run the benchmark (or, with --serve, one server)."""
    args = _parse_args()
    if args.serve_upstream:
        serve_upstream()
        return 0
    if args.serve:
        serve(args.serve, args.redis_key, args.upstream)
        return 0
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    endpoints = [e.strip() for e in args.endpoints.split(",") if e.strip()]
    if unknown := set(endpoints) - {"minimal", "proxy"}:
        raise SystemExit(f"unknown endpoint(s) {sorted(unknown)}: use minimal and/or proxy")
    if "redis" in variants and not _redis_available():
        variants.remove("redis")
        print("(redis variant skipped: no Redis at", REDIS_URL, "or no RedisEventBus)")
    tables: dict[str, list[dict[str, Any]]] = {}
    upstream = _start_upstream() if "proxy" in endpoints else None
    try:
        for endpoint in endpoints:
            port = upstream[1] if upstream is not None and endpoint == "proxy" else 0
            tables[endpoint] = _rows(_measure(args, variants, port), variants)
    finally:
        if upstream is not None:
            upstream[0].communicate(timeout=30)
    asgi = asyncio.run(_asgi_cost(args.rounds))
    added = asgi["null"] - asgi["plain"]
    if args.json:
        settings = {k: getattr(args, k) for k in ("rounds", "seconds", "connections", "depth")}
        asgi_figures = {"asgi_us_per_request": asgi, "middleware_added_us": added}
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
        "cost); memory: InMemoryEventBus with one consumer thread; redis: RedisEventBus log.\n"
        "ratio: median over rounds of req/s against plain in the same round. CPU µs/req: the "
        "server process's CPU time (all threads) per request, best round; CPU ratio: plain's "
        "over this variant's, i.e. the throughput ratio of a saturated server, which other "
        "load on the machine disturbs far less than req/s"
    )
    for endpoint, rows in tables.items():
        plain_cpu = rows[0]["server_cpu_us_per_request"]
        print(
            f"in process (Starlette app called directly, best of {args.rounds * 3} x 3000): "
            f"{asgi['plain']:.1f} µs/request plain, {asgi['null']:.1f} with the middleware: "
            f"+{added:.1f} µs, {added / plain_cpu:.1%} of the [{endpoint}] plain server's "
            f"{plain_cpu:.0f} µs CPU per request"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
