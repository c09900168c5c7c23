"""`eventbus dispatch --metrics-port` as a real process on a real Redis stream: `/metrics`
scraped and parsed with prometheus_client.parser and checked against the events published
and dead-lettered; `/readyz` red for a sink failing for good, and while Redis is down (a
throwaway server, killed and restarted)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from eventbus_core import Event, EventBusSettings
from eventbus_redis import RedisStreamsEventBus
from tests._services import close_client, redis_url, require_redis
from tests.core.receivers import Receiver
from tests.redis._servers import ThrowawayRedis, free_port

ROOT = Path(__file__).resolve().parent.parent.parent


class Dispatch:
    """An `eventbus dispatch` process with its metrics port, log and helpers."""

    def __init__(self, tmp_path: Path, redis_url: str, prefix: str, *sink_args: str) -> None:
        self.port = free_port()
        self.log = tmp_path / f"dispatch-{self.port}.log"
        self.base = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "LLM_PROXY_EVENT_BUS": "redis-streams",
            "REDIS_URL": redis_url,
            "EVENTBUS_REDIS_STREAM": f"{prefix}:events",
            "EVENTBUS_REDIS_GROUP": f"{prefix}:dispatchers",
            "EVENTBUS_FLUSH_INTERVAL": "0.05",
            "EVENTBUS_RETRY_BASE": "0.01",
            "EVENTBUS_RETRY_CAP": "0.02",
            "EVENTBUS_SHUTDOWN_TIMEOUT": "5",
            "EVENTBUS_METRICS_HOST": "127.0.0.1",
        }
        exe = ROOT / ".venv" / "bin" / "eventbus"
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "eventbus_core.cli"]
        with self.log.open("ab") as err:
            self.proc = subprocess.Popen(
                [
                    *cmd,
                    "-v",
                    "dispatch",
                    *sink_args,
                    "--consumer-name",
                    "metrics-test",
                    "--dead-letter",
                    str(tmp_path / "dead.jsonl"),
                    "--metrics-port",
                    str(self.port),
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=err,
                cwd=tmp_path,
            )

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.base + path, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return 0, ""  # not listening yet

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        status, text = self.get("/metrics")
        if status != 200:
            return {}
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def value(self, name: str, **labels: str) -> float | None:
        return self.metrics().get((name, tuple(sorted(labels.items()))))

    def wait(self, condition: Any, what: str, timeout: float = 60.0) -> None:
        """Poll a condition the other process makes true (no event to await across it)."""
        deadline = time.monotonic() + timeout
        while not condition():
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"dispatcher exited ({self.proc.returncode}) before {what}:\n"
                    + self.log.read_text()[-3000:]
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out: {what}\n" + self.log.read_text()[-3000:])
            time.sleep(0.05)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)
        return self.proc.returncode


def chat_events(n: int, start: int = 0) -> list[Event]:
    return [
        Event(
            request_id=f"req-{i}",
            method="POST",
            path="/v1/chat/completions",
            status=200,
            duration=2_000_000,
            request_body=b'{"model":"gpt-4o-mini","messages":[]}',
            response_body=b'{"model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":1}}',
        )
        for i in range(start, start + n)
    ]


def publish(url: str, prefix: str, events: list[Event]) -> None:
    bus = RedisStreamsEventBus.from_settings(
        EventBusSettings(
            backend="redis-streams",
            redis_url=url,
            redis_stream=f"{prefix}:events",
            redis_group=f"{prefix}:dispatchers",
        )
    )
    try:
        for event in events:
            bus.publish(event)
        assert bus.flush(timeout=30)
        assert bus.stats().published == len(events)
    finally:
        bus.stop()


@pytest.fixture
def prefix() -> Iterator[str]:
    client = require_redis()
    name = f"eventbus-metrics-test:{uuid.uuid4().hex[:10]}"
    yield name
    keys = list(client.scan_iter(match=f"{name}*", count=1000))
    if keys:
        client.delete(*keys)
    close_client(client)


@pytest.mark.redis
@pytest.mark.slow
def test_metrics_count_what_was_published_sent_and_dead_lettered(
    tmp_path: Path, prefix: str
) -> None:
    events = chat_events(40)
    publish(redis_url(), prefix, events)
    with Receiver(default=(400, {}, b"refused")).running() as rx:
        dispatch = Dispatch(
            tmp_path,
            redis_url(),
            prefix,
            "--sink",
            "jsonl",
            "--sink-opt",
            f"path={tmp_path / 'events.jsonl'}",
            "--sink",
            "webhook",
            "--sink-opt",
            f"url={rx.url}/ingest",
        )
        try:
            dispatch.wait(
                lambda: (
                    dispatch.value("eventbus_sink_sent_total", sink="jsonl") == 40
                    and dispatch.value("eventbus_sink_dead_lettered_total", sink="webhook") == 40
                ),
                "40 sent to jsonl and 40 dead-lettered by the webhook",
            )
            m = dispatch.metrics()
            assert m[("eventbus_sink_sent_total", (("sink", "webhook"),))] == 0
            assert m[("eventbus_sink_dropped_total", (("sink", "jsonl"),))] == 0
            failed = (("error_type", "400"), ("sink", "webhook"))
            assert m[("eventbus_sink_failed_total", failed)] >= 1
            assert m[("eventbus_consumer_read_total", (("lane", "jsonl"),))] == 40
            dispatch.wait(
                lambda: dispatch.value("eventbus_consumer_acked_total", lane="webhook") == 40,
                "dead letters acknowledged",
            )
            # Read from Redis itself at scrape time: nothing left behind in either group.
            assert dispatch.value("eventbus_consumer_lag", lane="jsonl") == 0
            assert dispatch.value("eventbus_consumer_pending", lane="jsonl") == 0
            assert dispatch.value("eventbus_events_dropped_total", reason="refused") == 0
            # A sink whose last batches were all refused: not ready (but alive).
            status, body = dispatch.get("/readyz")
            assert status == 503, body
            failing = [c for c in json.loads(body)["checks"] if not c["ok"]]
            assert [c["name"] for c in failing] == ["sink:webhook"]
            assert dispatch.get("/healthz")[0] == 200
        finally:
            assert dispatch.stop() == 0, dispatch.log.read_text()[-3000:]
    dead = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert len(dead) == 40 and {d["sink"] for d in dead} == {"webhook"}


@pytest.mark.redis
@pytest.mark.slow
def test_readyz_follows_redis_going_down_and_coming_back(tmp_path: Path) -> None:
    server = ThrowawayRedis(tmp_path)
    server.start()
    prefix = f"eventbus-metrics-test:{uuid.uuid4().hex[:10]}"
    jsonl = tmp_path / "events.jsonl"
    dispatch = Dispatch(
        tmp_path, server.url, prefix, "--sink", "jsonl", "--sink-opt", f"path={jsonl}"
    )
    try:
        dispatch.wait(lambda: dispatch.get("/readyz")[0] == 200, "ready with Redis up")
        publish(server.url, prefix, chat_events(5))
        dispatch.wait(
            lambda: dispatch.value("eventbus_sink_sent_total", sink="jsonl") == 5, "5 sent"
        )
        server.kill()

        def failing() -> dict[str, Any]:
            _, body = dispatch.get("/readyz")
            return {c["name"]: c for c in json.loads(body)["checks"] if not c["ok"]}

        # Two checks fail, each when its own side notices: the backend's (Reachable, probed
        # on a schedule) and the consumer group's (at its next read). Either may come first.
        dispatch.wait(lambda: "source:jsonl" in failing(), "the group's check fails, Redis down")
        failed = failing()
        assert dispatch.get("/readyz")[0] == 503
        assert "not joined" in failed["source:jsonl"]["detail"]
        assert set(failed) <= {"source:jsonl", "backend"}, failed
        assert dispatch.get("/healthz")[0] == 200  # alive: restarting would not bring Redis
        assert dispatch.value("eventbus_sink_sent_total", sink="jsonl") == 5  # still scraped

        server.start()  # same port, empty (no persistence): the group is created again
        dispatch.wait(lambda: dispatch.get("/readyz")[0] == 200, "ready once Redis is back")
        publish(server.url, prefix, chat_events(3, start=5))
        dispatch.wait(
            lambda: dispatch.value("eventbus_sink_sent_total", sink="jsonl") == 8, "8 sent"
        )
        # Redis lost its data: nothing was waiting here, yet the dispatcher cannot know that.
        assert dispatch.value("eventbus_consumer_missed_unknown_total", lane="jsonl") == 1
    finally:
        code = dispatch.stop()
        server.kill()
    assert code == 1, dispatch.log.read_text()[-3000:]  # a loss it cannot size (trial 193)
    assert len(jsonl.read_text().splitlines()) == 8


def test_readyz_names_the_flag_that_gave_the_address(tmp_path: Path) -> None:
    # Its backend check said "check that REDIS_URL is right" where --redis-url had given the
    # address, beside a stderr warning that named the flag (trial 239).
    server = ThrowawayRedis(tmp_path)
    server.start()
    prefix = f"eventbus-metrics-test:{uuid.uuid4().hex[:10]}"
    jsonl = tmp_path / "events.jsonl"
    # The environment's REDIS_URL is another (closed) address: only the flag's is used.
    dispatch = Dispatch(
        tmp_path, "redis://127.0.0.1:1/0", prefix, "--redis-url", server.url,
        "--sink", "jsonl", "--sink-opt", f"path={jsonl}",
    )  # fmt: skip
    try:
        dispatch.wait(lambda: dispatch.get("/readyz")[0] == 200, "ready with Redis up")
        server.kill()

        def backend_detail() -> str:
            _, body = dispatch.get("/readyz")
            checks = {c["name"]: c for c in json.loads(body)["checks"]} if body else {}
            backend = checks.get("backend", {})
            return "" if backend.get("ok", True) else str(backend["detail"])

        dispatch.wait(lambda: backend_detail() != "", "the backend's check fails, Redis down")
        detail = backend_detail()
        assert "--redis-url" in detail and "REDIS_URL" not in detail, detail
    finally:
        dispatch.stop()
        server.kill()


def test_metrics_port_without_prometheus_client_names_the_pip_command(tmp_path: Path) -> None:
    # A fresh interpreter in which prometheus_client cannot be imported.
    code = (
        "import sys; sys.modules['prometheus_client'] = None\n"
        "from eventbus_core.cli import main\n"
        "sys.exit(main(['dispatch', '--sink', 'console', '--metrics-port', '9464']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ, "LLM_PROXY_EVENT_BUS": "memory"},
    )
    assert done.returncode == 2
    assert 'pip install "eventbus-core[prometheus]"' in done.stderr
    assert "--metrics-port" in done.stderr
