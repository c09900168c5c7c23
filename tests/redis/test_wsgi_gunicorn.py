"""The WSGI example under gunicorn's forked workers, publishing to the real Redis server:
every request is in the stream once the server has shut down (the example's `worker_exit`
hook stops each worker's bus), with the bus made in each worker or before the fork, and with
the middleware kept inside a framework's object (as Flask keeps it) while Redis is frozen at
the shutdown."""

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
from tests._services import close_client, redis_url
from tests.redis._servers import ThrowawayRedis

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


def gunicorn(app: str, port: int, chdir: Path, env: dict[str, str], *extra: str) -> list[str]:
    return [
        str(Path(sys.executable).with_name("gunicorn")),
        "--workers", "2",
        "--bind", f"127.0.0.1:{port}",
        "-c", str(EXAMPLES / "gunicorn_conf.py"),
        "--chdir", str(chdir),
        *extra,
        app,
    ]  # fmt: skip


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
    command = gunicorn("wsgi_app:app", port, EXAMPLES, env, *(["--preload"] if preload else []))
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


FLASK_LIKE = """
from eventbus_core import EventBusWSGIMiddleware, create_bus


def chat(environ, start_response):
    environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    start_response("200 OK", [("Content-Type", "application/json")])
    return [b'{"object": "chat.completion"}']


class Framework:
    # Keeps the middleware where Flask does (app.wsgi_app): gunicorn's worker.wsgi is this.
    def __init__(self, inner):
        self.wsgi_app = inner

    def __call__(self, environ, start_response):
        return self.wsgi_app(environ, start_response)


app = Framework(chat)
app.wsgi_app = EventBusWSGIMiddleware(app.wsgi_app, bus=create_bus())
"""


def test_the_exit_hook_delivers_what_a_frozen_redis_held_up(tmp_path: Path) -> None:
    """Redis frozen (SIGSTOP) while the requests are served and when gunicorn is told to stop;
    it thaws 1.5 s later, within EVENTBUS_STOP_TIMEOUT: each worker's `stop()` (the hook's
    `stop_buses()`) delivers everything. Without the hook reaching the bus, the exit handler
    gives up after half a second without progress and the events are lost."""
    (tmp_path / "flask_like.py").write_text(FLASK_LIKE)
    server = ThrowawayRedis(tmp_path)
    server.start()
    assert server.proc is not None
    port = free_port()
    stream = "wsgi-frozen"
    env = {
        **os.environ,
        "LLM_PROXY_EVENT_BUS": "redis-streams",
        "REDIS_URL": server.url,
        "EVENTBUS_REDIS_STREAM": stream,
        "EVENTBUS_REDIS_STREAM_MAX_LEN": "0",
        "EVENTBUS_STOP_TIMEOUT": "10",
    }
    proc = subprocess.Popen(
        gunicorn("flask_like:app", port, tmp_path, env), env=env, stderr=subprocess.PIPE
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:  # no /health here: the first request that answers starts the count
            assert proc.poll() is None, "gunicorn ended before serving"
            try:
                httpx.post(f"{base}/warm-up", timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "gunicorn did not answer within 30 s"
                time.sleep(0.1)
        os.kill(server.proc.pid, signal.SIGSTOP)
        with httpx.Client(base_url=base) as client:
            for i in range(REQUESTS):
                response = client.post("/v1/chat/completions", headers={"X-Request-ID": f"f-{i}"})
                assert response.status_code == 200
        proc.send_signal(signal.SIGTERM)
        time.sleep(1.5)
        os.kill(server.proc.pid, signal.SIGCONT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode(errors="replace")
        client = redis.Redis.from_url(server.url)
        ids = {Event.from_json(f[b"data"]).request_id for _, f in client.xrange(stream)}
        close_client(client)
        assert ids >= {f"f-{i}" for i in range(REQUESTS)}, err.decode(errors="replace")[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        os.kill(server.proc.pid, signal.SIGCONT)
        server.kill()
