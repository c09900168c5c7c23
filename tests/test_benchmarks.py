"""The benchmark scripts of issue 12 still run and print every row they promise.

Smoke runs only, on tiny sizes: the figures themselves are not checked (timings on a shared
machine are not tests). What is checked is that each script ends well, prints each row, and
that the dispatcher's end-to-end rows wrote every event.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests._services import redis_url, require_redis

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
BENCH_DB = 13  # no other test file uses it; the scripts delete their own keys


def run_script(*args: str, timeout: float = 300, **env: str) -> str:
    # In a session of its own, killed whole at the end: a script cut short (the test's own
    # timeout) left its `eventbus dispatch` child running, which kept re-creating its stream
    # in the benchmark's database, and the next run failed on those keys.
    child = subprocess.Popen(
        [sys.executable, *args],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = child.communicate(timeout=timeout)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    assert child.returncode == 0, stdout + stderr
    return stdout


@pytest.mark.slow
@pytest.mark.redis
def test_bench_dispatch_prints_every_row_and_writes_every_event() -> None:
    client = require_redis(BENCH_DB)
    url = redis_url(BENCH_DB)
    out = run_script(
        str(BENCH / "bench_dispatch.py"), "--events", "1000", "--rounds", "1", "--redis-url", url
    )
    for stage in ("decode", "transform", "redact", "encode", "sink write"):
        assert re.search(rf"^{stage}\s+\S+\s+\d", out, re.MULTILINE), out
    rows = (
        "redis stream -> jsonl (baseline)",
        "redis stream -> jsonl",
        "memory bus -> jsonl (baseline)",
        "memory bus -> jsonl",
        "eventbus dispatch (CLI), redis",
    )
    for row in rows:
        found = re.search(rf"^{re.escape(row)}\s+([\d,]+)\s+([\d.]+)\s+(\d+)$", out, re.MULTILINE)
        assert found is not None, f"no row {row!r} in:\n{out}"
        assert int(found.group(3)) == 1000, f"{row}: {found.group(3)} of 1000 written"
        assert float(found.group(1).replace(",", "")) > 0, row
    assert not list(client.scan_iter(match="eventbus-bench-*", count=1000))  # cleaned up


@pytest.mark.slow
def test_bench_middleware_prints_a_row_per_variant() -> None:
    variants = ["plain", "null", "memory-asyncio"]
    out = run_script(
        str(BENCH / "bench_middleware.py"),
        "--rounds",
        "1",
        "--seconds",
        "0.3",
        "--latency-requests",
        "20",
        "--endpoints",
        "minimal",
        "--variants",
        ",".join(variants),
    )
    assert "[minimal]" in out, out
    for variant in variants:
        assert re.search(rf"^{variant}\s+\d+\s+[\d.]+", out, re.MULTILINE), out


@pytest.mark.slow
@pytest.mark.redis
def test_bench_wsgi_prints_a_row_per_variant_and_cleans_up() -> None:
    client = require_redis(BENCH_DB)
    out = run_script(
        str(BENCH / "bench_wsgi.py"),
        "--rounds",
        "1",
        "--requests",
        "50",
        EVENTBUS_BENCH_REDIS_URL=redis_url(BENCH_DB),
    )
    for endpoint in ("minimal", "realistic"):
        assert f"[{endpoint}]" in out, out
    for variant in ("plain", "null", "memory", "redis", "otel", "sentry"):
        rows = re.findall(rf"^{variant}\s+[\d.]+\s+\S+\s+\S+", out, re.MULTILINE)
        assert len(rows) == 2, f"{variant}: {rows}\n{out}"
    assert not list(client.scan_iter(match="eventbus-wsgi-bench:*", count=1000))
