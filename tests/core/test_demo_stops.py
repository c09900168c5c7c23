"""`eventbus demo` checks its output path before anything runs, and stops on Ctrl-C.

Each case runs the demo as its own process, as a user would: an output path it cannot write is
one line naming the path and why, exit 2, on every backend, before any request is simulated or
process started; a real SIGINT ends the demo (exit 130, "interrupted after N requests"), and
on Redis its processes are gone and its keys deleted. Time bounds are generous on purpose: they
tell "stops" from "runs to the end" (minutes at these sizes), nothing finer.
"""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from tests._devices import FULL_MINOR, NULL_MINOR, make_device
from tests._services import redis_url, require_redis

STOPS_DB = 9  # not test_demo.py's 8: the two files may run at once (dev.py test: -n 3)
REDIS_URL = redis_url(STOPS_DB)
BACKENDS = ["memory", "redis", "redis-streams"]


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "eventbus_core.cli", *args]


def env_for(backend: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("EVENTBUS_", "LLM_PROXY_", "REDIS_URL"))
    }
    return {**env, "LLM_PROXY_EVENT_BUS": backend, "REDIS_URL": REDIS_URL}


def redis_or_skip(backend: str) -> redis.Redis | None:
    if backend == "memory":
        return None
    return require_redis(STOPS_DB)  # skips without a server, fails under CI


