"""`eventbus replay --dead-letters FILE`: a dead-letter file's payloads go to a sink again.

The way back for a memory bus's dead letters, which no log holds (trial 201: no tool replayed
them, and the stall warning's hint named a command that refused the backend).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from eventbus_core import Dispatcher, JsonlDeadLetter
from eventbus_core.cli import main
from eventbus_core.testing import make_event
from eventbus_memory import InMemoryEventBus
from tests.core._replay import FlakySink, replay_to
from tests.core.conftest_dispatch import FAST_RETRY, AlwaysFailing, RecordingSink, read_jsonl


def dead_letters_file(tmp_path: Path, sink: str, log_ids: range, tail: str = "") -> Path:
    """A dead-letter file of one line per LogID, for `sink`, then `tail` as it is."""
    path = tmp_path / "dead.jsonl"
    rows = [{"sink": sink, "log_id": i, "payload": {"log_id": i}} for i in log_ids]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + tail)
    return path


class Keeper:
    """A sink that keeps every payload it is sent."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.payloads: list[dict[str, Any]] = []

    async def send(self, batch: Any) -> None:
        self.payloads += batch

    async def close(self) -> None:
        pass


def dead_letters_of_a_memory_dispatch(path: Path) -> list[dict[str, Any]]:
    """Six events from a memory bus through a sink that refuses them all ("down"), and one
    that takes them ("fine"); the dead letters go to `path`. Returns what "fine" got."""
    bus = InMemoryEventBus(buffer_size=100)
    down, fine = AlwaysFailing("down"), RecordingSink("fine")
    dispatcher = Dispatcher(
        bus, [down, fine], batch_size=4, flush_interval=0.01, retry=FAST_RETRY,
        dead_letter=JsonlDeadLetter(path),
    )  # fmt: skip

    async def run() -> None:
        task = asyncio.create_task(dispatcher.run())
        await asyncio.sleep(0.1)  # subscribed
        for i in range(6):
            headers = {"Authorization": ["Bearer sk-t201secretsecret"]}
            bus.publish(make_event(i, request_id=f"dl-{i}", response_headers=headers))
        for _ in range(500):
            if dispatcher.stats().sinks["down"].dead_lettered == 6:
                break
            await asyncio.sleep(0.01)
        dispatcher.request_stop()
        await task

    asyncio.run(run())
    bus.stop()
    return fine.payloads


def test_a_memory_bus_dead_letters_go_to_a_sink_again_as_the_dispatcher_sent_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "dead.jsonl"
    delivered = dead_letters_of_a_memory_dispatch(path)
    assert len(read_jsonl(path)) == 6
    keeper = Keeper("down")  # the name the dead letters carry
    assert replay_to(keeper, ["--dead-letters", str(path), "--batch-size", "4"]) == 0
    # The payloads "fine" got: transformed and redacted. (An event without a time of its own
    # gets the moment each sink's payload was made, a few microseconds apart.)
    assert [{**p, "timestamp": ""} for p in keeper.payloads] == [
        {**p, "timestamp": ""} for p in delivered
    ]
    assert "sk-t201secret" not in json.dumps(keeper.payloads)
    err = capsys.readouterr().err
    assert f"replayed 6 dead letter(s) of sink down from {path} to sink down; 0 failed" in err
    assert len(read_jsonl(path)) == 6  # only read


def test_the_dead_letters_of_one_sink_go_to_another_and_the_rest_are_counted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "dead.jsonl"
    rows = [{"sink": "a", "log_id": i, "payload": {"log_id": i}} for i in (1, 2, 3)]
    rows += [{"sink": "b", "log_id": 9, "payload": {"log_id": 9}}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"sink": "a", "payl\n')
    keeper = Keeper("other")
    assert replay_to(keeper, ["--dead-letters", str(path), "--from-sink", "a"]) == 1
    assert [p["log_id"] for p in keeper.payloads] == [1, 2, 3]
    err = capsys.readouterr().err
    assert "replayed 3 dead letter(s) of sink a" in err
    assert "1 unreadable line(s) skipped" in err  # the line a crash cut short: exit 1
    assert "left the dead letters of other sinks: b (1)" in err


def test_without_a_sink_the_payloads_are_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "dead.jsonl"
    rows = [{"sink": s, "payload": {"log_id": i, "n": "é"}} for i, s in enumerate("ab")]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["replay", "--dead-letters", str(path)]) == 0
    out = capsys.readouterr().out
    assert [json.loads(line) for line in out.splitlines()] == [r["payload"] for r in rows]


