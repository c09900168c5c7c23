"""`tail`, `publish`, `stats` and `replay` against the real Redis of `tests/_services.py`.

Database 11 of the test server only, a unique key prefix per test, everything under it deleted
afterwards. `tail` and `publish` run as separate processes, as an operator would run them.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from eventbus_core import Event
from eventbus_core.cli import main
from eventbus_redis import RedisEventBus, RedisStreamsEventBus
from tests._services import redis_url, require_redis
from tests.core._replay import FlakySink, replay_to

pytestmark = [pytest.mark.redis, pytest.mark.timeout(60)]

CLI_DB = 11


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    client = require_redis(CLI_DB)
    yield client
    client.close()


@pytest.fixture
def prefix(client: redis.Redis) -> Iterator[str]:
    prefix = f"eventbus-cli-test:{uuid.uuid4().hex[:10]}"
    yield prefix
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)


@pytest.fixture
def env(prefix: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Settings for the commands: the redis log under this test's prefix."""
    values = {
        "LLM_PROXY_EVENT_BUS": "redis",
        "REDIS_URL": redis_url(CLI_DB),
        "EVENTBUS_REDIS_KEY": f"{prefix}:events",
        "EVENTBUS_REDIS_STREAM": f"{prefix}:stream",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return {**os.environ, **values, "PYTHONWARNINGS": "ignore"}


def ev(n: int) -> Event:
    return Event(
        request_id=f"req-{n}",
        method="POST",
        path="/v1/chat/completions",
        status=200,
        duration=1_000_000 * n,
        response_body=b'{"ok":true}',
    )


def jsonl(events: list[Event]) -> str:
    return "".join(e.to_json().decode() + "\n" for e in events)


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "eventbus_core.cli", *args]


def publish_log(client: redis.Redis, key: str, events: list[Event]) -> None:
    bus = RedisEventBus.log(client, key, ttl=600, max_len=10_000)
    for n, event in enumerate(events, start=1):
        bus.publish(event)
        if n % 500 == 0:
            assert bus.flush(10)  # stay within the writer's buffer: no drops
    assert bus.flush(10)
    assert bus.stats().dropped == 0
    bus.stop()


