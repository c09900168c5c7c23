"""`eventbus demo`: exact request counts, clean `--json`, progress on stderr only, and the
multi-process mode against the real Redis.

The Redis tests use database 8 of the test server only (`tests/_services.py`: skipped when no
Redis answers, failed under CI) and
check that every published event reaches the file once, by LogID, and that the demo removes
its keys. Keys a test creates itself are under a unique prefix, deleted afterwards.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import pty
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from eventbus_core._demo._workload import spread
from eventbus_core.cli import main
from tests._services import redis_url, require_redis

DEMO_DB = 8


def file_events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def run_json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    code = main(["demo", *argv, "--json"])
    out = capsys.readouterr().out
    report: dict[str, Any] = json.loads(out)  # fails if anything but the JSON is on stdout
    return code, report


@pytest.mark.parametrize(("total", "parts"), [(301, 8), (7, 3), (3, 8), (4000, 8)])
def test_spread_gives_every_request_out(total: int, parts: int) -> None:
    shares = spread(total, parts)
    assert sum(shares) == total
    assert len(shares) == parts
    assert max(shares) - min(shares) <= 1


def test_memory_demo_simulates_exactly_the_requests_asked_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "events.jsonl"
    code = main(["demo", "--requests", "301", "--workers", "8", "--output", str(out)])
    stdout = capsys.readouterr().out
    assert code == 0
    assert "requests simulated 301\n" in stdout
    assert "events published   301\n" in stdout
    events = file_events(out)
    assert len(events) == 301
    assert len({e["RequestID"] for e in events}) == 301


def test_memory_demo_json_is_only_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, report = run_json(
        ["--requests", "203", "--workers", "4", "--output", str(tmp_path / "e.jsonl")], capsys
    )
    assert code == 0
    assert report["backend"] == "memory"
    assert report["requests"] == report["published"] == report["written"] == 203
    assert report["delivered"] == 203 and report["dropped"] == 0
    assert report["publish_p50_ns"] <= report["publish_p99_ns"]
    assert capsys.readouterr().err == ""


def _demo_on_a_terminal(tmp_path: Path, *flags: str) -> tuple[str, str]:
    """Run `eventbus demo` with stderr on a pseudo-terminal; return (stdout, terminal text)."""
    master, slave = pty.openpty()
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the last writer closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    argv = ["demo", "--requests", "1500", "--workers", "2", "--output", "e.jsonl", *flags]
    env = {k: v for k, v in os.environ.items() if k not in ("LLM_PROXY_EVENT_BUS", "REDIS_URL")}
    with subprocess.Popen(
        [sys.executable, "-m", "eventbus_core.cli", *argv],
        stdout=subprocess.PIPE,
        stderr=slave,
        cwd=tmp_path,
        env=env,
    ) as proc:
        os.close(slave)
        stdout, _ = proc.communicate(timeout=60)
    reader.join(10)
    os.close(master)
    assert proc.returncode == 0
    return stdout.decode(), b"".join(chunks).decode()


def test_progress_is_a_live_line_on_the_terminal_and_never_on_stdout(tmp_path: Path) -> None:
    stdout, terminal = _demo_on_a_terminal(tmp_path)
    assert "\rrequests " in terminal
    assert "requests 1500/1500 (100%)" in terminal
    assert "\r" not in stdout and "/1500" not in stdout
    assert "requests simulated 1500" in stdout


def test_json_on_a_terminal_shows_no_progress(tmp_path: Path) -> None:
    stdout, terminal = _demo_on_a_terminal(tmp_path, "--json")
    assert json.loads(stdout)["published"] == 1500
    assert terminal == ""


def test_publishers_need_a_shared_backend_and_the_installed_ones_are_named(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # --keep too: accepted and ignored on memory, it promised a namespace that never existed.
    # The hint named Redis and --redis-url where no Redis backend was installed (trial 208): it
    # is the one every command gives.
    from eventbus_core.cli import _demo_cmd

    monkeypatch.setattr(_demo_cmd, "shared_backend_example", lambda name: f"HINT({name})")
    assert main(["demo", "--keep", "--requests", "10"]) == 2
    err = capsys.readouterr().err
    assert "--keep" in err and err.rstrip().endswith("HINT(memory)"), err
    assert main(["demo", "--publishers", "2", "--requests", "10"]) == 2
    err = capsys.readouterr().err
    assert "'memory' lives inside each process" in err and "HINT(memory)" in err, err
    assert "redis" not in err


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--publishers", "1000"], "--publishers 1000: must be from 1 to 32"),
        (["--publishers", "0"], "--publishers 0: must be from 1 to 32"),
        (["--publishers", "6", "--workers", "2"], "--workers 2 is fewer than --publishers 6"),
    ],
)
def test_publisher_counts_that_cannot_be_honoured_are_refused(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # 1000 started about 100 processes for 29 s, and 2 workers became 6 threads, unsaid
    # (trial 145). Refused before any backend is looked at.
    assert main(["demo", "--requests", "10", *argv]) == 2
    assert said in capsys.readouterr().err


# ------------------------------------------------------------------------------ real Redis


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> Iterator[redis.Redis]:
    client = require_redis(DEMO_DB)
    monkeypatch.setenv("REDIS_URL", redis_url(DEMO_DB))
    yield client
    client.close()


@pytest.fixture
def prefix(client: redis.Redis) -> Iterator[str]:
    """Keys a test names itself; deleted afterwards."""
    prefix = f"eventbus-demo-test:{uuid.uuid4().hex[:12]}"
    yield prefix
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)


def demo_keys(client: redis.Redis, report: dict[str, Any]) -> list[bytes]:
    """Every key of the run: the list or stream and what the backend keeps beside it."""
    key: str = report["redis_key"]
    assert key.startswith("eventbus-demo:") and key.endswith(":events")
    return list(client.scan_iter(match=f"{key}*", count=1000))


@pytest.mark.redis
@pytest.mark.parametrize("backend", ["redis", "redis-streams"])
def test_redis_demo_delivers_every_event_once_and_removes_its_keys(
    backend: str, client: redis.Redis, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "events.jsonl"
    argv = ["--backend", backend, "--requests", "301", "--workers", "3", "--output", str(out)]
    code, report = run_json([*argv, "--publishers", "2"], capsys)
    assert code == 0
    assert report["publishers"] == 2
    assert report["requests"] == 301
    assert report["published"] + report["dropped"] == 301
    assert report["dropped"] == 0  # 301 events in a buffer of 1000: none may be dropped
    assert report["delivered"] == report["written"] == 301
    assert report["publish_p50_ns"] > 0
    events = file_events(out)
    # A fresh key: LogIDs 1..N, each exactly once, from both publishers' requests.
    assert sorted(e["log_id"] for e in events) == list(range(1, 302))
    assert len({e["request_id"] for e in events}) == 301
    assert demo_keys(client, report) == []
    assert "deleted at the end" in report["cleanup"]


@pytest.mark.redis
def test_a_clean_up_that_fails_leaves_the_report_and_says_what_was_left(
    client: redis.Redis,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The backend stopped answering after every event was delivered: the clean-up's error
    # replaced the report (no summary, exit 1) and nothing said the run's stream was left
    # (helper-109, NATS).
    from eventbus_core import BackendUnavailableError
    from eventbus_core._demo import _shared

    made = _shared._isolation

    def failing_clean_up(bus: Any, run: str, requests: int) -> Any:
        isolation, args = made(bus, run, requests)

        def cleanup(keep: bool) -> str:
            raise BackendUnavailableError("Redis at redis://127.0.0.1:6379/0 did not answer")

        return dataclasses.replace(isolation, cleanup=cleanup), args

    monkeypatch.setattr(_shared, "_isolation", failing_clean_up)
    argv = ["--backend", "redis-streams", "--requests", "40", "--output", str(tmp_path / "e")]
    code, report = run_json(argv, capsys)
    try:
        assert code == 0
        assert report["delivered"] == 40
        assert report["cleanup"].startswith("NOT deleted: Redis at redis://127.0.0.1:6379/0")
        assert report["redis_key"] in report["cleanup"]
        assert client.xlen(report["redis_key"]) == 40
    finally:
        keys = demo_keys(client, report)
        if keys:
            client.delete(*keys)


@pytest.mark.redis
def test_keep_leaves_the_keys(
    client: redis.Redis, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--backend", "redis-streams", "--requests", "50", "--keep"]
    code, report = run_json([*argv, "--output", str(tmp_path / "e.jsonl")], capsys)
    try:
        assert code == 0
        assert client.xlen(report["redis_key"]) == 50
        assert "--keep" in report["cleanup"]
    finally:
        keys = demo_keys(client, report)
        if keys:
            client.delete(*keys)


@pytest.mark.redis
@pytest.mark.parametrize(
    ("backend", "variable"),
    [("redis", "EVENTBUS_REDIS_KEY"), ("redis-streams", "EVENTBUS_REDIS_STREAM")],
)
def test_a_key_the_user_set_is_used_and_left_in_place(
    backend: str,
    variable: str,
    client: redis.Redis,
    prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    key = f"{prefix}:events"
    monkeypatch.setenv(variable, key)
    out = tmp_path / "events.jsonl"
    argv = ["--backend", backend, "--requests", "120", "--output", str(out)]
    for _ in range(2):  # the second run finds the first run's events already there
        code, report = run_json(argv, capsys)
        assert code == 0
        assert report["redis_key"] == key
        assert report["delivered"] == report["written"] == report["published"] == 120
        # Only this run's events: a stream's new group starts at the end, not at the start.
        assert len(file_events(out)) == 120
    length = client.llen(key) if backend == "redis" else client.xlen(key)
    assert length == 240
    if backend == "redis-streams":
        assert client.xinfo_groups(key) == []  # the demo's groups are gone


def test_the_shared_demo_counts_events_by_request_id_not_log_id(tmp_path: Path) -> None:
    # A shared backend of a third party need not stamp LogIDs (its events keep 0): the demo
    # still tells this run's events apart, by their request ids, and counts a redelivered one
    # once.
    from eventbus_core._demo._shared import count_lines
    from eventbus_core._demo._worker import DeliveryWatch

    lines = [{"request_id": f"run1-{n:06d}", "log_id": 0} for n in range(5)]
    lines += [lines[2], {"request_id": "other-000001", "log_id": 0}]
    output = tmp_path / "out.jsonl"
    output.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert count_lines(output, "run1-") == (5, 6)

    class Stored:
        name = "jsonl"

        def __init__(self) -> None:
            self.written: list[str] = []

        async def send(self, batch: Any) -> None:
            self.written += [p["request_id"] for p in batch]

    stored = Stored()
    watch = DeliveryWatch(stored, "run1-")  # type: ignore[arg-type]
    asyncio.run(watch.send(lines))
    assert watch.wait_for(5, idle_timeout=1.0)
    # Another's events (what the backend held before the run, on a backend that cannot give
    # the run a namespace of its own) are not written to the demo's file (trial 117).
    assert "other-000001" not in stored.written and len(stored.written) == 6
    asyncio.run(watch.send([{"request_id": "other-000002"}]))
    assert len(stored.written) == 6


@pytest.mark.parametrize("groups", [True, False])
def test_a_run_on_a_backend_without_isolation_says_what_it_leaves_behind(groups: bool) -> None:
    # A shared backend that cannot isolate a run keeps the run's events and consumer group;
    # the report said nothing of it (helper-74). One without consumer groups keeps no group,
    # though the report named one (helper-112).
    from eventbus_core._demo._report import DemoReport
    from eventbus_core._demo._shared import _isolation
    from eventbus_core.testing import RecordingBus

    class Grouped(RecordingBus):
        default_group = "g"

        def consumer(self, group: Any = None, name: Any = None, *, batch_size: int = 100) -> Any:
            raise NotImplementedError

    bus = Grouped(10) if groups else RecordingBus(10)
    isolation, dispatcher_args = _isolation(bus, "abc123", 10)
    bus.stop()
    assert dispatcher_args == (["--group", "eventbus-demo-abc123"] if groups else [])
    report = DemoReport(
        backend="shared-plain", requests=1, published=1, dropped=0, delivered=1, written=1,
        output=Path("out.jsonl"), seconds=1.0, publish_ns=[1], publishers=1,
        namespace=isolation.where, namespace_kind=isolation.kind,
        cleanup=isolation.cleanup(False),
    )  # fmt: skip
    text = "\n".join(report.lines())
    assert ("consumer group eventbus-demo-abc123" in text) is groups
    assert ("consumer group" in text) is groups
    assert "left in place" in text and "no Isolatable capability" in text


def test_an_interrupted_demo_says_what_the_consumer_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # "0 dropped" while the consumer's subscription had dropped 180 (its WARNING said so
    # alone; trial 131).
    from eventbus_core._demo import _workload
    from eventbus_core.testing import make_event
    from eventbus_memory import InMemoryEventBus

    def simulate(bus: Any, **kwargs: Any) -> list[list[float]]:
        for i in range(50):
            bus.publish(make_event(i))
        bus.flush(5)
        raise _workload.DemoInterrupted(50, 100)

    monkeypatch.setattr(_workload, "simulate", simulate)
    monkeypatch.setattr(
        _workload,
        "_consume",
        lambda bus, output, ready, *rest: (
            bus.subscribe("demo-jsonl", buffer_size=10),
            ready.set(),
        ),
    )
    bus = InMemoryEventBus(buffer_size=1000)
    with pytest.raises(_workload.DemoInterrupted) as info:
        _workload.run_demo(bus, backend="memory", output=tmp_path / "o.jsonl", requests=100)
    assert "50 published, 0 dropped (and 40 by the consumer, which fell behind)" in (
        info.value.summary()
    ), info.value.summary()


def test_a_finished_demo_says_what_the_consumer_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A finished run that lost events to its own consumer said "events dropped 0" and
    # "FAILED" only (trial 198).
    from eventbus_core._demo import _workload
    from eventbus_core.testing import make_event
    from eventbus_memory import InMemoryEventBus

    published = threading.Event()

    def simulate(bus: Any, **kwargs: Any) -> list[int]:
        for i in range(50):
            bus.publish(make_event(i))
        assert bus.flush(5)  # all of it offered to the consumer, which holds 10, drops the rest
        published.set()
        return [1000] * 50

    class SlowReader(InMemoryEventBus):
        def subscribe(self, name: Any = None, *, buffer_size: Any = None) -> Any:
            sub = super().subscribe(name, buffer_size=10)
            batches = sub.batches

            def late_batches(**kwargs: Any) -> Any:
                published.wait(10)
                yield from batches(**kwargs)

            sub.batches = late_batches  # type: ignore[method-assign]
            return sub

    monkeypatch.setattr(_workload, "simulate", simulate)
    report = _workload.run_demo(
        SlowReader(buffer_size=1000), backend="memory", output=tmp_path / "o.jsonl", requests=50
    )
    assert (report.published, report.dropped, report.delivered) == (50, 0, 10)
    assert report.consumer_dropped == 40
    assert not report.lossless
    assert (
        "consumer dropped   40  (it fell behind: its subscription's buffer was full)"
        in report.lines()
    )
    assert report.as_dict()["consumer_dropped"] == 40
