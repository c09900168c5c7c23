"""An unreachable backend gets the same answer from every command, as a user would meet it.

Each command runs as its own process against a closed port on the loopback: one line on
stderr naming where it looked (never the password) and what to check, exit 1, at once
(bounds are generous: they only tell "fails fast" from "retries for ever"). `--wait-for-backend`
waits for a server that starts late; `tail` rides out an outage after start-up with warnings.
The servers here are throwaway ones on free ports (`tests/redis/_servers.py`).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventbus_core import BackendUnavailableError
from eventbus_core.cli._ops import flag_terms
from eventbus_core.cli._reach import BackendWatch, ensure_reachable
from eventbus_redis import RedisEventBus, RedisStreamsEventBus
from tests.redis._servers import ThrowawayRedis, free_port

COMMANDS = {
    "publish": ["publish"],
    "stats": ["stats"],
    "replay": ["replay"],
    "demo": ["demo", "--requests", "10"],
    "tail": ["tail"],
    "dispatch": ["dispatch", "--sink", "console"],
}


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "eventbus_core.cli", *args]


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("EVENTBUS_", "LLM_PROXY_", "REDIS_URL"))
    }
    return {**env, "PYTHONWARNINGS": "ignore", **extra}


@pytest.fixture
def closed_url() -> str:
    return f"redis://:hunter2@127.0.0.1:{free_port()}/0"


@pytest.mark.parametrize("backend", ["redis", "redis-streams"])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_fails_fast_with_one_line(
    command: str, backend: str, closed_url: str, tmp_path: Path
) -> None:
    port = closed_url.rsplit(":", 1)[1].split("/", 1)[0]
    argv = [*COMMANDS[command], "--backend", backend, "--redis-url", closed_url]
    started = time.monotonic()
    done = subprocess.run(
        cli(*argv),
        input="",
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
        cwd=tmp_path,  # the demo's output file, the dispatcher's dead letters: not ours
        check=False,
    )
    took = time.monotonic() - started
    assert done.returncode == 1, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    line = lines[0]
    assert line.startswith(f"eventbus {command}: error: Redis at redis://127.0.0.1:{port}/0")
    assert "did not answer" in line and "check that Redis is running" in line
    assert "that --redis-url is right" in line  # where the address came from
    assert "REDIS_URL" not in line  # which the user did not set
    assert "hunter2" not in done.stderr + done.stdout
    assert took < 10, f"{command} took {took:.1f} s to give up"  # retrying would take longer


@pytest.mark.parametrize("command", ["stats", "tail"])
def test_the_address_from_the_environment_is_checked_the_same_way(
    command: str, closed_url: str
) -> None:
    env = clean_env(LLM_PROXY_EVENT_BUS="redis", REDIS_URL=closed_url)
    done = subprocess.run(
        cli(command), capture_output=True, text=True, timeout=60, env=env, check=False
    )
    assert done.returncode == 1
    assert "did not answer" in done.stderr and "hunter2" not in done.stderr
    assert "that REDIS_URL is right" in done.stderr  # the variable the user set


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_backend_command_documents_it_in_help(command: str) -> None:
    done = subprocess.run(
        cli(COMMANDS[command][0], "--help"), capture_output=True, text=True, timeout=60, check=False
    )
    text = " ".join(done.stdout.split())
    assert "--wait-for-backend SECONDS" in text
    assert "exits 1 at once" in text
    if command in ("tail", "dispatch"):
        assert "rides out outages" in text


def test_wait_for_backend_gives_up_when_the_time_runs_out(closed_url: str) -> None:
    argv = ["stats", "--backend", "redis", "--redis-url", closed_url, "--wait-for-backend", "1"]
    started = time.monotonic()
    done = subprocess.run(
        cli(*argv), capture_output=True, text=True, timeout=60, env=clean_env(), check=False
    )
    took = time.monotonic() - started
    assert done.returncode == 1
    assert "waiting up to 1 s" in done.stderr
    assert "did not answer" in done.stderr.splitlines()[-1]
    # The wait asked for, not the last try's share of it ("within 0.498177 s" on NATS).
    assert "after waiting 1 s, --wait-for-backend" in done.stderr.splitlines()[-1]
    assert 1.0 <= took < 15
    # The waiting line, as the error, names the flag typed: it said "that REDIS_URL is
    # right", unset, above an error saying "--redis-url" (trial 184).
    waiting = next(line for line in done.stderr.splitlines() if "waiting up to" in line)
    assert "that --redis-url is right" in waiting and "REDIS_URL" not in waiting


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ThrowawayRedis]:
    server = ThrowawayRedis(tmp_path, password="hunter2")
    yield server
    server.kill()


@pytest.mark.redis
def test_wait_for_backend_waits_for_a_server_that_starts_late(server: ThrowawayRedis) -> None:
    argv = ["stats", "--backend", "redis", "--redis-url", server.url, "--wait-for-backend", "30"]
    with subprocess.Popen(
        cli(*argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env()
    ) as proc:
        assert proc.stderr is not None
        waiting = proc.stderr.readline()  # said once it found nobody there
        assert "waiting up to 30 s" in waiting
        server.start()
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "published" in out


@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.parametrize("command", ["tail", "dispatch"])
def test_a_long_running_command_rides_out_an_outage_and_says_so(
    command: str, server: ThrowawayRedis, tmp_path: Path
) -> None:
    server.start()
    argv = [*COMMANDS[command], "--backend", "redis-streams", "--redis-url", server.url]
    env = clean_env(EVENTBUS_DEAD_LETTER_PATH="")
    lines: list[str] = []
    seen = threading.Condition()

    def wait_for(text: str, timeout: float) -> None:
        with seen:
            assert seen.wait_for(lambda: any(text in line for line in lines), timeout), lines

    with subprocess.Popen(
        cli(*argv),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    ) as proc:
        assert proc.stderr is not None
        stderr = proc.stderr

        def read() -> None:
            for line in stderr:
                with seen:
                    lines.append(line)
                    seen.notify_all()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            wait_for("following" if command == "tail" else "dispatcher running", 30)
            server.kill()
            wait_for("the backend stopped answering", 30)  # checked every 5 s
            assert proc.poll() is None  # still running: it rides the outage out
            server.start()
            wait_for("the backend answers again", 30)
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(30)
        reader.join(10)
    assert proc.returncode in (0, 130)
    assert "hunter2" not in "".join(lines)


class FlakyBus:
    """A bus with the `Reachable` capability whose answer the test decides."""

    def __init__(self) -> None:
        self.up = True
        self.checks = 0

    def check(self, timeout: float = 2.0) -> None:
        self.checks += 1
        if not self.up:
            raise BackendUnavailableError("Redis at redis://127.0.0.1:9/0 did not answer")


def test_the_outage_warning_is_rate_limited(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clock = [1000.0]
    monkeypatch.setattr("eventbus_core.cli._reach.time.monotonic", lambda: clock[0])
    bus = FlakyBus()
    watch = BackendWatch(bus, command="eventbus tail", repeat=30.0)
    caplog.set_level("WARNING", logger="eventbus.cli")
    watch.poll()
    assert caplog.records == []  # answering: silent
    bus.up = False
    for _ in range(12):  # a minute of checks every 5 s
        watch.poll()
        clock[0] += 5.0
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages  # the first failure, then once after 30 s
    assert "stopped answering" in messages[0] and "127.0.0.1:9" in messages[0]
    assert "has not answered for 30 s" in messages[1]
    bus.up = True
    watch.poll()
    assert "answers again, 60 s after it was first seen not answering" in (
        caplog.records[-1].getMessage()
    )
    watch.poll()
    assert len(caplog.records) == 3


def test_the_outage_warning_names_the_flag_that_gave_the_address(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A running `eventbus tail --redis-url ...` warned "check ... that REDIS_URL is right", a
    # variable never set (trial 184).
    class Down:
        def check(self, timeout: float = 2.0) -> None:
            raise BackendUnavailableError(
                "Redis at redis://127.0.0.1:9/0 did not answer (TimeoutError); check that Redis "
                "is running and reachable at that address, and that REDIS_URL is right"
            )

    args = argparse.Namespace(redis_url="redis://127.0.0.1:9/0", backend_options=[])
    watch = BackendWatch(Down(), command="eventbus tail", say=flag_terms(args))
    caplog.set_level("WARNING", logger="eventbus.cli")
    watch.poll()
    (message,) = [r.getMessage() for r in caplog.records]
    assert "that --redis-url is right" in message and "REDIS_URL" not in message


def test_a_bus_without_the_capability_is_taken_as_reachable() -> None:
    ensure_reachable(object(), wait=0)  # no check() at all: nothing to ask


def test_both_redis_buses_offer_check(closed_url: str) -> None:
    import redis

    client = redis.Redis.from_url(closed_url)
    for bus in (RedisEventBus(client, "k"), RedisStreamsEventBus(client, "s")):
        with pytest.raises(BackendUnavailableError) as info:
            bus.check(timeout=1.0)
        assert "hunter2" not in str(info.value)
        assert isinstance(info.value, ConnectionError)
        bus.stop(timeout=0)


def test_probes_answer_while_dispatch_waits_for_its_backend(
    closed_url: str, tmp_path: Path
) -> None:
    # The port was bound before the wait and served only after it: every probe hung until its
    # timeout, so the documented liveness probe restarted a dispatcher waiting for Redis.
    pytest.importorskip("prometheus_client")
    import json
    import urllib.error
    import urllib.request

    port = free_port()
    argv = [
        *["dispatch", "--sink", "console", "--backend", "redis-streams"],
        *["--redis-url", closed_url, "--wait-for-backend", "60"],
        *["--metrics-port", str(port), "--metrics-host", "127.0.0.1"],
    ]
    with subprocess.Popen(
        cli(*argv),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
        cwd=tmp_path,
    ) as proc:
        try:
            assert proc.stderr is not None
            waiting = proc.stderr.readline()
            while "waiting up to 60 s" not in waiting:
                assert waiting, "the dispatcher ended before waiting"
                waiting = proc.stderr.readline()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=3) as r:
                assert r.status == 200
            with pytest.raises(urllib.error.HTTPError) as ready:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=3)
            assert ready.value.code == 503
            checks = json.loads(ready.value.read())["checks"]
            ready.value.close()
            assert [(c["name"], c["detail"]) for c in checks] == [("dispatcher", "starting")]
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=30)


@pytest.mark.parametrize(
    ("signum", "sigint_ignored"),
    [(signal.SIGTERM, False), (signal.SIGINT, False), (signal.SIGINT, True)],
    ids=["sigterm", "sigint", "sigint-inherited-ignored"],
)
def test_a_stop_signal_while_dispatch_waits_for_its_backend_exits_0(
    closed_url: str, signum: int, sigint_ignored: bool
) -> None:
    # SIGTERM and a first Ctrl-C are dispatch's normal way to end (exit 0, says --help), but
    # before the dispatcher ran (while --wait-for-backend waited) SIGTERM gave 143 (trial 103)
    # and SIGINT 130, or, ignored as a script's background job inherits it, nothing until the
    # wait ran out, though the running dispatcher takes it (trial 175).
    argv = ["dispatch", "--sink", "console", "--backend", "redis-streams", "--redis-url"]
    with subprocess.Popen(
        cli(*argv, closed_url, "--wait-for-backend", "60"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
        preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))  # noqa: PLW1509
        if sigint_ignored
        else None,
    ) as proc:
        assert proc.stderr is not None
        deadline = time.monotonic() + 30
        while "waiting up to 60 s" not in proc.stderr.readline():
            assert time.monotonic() < deadline and proc.poll() is None
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