def tail_output(argv: list[str], env: dict[str, str], publish: Callable[[], object]) -> str:
    """Run `eventbus tail` with `argv`; once it says it is following, `publish()`; return what
    it printed on stdout when it ended (give it a --count)."""
    proc = subprocess.Popen(
        cli(*argv), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.startswith("eventbus tail: following"):
                break
        publish()
        out, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    return out


@pytest.mark.parametrize("backend", ["redis", "redis-streams"])
def test_tail_shows_events_published_by_another_process(env: dict[str, str], backend: str) -> None:
    env = {**env, "LLM_PROXY_EVENT_BUS": backend}
    tail = subprocess.Popen(
        cli("tail", "--json", "--count", "3"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert tail.stderr is not None
        # tail says so on stderr once it is subscribed: from then on nothing is missed.
        for line in tail.stderr:
            if line.startswith("eventbus tail: following"):
                break
        else:
            pytest.fail("tail ended before following")
        published = subprocess.run(
            cli("publish", "--json"),
            input=jsonl([ev(1), ev(2), ev(3)]),
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        assert published.returncode == 0, published.stderr
        assert json.loads(published.stdout)["accepted"] == 3
        out, _ = tail.communicate(timeout=30)
    finally:
        tail.kill()
    assert tail.returncode == 0
    got = [Event.from_json(line) for line in out.splitlines()]
    assert [e.request_id for e in got] == ["req-1", "req-2", "req-3"]
    assert [e.log_id for e in got] == [1, 2, 3]
    assert got[0].replace(log_id=0) == ev(1)


def test_tail_last_prints_history_readably(
    client: redis.Redis, prefix: str, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    publish_log(client, f"{prefix}:events", [ev(n) for n in range(1, 6)])
    # Two events of history, then one live event (--count counts live events only).
    out = tail_output(
        ["tail", "--last", "2", "--count", "1"],
        env,
        lambda: publish_log(client, f"{prefix}:events", [ev(6)]),
    )
    rows = out.splitlines()
    assert [r.split()[0] for r in rows] == ["#4", "#5", "#6"]
    assert rows[0].split()[1:4] == ["200", "POST", "/v1/chat/completions"]


def test_tail_shows_live_events_whatever_the_logids_of_the_history(
    client: redis.Redis, prefix: str, env: dict[str, str]
) -> None:
    # Go's entries with LogIDs far above this process's counter (or negative, as Go's int64
    # allows): "LogID <= the newest shown" took every later event for one already printed
    # from the history, and skipped negative ones always; --count never ended (trial 123).
    key = f"{prefix}:events"
    big = ev(1).with_log_id(2**62 + 5).to_json()
    negative = big.replace(b'"LogID":4611686018427387909', b'"LogID":-7', 1)
    assert b'"LogID":-7' in negative
    client.lpush(key, big, negative)
    out = tail_output(
        ["tail", "--last", "2", "--count", "3"],
        env,
        lambda: (
            publish_log(client, key, [ev(2), ev(3)]),
            client.lpush(key, negative.replace(b'"req-1"', b'"req-4"')),
        ),
    )
    rows = [r.split() for r in out.splitlines()]
    assert [(r[0], r[-1]) for r in rows] == [
        (f"#{2**62 + 5}", "id=req-1"),
        ("#-7", "id=req-1"),
        ("#1", "id=req-2"),
        ("#2", "id=req-3"),
        ("#-7", "id=req-4"),
    ]


def test_tail_prints_a_later_copy_of_an_event_the_history_showed(
    client: redis.Redis, prefix: str, env: dict[str, str]
) -> None:
    # The same entry pushed again later (a Go writer's LogID-0 event sent twice) was taken for
    # the history's, delivered again, and skipped: --count never ended (trial 127).
    key = f"{prefix}:events"
    raw = ev(1).to_json()  # LogID 0, as the Go proxy's entries may be
    client.lpush(key, raw)

    def push_later() -> None:
        time.sleep(2.5)  # past the window in which the history's events come again
        client.lpush(key, raw, raw)

    out = tail_output(["tail", "--last", "1", "--count", "2"], env, push_later)
    assert [r.split()[-1] for r in out.splitlines()] == ["id=req-1"] * 3


def test_stats_of_the_log(
    client: redis.Redis, prefix: str, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    publish_log(client, f"{prefix}:events", [ev(n) for n in range(1, 5)])
    assert main(["stats", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["published"] == 4
    assert figures["length"] == 4
    assert (figures["oldest_log_id"], figures["newest_log_id"]) == (1, 4)
    assert figures["dropped"] is None
    assert 0 < figures["ttl_seconds"] <= 600
    assert main(["stats"]) == 0
    assert "published            4" in capsys.readouterr().out


def test_stats_of_the_stream_with_pending_and_lag(
    client: redis.Redis, prefix: str, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    bus = RedisStreamsEventBus(client, f"{prefix}:stream", group="dispatchers")
    for n in range(1, 6):
        bus.publish(ev(n))
    assert bus.flush(10)
    consumer = bus.consumer(name="c1", block=0.1)
    got = consumer.read(3, timeout=5)
    assert len(got) == 3
    consumer.ack([d.token for d in got[:1]])
    consumer.close()
    bus.stop()
    assert main(["stats", "--json", "--backend", "redis-streams"]) == 0
    figures: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert figures["length"] == 5
    (group,) = figures["groups"]
    assert group["name"] == "dispatchers"
    assert group["pending"] == 2
    assert group["lag"] in (2, None)  # Redis 7 reports lag; older versions do not
    assert main(["stats", "--backend", "redis-streams"]) == 0
    assert "group dispatchers" in capsys.readouterr().out


def test_replay_log_range_to_stdout(
    client: redis.Redis, prefix: str, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    publish_log(client, f"{prefix}:events", [ev(n) for n in range(1, 1001)])
    client.lpush(f"{prefix}:events", b"not an event")  # between LogIDs 1000 and 1001
    publish_log(client, f"{prefix}:events", [ev(n) for n in range(1001, 2501)])
    assert main(["replay", "--from-id", "999", "--to-id", "1003"]) == 1  # 1: undecodable entry
    captured = capsys.readouterr()
    got = [Event.from_json(line) for line in captured.out.splitlines()]
    assert [e.log_id for e in got] == [999, 1000, 1001, 1002, 1003]
    assert "1 undecodable entry skipped" in captured.err
    # Outside the range, it is neither counted nor a failure (trial 229: every backfill of a
    # range older than one stray entry exited 1).
    assert main(["replay", "--from-id", "2000", "--to-id", "2002"]) == 0
    assert "0 undecodable entries skipped" in capsys.readouterr().err


def test_replay_stream_by_time_and_dry_run(
    client: redis.Redis, prefix: str, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    bus = RedisStreamsEventBus(client, f"{prefix}:stream")
    for n in range(1, 8):
        bus.publish(ev(n))
    assert bus.flush(10)
    bus.stop()
    assert main(["replay", "--backend", "redis-streams", "--since", "1h", "--from-id", "3"]) == 0
    got = [Event.from_json(line) for line in capsys.readouterr().out.splitlines()]
    assert [e.request_id for e in got] == [f"req-{n}" for n in range(3, 8)]
    assert main(["replay", "--source", "stream", "--until", "2000-01-01T00:00:00Z"]) == 0
    assert capsys.readouterr().out == ""
    assert main(["replay", "--source", "stream", "--dry-run"]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "would replay 7 event(s)" in captured.err


def test_replay_dry_run_reports_a_broken_transformer(
    client: redis.Redis,
    prefix: str,
    env: dict[str, str],
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    publish_log(client, f"{prefix}:events", [ev(1), ev(2)])
    argv = ["replay", "--dry-run", "--sink", "jsonl", "--sink-opt", f"path={tmp_path}/x.jsonl"]
    monkeypatch.setenv("EVENTBUS_TRANSFORMER", "json:loads")  # raises on every event
    assert main(argv) == 1
    assert "would replay 2 event(s)" in (err := capsys.readouterr().err)
    assert "2 the transformer failed on" in err
    monkeypatch.setenv("EVENTBUS_TRANSFORMER", "no_such_module_here:transform")
    assert main(argv) == 2  # said before anything is read, as 'dispatch' says it
    assert "EVENTBUS_TRANSFORMER" in capsys.readouterr().err
    monkeypatch.delenv("EVENTBUS_TRANSFORMER")
    # The sink's options are checked as the real run would, though nothing is sent.
    assert main([*argv, "--sink-opt", "bogus=1"]) == 2
    assert "bogus" in capsys.readouterr().err
    monkeypatch.delenv("LLM_PROXY_API_KEY", raising=False)
    monkeypatch.delenv("EVENTBUS_SINK_HELICONE_API_KEY", raising=False)
    assert main(["replay", "--dry-run", "--sink", "helicone"]) == 2
    assert "API_KEY" in capsys.readouterr().err
    # A misspelt sink names the flag typed: replay never reads EVENTBUS_SINKS.
    assert main(["replay", "--dry-run", "--sink", "jsnol"]) == 2
    err = capsys.readouterr().err
    assert "(--sink)" in err and "EVENTBUS_SINKS" not in err and "'jsonl'" in err, err


def test_replay_time_range_on_the_log_is_refused(
    env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay", "--since", "10m"]) == 2
    err = capsys.readouterr().err
    # The way out names only the log that keeps timestamps (it named this one too, helper-74).
    assert "no timestamps" in err and "(--source stream: the stream " in err
    # ... and which stream that is: it is another key than the one named (trial 229).
    assert f"the stream {env['EVENTBUS_REDIS_STREAM']})" in err, err
    # It once said "select it by --from-id/--to-id to select by time" (trial 152).
    assert "select by LogID with --from-id/--to-id instead" in err, err


def test_replay_log_written_out_of_order_by_go(
    client: redis.Redis, prefix: str, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    # Go's INCR and LPUSH are two commands: concurrent Go writers can push 7 before 6.
    key = f"{prefix}:events"
    for log_id in (3, 4, 5, 7, 6, 8):
        client.lpush(key, ev(log_id).with_log_id(log_id).to_json())
    assert main(["replay", "--from-id", "4", "--to-id", "7"]) == 0
    got = [Event.from_json(line).log_id for line in capsys.readouterr().out.splitlines()]
    assert got == [4, 5, 6, 7]


def test_replay_to_the_jsonl_sink_as_the_dispatcher_would(
    client: redis.Redis,
    prefix: str,
    env: dict[str, str],
    tmp_path: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    secret = Event(
        request_id="req-secret",
        method="POST",
        path="/v1/chat/completions",
        status=200,
        duration=5_000_000,
        response_headers={"Set-Cookie": ["s=1"], "Content-Type": ["application/json"]},
        response_body=b'{"usage": {"total_tokens": 7}}',
        request_body=b'{"model": "gpt-4o", "api_key": "sk-abcdefghijklmnopqrstuvwx"}',
    )
    publish_log(client, f"{prefix}:events", [ev(1), secret, ev(3)])
    out = tmp_path / "replayed.jsonl"
    code = main(["replay", "--from-id", "2", "--sink", "jsonl", "--sink-opt", f"path={out}"])
    assert code == 0
    assert "replayed 2 event(s) from the log to sink jsonl" in capsys.readouterr().err
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [p["log_id"] for p in lines] == [2, 3]
    text = out.read_text()
    assert "sk-abcdefghijklmnopqrstuvwx" not in text  # redacted as by the dispatcher
    assert "s=1" not in text


def transform_that_fails(event: Event) -> dict[str, Any]:
    """An EVENTBUS_TRANSFORMER with a bug, quoting the body in its error."""
    raise ValueError(f"cannot parse request body: {(event.request_body or b'').decode()}")


def test_replay_falls_back_as_the_dispatcher_does_when_the_transformer_fails(
    client: redis.Redis,
    prefix: str,
    env: dict[str, str],
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("EVENTBUS_TRANSFORMER", f"{__name__}:transform_that_fails")
    event = ev(1).replace(request_body=b'{"note": "sk-proj-abcdefghijklmnopqrstuvwx"}')
    publish_log(client, f"{prefix}:events", [event, ev(2)])
    out = tmp_path / "replayed.jsonl"
    assert main(["replay", "--sink", "jsonl", "--sink-opt", f"path={out}"]) == 0
    assert "replayed 2 event(s)" in capsys.readouterr().err
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [p["log_id"] for p in lines] == [1, 2]
    assert all(p["transform_error"].startswith("ValueError: cannot parse") for p in lines)
    assert "sk-proj-abcdefghijklmnopqrstuvwx" not in out.read_text()


def leaky(n: int) -> Event:
    import gzip

    return Event(
        request_id=f"req-{n}",
        method="POST",
        path="/v1/chat/completions?api_key=sk-proj-QUERYSECRET0123456789&key=AIza-q",
        status=200,
        duration=1_000_000,
        response_headers={
            "Authorization": ["Bearer sk-proj-HEADERSECRET0123456789"],
            "Content-Encoding": ["gzip"],
        },
        request_body=b'{"password": "hunter2-body-secret"}',
        response_body=gzip.compress(b'{"access_token": "GZIPPEDSECRET"}'),
    )


SECRETS = ("QUERYSECRET", "HEADERSECRET", "hunter2-body-secret", "AIza-q")


def test_tail_and_replay_print_redacted_events_unless_told_not_to(
    client: redis.Redis, prefix: str, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    publish_log(client, f"{prefix}:events", [leaky(n) for n in range(1, 4)])
    for argv in (["tail", "--last", "3", "--count", "1"], ["tail", "--json", "-n", "3", "-c", "1"]):
        out = tail_output(argv, env, lambda: publish_log(client, f"{prefix}:events", [leaky(9)]))
        assert "req-9" in out or "#" in out
        assert not [s for s in SECRETS if s in out], (argv, out)
    assert main(["replay"]) == 0
    printed = capsys.readouterr().out
    assert len(printed.splitlines()) == 5
    assert not [s for s in SECRETS if s in printed], printed
    # The gzip body is not printed as it is (base64 of it would carry the token).
    for line in printed.splitlines():
        body = Event.from_json(line).response_body or b""
        assert b"GZIPPEDSECRET" not in body and not body.startswith(b"\x1f\x8b"), body
    assert main(["replay", "--no-redact"]) == 0
    raw = capsys.readouterr().out
    assert all(s in raw for s in ("QUERYSECRET", "HEADERSECRET")), raw
    assert Event.from_json(raw.splitlines()[0]).response_body.startswith(b"\x1f\x8b")


def test_replay_to_a_sink_keeps_what_it_stored_retries_and_names_what_failed(
    client: redis.Redis,
    prefix: str,
    env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Replay counted a whole batch failed on any error: 0 replayed where the sink had stored
    # 60 of 120, no retry of a transient error, and no LogIDs to narrow a rerun (trial 103).
    sink = FlakySink()
    publish_log(client, f"{prefix}:events", [ev(n) for n in range(1, 11)])
    code = replay_to(sink, ["--from-id", "1", "--batch-size", "4"])
    err = capsys.readouterr().err
    assert code == 1  # one event failed
    assert sorted(sink.stored) == [1, 2, 4, 5, 6, 7, 8, 9, 10]  # each once, 3 refused alone
    assert "replayed 9 event(s) from the log to sink flaky; 1 failed" in err, err
    # Tried twice: in its batch (whose first two were stored), then first of the rest.
    assert "sink flaky failed for 1 event(s), LogID 3, after 2 attempt(s): HTTP 400" in err
    # The retry's wait is said as it begins (it was silent for seconds, trial 104).
    retry = "sink flaky failed for 2 event(s), LogIDs 3 to 4 (attempt 1: HTTP 503); retrying in"
    assert retry in err


class _InterruptedSink:
    """Stores two batches, counting one event of each rejected by the destination (as an OTLP
    partial success); Ctrl-C comes during the third."""

    name = "halting"

    def __init__(self) -> None:
        self.stored: list[int] = []
        self.rejected = 0

    async def send(self, batch: Any) -> None:
        if len(self.stored) >= 4:
            raise KeyboardInterrupt
        self.stored += [p["log_id"] for p in batch]
        self.rejected += 1

    def figures(self) -> dict[str, int]:
        return {"rejected": self.rejected}

    async def close(self) -> None:
        pass


def test_an_interrupted_replay_says_how_far_it_got_and_rejections_fail_it(
    client: redis.Redis,
    prefix: str,
    env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Ctrl-C (or SIGTERM) ended replay without a summary, so nobody knew where to go on; and
    # events the destination rejected after taking the request counted replayed (trial 104).
    sink = _InterruptedSink()
    publish_log(client, f"{prefix}:events", [ev(n) for n in range(1, 11)])
    code = replay_to(sink, ["--from-id", "1", "--batch-size", "2"])
    err = capsys.readouterr().err
    assert code == 130
    assert sink.stored == [1, 2, 3, 4]
    assert (
        "eventbus replay: interrupted: replayed 4 event(s) from the log to sink halting; 0 "
        "failed, 0 undecodable entries skipped, 2 rejected by the destination after it took "
        "the request; done up to LogID 4: go on with --from-id 5"
    ) in err, err


class _CloseHangsSink(_InterruptedSink):
    """Ctrl-C during the third batch, then a close() that never returns."""

    name = "closehangs"

    async def close(self) -> None:
        await asyncio.Event().wait()


def test_an_interrupted_replay_ends_though_the_sinks_close_never_returns(
    client: redis.Redis,
    prefix: str,
    env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The close() ran first, unbounded: a SIGTERM'd replay ran on for good, and never said how
    # far it got (trial 116).
    from eventbus_core.dispatch import _dispatcher

    monkeypatch.setattr(_dispatcher, "_CLOSE_BOUND", 0.3)
    publish_log(client, f"{prefix}:events", [ev(n) for n in range(1, 11)])
    began = time.monotonic()
    code = replay_to(_CloseHangsSink(), ["--from-id", "1", "--batch-size", "2"])
    err = capsys.readouterr().err
    assert code == 130
    assert time.monotonic() - began < 10
    assert "done up to LogID 4: go on with --from-id 5" in err, err


def test_the_resume_hint_of_a_log_whose_logids_are_out_of_order_says_what_comes_again(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A stream shared with Go: py-1, go-1 (LogID from 2^62 up), py-2 ... Interrupted after the
    # first two, it said "done up to LogID 5553601606939312128: go on with --from-id 2", and
    # --from-id 2 gives go-1 again (trial 145).
    import argparse

    from eventbus_core.cli._replay_cmd import _summary

    args = argparse.Namespace(sink="webhook", dry_run=False)
    _summary(args, "stream", 2, 0, 0, 0, 0, ("interrupted", 5553601606939312128, 2))
    err = capsys.readouterr().err
    assert "done up to LogID 1 of this log's counted LogIDs, and some entries with derived" in err
    assert "go on with --from-id 2, which gives those again (de-duplicate by log_id)" in err, err
    _summary(args, "log", 4, 0, 0, 0, 0, ("interrupted", 4, 5))
    assert "done up to LogID 4: go on with --from-id 5" in capsys.readouterr().err


def test_an_interrupted_replay_of_a_mixed_stream_never_resumes_past_a_counted_entry() -> None:
    # Interrupted in a batch holding only go-1 (after py-1): it said --from-id
    # 5553601606939312128, which skips py-2, py-3 ... (trial 145).
    from eventbus_core import COUNTED_LOG_IDS_BELOW
    from eventbus_core.cli._replay_cmd import _resume

    go_1 = ev(0).replace(log_id=COUNTED_LOG_IDS_BELOW + 5)
    py_1 = ev(1).replace(log_id=1)
    assert _resume([go_1], COUNTED_LOG_IDS_BELOW + 4, 1, 0) == 2
    assert _resume([], COUNTED_LOG_IDS_BELOW + 5, 1, 0) == 2
    assert _resume([ev(7).replace(log_id=7)], 6, 6, 0) == 7  # a counted log: as before
    # No counted entry done yet (a stream that begins with Go's): from where the run began,
    # never a derived LogID, which skipped py-1, py-2 ... (review 149).
    assert _resume([go_1, py_1], 0, 0, 0) == 1
    assert _resume([], COUNTED_LOG_IDS_BELOW + 5, 0, 0) == 1
    assert _resume([go_1], COUNTED_LOG_IDS_BELOW + 4, 0, 40) == 40


def _interrupt() -> None:
    """Ctrl-C, as it comes to a running event loop."""
    raise KeyboardInterrupt


class _ClientClosedUnderTheSend:
    """Ctrl-C comes while a send waits for its answer; closing the sink then fails that send
    (an HTTP client closed under its request)."""

    name = "underclose"

    def __init__(self) -> None:
        self.closing = asyncio.Event()

    async def send(self, batch: Any) -> None:
        asyncio.get_running_loop().call_later(0.05, _interrupt)
        await self.closing.wait()
        raise RuntimeError("the client was closed under this request")

    async def close(self) -> None:
        self.closing.set()
        await asyncio.sleep(0)


class _SecondCtrlCDuringTheClose(_InterruptedSink):
    """Ctrl-C during the third batch, then another while close() waits for ever."""

    name = "twice"

    async def close(self) -> None:
        asyncio.get_running_loop().call_later(0.05, _interrupt)
        await asyncio.Event().wait()


@pytest.mark.parametrize(
    ("sink", "said"),
    [
        # "Task exception was never retrieved", with a traceback (trial 118).
        (_ClientClosedUnderTheSend, "no batch was done yet: go on with --from-id 1"),
        # "Task was destroyed but it is pending!" (trial 120).
        (_SecondCtrlCDuringTheClose, "done up to LogID 4: go on with --from-id 5"),
    ],
)
def test_an_interrupted_replay_logs_no_asyncio_error_after_its_summary(
    client: redis.Redis,
    prefix: str,
    env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    sink: Any,
    said: str,
) -> None:
    import gc

    publish_log(client, f"{prefix}:events", [ev(n) for n in range(1, 11)])
    code = replay_to(sink(), ["--from-id", "1", "--batch-size", "2"])
    gc.collect()
    assert code == 130
    assert said in capsys.readouterr().err
    errors = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert not errors, errors


def test_replay_into_a_pipe_closed_early_says_where_to_go_on(
    client: redis.Redis, prefix: str, env: dict[str, str]
) -> None:
    # `eventbus replay | head`: the summary said "replayed 100 ...; 0 failed" of 1,500, exit 0,
    # with nothing to say the rest was never printed (trial 106).
    publish_log(client, f"{prefix}:events", [ev(n) for n in range(1, 3001)])
    argv = cli("replay", "--from-id", "1", "--batch-size", "10")
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        assert json.loads(proc.stdout.readline())["LogID"] == 1
        proc.stdout.close()  # as `head -1` does
        err = proc.stderr.read()
        proc.wait(timeout=60)
    assert proc.returncode == 0, err  # the reader leaving is a normal end
    last = err.strip().splitlines()[-1]
    assert last.startswith("eventbus replay: stdout closed by its reader: replayed "), last
    # The reader may leave in the first batch (nothing done yet) or later: either way the line
    # names the batch it was in the middle of.
    resume = int(last.split("go on with --from-id ")[1])
    assert 1 <= resume <= 3000 and (resume - 1) % 10 == 0, last
