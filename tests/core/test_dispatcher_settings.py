"""The dispatcher built from settings alone, the `eventbus dispatch` command, and secrecy."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from eventbus_core import (
    Dispatcher,
    Event,
    EventBusSettings,
    PluginRegistry,
    UnknownSinkError,
    create_bus,
)
from eventbus_core.sinks import JsonlSink, WebhookSink
from tests.core.conftest_dispatch import SECRET_AUTH, SECRET_KEY, AlwaysFailing, read_jsonl

ROOT = Path(__file__).resolve().parent.parent.parent
EVENTBUS = ROOT / ".venv" / "bin" / "eventbus"


async def test_memory_bus_jsonl_and_console_from_settings_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "events.jsonl"
    monkeypatch.setenv("LLM_PROXY_EVENT_BUS", "memory")
    monkeypatch.setenv("EVENTBUS_SINKS", "jsonl,console")
    monkeypatch.setenv("EVENTBUS_SINK_JSONL_PATH", str(out))
    monkeypatch.setenv("EVENTBUS_FLUSH_INTERVAL", "0.05")
    monkeypatch.setenv("EVENTBUS_DEAD_LETTER_PATH", str(tmp_path / "dead.jsonl"))
    bus = create_bus()
    dispatcher = Dispatcher.from_settings(bus=bus)
    task = asyncio.create_task(dispatcher.run())
    for i in range(500):
        bus.publish(
            Event(
                request_id=f"req-{i}",
                method="POST",
                path="/v1/chat/completions",
                status=200,
                duration=2_000_000,
            )
        )
    await bus.astop()  # delivers what it holds, then ends the subscriptions
    stats = await task
    ids = [r["request_id"] for r in read_jsonl(out)]
    assert sorted(ids) == sorted(f"req-{i}" for i in range(500))  # each exactly once
    console = [line for line in capsys.readouterr().out.splitlines() if "req-" in line]
    assert len(console) == 500
    assert console[0].startswith("POST /v1/chat/completions 200 2.0ms")
    for s in stats.sinks.values():
        assert s.received == s.sent == 500
    assert not (tmp_path / "dead.jsonl").exists()


def test_sink_options_from_environment_and_arguments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVENTBUS_SINK_JSONL_PATH", str(tmp_path / "env.jsonl"))
    monkeypatch.setenv("EVENTBUS_SINK_WEBHOOK_URL", "http://127.0.0.1:9/hook")
    monkeypatch.setenv("EVENTBUS_SINK_WEBHOOK_HEADER_X_TOKEN", "abc")
    settings = EventBusSettings(sinks="jsonl,webhook")
    d = Dispatcher.from_settings(
        settings, bus=create_bus(settings), sinks=[("jsonl", {"max_bytes": "10"}), ("webhook", {})]
    )
    jsonl, webhook = d.sinks
    assert isinstance(jsonl, JsonlSink) and jsonl.path == tmp_path / "env.jsonl"
    assert jsonl.file.max_bytes == 10
    assert isinstance(webhook, WebhookSink) and webhook.headers["x-token"] == "abc"


def test_an_option_variable_for_a_misspelt_sink_name_is_warned_about(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # EVENTBUS_SINK_OTPL_TIMEOUT=5 with otlp selected was ignored without a word (trial 104).
    from eventbus_core import _log
    from eventbus_core.dispatch._setup import build_sinks

    monkeypatch.setattr(_log, "_warned", set())
    monkeypatch.setenv("EVENTBUS_SINK_JSNL_PATH", str(tmp_path / "typo.jsonl"))
    monkeypatch.setenv("EVENTBUS_SINK_JSONL_PATH", str(tmp_path / "right.jsonl"))
    monkeypatch.setenv("EVENTBUS_SINK_MYOWNSINK_URL", "x")  # another program's: left alone
    monkeypatch.setenv("EVENTBUS_SINKS_JSONL_MAX_BYTES", "10")  # EVENTBUS_SINKS' S (trial 106)
    caplog.set_level(logging.WARNING, logger="eventbus")
    build_sinks(EventBusSettings(sinks="jsonl"))
    warned = [r.getMessage() for r in caplog.records if "no installed sink" in r.getMessage()]
    assert sorted(warned) == [
        "eventbus: EVENTBUS_SINKS_JSONL_MAX_BYTES is set, but no installed sink takes it, so it "
        "is ignored; did you mean EVENTBUS_SINK_JSONL_MAX_BYTES?",
        "eventbus: EVENTBUS_SINK_JSNL_PATH is set, but no installed sink takes it, so it is "
        "ignored; did you mean EVENTBUS_SINK_JSONL_PATH?",
    ]


def test_unknown_sink_lists_the_installed_ones() -> None:
    with pytest.raises(UnknownSinkError, match="console, helicone, jsonl, lunary, otlp, webhook"):
        Dispatcher.from_settings(EventBusSettings(sinks="nope"), registry=PluginRegistry())


async def test_no_credential_reaches_sinks_dead_letters_or_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = EventBusSettings(
        sinks="jsonl",
        flush_interval=0.01,
        retries=1,
        retry_base=0.001,
        dead_letter_path=str(tmp_path / "dead.jsonl"),
    )
    bus = create_bus(settings)
    d = Dispatcher.from_settings(
        settings, bus=bus, sinks=[("jsonl", {"path": str(tmp_path / "ok.jsonl")})]
    )
    # A second, failing sink whose error message repeats the key, as careless servers do.
    failing = AlwaysFailing("leaky")
    failing.error = lambda: RuntimeError(f"rejected key {SECRET_KEY} with {SECRET_AUTH}")
    d2 = Dispatcher(
        bus,
        [failing],
        flush_interval=0.01,
        retry=d.retry,
        dead_letter=d.dead_letter,
        redactor=d.redactor,
    )
    tasks = [asyncio.create_task(d.run()), asyncio.create_task(d2.run())]
    body = json.dumps(
        {
            "model": "gpt-4o",
            "api_key": SECRET_KEY,
            "messages": [{"role": "user", "content": f"my key is {SECRET_KEY}"}],
        }
    ).encode()
    bus.publish(
        Event(
            request_id="r1",
            method="POST",
            path="/v1/chat/completions",
            status=401,
            response_headers={
                "Authorization": SECRET_AUTH,
                "X-Api-Key": SECRET_KEY,
                "Set-Cookie": "session=abc123secret",
            },
            request_body=body,
            response_body=f'{{"error": "bad key {SECRET_KEY}"}}'.encode(),
        )
    )
    await bus.astop()
    await asyncio.gather(*tasks)
    written = (tmp_path / "ok.jsonl").read_text() + (tmp_path / "dead.jsonl").read_text()
    assert "r1" in written and "[REDACTED]" in written
    for secret in (SECRET_KEY, SECRET_AUTH, "tok-9f8e7d6c5b4a39281706", "abc123secret"):
        assert secret not in written
        assert secret not in caplog.text


def test_dispatch_command_runs_until_sigterm_and_exits_cleanly(tmp_path: Path) -> None:
    env = {**os.environ, "LLM_PROXY_EVENT_BUS": "memory", "EVENTBUS_FLUSH_INTERVAL": "0.05"}
    proc = subprocess.Popen(
        [
            str(EVENTBUS) if EVENTBUS.exists() else sys.executable,
            *([] if EVENTBUS.exists() else ["-m", "eventbus_core.cli"]),
            "dispatch",
            "--sink",
            "jsonl",
            "--sink-opt",
            f"path={tmp_path / 'e.jsonl'}",
            "--dead-letter",
            str(tmp_path / "dead.jsonl"),
        ],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    assert proc.stderr is not None
    seen = []
    try:
        for line in proc.stderr:  # wait until the signal handlers are in place
            seen.append(line)
            if "dispatcher running" in line:
                break
        assert any("dispatching from backend 'memory' to sinks jsonl" in line for line in seen)
        assert any("this dispatcher will receive nothing" in line for line in seen)
        # The hint every command gives (a pip command where the Redis backends are missing).
        example = "choose a shared backend; installed besides 'memory': "
        assert any(example in line for line in seen), seen
    except BaseException:
        proc.kill()  # a failed assertion must not leave the dispatcher running
        proc.communicate()  # and closes its pipe (a ResourceWarning failed another test)
        raise
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "dispatcher stopped" in err


def test_dispatch_command_rejects_an_option_without_its_sink() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "eventbus_core.cli", "dispatch", "--sink-opt", "path=x"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert "--sink-opt must follow the --sink" in done.stderr


def test_an_unknown_flag_is_reported_with_the_sub_commands_usage(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from eventbus_core.cli import main

    with pytest.raises(SystemExit) as info:
        main(["dispatch", "--bogus"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "eventbus dispatch: error: unrecognized arguments: --bogus" in err
    assert "usage: eventbus dispatch" in err


def test_a_sink_option_in_another_case_is_warned_about_before_its_error(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # eventbus_sink_webhook_url=u:pw@host was refused naming EVENTBUS_SINK_WEBHOOK_URL, which
    # held a valid URL, and the warning that would have said why never came (trial 122).
    from eventbus_core import SettingsError, _log
    from eventbus_core.dispatch._setup import build_sinks

    monkeypatch.setattr(_log, "_warned", set())
    environ = {"eventbus_sink_webhook_url": "u:hunter2@127.0.0.1:1/x"}
    caplog.set_level(logging.WARNING, logger="eventbus")
    with pytest.raises(SettingsError) as info:
        build_sinks(EventBusSettings(), [("webhook", {})], environ=environ)
    assert "hunter2" not in str(info.value)
    assert any(
        "eventbus_sink_webhook_url is read as EVENTBUS_SINK_WEBHOOK_URL" in r.getMessage()
        for r in caplog.records
    )


def test_dispatch_says_when_a_shared_backend_has_no_consumer_groups(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A plugin without ConsumerGroups took --consumer-groups shared --consumer-name foo without
    # a word, and the start line said "groups shared" (trial 208).
    from eventbus_core import EventBusSettings
    from eventbus_core.cli._dispatch_cmd import warn_without_groups
    from eventbus_core.testing import RecordingBus

    class Shared(RecordingBus):
        cross_process = True

    class Grouped(Shared):
        default_group = "g"

        def consumer(self, group: Any = None, name: Any = None, *, batch_size: int = 100) -> Any:
            raise NotImplementedError

    given = EventBusSettings(consumer_groups="shared", consumer_name="foo")
    caplog.set_level(logging.WARNING, logger="eventbus")
    assert warn_without_groups(Grouped(), given) is True
    assert warn_without_groups(RecordingBus(), given) is False  # in-process: said otherwise
    assert not caplog.records
    assert warn_without_groups(Shared(), given) is False
    said = caplog.records[-1].getMessage()
    assert "has no consumer groups" in said and "not delivered" in said, said
    assert "--consumer-name (EVENTBUS_CONSUMER_NAME) has no effect" in said
    assert "--consumer-groups" not in said  # one subscription for all sinks, or one each
    caplog.clear()
    assert warn_without_groups(Shared(), EventBusSettings()) is False
    assert "no effect" not in caplog.records[-1].getMessage()
