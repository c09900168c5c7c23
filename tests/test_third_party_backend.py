"""A third-party backend on a core installed alone: every command works through capabilities.

One fresh `python -m venv` per session, with only `./eventbus_core` and the example backend of
docs/examples/sqlite-backend installed by pip: no redis-py, no httpx, no nats-py, none of the
built-in backends. eventbus_core is installed without its declared dependencies and then with
pluggy, pydantic and pydantic-settings only (and pytest, for the contract classes), to prove
that nothing else is imported on the way.
The example declares CrossProcess (one SQLite file shared by every process), ReadableLog,
Describable, ConsumerGroups, Reachable and Isolatable, written only against the documented
protocols, so `eventbus plugins`, `demo` (multi-process), `tail`, `replay`, `stats` and
`dispatch` must all work on it, and the contract suite's capability classes must pass.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "docs" / "examples" / "sqlite-backend"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


class Env:
    """The fresh environment, and an environment for its commands on one SQLite file."""

    def __init__(self, venv: Path, work: Path) -> None:
        self.bin = venv / "bin"
        self.work = work

    def env(self, db: str, **extra: str) -> dict[str, str]:
        """The environment of a command on the file `db` (one per test)."""
        clean = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("EVENTBUS_", "LLM_PROXY_", "OBSERVABILITY_", "REDIS_", "NATS_"))
            and k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")
        }
        return {
            **clean,
            "PATH": f"{self.bin}{os.pathsep}{clean.get('PATH', '')}",
            "LLM_PROXY_EVENT_BUS": "sqlite",
            "EVENTBUS_SQLITE_PATH": str(self.work / db),
            "EVENTBUS_DEAD_LETTER_PATH": "",
            **extra,
        }

    def run(self, db: str, *argv: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        """`eventbus ARGV` on the file `db`, which must exit 0."""
        done = subprocess.run(
            [str(self.bin / "eventbus"), *argv],
            input=stdin,
            cwd=self.work,
            env=self.env(db),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, f"eventbus {' '.join(argv)}: {done.stdout}{done.stderr}"
        return done


@pytest.fixture(scope="session")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Env:
    base = tmp_path_factory.mktemp("third-party")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    packages = [str(ROOT / "eventbus_core"), str(EXAMPLE)]
    subprocess.run([*pip, "--no-deps", *packages], check=True, timeout=300, cwd=base)
    # Core's own dependencies but httpx (imported only by the HTTP sinks: this proves nothing
    # else needs it), and pytest for the contract classes: one resolver run.
    declared = tomllib.loads((ROOT / "eventbus_core" / "pyproject.toml").read_text())
    deps = [d for d in declared["project"]["dependencies"] if not d.startswith("httpx")]
    deps.append("pytest")
    subprocess.run([*pip, *deps], check=True, timeout=300, cwd=base)
    work = base / "work"
    work.mkdir()
    return Env(venv, work)


def event_lines(n: int, first: int = 1) -> str:
    lines = []
    for i in range(first, first + n):
        body = {
            "LogID": 0,
            "RequestID": f"req-{i}",
            "Method": "POST",
            "Path": "/v1/chat/completions",
            "Status": 200,
            "Duration": 1_000_000,
            "ResponseHeaders": {"Content-Type": ["application/json"]},
            "ResponseBody": "",
            "RequestBody": "",
        }
        lines.append(json.dumps(body))
    return "\n".join(lines) + "\n"


def test_nothing_but_core_and_the_example_is_there(fresh: Env) -> None:
    code = "import importlib.util as u; print([m for m in ('redis', 'httpx', 'nats', "
    code += "'eventbus_redis', 'eventbus_memory', 'eventbus_nats') if u.find_spec(m)])"
    done = subprocess.run(
        [str(fresh.bin / "python"), "-c", code],
        cwd=fresh.work,  # not the checkout, whose folders would be found as namespaces
        env=fresh.env("none.db"),
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "[]"


def test_an_http_sink_without_httpx_fails_at_start_with_the_pip_command(fresh: Env) -> None:
    argv = ["dispatch", "--sink", "webhook", "--sink-opt", "url=http://127.0.0.1:9/x"]
    done = subprocess.run(
        [str(fresh.bin / "eventbus"), *argv],
        cwd=fresh.work,
        env=fresh.env("webhook.db"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "pip install httpx" in done.stderr, done.stderr


def test_a_closed_pipe_is_a_normal_end(fresh: Env) -> None:
    done = subprocess.run(
        f"{fresh.bin / 'eventbus'} plugins | head -1",
        shell=True,
        cwd=fresh.work,
        env=fresh.env("pipe.db"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "error" not in done.stderr, done.stderr


def test_plugins_lists_it_with_its_settings(fresh: Env) -> None:
    out = fresh.run("plugins.db", "plugins").stdout
    row = next(line for line in out.splitlines() if line.startswith("sqlite"))
    assert "eventbus-sqlite-example" in row and "ok" in row
    assert "EVENTBUS_SQLITE_PATH" in out and "EVENTBUS_SQLITE_GROUP" in out  # its settings


def test_demo_runs_as_processes_on_a_file_of_its_own(fresh: Env) -> None:
    done = fresh.run("demo.db", "demo", "--requests", "300", "--publishers", "2", "--json")
    report = json.loads(done.stdout)
    assert report["publishers"] == 2  # multi-process: the backend says it is shared
    assert report["delivered"] == report["written"] == report["published"] == 300
    assert report["namespace"].startswith(str(fresh.work / "demo.db"))
    assert "deleted" in report["cleanup"]
    assert not Path(report["namespace"]).exists()


def test_publish_stats_and_replay(fresh: Env) -> None:
    fresh.run("log.db", "publish", "-q", stdin=event_lines(5))
    stats = json.loads(fresh.run("log.db", "stats", "--json").stdout)
    assert (stats["backend"], stats["length"], stats["newest_log_id"]) == ("sqlite", 5, 5)
    replayed = fresh.run("log.db", "replay", "--from-id", "2", "--to-id", "4", "-q").stdout
    assert [json.loads(line)["LogID"] for line in replayed.splitlines()] == [2, 3, 4]
    dry = fresh.run("log.db", "replay", "--since", "1h", "--dry-run").stderr
    assert "would replay 5 event(s)" in dry


def test_tail_shows_the_newest_then_follows_another_process(fresh: Env) -> None:
    fresh.run("tail.db", "publish", "-q", stdin=event_lines(2, first=98))
    with subprocess.Popen(
        [str(fresh.bin / "eventbus"), "tail", "-n", "1", "--count", "1", "--json"],
        cwd=fresh.work,
        env=fresh.env("tail.db"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stderr is not None
        assert "following sqlite file" in proc.stderr.readline()
        fresh.run("tail.db", "publish", "-q", stdin=event_lines(1, first=100))
        out, _ = proc.communicate(timeout=60)
    assert [json.loads(line)["RequestID"] for line in out.splitlines()] == ["req-99", "req-100"]


def test_dispatch_delivers_through_a_consumer_group(fresh: Env) -> None:
    fresh.run("dispatch.db", "publish", "-q", stdin=event_lines(3, first=200))
    out = fresh.work / "dispatched.jsonl"
    argv = ["dispatch", "--sink", "jsonl", "--sink-opt", f"path={out}", "--flush-interval", "0.2"]
    with subprocess.Popen(
        [str(fresh.bin / "eventbus"), *argv],
        cwd=fresh.work,
        env=fresh.env("dispatch.db", EVENTBUS_SQLITE_GROUP="third-party-test"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if out.exists() and "req-202" in out.read_text():
                break
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    ids = [json.loads(line)["request_id"] for line in out.read_text().splitlines()]
    assert {"req-200", "req-201", "req-202"} <= set(ids)
    stats = json.loads(fresh.run("dispatch.db", "stats", "--json").stdout)
    group = next(g for g in stats["groups"] if g["name"] == "third-party-test:jsonl")
    assert group["pending"] == 0


CONTRACT = """
import pytest
from eventbus_core.testing import (
    ConsumerGroupContract, CrossProcessContract, DescribableContract,
    IsolatableContract, ReachableContract, ReadableLogContract,
)
from eventbus_sqlite_example import SqliteEventBus


class TestSqlite(
    ReachableContract, CrossProcessContract, ReadableLogContract,
    DescribableContract, ConsumerGroupContract, IsolatableContract,
):
    @pytest.fixture(autouse=True)
    def _file(self, tmp_path):
        self.path = str(tmp_path / "events.sqlite3")

    def make_bus(self, buffer_size):
        return SqliteEventBus(self.path, buffer_size=buffer_size)

    def make_unreachable_bus(self):
        return SqliteEventBus("/nonexistent-folder/events.sqlite3")
"""


def test_the_capability_contract_classes_pass(fresh: Env) -> None:
    (fresh.work / "test_sqlite_contract.py").write_text(textwrap.dedent(CONTRACT))
    done = subprocess.run(
        [str(fresh.bin / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=fresh.work,
        env=fresh.env("contract.db"),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "passed" in done.stdout and "failed" not in done.stdout
