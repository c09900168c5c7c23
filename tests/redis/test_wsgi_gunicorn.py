"""The WSGI example under gunicorn's forked workers, publishing to the real Redis server:
every request is in the stream once the server has shut down (the example's `worker_exit`
hook stops each worker's bus), with the bus made in each worker or before the fork."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import redis

from eventbus_core import Event
from tests._services import redis_url

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(90)]

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
REQUESTS = 40


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_serving(base: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert server.poll() is None, "gunicorn ended before serving"
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    pytest.fail("gunicorn did not answer within 30 s")


@pytest.mark.parametrize("preload", [False, True], ids=["bus-per-worker", "preload"])
def test_every_request_reaches_the_stream(real: redis.Redis, prefix: str, preload: bool) -> None:
    port = free_port()
    stream = f"{prefix}:stream"
    env = {
        **os.environ,
        "LLM_PROXY_EVENT_BUS": "redis-streams",
        "REDIS_URL": redis_url(),
        "EVENTBUS_REDIS_STREAM": stream,
        "EVENTBUS_REDIS_STREAM_MAX_LEN": "0",
    }
    command = [
        str(Path(sys.executable).with_name("gunicorn")),
        "--workers", "2",
        "--bind", f"127.0.0.1:{port}",
        "-c", str(EXAMPLES / "gunicorn_conf.py"),
        "--chdir", str(EXAMPLES),
        *(["--preload"] if preload else []),
        "wsgi_app:app",
    ]  # fmt: skip
    server = subprocess.Popen(command, env=env, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(base, server)
        with httpx.Client(base_url=base) as client:
            for i in range(REQUESTS):
                response = client.post(
                    "/v1/chat/completions",
                    json={"model": "gpt-4o", "n": i},
                    headers={"X-Request-ID": f"wsgi-{i}", "Authorization": "Bearer sk-secret"},
                )
                assert response.status_code == 200
    finally:
        server.send_signal(signal.SIGTERM)  # graceful: each worker runs worker_exit
        _, err = server.communicate(timeout=60)
    assert server.returncode == 0, err.decode(errors="replace")
    entries = real.xrange(stream)
    events = sorted((Event.from_json(fields[b"data"]) for _, fields in entries), key=by_number)
    # /health is excluded; no request is lost or doubled, whichever worker served it.
    assert [e.request_id for e in events] == [f"wsgi-{i}" for i in range(REQUESTS)]
    for i, event in enumerate(events):
        assert json.loads(event.request_body or b"") == {"model": "gpt-4o", "n": i}
        assert json.loads(event.response_body or b"")["object"] == "chat.completion"
        assert (event.method, event.path, event.status) == ("POST", "/v1/chat/completions", 200)


def by_number(event: Event) -> int:
    return int(event.request_id.removeprefix("wsgi-"))