def unwritable_dir(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        return locked
    # root writes through permission bits; sysfs refuses new files even to root.
    if not Path("/sys/kernel").is_dir():
        pytest.skip("no /sys to stand for a directory nobody may write in")
    return Path("/sys/kernel")


def _demo(backend: str, output: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`eventbus demo --requests 2000 --output OUTPUT` on `backend`, run as a user would."""
    return subprocess.run(
        cli("demo", "--requests", "2000", "--output", str(output)),
        capture_output=True,
        text=True,
        timeout=60,
        env=env_for(backend),
        cwd=cwd,
        check=False,
    )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "case", ["proc", "parent-is-a-file", "unwritable-dir", "a-directory", "a-pipe", "a-dash"]
)
def test_an_output_path_it_cannot_write_is_refused_before_anything_runs(
    case: str, backend: str, tmp_path: Path
) -> None:
    client = redis_or_skip(backend)
    afile = tmp_path / "afile"
    afile.write_text("x")
    path = {
        "proc": Path("/proc/x.jsonl"),
        "parent-is-a-file": afile / "x.jsonl",
        "unwritable-dir": unwritable_dir(tmp_path) / "x.jsonl",
        "a-directory": tmp_path,
        "a-pipe": tmp_path / "fifo",
        "a-dash": Path("-"),
    }[case]
    if case == "a-pipe":
        os.mkfifo(path)  # nobody reads it: opening it to write would wait for ever
    before = set(client.scan_iter(match="eventbus-demo:*")) if client is not None else set()
    started = time.monotonic()
    done = _demo(backend, path, tmp_path)
    took = time.monotonic() - started
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"eventbus demo: error: --output {str(path)!r}")
    reason = {
        "proc": "cannot be written",
        "parent-is-a-file": f"{afile} is a file, not a directory",
        "unwritable-dir": "cannot be written",
        "a-directory": "is a directory",
        "a-pipe": "is a pipe; give a file",
        "a-dash": "would be a file named '-'",
    }[case]
    assert reason in lines[0]
    assert done.stdout == ""  # no summary: nothing was simulated
    assert took < 10  # starting Python; the demo itself would take seconds, Redis retries 26 s
    if client is not None:
        assert set(client.scan_iter(match="eventbus-demo:*")) == before  # no run started
    assert afile.read_text() == "x"


@pytest.mark.redis
def test_the_multi_process_demo_refuses_an_output_that_is_a_device(tmp_path: Path) -> None:
    # It deleted its output path before the run: as root, `--output /dev/null` removed the
    # machine's /dev/null (and /dev/full, once, on the machine these tests run on).
    require_redis(STOPS_DB)
    null = make_device(tmp_path / "null", NULL_MINOR)
    done = _demo("redis", null, tmp_path)
    assert done.returncode == 2, done.stderr
    assert "is not a regular file" in done.stderr and "Traceback" not in done.stderr
    assert stat.S_ISCHR(null.stat().st_mode)


def test_a_full_disk_is_said_once_in_the_summary(tmp_path: Path) -> None:
    # The consumer thread died with a traceback, and the summary said 0 delivered and 5 written.
    full = make_device(tmp_path / "full", FULL_MINOR)
    done = _demo("memory", full, tmp_path)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert f"FAILED: cannot write {full}: No space left on device" in done.stderr
    assert re.search(r"events delivered +2000\n", done.stdout), done.stdout
    assert re.search(r"lines written +0 ", done.stdout), done.stdout


def test_an_existing_output_file_is_left_alone_by_the_check(tmp_path: Path) -> None:
    from eventbus_core.cli._output import check_output

    target = tmp_path / "deep" / "er" / "out.jsonl"
    check_output(target, "--output")
    assert target.parent.is_dir() and not target.exists()  # made its folder, not the file
    target.write_text("old line\n")
    check_output(target, "--output")
    assert target.read_text() == "old line\n"


def _start(backend: str, tmp_path: Path, *extra: str) -> subprocess.Popen[str]:
    out = tmp_path / "events.jsonl"
    return subprocess.Popen(
        cli("demo", "--requests", "1000000", "--workers", "4", "--output", str(out), *extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env_for(backend),
        cwd=tmp_path,
    )


def _wait_for_traffic(proc: subprocess.Popen[str], path: Path) -> None:
    """Until the consumer has written something: the demo is well under way."""
    deadline = time.monotonic() + 60
    while not (path.exists() and path.stat().st_size > 0):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            _, err = proc.communicate()
            pytest.fail(f"the demo wrote nothing (exit {proc.returncode}): {err}")
        time.sleep(0.05)  # polling a file another process writes: no event to wait on


def _interrupt(
    proc: subprocess.Popen[str], sig: signal.Signals = signal.SIGINT
) -> tuple[str, str, float]:
    started = time.monotonic()
    proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:  # it did not stop: do not leave it running after the test
            proc.kill()
            proc.communicate()
    return out, err, time.monotonic() - started


def test_ctrl_c_stops_the_memory_demo(tmp_path: Path) -> None:
    proc = _start("memory", tmp_path)
    _wait_for_traffic(proc, tmp_path / "events.jsonl")
    out, err, took = _interrupt(proc)
    assert proc.returncode == 130, err
    match = re.search(r"interrupted after (\d+) of 1000000 requests; (\d+) published", err)
    assert match, err
    assert 0 < int(match.group(1)) < 1_000_000
    assert took < 5  # within a second, with room for a busy machine; the run takes minutes
    assert out == ""  # no summary of a run that did not finish


def test_ctrl_c_with_json_still_prints_json(tmp_path: Path) -> None:
    proc = _start("memory", tmp_path, "--json")
    _wait_for_traffic(proc, tmp_path / "events.jsonl")
    out, err, _ = _interrupt(proc)
    assert proc.returncode == 130, err
    shown = json.loads(out)  # a script reading stdout gets JSON in every outcome
    assert shown["interrupted"] is True and 0 < shown["simulated"] < shown["requests"]


def _demo_processes(run: str) -> list[int]:
    """Pids of live processes started by the demo run `run` (their argv carries req-<run>)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().split(") ", 1)[1][0]
        except OSError:
            continue
        if f"req-{run}".encode() in argv and state != "Z":
            found.append(int(entry.name))
    return found


@pytest.mark.redis
@pytest.mark.parametrize(
    ("backend", "sig", "code"),
    [
        ("redis", signal.SIGINT, 130),
        ("redis-streams", signal.SIGINT, 130),
        # kill, a container stop: by default the demo died at once, its keys left behind.
        ("redis", signal.SIGTERM, 143),
    ],
)
def test_ctrl_c_stops_the_redis_demo_its_processes_and_cleans_up(
    backend: str, sig: signal.Signals, code: int, tmp_path: Path
) -> None:
    client = redis_or_skip(backend)
    assert client is not None
    proc = _start(backend, tmp_path)
    _wait_for_traffic(proc, tmp_path / "events.jsonl")
    out, err, took = _interrupt(proc, sig)
    assert proc.returncode == code, err
    match = re.search(
        r"interrupted after (\d+) of 1000000 requests; its (\d+) processes were stopped; "
        r"redis (?:key|stream) eventbus-demo:([0-9a-f]+):events: deleted",
        err,
    )
    assert match, err
    assert int(match.group(1)) > 0 and int(match.group(2)) == 3
    run = match.group(3)
    assert took < 15  # ending three processes (SIGTERM) and deleting the keys
    assert _demo_processes(run) == []
    assert list(client.scan_iter(match=f"eventbus-demo:{run}:*")) == []
    assert out == ""


@pytest.mark.redis
def test_ctrl_c_with_keep_leaves_the_keys(tmp_path: Path) -> None:
    client = redis_or_skip("redis")
    assert client is not None
    proc = _start("redis", tmp_path, "--keep")
    _wait_for_traffic(proc, tmp_path / "events.jsonl")
    _, err, _ = _interrupt(proc)
    match = re.search(r"redis key (eventbus-demo:[0-9a-f]+):events: kept", err)
    assert proc.returncode == 130 and match, err
    keys = list(client.scan_iter(match=f"{match.group(1)}:*"))
    try:
        assert keys
    finally:
        if keys:
            client.delete(*keys)