def test_a_failure_names_the_lines_of_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = dead_letters_file(tmp_path, "flaky", range(1, 7))
    sink = FlakySink()  # stores half a batch, then fails; refuses LogID 3 alone
    assert replay_to(sink, ["--dead-letters", str(path), "--batch-size", "4"]) == 1
    assert sorted(sink.stored) == [1, 2, 4, 5, 6]
    err = capsys.readouterr().err
    assert f"sink flaky failed for 1 event(s), line 3 of {path}, after 2 attempt(s)" in err
    assert "replayed 5 dead letter(s) of sink flaky" in err


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--from-id", "3"], "--from-id: --dead-letters reads a dead-letter file"),
        (["--since", "2h"], "--since: --dead-letters reads a dead-letter file"),
        (["--redis-url", "redis://h:1"], "--redis-url: --dead-letters reads a dead-letter file"),
        (["--backend", "memory"], "--backend: --dead-letters reads a dead-letter file"),
        (["--no-redact"], "--no-redact: a dead letter holds its payload"),
        (["--from-sink", " "], "--from-sink is empty"),
        (["--from-line", "0"], "--from-line 0: lines are numbered from 1"),
    ],
)
def test_flags_that_mean_nothing_for_a_file_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], said: str
) -> None:
    path = tmp_path / "dead.jsonl"
    path.write_text("")
    assert main(["replay", "--dead-letters", str(path), *flags]) == 2
    assert said in capsys.readouterr().err


def test_a_missing_file_and_a_stray_from_sink_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.jsonl"
    assert main(["replay", "--dead-letters", str(missing)]) == 2
    assert f"--dead-letters {missing}: cannot read it (No such file" in capsys.readouterr().err
    for flag in ("--from-sink", "--from-line"):
        assert main(["replay", flag, "1"]) == 2
        assert f"{flag} selects in a dead-letter file: it needs --dead-letters" in (
            capsys.readouterr().err
        )


def test_the_stall_warning_gives_a_command_to_paste(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The path as given (relative, unquoted) and a sink name no plugin has broke the pasted
    # command (trial 203).
    import logging

    from eventbus_core.dispatch._worker import SinkWorker

    class Lane:
        replayable = False
        durable = False

    path = tmp_path / "dead letters $HOME.jsonl"
    for name, plugin in (("hang", "SINK"), ("jsonl", "jsonl")):
        worker = SinkWorker.__new__(SinkWorker)
        worker.name, worker.lane, worker.queue_size = name, Lane(), 10
        worker.dead_letter = JsonlDeadLetter(path)
        worker.stats = type("S", (), {"stalled": False, "stalls": 0, "shed": 0})()
        with caplog.at_level(logging.WARNING, logger="eventbus"):
            worker.mark_stalled(5.0)
        quoted = "'" + str(path) + "'"
        command = f"eventbus replay --dead-letters {quoted} --from-sink {name} --sink {plugin}"
        assert command in caplog.text, caplog.text


def test_an_interrupted_run_says_where_to_go_on_and_that_line_is_taken(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = dead_letters_file(tmp_path, "k", range(1, 8))

    class Halting(Keeper):
        async def send(self, batch: Any) -> None:
            if self.payloads:
                raise KeyboardInterrupt
            await super().send(batch)

    assert replay_to(Halting("k"), ["--dead-letters", str(path), "--batch-size", "3"]) == 130
    assert "done up to line 3 of the file: go on with --from-line 4" in capsys.readouterr().err
    keeper = Keeper("k")
    assert replay_to(keeper, ["--dead-letters", str(path), "--from-line", "4"]) == 0
    assert [p["log_id"] for p in keeper.payloads] == [4, 5, 6, 7]


def test_a_run_reads_only_what_the_file_held_when_it_began(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A jsonl sink writing into the dead-letter file itself made the run read its own output
    # back as 300 unreadable lines (trial 203).
    path = dead_letters_file(tmp_path, "jsonl", range(1, 4))
    argv = ["replay", "--dead-letters", str(path), "--sink", "jsonl", "--sink-opt"]
    assert main([*argv, f"path={path}", "--batch-size", "1"]) == 0
    assert "replayed 3 dead letter(s) of sink jsonl" in capsys.readouterr().err
    assert len(path.read_text().splitlines()) == 6


def test_unreadable_lines_are_named_and_a_sink_with_none_there_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "dead.jsonl"
    path.write_text('{"sink": "a", "payload": {"log_id": 1}}\nnot json\n{"sink": "a"}\n')
    assert main(["replay", "--dead-letters", str(path), "--from-sink", "a"]) == 1
    assert "2 unreadable line(s) skipped (lines 2, 3)" in capsys.readouterr().err
    good = tmp_path / "good.jsonl"
    good.write_text('{"sink": "a", "payload": {"log_id": 1}}\n')
    # A typo in --from-sink: nothing of it there, the others' left: not a success.
    assert main(["replay", "--dead-letters", str(good), "--from-sink", "aa"]) == 1
    assert "replayed 0 dead letter(s) of sink aa" in capsys.readouterr().err


def test_a_dry_run_checks_the_sink_as_the_real_run_would_and_sends_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = dead_letters_file(tmp_path, "jsonl", range(1, 3))
    out = tmp_path / "out.jsonl"
    argv = ["replay", "--dead-letters", str(path), "--dry-run", "--sink", "jsonl"]
    for run in (argv, [a for a in argv if a != "--dry-run"]):  # the file is closed either way
        assert main([*run, "--sink-opt", f"path={out}", "--sink-opt", "bogus=1"]) == 2
        assert "bogus" in capsys.readouterr().err
    assert main([*argv, "--sink-opt", f"path={out}"]) == 0
    assert "would replay 2 dead letter(s) of sink jsonl" in capsys.readouterr().err
    assert not out.exists() or out.read_text() == ""
