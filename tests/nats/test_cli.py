"""The command line on the NATS backend, through its capabilities: names from NATS settings.

`stats`, `replay`, the `tail` header, `demo` (multi-process, on a stream of the run's own) and
the dispatcher's consumer groups (EVENTBUS_NATS_GROUP, not another backend's default).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest

from eventbus_core import EventBusSettings
from eventbus_core.cli import main
from eventbus_core.dispatch._setup import dispatcher_arguments
from eventbus_core.dispatch._sources import resolve_sources
from eventbus_core.sinks.jsonl import JsonlSink
from eventbus_core.testing import make_event
from eventbus_nats import NatsEventBus
from eventbus_nats._consumer import GroupConsumer
from tests.nats._servers import free_port
from tests.nats.conftest import Names, publish_raw

pytestmark = [pytest.mark.nats, pytest.mark.timeout(120)]


@pytest.fixture
def env(nats_url: str, names: Names, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "LLM_PROXY_EVENT_BUS": "nats",
        "NATS_URL": nats_url,
        "EVENTBUS_NATS_STREAM": names.stream,
        "EVENTBUS_NATS_SUBJECT": names.subject,
        "EVENTBUS_NATS_GROUP": "cli-group",
        "EVENTBUS_DEAD_LETTER_PATH": "",
    }.items():
        monkeypatch.setenv(name, value)


def written(make_bus: Callable[..., NatsEventBus], count: int) -> NatsEventBus:
    """A bus on this test's stream (created by it), with events 1 to `count` written."""
    bus = make_bus()
    for n in range(1, count + 1):
        bus.publish(make_event(n))
    assert bus.flush(10)
    return bus


def errors_of_exit_2(
    argvs: Iterable[list[str]], capsys: pytest.CaptureFixture[str]
) -> Iterator[str]:
    """Run each command line, which must end with exit 2 (a settings error); yield its stderr."""
    for argv in argvs:
        assert main(argv) == 2, argv
        yield capsys.readouterr().err


def test_stats_and_replay_read_the_configured_stream(
    env: None,
    make_bus: Callable[..., NatsEventBus],
    names: Names,
    capsys: pytest.CaptureFixture[str],
) -> None:
    written(make_bus, 3)
    assert main(["stats", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert (figures["stream"], figures["messages"], figures["group"]) == (
        names.stream,
        3,
        "cli-group",
    )
    assert main(["replay", "--from-id", "2", "-q"]) == 0
    assert [json.loads(line)["LogID"] for line in capsys.readouterr().out.splitlines()] == [2, 3]
    assert main(["replay", "--since", "1h", "--dry-run"]) == 0
    assert "would replay 3 event(s) from the log" in capsys.readouterr().err


def test_replay_of_another_source_says_where_a_backend_s_dead_letters_are_told_of(
    env: None, make_bus: Callable[..., NatsEventBus], capsys: pytest.CaptureFixture[str]
) -> None:
    # "backend 'nats' keeps one log" beside a dead-letter stream of 100 (trial 270).
    written(make_bus, 1)
    [err] = errors_of_exit_2([["replay", "--source", "dead", "--dry-run"]], capsys)
    assert "--source dead: backend 'nats' offers no other log to read here" in err
    assert "says in its documentation how to send them again" in err


def test_tail_names_the_stream_and_shows_the_newest(env: None, names: Names) -> None:
    bus = NatsEventBus.from_settings(EventBusSettings())
    try:
        bus.publish(make_event(1))
        assert bus.flush(10)
    finally:
        bus.stop(5)
    argv = [sys.executable, "-m", "eventbus_core.cli", "tail", "-n", "1", "--json"]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        try:
            assert f"following nats stream {names.stream}" in proc.stderr.readline()
            assert json.loads(proc.stdout.readline())["RequestID"] == "req-1"
        finally:
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=30)


def test_tail_says_at_its_end_how_many_undecodable_messages_it_skipped(
    env: None, nats_url: str, names: Names
) -> None:
    # Counted by the bus, but said by tail on Redis only: its subscription's figures left the
    # bus's when it closed, before the end line was made (trial 142).
    bus = NatsEventBus.from_settings(EventBusSettings())
    try:
        bus.publish(make_event(1))  # the stream exists before tail follows it
        assert bus.flush(10)
        argv = [sys.executable, "-m", "eventbus_core.cli", "tail", "--json", "--count", "1"]
        with subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        ) as proc:
            assert proc.stdout is not None and proc.stderr is not None
            try:
                assert "following nats stream" in proc.stderr.readline()

                publish_raw(nats_url, names.subject, b"not an event")
                bus.publish(make_event(2))
                assert bus.flush(10)
                assert json.loads(proc.stdout.readline())["RequestID"] == "req-2"
                _, err = proc.communicate(timeout=30)  # it ends after --count 1
            finally:
                proc.kill()
    finally:
        bus.stop(5)
    assert "1 undecodable entry was skipped" in err, err


