"""`eventbus publish` and `eventbus dispatch` against a private Redis that freezes (SIGSTOP) while
they work: both end within their documented bounds, whatever the server does.

Found by an outside trial: `publish` waited `EVENTBUS_STOP_TIMEOUT` again at every half buffer
(a 200,000-line file held it for ten minutes), and a dispatcher asked to stop waited for the
frozen server's answers to its last reads and acknowledgements (523 s).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from eventbus_core import Event
from tests.redis._servers import ThrowawayRedis

pytestmark = pytest.mark.redis


@pytest.fixture
def frozen_later(throwaway: ThrowawayRedis) -> Iterator[ThrowawayRedis]:
    """The throwaway server, never left frozen after the test."""
    yield throwaway
    if throwaway.proc is not None:
        os.kill(throwaway.proc.pid, signal.SIGCONT)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "eventbus_core.cli", *args]


def _wait_until(check: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _size(path: Path) -> int:
    """`path`'s size, 0 while it does not exist (a check of exists() then stat() once saw it
    vanish in between, under CI's load)."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def test_publish_ends_soon_when_redis_freezes_mid_publish(
    frozen_later: ThrowawayRedis, tmp_path: Path
) -> None:
    server = frozen_later
    key = f"cli-faults-{uuid.uuid4().hex[:8]}"
    lines = 60_000
    source = tmp_path / "events.jsonl"
    source.write_text("".join(f'{{"RequestID": "r{i}", "Status": 200}}\n' for i in range(lines)))
    env = {
        **os.environ,
        "LLM_PROXY_EVENT_BUS": "redis",
        "REDIS_URL": server.url,
        "EVENTBUS_REDIS_KEY": key,
        "EVENTBUS_REDIS_MAX_LEN": "0",
        "EVENTBUS_STOP_TIMEOUT": "1",
    }
    client = redis.Redis.from_url(server.url)
    proc = subprocess.Popen(
        _cli("publish", "--json", "-f", str(source)),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_until(lambda: client.llen(key) > 0, 30)
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGSTOP)
        frozen_at = time.monotonic()
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    took = time.monotonic() - frozen_at
    # One flush that times out (1 s), the rest without waiting, the final stop (1 s): before the
    # fix, one second per 500 lines left, about two minutes here.
    assert took < 15, (took, err)
    assert proc.returncode == 1, err
    summary = json.loads(out)
    assert summary["accepted"] + summary["dropped"] == lines
    assert summary["dropped"] > 0
    assert "did not catch up within 1 s (EVENTBUS_STOP_TIMEOUT)" in err


def test_dispatch_stops_within_its_bound_when_redis_freezes(
    frozen_later: ThrowawayRedis, tmp_path: Path
) -> None:
    server = frozen_later
    stream = f"cli-faults-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(server.url)
    pipe = client.pipeline(transaction=False)
    for i in range(20_000):
        pipe.xadd(stream, {"data": Event(request_id=f"r{i}", status=200, log_id=i + 1).to_json()})
    pipe.execute()
    out = tmp_path / "out.jsonl"
    env = {
        **os.environ,
        "LLM_PROXY_EVENT_BUS": "redis-streams",
        "REDIS_URL": server.url,
        "EVENTBUS_REDIS_STREAM": stream,
        "EVENTBUS_SHUTDOWN_TIMEOUT": "1",
        "EVENTBUS_STOP_TIMEOUT": "1",
    }
    proc = subprocess.Popen(
        _cli("dispatch", "--sink", "jsonl", "--sink-opt", f"path={out}", "--batch-size", "20"),
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_until(lambda: _size(out) > 0, 30)
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGSTOP)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        stopped_at = time.monotonic()
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.communicate(timeout=30)  # reaped, its pipe closed, whatever happened above
    took = time.monotonic() - stopped_at
    # EVENTBUS_SHUTDOWN_TIMEOUT (1 s), closing the sources (2 s), the bus's stop (at most
    # EVENTBUS_STOP_TIMEOUT + 5 s); before the fix, until the server answered again.
    assert took < 12, (took, err)
    assert proc.returncode == 0, err
