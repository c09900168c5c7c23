"""Instructions per request of the middleware benchmark's app, called in process, under callgrind.

`bench_middleware.py` measures a real server, whose figures move with whatever else the machine
runs. This counts CPU instructions instead, which do not: the Starlette app of each variant
(`_bench_apps.py`, endpoint `minimal`, or `--endpoint minimal-no-id`, whose responses carry
no `X-Request-ID`, so that the middleware generates ids) is called directly in one event loop,
`n` and `2 n` times, under `valgrind --tool=callgrind`, and the difference is divided by `n`.
Everything the process does per request is counted, on every thread: the middleware, the bus's
drain and fan-out, the consumer (a thread for `memory`, a task for `memory-asyncio`), and the
hand-overs between threads. Every 20 requests the loop sleeps 0.5 ms, as a server between
bursts. `redis` (when `eventbus_redis` is installed and Redis answers at
`EVENTBUS_BENCH_REDIS_URL`) writes the log from the loop through its asyncio connection, to a
key of its own, deleted afterwards; the Redis server's own work is another process's, not
counted here.

    .venv/bin/python benchmarks/bench_middleware_instructions.py      # needs valgrind
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from _bench_apps import REDIS_URL, asgi_scope, build_app, request_body
from _redis_keys import delete_run_keys

VARIANTS = ("plain", "null", "memory", "memory-asyncio", "redis")


def _redis_client() -> Any:
    """A client of the benchmark's Redis, or None without `eventbus_redis` or a server."""
    try:
        import redis

        import eventbus_redis  # noqa: F401
    except ImportError:
        return None
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError:
        return None
    return client


def _serve_in_process(variant: str, n: int, endpoint: str, redis_key: str) -> None:
    scope = asgi_scope()
    body = request_body(endpoint)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Any) -> None:
        return None

    async def startup(app: Any) -> asyncio.Task[None]:
        messages = iter([{"type": "lifespan.startup"}])

        async def lifespan_receive() -> dict[str, Any]:
            try:
                return next(messages)
            except StopIteration:
                await asyncio.Event().wait()  # shutdown never comes: the run ends first
                raise

        task = asyncio.create_task(app({"type": "lifespan"}, lifespan_receive, send))
        await asyncio.sleep(0.01)
        return task

    async def main() -> None:
        app, bus = build_app(variant, endpoint, redis_key)
        lifespan = await startup(app)  # starts the variant's consumer
        for i in range(n):
            await app(dict(scope), receive, send)
            if i % 20 == 0:
                await asyncio.sleep(0.0005)
        if hasattr(bus, "flush"):
            await asyncio.to_thread(bus.flush, 5)
        lifespan.cancel()

    asyncio.run(main())


def _instructions(variant: str, n: int, endpoint: str, workdir: str, redis_key: str) -> int:
    out = Path(workdir) / f"callgrind.{variant}.{n}"
    command = [sys.executable, __file__, "--run", variant, "--n", str(n), "--endpoint", endpoint]
    command += ["--redis-key", redis_key]
    subprocess.run(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *command],
        check=True,
        capture_output=True,
    )
    match = re.search(r"^(?:summary|totals):\s+(\d+)", out.read_text(errors="replace"), re.M)
    if match is None:
        raise RuntimeError(f"no instruction total in {out}")
    return int(match.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=1000, help="requests (default 1000)")
    parser.add_argument(
        "--endpoint",
        choices=("minimal", "minimal-no-id"),
        default="minimal",
        help="minimal (responses carry an X-Request-ID) or minimal-no-id (the middleware "
        "generates each id); default minimal",
    )
    parser.add_argument("--run", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--redis-key", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        _serve_in_process(args.run, args.n, args.endpoint, args.redis_key)
        return 0
    if shutil.which("valgrind") is None:
        print("skipped: valgrind is not installed (apt-get install valgrind)")
        return 0  # `dev.py bench` runs every script: a missing tool is not a failure
    n = args.n
    print(
        f"instructions per request, {args.endpoint} endpoint in process ({n} vs {2 * n}, "
        f"difference / {n})"
    )
    client = _redis_client()
    variants = [v for v in VARIANTS if v != "redis" or client is not None]
    if client is None:
        print(f"  (redis skipped: no eventbus_redis, or no Redis at {REDIS_URL})")
    redis_key = f"bench:middleware-instructions:{os.getpid()}"
    base = 0.0
    try:
        with tempfile.TemporaryDirectory() as workdir:
            for variant in variants:
                once = _instructions(variant, n, args.endpoint, workdir, redis_key)
                twice = _instructions(variant, 2 * n, args.endpoint, workdir, redis_key)
                per = (twice - once) / n
                base = base or per
                print(f"  {variant:<15} {per:>10,.0f}  {per / base:5.2f}x plain")
    finally:
        if client is not None:
            delete_run_keys(client, redis_key)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