def test_the_dispatcher_joins_the_nats_group(env: None, tmp_path: Path) -> None:
    arguments, bus = dispatcher_arguments(EventBusSettings(), bus=None)
    try:
        sink = JsonlSink(tmp_path / "out.jsonl")
        lanes = resolve_sources(bus, [sink], "per-sink", arguments["group"], None, batch_size=10)
        ((_, source, _),) = lanes
        assert isinstance(source, GroupConsumer)
        assert source.group == "cli-group:jsonl"  # EVENTBUS_NATS_GROUP, then the sink
        source.close()
    finally:
        bus.stop(5)


def test_demo_runs_as_processes_on_a_stream_of_its_own(
    env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EVENTBUS_NATS_STREAM")  # no stream named: the run makes its own
    out = str(tmp_path / "demo.jsonl")
    assert main(["demo", "--requests", "120", "--json", "--output", out]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["publishers"] == 2
    assert report["delivered"] == report["written"] == report["published"] == 120
    assert report["namespace"].startswith("EVENTBUS_RUN_")
    assert "deleted" in report["cleanup"]


def test_demo_runs_on_the_stream_the_user_named_with_a_group_of_its_own(
    env: None,
    make_bus: Callable[..., NatsEventBus],
    names: Names,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # `demo --help` says a stream named in the settings is used; the demo made a stream of its
    # own anyway, which an account allowed only its own stream names cannot (trial 233).
    bus = written(make_bus, 5)  # the user's events: not the run's, not dispatched by it
    try:
        out = str(tmp_path / "demo.jsonl")
        assert main(["demo", "--requests", "30", "--json", "--output", out]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["namespace"] == names.stream
        assert report["delivered"] == report["written"] == report["published"] == 30
        assert Path(out).read_bytes().count(b"\n") == 30
        assert "yours (EVENTBUS_NATS_STREAM): left in place" in report["cleanup"]
        figures = bus.describe()
        assert figures["messages"] == 35
        assert figures["groups"] == []  # the run's group is removed
    finally:
        bus.stop(5)


def test_stats_gives_no_figures_for_a_default_group_that_does_not_exist(
    env: None, make_bus: Callable[..., NatsEventBus], capsys: pytest.CaptureFixture[str]
) -> None:
    # It said "pending 0" for the default group, which dispatch never makes (it makes
    # GROUP:SINK), beside a GROUP:jsonl with entries pending (trial 233).
    bus = written(make_bus, 3)
    try:
        consumer = bus.consumer("cli-group:jsonl", batch_size=10)
        assert len(consumer.read(10, 5.0)) == 3  # left pending
        assert main(["stats", "--json"]) == 0
        figures = json.loads(capsys.readouterr().out)
        assert (figures["group_exists"], figures["pending"], figures["redelivered"]) == (
            False,
            None,
            None,
        )
        assert [g["pending"] for g in figures["groups"]] == [3]
        consumer.close()
    finally:
        bus.stop(5)


def test_demo_processes_use_the_backend_options_given_on_the_command_line(
    env: None, nats_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The environment names a server that is not there; only the command line names the real
    # one. The demo's own processes must use it too (they once read the environment only).
    monkeypatch.setenv("NATS_URL", "nats://127.0.0.1:1")
    out = str(tmp_path / "demo.jsonl")
    argv = ["demo", "--requests", "40", "--json", "--output", out]
    assert main([*argv, "--backend-option", f"NATS_URL={nats_url}"]) == 0
    assert Path(out).read_bytes().count(b"\n") == 40


def test_a_refused_backend_option_is_named_as_typed(
    env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    # It named EVENTBUS_NATS_REPLICAS, a variable the user had not set (helper-73).
    assert main(["stats", "--backend-option", "nats_replicas=9"]) == 2
    err = capsys.readouterr().err
    assert "--backend-option nats_replicas '9': Input should be less than or equal to 5" in err
    assert "EVENTBUS_NATS_REPLICAS" not in err


def test_an_unreachable_server_given_by_backend_option_is_named_by_the_option(
    env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    # "or set NATS_URL", though the environment's NATS_URL was not the one tried.
    url = f"nats://127.0.0.1:{free_port()}"
    assert main(["stats", "--backend-option", f"NATS_URL={url}"]) == 1
    err = capsys.readouterr().err
    assert (
        "or correct --backend-option NATS_URL (settings given by --backend-option NATS_URL)" in err
    )
    assert "set NATS_URL" not in err


def test_replay_into_a_pipe_closed_early_ends_quietly(
    env: None, make_bus: Callable[..., NatsEventBus]
) -> None:
    # `eventbus replay | head -1`: the reader leaving was reported as "the backend failed:
    # BrokenPipeError", exit 1.
    bus = make_bus()
    for n in range(2000):
        bus.publish(make_event(n))
    assert bus.flush(20)
    argv = [sys.executable, "-m", "eventbus_core.cli", "replay", "-q"]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        assert json.loads(proc.stdout.readline())["LogID"] == 1
        proc.stdout.close()  # as `head -1` does
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert b"BrokenPipe" not in err and b"backend failed" not in err


def test_an_existing_stream_that_does_not_take_the_subject_is_a_settings_error(
    env: None,
    make_bus: Callable[..., NatsEventBus],
    names: Names,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The stream was used as it was: events went to whichever stream took the subject (counted
    # written, with its LogIDs), or to none (lost while retrying for ever), and `tail` and
    # `replay` died with "internal error: BadRequestError 10093".
    bus = written(make_bus, 1)  # the stream exists, taking names.subject
    other = f"{names.subject}.other"
    monkeypatch.setenv("EVENTBUS_NATS_SUBJECT", other)
    argvs = (["stats"], ["tail", "-n", "1"], ["replay", "--dry-run"])
    for err in errors_of_exit_2(argvs, capsys):
        assert f"NATS stream {names.stream} exists but does not take subject {other!r}" in err
        assert f"its subjects: {names.subject}" in err and "EVENTBUS_NATS_SUBJECT" in err
    mismatched = make_bus(subject=other)
    for i in range(5):
        mismatched.publish(make_event(i))
    assert not mismatched.flush(1)
    mismatched.stop(1)
    stats = mismatched.stats()
    assert (stats.published, stats.lost, stats.extra["written"]) == (5, 5, 0)
    assert "does not take subject" in stats.extra["last_error"]
    assert bus.describe()["messages"] == 1  # nothing of the mismatched bus's went there


@pytest.mark.parametrize("retention", ["workqueue", "interest"])
def test_an_existing_stream_that_deletes_consumed_messages_is_a_settings_error(
    retention: str,
    env: None,
    make_bus: Callable[..., NatsEventBus],
    names: Names,
    nats_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A work-queue stream was used as it was: `tail` retried for ever ("consumer in pull mode
    # requires ack policy"), and what one consumer group took, the others never saw.
    import asyncio

    import nats
    from nats.js import api

    async def make_stream() -> None:
        nc = await nats.connect(nats_url)
        try:
            await nc.jetstream().add_stream(
                api.StreamConfig(
                    name=names.stream,
                    subjects=[names.subject],
                    retention=api.RetentionPolicy(retention),
                )
            )
        finally:
            await nc.close()

    asyncio.run(make_stream())
    argvs = (["stats"], ["tail", "-n", "1"], ["replay", "--dry-run"])
    for err in errors_of_exit_2(argvs, capsys):
        assert f"NATS stream {names.stream} exists with retention '{retention}'" in err, err
        assert "EVENTBUS_NATS_STREAM" in err and "retention 'limits'" in err
    bus = make_bus()
    for i in range(3):
        bus.publish(make_event(i))
    assert not bus.flush(1)
    bus.stop(1)
    stats = bus.stats()
    assert (stats.published, stats.lost, stats.extra["written"]) == (3, 3, 0)
    assert f"retention '{retention}'" in stats.extra["last_error"]


def test_replicas_a_single_server_cannot_keep_end_every_command_with_exit_2(
    env: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    # The server refused to create the stream ("replicas > 1 not supported in non-clustered
    # mode") at every write: publish exited 1 after 5 s with every event lost, tail and
    # dispatch retried for ever, the demo ran 31 s for nothing (two outside trials).
    monkeypatch.setenv("EVENTBUS_NATS_REPLICAS", "3")
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps({"RequestID": "r1", "Method": "GET", "Path": "/"}) + "\n")
    with events.open() as stdin:
        monkeypatch.setattr(sys, "stdin", stdin)
        argvs = (["stats"], ["tail", "-c", "1"], ["publish"], ["dispatch", "--sink", "console"])
        for err in errors_of_exit_2(argvs, capsys):
            assert "EVENTBUS_NATS_REPLICAS=3" in err and "not part of a cluster" in err, err


def test_replicas_given_by_backend_option_are_named_by_it_in_the_servers_refusal(
    env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    # "set EVENTBUS_NATS_REPLICAS=1", a variable nobody had set (trial 125).
    (err,) = errors_of_exit_2([["stats", "--backend-option", "nats_replicas=3"]], capsys)
    assert err.startswith("eventbus stats: error: --backend-option nats_replicas=3: "), err
    assert "pass --backend-option nats_replicas=1, or point NATS_URL at" in err
    assert "EVENTBUS_NATS_REPLICAS" not in err


def test_a_group_name_given_by_backend_option_is_named_by_it_when_nats_refuses_it(
    env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    # Found after the start: "set from EVENTBUS_NATS_GROUP", a variable nobody set (trial 127).
    option = f"nats_group={'g' * 252}"
    argv = ["dispatch", "--sink", "console", "--backend-option", option]
    (err,) = errors_of_exit_2([argv], capsys)
    assert "(set from --backend-option nats_group;" in err, err
    assert "EVENTBUS_NATS_GROUP" not in err


def test_a_new_stream_for_a_subject_another_stream_captures_ends_commands_with_exit_2(
    env: None,
    make_bus: Callable[..., NatsEventBus],
    names: Names,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The server refused to create it ("subjects overlap with an existing stream") at every
    # write: publish lost all after 5 s, tail and dispatch retried for ever (an outside trial).
    written(make_bus, 1)  # names.stream exists, capturing names.subject
    monkeypatch.setenv("EVENTBUS_NATS_STREAM", f"{names.stream}_OTHER")
    argvs = (["stats"], ["tail", "-c", "1"], ["dispatch", "--sink", "console"])
    for err in errors_of_exit_2(argvs, capsys):
        assert f"NATS stream {names.stream} already captures subject" in err, err
        assert "EVENTBUS_NATS_SUBJECT" in err


def test_demo_keep_names_the_stream_and_subject_to_read_it_with(
    env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The hint named the stream only: following it, tail and replay used the default subject.
    monkeypatch.delenv("EVENTBUS_NATS_STREAM")  # no stream named: the run makes its own
    out = str(tmp_path / "demo.jsonl")
    assert main(["demo", "--requests", "20", "--json", "--keep", "--output", out]) == 0
    report = json.loads(capsys.readouterr().out)
    stream = report["namespace"]
    monkeypatch.setenv("EVENTBUS_NATS_STREAM", stream)
    try:
        hint = report["cleanup"]
        assert f"EVENTBUS_NATS_STREAM={stream}" in hint and "EVENTBUS_NATS_SUBJECT=" in hint
        subject = hint.split("EVENTBUS_NATS_SUBJECT=")[1].split()[0]
        monkeypatch.setenv("EVENTBUS_NATS_SUBJECT", subject)
        assert main(["replay", "--dry-run"]) == 0
        assert "would replay 20 event(s)" in capsys.readouterr().err
    finally:
        NatsEventBus(os.environ["NATS_URL"], stream=stream, subject="x.y").purge()


def test_a_mirror_of_the_stream_can_be_read(
    env: None,
    make_bus: Callable[..., NatsEventBus],
    names: Names,
    nats_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A mirror lists no subjects of its own: the subject check refused it (exit 2), though
    # reading it works.
    import asyncio

    import nats
    from nats.js import api

    written(make_bus, 3)
    mirror = f"{names.stream}_MIRROR"

    async def make_mirror() -> None:
        nc = await nats.connect(nats_url)
        try:
            await nc.jetstream().add_stream(
                api.StreamConfig(name=mirror, mirror=api.StreamSource(name=names.stream))
            )
        finally:
            await nc.close()

    asyncio.run(make_mirror())
    try:
        monkeypatch.setenv("EVENTBUS_NATS_STREAM", mirror)
        deadline = time.monotonic() + 10
        while True:  # the mirror catches up in the background
            assert main(["replay", "--dry-run"]) == 0
            if "would replay 3 event(s)" in capsys.readouterr().err:
                break
            assert time.monotonic() < deadline, "the mirror never held the 3 events"
            time.sleep(0.1)
    finally:
        NatsEventBus(nats_url, stream=mirror, subject="x.y").purge()


def test_other_subjects_of_a_shared_wildcard_stream_are_not_counted_missed(
    names: Names, nats_url: str
) -> None:
    # A stream taking `<token>.>` also holds other subjects' messages: each of their sequences
    # was counted as an event of the bus "removed from the stream" (60 delivered and 35
    # dropped for 60 published).
    import asyncio

    import nats
    from nats.js import api

    wildcard = names.subject.rsplit(".", 1)[0] + ".>"
    other = names.subject.rsplit(".", 1)[0] + ".other"

    async def on_nats(what: str, n: int = 0) -> None:
        nc = await nats.connect(nats_url)
        try:
            js = nc.jetstream()
            if what == "stream":
                await js.add_stream(api.StreamConfig(name=names.stream, subjects=[wildcard]))
            for _ in range(n):
                await js.publish(other, b"not an event of the bus")
        finally:
            await nc.close()

    asyncio.run(on_nats("stream"))
    bus = NatsEventBus(nats_url, stream=names.stream, subject=names.subject)
    try:
        sub = bus.subscribe()
        for round_ in range(3):
            for i in range(10):
                bus.publish(make_event(round_ * 10 + i))
            assert bus.flush(10)
            asyncio.run(on_nats("others", 7))
        for i in range(30, 40):
            bus.publish(make_event(i))
        assert bus.flush(10)
    finally:
        bus.stop(5)
    got = list(sub)
    assert len(got) == 40 and (sub.stats().dropped, sub.missed) == (0, 0)


def _dead_letters_script() -> str:
    """The script of nats.md's "Sending dead letters through again", as printed."""
    import re

    text = (Path(__file__).resolve().parents[2] / "docs" / "backends" / "nats.md").read_text()
    (found,) = [b for b in re.findall(r"```python\n(.*?)```", text, re.DOTALL) if "_DEAD" in b]
    return found


def test_dead_letters_go_through_again_as_nats_md_says(
    env: None, names: Names, nats_url: str, make_bus: Callable[..., NatsEventBus], tmp_path: Path
) -> None:
    bus = written(make_bus, 1)
    publish_raw(nats_url, names.subject, b"{not an event")
    consumer = bus.consumer("g", "crashing", ack_wait=0.5, max_deliveries=1)
    deadline = time.monotonic() + 20
    while consumer.figures()["dead_lettered"] < 2 and time.monotonic() < deadline:
        consumer.read(10, timeout=0.5)  # never acknowledged: a dispatcher that dies on each
    assert consumer.figures()["dead_lettered"] == 2
    consumer.close()
    script = tmp_path / "dead_letters.py"
    script.write_text(_dead_letters_script())
    printed = subprocess.run(
        [sys.executable, str(script), names.stream],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    lines = printed.stdout.splitlines()
    assert len(lines) == 2 and "{not an event" in lines, printed.stdout
    for group, count in (("g", 2), ("another-group", 0)):
        of_group = subprocess.run(
            [sys.executable, str(script), names.stream, group],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        assert len(of_group.stdout.splitlines()) == count, (group, of_group.stdout)
    bad_line = lines.index("{not an event") + 1
    again = subprocess.run(
        [sys.executable, "-m", "eventbus_core.cli", "publish", "--backend", "nats"],
        input=printed.stdout, capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ},
    )  # fmt: skip
    assert again.returncode == 1, again.stderr  # the line that is no event, reported
    assert f"line {bad_line}" in again.stderr, again.stderr
    newest = bus.newest(1)
    assert [(e.request_id, e.log_id) for e in newest] == [("req-1", 3)]


def test_dispatch_ends_with_exit_2_on_a_group_that_cannot_serve(
    env: None, names: Names, nats_url: str, make_bus: Callable[..., NatsEventBus],
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    # A push consumer of the group's name gave the dispatcher nothing, for ever, with /readyz
    # saying "reading" and exit 0 at SIGTERM (trial 246).
    import asyncio

    import nats
    from nats.js import api

    written(make_bus, 3)

    async def push_consumer() -> None:
        nc = await nats.connect(nats_url)
        try:
            config = api.ConsumerConfig(durable_name="pushed", deliver_subject="somewhere.else")
            await nc.jetstream().add_consumer(names.stream, config)
        finally:
            await nc.close()

    asyncio.run(push_consumer())
    monkeypatch.setenv("EVENTBUS_NATS_GROUP", "pushed")
    argv = ["dispatch", "--sink", "console", "--consumer-groups", "shared"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "consumer group pushed" in err and "push consumer" in err, err
