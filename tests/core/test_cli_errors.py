"""The command line names what the user typed, and tells their mistakes from its own bugs.

- A value given by a flag is reported under that flag, one from the environment under its
  variable; `EVENTBUS_TRANSFORMER` failures name the variable and its value.
- eventbus's own errors are one line: exit 2 for usage and configuration, 1 for the rest.
- Anything else is an internal error: exit 1 (never 2), traceback with -v.
- Ranges that select nothing by construction, and `tail -c 0`, are refused up front.
- `--version` lists every installed distribution of the family.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import io
import json
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eventbus_core import EventBusSettings, PluginRegistry
from eventbus_core.cli import main

# Nothing listens on port 1 of the loopback: a command that got as far as connecting fails
# with exit 1, so exit 2 proves the mistake was caught before any I/O.
CLOSED = "redis://:secret@127.0.0.1:1/0"


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    err = capsys.readouterr().err
    return code, err


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


# --------------------------------------------------------------------- flags, not variables


@pytest.mark.parametrize("command", ["stats", "tail", "replay", "publish", "demo", "dispatch"])
def test_unknown_backend_flag_is_named_as_the_flag(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run([command, "--backend", "nosuch"], capsys)
    assert code == 2
    line = one_line(err)
    assert "'nosuch' (--backend)" in line
    assert "LLM_PROXY_EVENT_BUS" not in line


def test_unknown_backend_from_the_environment_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LLM_PROXY_EVENT_BUS", "nosuch")
    code, err = run(["publish"], capsys)
    assert code == 2
    assert "'nosuch' (LLM_PROXY_EVENT_BUS)" in one_line(err)


@pytest.mark.parametrize("command", ["stats", "tail", "replay", "publish", "demo", "dispatch"])
def test_bad_redis_url_flag_is_named_as_the_flag(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run([command, "--backend", "redis", "--redis-url", "http://u:hunter2@x"], capsys)
    assert code == 2
    line = one_line(err)
    assert line.startswith(f"eventbus {command}: error: --redis-url 'http://u:***@x'")
    assert "REDIS_URL" not in line
    assert "hunter2" not in line


def test_a_negative_redis_database_is_called_what_it_is(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # "must be a number ... not '-1'" (trial 165): -1 is a number.
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/-1")
    code, err = run(["stats", "--backend", "redis"], capsys)
    assert code == 2
    assert "must be a whole number from 0 up" in one_line(err)


@pytest.mark.parametrize(("command", "flag"), [("demo", "--output"), ("publish", "--file")])
def test_an_empty_path_flag_is_refused_as_typed(
    command: str, flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # `demo --output ''` said "'.' is a directory" (trial 165): Path("") is ".".
    with pytest.raises(SystemExit) as raised:
        main([command, flag, ""])
    err = capsys.readouterr().err
    assert raised.value.code == 2
    assert f"argument {flag if flag != '--file' else '-f/--file'}: '': give a file path" in err


def test_a_blank_dead_letter_path_is_refused_as_typed_and_an_empty_one_means_none(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # " " meant a file named " " from the variable, and none from the flag (trial 169).
    code, err = run(["dispatch", "--sink", "null", "--dead-letter", " "], capsys)
    assert code == 2 and "--dead-letter ' ': is blank" in one_line(err)
    monkeypatch.setenv("EVENTBUS_DEAD_LETTER_PATH", " ")
    code, err = run(["dispatch", "--sink", "null"], capsys)
    assert code == 2 and "EVENTBUS_DEAD_LETTER_PATH=' ': is blank" in one_line(err)
    assert EventBusSettings(dead_letter_path="").dead_letter_path == ""


def test_bad_redis_url_from_the_environment_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REDIS_URL", "http://u:hunter2@x")
    code, err = run(["stats", "--backend", "redis"], capsys)
    assert code == 2
    line = one_line(err)
    assert "REDIS_URL='http://u:***@x'" in line
    assert "hunter2" not in line


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--batch-size", "0"),
        ("--flush-interval", "0"),
        ("--retries", "-1"),
        ("--shutdown-timeout", "-1"),
    ],
)
def test_dispatch_flag_errors_name_the_flag(
    flag: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run(["dispatch", flag, value], capsys)
    assert code == 2
    line = one_line(err)
    assert line.startswith(f"eventbus dispatch: error: {flag} {value}")  # as typed, or 0.0
    assert "EVENTBUS_" not in line


def test_dispatch_variable_errors_still_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EVENTBUS_BATCH_SIZE", "0")
    code, err = run(["dispatch", "--retries", "2"], capsys)
    assert code == 2
    assert "EVENTBUS_BATCH_SIZE='0'" in one_line(err)


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "1e300"])
def test_a_wait_for_backend_that_is_no_wait_is_refused(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # nan was taken as 0, and inf waited for ever.
    code, err = run(
        ["stats", "--backend", "redis", "--redis-url", CLOSED, "--wait-for-backend", value], capsys
    )
    assert code == 2
    assert f"--wait-for-backend {float(value):g}: give the seconds to wait, a number from 0" in (
        one_line(err)
    )


def test_replay_batch_size_zero_names_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(
        ["replay", "--backend", "redis", "--redis-url", CLOSED, "--batch-size", "0"], capsys
    )
    assert code == 2
    assert "--batch-size 0" in one_line(err)


@pytest.mark.parametrize("last", ["-1", "99999999999999999999"])
def test_tail_last_out_of_range_names_the_flag(
    last: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # A huge one reached Redis, whose refusal was reported as "Redis at ... failed; is it
    # running, and is REDIS_URL (or --redis-url) right?" with exit 1 (an outside trial).
    code, err = run(["tail", "--backend", "redis", "--redis-url", CLOSED, "-n", last], capsys)
    assert code == 2
    assert f"--last {last}" in one_line(err)


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["dispatch", "--sink", "nosuch"], "'nosuch' (--sink)"),
        (["dispatch", "--sink", "console", "--sink", "console"], "console named more than once"),
    ],
)
def test_dispatch_sink_mistakes_are_usage_errors(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run(argv, capsys)
    assert code == 2
    assert says in one_line(err)


def test_empty_sinks_variable_is_named(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EVENTBUS_SINKS", " , ")
    code, err = run(["dispatch"], capsys)
    assert code == 2
    assert "EVENTBUS_SINKS is empty" in one_line(err)


# ------------------------------------------------------------------ EVENTBUS_TRANSFORMER


@pytest.fixture
def user_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder on sys.path for modules a test writes, as a user's own package would be."""
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("nosuch_pkg.observability:transform", "cannot import 'nosuch_pkg.observability'"),
        ("eventbus_cli_test_ok:nosuch", "module 'eventbus_cli_test_ok' has no 'nosuch'"),
        ("eventbus_cli_test_boom:transform", "importing 'eventbus_cli_test_boom' raised"),
        ("no_colon_here", "must be 'package.module:function'"),
        ("eventbus_cli_test_ok:NOT_CALLABLE", "is not callable"),
    ],
)
@pytest.mark.parametrize("command", ["dispatch", "replay"])
def test_transformer_errors_name_the_variable_and_value(
    command: str,
    value: str,
    says: str,
    user_modules: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (user_modules / "eventbus_cli_test_ok.py").write_text(
        "NOT_CALLABLE = 3\n\ndef transform(event):\n    return {}\n"
    )
    (user_modules / "eventbus_cli_test_boom.py").write_text(
        "raise RuntimeError('the user module is broken')\n"
    )
    monkeypatch.setenv("EVENTBUS_TRANSFORMER", value)
    argv = {
        "dispatch": ["dispatch", "--sink", "console"],
        # The sink target is built (and the transformer loaded) before Redis is read.
        "replay": ["replay", "--backend", "redis", "--redis-url", CLOSED, "--sink", "console"],
    }[command]
    code, err = run(argv, capsys)
    assert code == 2
    line = one_line(err)
    assert f"EVENTBUS_TRANSFORMER={value!r}" in line
    assert says in line


# ------------------------------------------------------------------ our bugs are not yours


@pytest.mark.parametrize("bug", [TypeError, LookupError, ValueError, ImportError, KeyError])
def test_an_internal_error_is_exit_1_and_says_so(
    bug: type[Exception], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(args: argparse.Namespace) -> int:
        raise bug("something eventbus did wrong")

    monkeypatch.setattr("eventbus_core.cli._plugins_cmd.run", broken)
    code, err = run(["plugins"], capsys)
    assert code == 1  # never 2: it is not the user's configuration
    line = one_line(err)
    assert "internal error" in line and "something eventbus did wrong" in line
    assert "rerun with -v for the traceback" in line

    code, err = run(["-v", "plugins"], capsys)
    assert code == 1
    assert "Traceback (most recent call last)" in err
    assert "in broken" in err


@pytest.mark.parametrize("verbose", [[], ["-v"]])
@pytest.mark.parametrize("error", [ValueError, RuntimeError])
def test_error_lines_and_tracebacks_are_scrubbed(
    error: type[Exception],
    verbose: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    secret = "sk-proj-abcdefghijklmnopqrstuvwxyz0123"

    def broken(args: argparse.Namespace) -> int:
        raise error(f"bad header Authorization: Bearer {secret} at redis://u:hunter2@h:1/0")

    monkeypatch.setattr("eventbus_core.cli._plugins_cmd.run", broken)
    code, err = run([*verbose, "plugins"], capsys)
    assert code in (1, 2)
    assert secret not in err and "hunter2" not in err
    assert "bad header" in err


# ------------------------------------------------------------ ranges that select nothing


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--from-id", "10", "--to-id", "5"], "--from-id 10 is after --to-id 5"),
        (["--source", "stream", "--since", "1h", "--until", "2h"], "--since"),
        (
            ["--source", "stream", "--since", "2026-01-02T00:00:00Z", "--until", "2026-01-01"],
            "is after --until",
        ),
    ],
)
def test_backwards_replay_range_is_refused(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run(["replay", "--backend", "redis", "--redis-url", CLOSED, *argv], capsys)
    assert code == 2
    line = one_line(err)
    assert says in line and "select nothing" in line


def test_a_one_event_range_is_fine(capsys: pytest.CaptureFixture[str]) -> None:
    # Equal ends select one event: the range check lets it through to Redis (closed: exit 1).
    code, _ = run(
        ["replay", "--backend", "redis", "--redis-url", CLOSED, "--from-id", "7", "--to-id", "7"],
        capsys,
    )
    assert code == 1


@pytest.mark.parametrize("count", ["0", "-3"])
def test_tail_count_zero_is_refused(count: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(["tail", "--backend", "redis", "--redis-url", CLOSED, "-c", count], capsys)
    assert code == 2
    line = one_line(err)
    assert f"--count {count}" in line and "leave --count out" in line


def test_tail_help_says_what_count_means(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["tail", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "N >= 1; without --count, follow until Ctrl-C" in text


# ------------------------------------------------------------------------------- --version


def test_version_lists_every_installed_distribution_of_the_family(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    shown = dict(line.split() for line in lines)
    assert lines[0].split()[0] == "eventbus-core"
    expected = {"eventbus-core": md.version("eventbus-core")}
    for ep in md.entry_points(group="eventbus"):
        if ep.dist is not None:
            expected[ep.dist.metadata["Name"]] = ep.dist.version
    assert shown == expected
    assert {"eventbus-memory", "eventbus-redis"} <= set(shown)


def test_help_lists_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "--version" in capsys.readouterr().out


def test_a_dead_letter_path_that_cannot_be_written_is_refused_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run(["dispatch", "--sink", "console", "--dead-letter", str(tmp_path)], capsys)
    assert code == 2
    assert f"--dead-letter '{tmp_path}' is a directory" in one_line(err)
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("EVENTBUS_DEAD_LETTER_PATH", str(blocker / "dl.jsonl"))
    code, err = run(["dispatch", "--sink", "console"], capsys)
    assert code == 2
    assert "EVENTBUS_DEAD_LETTER_PATH" in one_line(err) and "is a file" in err


def test_an_empty_backend_flag_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    # It fell back to LLM_PROXY_EVENT_BUS without a word, while an empty variable is refused.
    code, err = run(["stats", "--backend", ""], capsys)
    assert code == 2
    assert "--backend is empty: give a backend name" in one_line(err)


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["demo", "--requests", "5", "--redis-url", "redis://127.0.0.1:1/0"], "--redis-url"),
        (["stats", "--backend", "memory", "--backend-option", "redis_key=k"], "redis_key"),
    ],
)
def test_a_setting_only_another_backend_reads_is_refused(
    argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # `eventbus demo --redis-url ...` ran the memory demo and said nothing of the flag.
    assert main(argv) == 2
    err = one_line(capsys.readouterr().err)
    assert flag in err and "is a setting of the redis and redis-streams backends" in err
    assert "not of 'memory'" in err and "pass --backend redis" in err


class _InterruptedInput:
    """stdin whose reader presses Ctrl-C after `lines` lines."""

    def __init__(self, lines: int) -> None:
        self.left = lines

    def __iter__(self) -> _InterruptedInput:
        return self

    def __next__(self) -> str:
        if self.left == 0:
            raise KeyboardInterrupt
        self.left -= 1
        return '{"RequestID": "r", "Status": 200}\n'

    def readline(self, limit: int = -1) -> str:
        """As a stream is read (`eventbus publish` reads each line with a bound)."""
        return self.__next__()


@pytest.mark.parametrize("json_output", [False, True])
def test_ctrl_c_during_publish_still_delivers_and_says_what_was_done(
    json_output: bool, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # It printed nothing at all (with --json an empty stdout), though stop() had run.
    monkeypatch.setattr("sys.stdin", _InterruptedInput(3))
    code = main(["publish", "--backend", "memory", *(["--json"] if json_output else [])])
    assert code == 130
    out, err = capsys.readouterr()
    if json_output:
        summary = json.loads(out)
        assert (summary["accepted"], summary["interrupted"]) == (3, True)
    else:
        assert "eventbus publish: interrupted: 3 accepted, 0 dropped, 0 rejected" in err


class _TerminatedInput(_InterruptedInput):
    """stdin after whose `lines` lines the process gets SIGTERM (as from `kill` or a container
    stop), which by default would end it at once, losing what it had accepted, silently."""

    def __next__(self) -> str:
        if self.left == 0:
            os.kill(os.getpid(), signal.SIGTERM)
            threading.Event().wait(5)  # the handler raises in this thread, at once
            raise AssertionError("SIGTERM did not end the command")
        return super().__next__()


@pytest.fixture(autouse=True)
def _sigterm_guard() -> Iterator[None]:
    """A SIGTERM the command did not take fails the test instead of ending pytest: the tests
    below send real ones to this process."""

    def untaken(signum: int, frame: object) -> None:
        raise AssertionError(f"signal {signum} reached the process: no command handler took it")

    previous = {sig: signal.signal(sig, untaken) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def test_sigterm_during_publish_delivers_what_was_accepted_and_exits_143(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr("sys.stdin", _TerminatedInput(3))
    code = main(["publish", "--backend", "memory"])
    assert code == 143
    assert "eventbus publish: interrupted: 3 accepted, 0 dropped" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is before  # the command's handler is gone again


@pytest.mark.parametrize(("argv", "code"), [(["plugins"], 143), (["dispatch"], 0)])
def test_sigterm_while_the_commands_load_gives_the_commands_exit_code(
    argv: list[str], code: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A SIGTERM in the moments the commands take to load ended the process by the signal's
    # default: 143 where dispatch promises 0 (trial 103).
    import eventbus_core.cli as cli_module

    real = cli_module.build_parser

    def build_then_signalled() -> Any:
        parser = real()
        os.kill(os.getpid(), signal.SIGTERM)
        return parser

    monkeypatch.setattr(cli_module, "build_parser", build_then_signalled)
    before = signal.getsignal(signal.SIGTERM)
    assert main(argv) == code
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_second_sigterm_does_not_cut_the_ending_short(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A second SIGTERM while the first one's ending delivered what was accepted ended the
    # command at once: no summary, and the events lost without being counted.
    from eventbus_core.testing import RecordingBus

    class SlowToStop(RecordingBus):
        def stop(self, timeout: float | None = None) -> None:
            os.kill(os.getpid(), signal.SIGTERM)  # the impatient second one
            threading.Event().wait(0.2)  # the handler runs meanwhile, in this thread
            super().stop(timeout)

    bus = SlowToStop()
    monkeypatch.setattr("eventbus_core.cli._ops.create_bus", lambda settings: bus)
    monkeypatch.setattr("sys.stdin", _TerminatedInput(3))
    assert main(["publish", "--backend", "memory"]) == 143
    assert "eventbus publish: interrupted: 3 accepted, 0 dropped" in capsys.readouterr().err
    assert len(bus.published) == 3 and bus.stats().lost == 0
    # The first SIGTERM, in the ending of a run that had read all its input: the ending goes
    # on (it abandoned stop() and printed nothing), and the run ends as it would have.
    bus = SlowToStop()
    monkeypatch.setattr("sys.stdin", io.StringIO('{"RequestID": "r", "Status": 200}\n' * 3))
    assert main(["publish", "--backend", "memory"]) == 0
    assert "eventbus publish: 3 accepted, 0 dropped" in capsys.readouterr().err
    assert bus._stopped


def test_a_first_ctrl_c_in_the_final_stop_lets_it_deliver(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Input read to the end, then Ctrl-C while stop() wrote what was accepted: the stop was
    # abandoned, nothing was printed, and the events were lost uncounted.
    from eventbus_core.testing import RecordingBus

    class SlowToStop(RecordingBus):
        def stop(self, timeout: float | None = None) -> None:
            os.kill(os.getpid(), signal.SIGINT)
            threading.Event().wait(0.2)  # the handler runs meanwhile, in this thread
            super().stop(timeout)

    bus = SlowToStop()
    monkeypatch.setattr("eventbus_core.cli._ops.create_bus", lambda settings: bus)
    monkeypatch.setattr("sys.stdin", io.StringIO('{"RequestID": "r", "Status": 200}\n' * 3))
    assert main(["publish", "--backend", "memory"]) == 0
    err = capsys.readouterr().err
    assert "Ctrl-C again to stop at once" in err and "3 accepted, 0 dropped" in err
    assert bus._stopped


def test_the_shared_backend_advice_names_only_flags_that_exist(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Without eventbus-redis, --redis-url does not exist: the advice says how to install it.
    import eventbus_memory.plugin as memory_plugin
    from eventbus_core import _plugins as plugins_module
    from eventbus_core import create_bus
    from eventbus_core.cli._ops import UsageError, require_shared

    only_memory = PluginRegistry(load_entry_points=False, plugins=[memory_plugin])
    monkeypatch.setattr(plugins_module, "_registry", only_memory)
    settings = EventBusSettings(backend="memory")
    with pytest.raises(UsageError) as info:
        require_shared(create_bus(settings), settings, "stats")
    assert "--redis-url" not in str(info.value) and "pip install" in str(info.value)


def test_stats_of_a_shared_backend_that_reports_nothing_says_whose_figures_they_are(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Without Describable, this process's zeros were printed as the backend's (helper-74).

    from eventbus_core import _plugins as plugins_module
    from eventbus_core import hookimpl
    from eventbus_core.testing import RecordingBus

    class SharedBus(RecordingBus):
        cross_process = True

    class SharedPlugin:
        @hookimpl
        def eventbus_register_backends(self, register: Any) -> None:
            register("shared-plain", lambda settings: SharedBus(settings.buffer_size))

    monkeypatch.setattr(plugins_module, "_registry", PluginRegistry(plugins=[SharedPlugin()]))
    code = main(["stats", "--backend", "shared-plain"])
    captured = capsys.readouterr()
    assert code == 0
    assert "published            0" in captured.out
    assert "does not report what it holds" in captured.err
    assert "this process's own figures, not the backend's" in captured.err


@pytest.mark.parametrize("as_json", [False, True])
def test_stats_masks_credentials_in_a_plugins_figures(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], as_json: bool
) -> None:
    # A plugin's describe() that carried its URL's password and a header printed both as they
    # were, while `tail` masked the same location (trial 152).
    from eventbus_core import _plugins as plugins_module
    from eventbus_core import hookimpl
    from eventbus_core.testing import RecordingBus

    class LeakyBus(RecordingBus):
        cross_process = True
        location = "file /x?password=t152hunter2"

        def describe(self) -> dict[str, Any]:
            return {
                "url": "redis://:t152pw@127.0.0.1:6379/11",
                "headers": {"Authorization": "Bearer sk-t152abcdefabcdefabcdef"},
                "groups": [{"name": "g", "pending": 2, "api_key": "t152key"}],
                "published": 7,
                # Configuration figures (trials 155, 159); a counter keeps its number.
                "nats_token": "t155tok",
                "signing_key": "t159sig",
                "client_cert_key": "t161cert",
                "db_pass": "t161pass",
                "conn": "bob:t159pw@db:5432",
                "password_errors": 3,
            }

    class LeakyPlugin:
        @hookimpl
        def eventbus_register_backends(self, register: Any) -> None:
            register("leaky", lambda settings: LeakyBus(settings.buffer_size))

    monkeypatch.setattr(plugins_module, "_registry", PluginRegistry(plugins=[LeakyPlugin()]))
    code = main(["stats", "--backend", "leaky", *(["--json"] if as_json else [])])
    out = capsys.readouterr().out
    assert code == 0
    for secret in ("t152pw", "sk-t152", "t152key", "t155tok", "t159sig", "t159pw", "t161"):
        assert secret not in out
    assert '"password_errors": 3' in out if as_json else "password errors      3" in out
    assert "127.0.0.1:6379/11" in out and "pending" in out and "7" in out


def test_a_broken_pipe_of_a_socket_is_a_failure_not_a_quiet_end() -> None:
    # Only a closed stdout is the reader leaving (exit 0); a backend's or a sink's socket
    # breaking is a failure (review of helper-73's fix).
    from eventbus_core import BackendUnavailableError
    from eventbus_core.cli._ops import with_backend_errors

    @with_backend_errors
    def command(args: argparse.Namespace) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    with pytest.raises(BackendUnavailableError, match="BrokenPipeError"):
        command(argparse.Namespace())


def test_a_check_across_settings_is_said_as_it_is_among_flag_errors() -> None:
    # A problem of no one field came out as ": <reason>" (review).
    from eventbus_core import SettingsError
    from eventbus_core.cli._ops import _in_flag_terms

    exc = SettingsError(
        "x",
        problems=[("nats_replicas", "'9'", "too many"), ("", "", "NATS_CERT needs NATS_KEY")],
    )
    text = str(_in_flag_terms(exc, {"nats_replicas": "--backend-option nats_replicas"}))
    assert text == "--backend-option nats_replicas '9': too many; NATS_CERT needs NATS_KEY"


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--consumer-name", ""], "--consumer-name is empty"),
        (["--metrics-host", " "], "--metrics-host is empty"),
        (["--sink-opt", "path="], "EVENTBUS_SINK_JSONL_PATH) is empty"),
    ],
)
def test_empty_dispatch_values_are_refused_not_ignored(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # They fell back to the environment or a default without a word: a consumer name of host
    # and pid (a restarted dispatcher then did not re-read its own pending entries), the
    # default events.jsonl (an outside trial).
    code, err = run(["dispatch", "--backend", "memory", "--sink", "jsonl", *argv], capsys)
    assert code == 2, err
    assert says in one_line(err)


def test_an_empty_dead_letter_flag_turns_dead_letters_off_as_the_variable_does() -> None:
    import argparse

    from eventbus_core.cli._dispatch_cmd import _FLAGS
    from eventbus_core.cli._ops import settings_from_args

    args = argparse.Namespace(dead_letter_path="", backend="memory")
    assert settings_from_args(args, _FLAGS).dead_letter_path == ""


def test_a_value_that_starts_with_a_dash_says_how_to_give_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # `--since -5m` said only "argument --since: expected one argument", naming nothing that
    # was typed (trial 103).
    with pytest.raises(SystemExit) as exc:
        main(["replay", "--since", "-5m"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert "argument --since: expected one argument ('-5m' starts with '-'" in err, err
    # An age with a minus: the hint is the form that works (--since=-5m is "not a time").
    assert "an age counts back from now and takes no sign: write --since 5m" in err
    with pytest.raises(SystemExit):
        main(["dispatch", "--sink", "-x"])
    err = capsys.readouterr().err.splitlines()[-1]
    assert "('-x' starts with '-', so it was read as an option: write --sink=-x" in err, err
    with pytest.raises(SystemExit):
        main(["replay", "--since"])  # nothing typed after it: argparse's words alone
    assert "expected one argument" in (err := capsys.readouterr().err) and "starts with" not in err


@pytest.mark.parametrize(
    ("argv", "hint"),
    [
        (["stats", "-v"], "(-v is an option of eventbus itself: put it before the command, as "
         "eventbus -v stats ...)"),
        (["--backend", "redis", "stats"], "(--backend is an option of the commands, not of "
         "eventbus itself: put it after the command, as eventbus stats --backend ...)"),
        (["--backend=memory", "stats"], "put it after the command, as eventbus stats "
         "--backend=memory ...)"),
    ],
)  # fmt: skip
def test_an_option_on_the_wrong_side_of_the_command_says_where_it_goes(
    argv: list[str], hint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # "unrecognized arguments: -v" and "invalid choice: 'redis'" said nothing more (helper-108).
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.endswith(hint), err
    # No hint where the place it would send the user fails too (helper-111): an option no
    # command has, one this command lacks, `--version` after a command.
    for wrong, ending in (
        (["stats", "--bogus"], "unrecognized arguments: --bogus"),
        (["--bogus", "stats"], "unrecognized arguments: --bogus"),
        (["-q", "stats"], "unrecognized arguments: -q"),
        (["--sink", "console", "stats"], "'dispatch')"),
        (["stats", "--version"], "unrecognized arguments: --version"),
    ):
        with pytest.raises(SystemExit):
            main(wrong)
        assert capsys.readouterr().err.splitlines()[-1].endswith(ending), wrong


def test_a_value_split_by_the_shell_is_not_echoed_as_an_unrecognized_argument(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # `--sink-opt header_authorization=Bearer TOKEN` unquoted: argparse's error echoed the
    # token (trial 240).
    argv = ["dispatch", "--sink", "webhook", "--sink-opt", "url=http://hooks.example/x"]
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--sink-opt", "header_x_api_key=sk", "live", "T240SECRET", "--bogus"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "T240SECRET" not in err and "live" not in err  # every word of it (trial 241)
    assert "arguments: <a word not shown> <a word not shown> --bogus (a word after" in err, err
    assert "Quote the whole of it" in err


def _registered(factory: Any = None, plugin: str = "a-plugin") -> Any:
    """A registration as the shared-backend hint reads it: its factory and plugin."""
    from types import SimpleNamespace

    return SimpleNamespace(factory=factory, plugin=plugin)


def test_the_shared_backend_hint_leaves_out_a_backend_its_plugin_cannot_build(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A backend whose plugin lacks a package of its extra was offered (trial 268).
    from types import SimpleNamespace

    from eventbus_core._plugins import PluginInfo
    from eventbus_core.cli import _ops

    lacking = PluginInfo("lacking", "m", distribution="eventbus-t268opt", extras=("fancy",))
    registry = SimpleNamespace(
        backends={"t268opt": _registered(plugin="lacking"), "t268ok": _registered()},
        plugins={"lacking": lacking},
    )
    monkeypatch.setattr(_ops, "get_registry", lambda: registry)
    monkeypatch.setattr(_ops, "is_installed", lambda name: True)
    monkeypatch.setattr(
        _ops, "lacking_extras", lambda dist, extras: [("fancy", ["tomli-w"])] if extras else []
    )
    assert _ops.shared_backend_example("queue") == (
        "installed besides 'queue': t268ok ('eventbus plugins' shows their settings) (t268opt: "
        "installed, but lacking a package, which 'eventbus plugins' names)"
    )
    # With no other: not "none is installed", which it is (trial 272).
    del registry.backends["t268ok"]
    assert _ops.shared_backend_example("queue").startswith(
        "none ready to use is installed besides 'queue' (t268opt: installed, but lacking"
    )


def test_the_shared_backend_hint_gives_a_pip_command_where_redis_is_not_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # `dispatch` named redis-streams where it was not installed, with no pip hint (helper-112).
    from types import SimpleNamespace

    from eventbus_core.cli import _ops

    registry = SimpleNamespace(backends={"memory": _registered()}, plugins={})
    monkeypatch.setattr(_ops, "get_registry", lambda: registry)
    monkeypatch.setattr(_ops, "is_installed", lambda name: False)
    monkeypatch.delenv("NATS_URL", raising=False)
    hint = _ops.shared_backend_example("memory")
    assert hint.startswith(
        "none is installed besides 'memory'; e.g. the backends of eventbus-redis"
    )
    assert "pip install" in hint


def test_the_shared_backend_hint_names_the_backends_installed_whatever_their_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Core chose its hint by the name "redis": a shared third-party backend that was installed
    # went unmentioned, and Redis, not installed, was suggested (trial 117).
    from types import SimpleNamespace

    from eventbus_core.cli import _ops

    backends = {"memory": _registered(), "queue": _registered(), "t117db": _registered()}
    registry = SimpleNamespace(backends=backends, plugins={})
    monkeypatch.setattr(_ops, "get_registry", lambda: registry)
    monkeypatch.setattr(_ops, "is_installed", lambda name: True)
    hint = _ops.shared_backend_example("queue")
    assert (
        hint
        == "installed besides 'queue': memory, t117db ('eventbus plugins' shows their settings)"
    )


def test_a_plugins_location_is_shown_masked() -> None:
    # `eventbus tail: following queue2 queue at queue://user:secret@host/q` (helper-112).
    from eventbus_core.cli._ops import shown_location

    class Described:
        location = "queue://user:s3cretPassw0rd@host/q"

        def describe(self) -> dict[str, object]:
            return {}

    shown = shown_location(Described())
    assert shown is not None and "s3cretPassw0rd" not in shown and "host/q" in shown
    assert shown_location(object()) is None


def test_a_backend_plugins_flag_without_the_plugin_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # With eventbus-core alone, `--redis-url` got only "unrecognized arguments" (trial 117).
    import eventbus_memory.plugin as memory_plugin
    from eventbus_core import _plugins as plugins_module
    from eventbus_core.cli import main

    only_memory = PluginRegistry(load_entry_points=False, plugins=[memory_plugin])
    monkeypatch.setattr(plugins_module, "_registry", only_memory)
    with pytest.raises(SystemExit) as ended:
        main(["stats", "--redis-url", "redis://x"])
    assert ended.value.code == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments: --redis-url redis://x" in err
    assert (
        "(--redis-url is an option of the redis backend, whose plugin is not installed: pip" in err
    )


def test_the_shared_backend_hint_leaves_out_backends_whose_buses_live_in_the_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # For `queue`, the hint offered `memory`, which gives the same error (trial 119).
    from types import SimpleNamespace

    from eventbus_core import BaseEventBus, EventBus
    from eventbus_core.cli import _ops
    from eventbus_core.testing import RecordingBus

    class InProcess:  # declares no cross_process: its buses live in the process
        pass

    class Shared(RecordingBus):
        cross_process = True

    def build_memory(settings: Any) -> InProcess:
        return InProcess()

    def build_shared(settings: Any) -> Shared:
        return Shared()

    # Resolved as a module's would be (these classes are local to the test).
    build_memory.__annotations__["return"] = InProcess
    build_shared.__annotations__["return"] = Shared

    backends = {
        "memory": _registered(build_memory),
        "queue": _registered(build_memory),
        "t117db": _registered(build_shared),
        "unannotated": _registered(lambda settings: None),  # cannot tell: named
    }
    # `-> EventBus`, as hooks.md writes a factory, or another abstract class: cannot tell
    # either (a shared backend so annotated was left out, "none is installed": trial 208).
    for name, abstract in (
        ("pgbus", EventBus),
        ("pgbase", BaseEventBus),
        ("pgobj", object),
        ("pgany", Any),  # a class since Python 3.11 (trial 209)
    ):

        def build(settings: Any) -> Any:
            return None

        build.__annotations__["return"] = abstract
        backends[name] = _registered(build)
    registry = SimpleNamespace(backends=backends, plugins={})
    monkeypatch.setattr(_ops, "get_registry", lambda: registry)
    monkeypatch.setattr(_ops, "is_installed", lambda name: True)
    assert _ops.shared_backend_example("queue") == (
        "installed besides 'queue': pgany, pgbase, pgbus, pgobj, t117db, unannotated "
        "('eventbus plugins' shows their settings)"
    )


def test_backend_option_mistakes_say_what_was_typed(capsys: pytest.CaptureFixture[str]) -> None:
    # An option given twice under two spellings: the last won without a word; one of eventbus's
    # own settings was only "no installed backend plugin has it" (trial 121).
    from eventbus_core.cli import main

    argv = ["stats", "--backend", "redis", "--backend-option", "redis_key=a"]
    assert main([*argv, "--backend-option", "EVENTBUS_REDIS_KEY=b"]) == 2
    err = capsys.readouterr().err
    assert "--backend-option gives redis_key twice, as redis_key and as EVENTBUS_REDIS_KEY" in err
    assert main(["stats", "--backend-option", "EVENTBUS_SHUTDOWN_TIMEOUT=3"]) == 2
    err = capsys.readouterr().err
    assert "'EVENTBUS_SHUTDOWN_TIMEOUT', a setting of eventbus itself, not of a backend" in err
    assert "set the environment variable EVENTBUS_SHUTDOWN_TIMEOUT" in err
    # A near miss is named, in the form typed: variables for a variable (trial 208).
    assert main(["stats", "--backend-option", "EVENTBUS_REDIS_KY=a"]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'EVENTBUS_REDIS_KEY'?" in err and "redis_key," not in err, err
    assert main(["stats", "--backend-option", "redis_ky=a"]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'redis_key'?" in err and "EVENTBUS_REDIS_KEY" not in err, err
    # Typed without eventbus's prefix, as users do: REDIS_KY got REDIS_DB (trial 211).
    assert main(["stats", "--backend-option", "REDIS_KY=a"]) == 2
    assert "did you mean 'EVENTBUS_REDIS_KEY'?" in capsys.readouterr().err
    assert main(["stats", "--backend-option", "REDIS_D=a"]) == 2
    assert "did you mean 'REDIS_DB'?" in capsys.readouterr().err


def test_a_setting_given_by_its_flag_and_by_backend_option_is_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The option won without a word, and an error about the address named the flag (trial 122).
    from eventbus_core.cli import main

    argv = ["stats", "--backend", "redis", "--redis-url", "redis://a:1/0"]
    assert main([*argv, "--backend-option", "redis_url=redis://b:1/0"]) == 2
    err = capsys.readouterr().err
    assert "--redis-url and --backend-option redis_url both set REDIS_URL: give it once" in err


def test_an_empty_backend_option_is_refused_naming_the_option(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # `REDIS_URL=` cleared the setting for the run, and the error asked to set REDIS_URL, which
    # the environment had (trial 122).
    from eventbus_core.cli import main

    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    assert main(["stats", "--backend", "redis", "--backend-option", "REDIS_URL= "]) == 2
    err = capsys.readouterr().err
    assert "--backend-option REDIS_URL= is empty: give a value, or leave the option out" in err


def test_the_command_lines_warnings_name_the_logger_once(tmp_path: Any) -> None:
    # "WARNING eventbus: eventbus: EVENTBUS_REDIS_KEYS is set, ..." (trials 122, 131): the
    # message's own prefix after the format's logger name.
    import os
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "eventbus_core.cli", "stats", "--backend", "memory"],
        env={**os.environ, "EVENTBUS_REDIS_KEYS": "x"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "WARNING eventbus: EVENTBUS_REDIS_KEYS is set, but" in done.stderr, done.stderr
    assert "eventbus: eventbus:" not in done.stderr


def _faulty_plugin(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """A plugin module whose bus's stats() raises, registered as the process's only plugin."""
    import importlib

    from eventbus_core import _plugins as plugins_module

    (tmp_path / "t152_faulty_plugin.py").write_text(
        "from eventbus_core import hookimpl\n"
        "from eventbus_core.testing import RecordingBus\n"
        "class FaultyBus(RecordingBus):\n"
        "    cross_process = True\n"
        "    def stats(self):\n"
        "        raise NotImplementedError('stats are not done yet')\n"
        "class CoreFaultBus(FaultyBus):\n"
        "    def stats(self):\n"
        "        from eventbus_core import check_count\n"
        "        return check_count('depth', 'deep', 1)\n"
        "def boom(args):\n"
        "    raise NotImplementedError('consumer groups are not done yet')\n"
        "@hookimpl\n"
        "def eventbus_register_backends(register):\n"
        "    register('faulty', lambda settings: FaultyBus(settings.buffer_size))\n"
        "    register('corefault', lambda settings: CoreFaultBus(settings.buffer_size))\n"
        "    register('nostart', lambda settings: 1 / 0)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "t152_faulty_plugin", raising=False)
    module = importlib.import_module("t152_faulty_plugin")
    monkeypatch.setattr(plugins_module, "_registry", PluginRegistry(plugins=[module]))
    return module


def test_the_demos_processes_name_the_plugin_whose_code_raised(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # `eventbus demo` said "eventbus demo dispatch: error: NotImplementedError: ..." (trial 155).
    from eventbus_core._demo import _worker

    module = _faulty_plugin(monkeypatch, tmp_path)
    parser = argparse.ArgumentParser()
    parser.set_defaults(role="dispatch", func=module.boom)
    monkeypatch.setattr(_worker, "_parser", lambda: parser)
    assert _worker.main([]) == 1
    assert (
        "eventbus demo dispatch: error in plugin 't152_faulty_plugin': NotImplementedError: "
        "consumer groups are not done yet"
    ) in capsys.readouterr().err


def test_the_demos_processes_say_eventbus_errors_without_their_class(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # "eventbus demo dispatch: error: SettingsError: EVENTBUS_TRANSFORMER=..." where
    # `eventbus dispatch` says the same without the class (trial 214).
    from eventbus_core import SettingsError
    from eventbus_core._demo import _worker

    def misconfigured(args: argparse.Namespace) -> int:
        raise SettingsError("EVENTBUS_TRANSFORMER='nosuch.mod:fn': cannot import 'nosuch.mod'")

    parser = argparse.ArgumentParser()
    parser.set_defaults(role="dispatch", func=misconfigured)
    monkeypatch.setattr(_worker, "_parser", lambda: parser)
    assert _worker.main([]) == 2
    assert capsys.readouterr().err == (
        "eventbus demo dispatch: error: EVENTBUS_TRANSFORMER='nosuch.mod:fn': cannot import "
        "'nosuch.mod'\n"
    )


def test_an_internal_error_in_a_plugins_code_names_the_plugin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # A capability of a third-party backend that raised was reported as eventbus's own
    # "internal error", naming no plugin (trial 152).
    _faulty_plugin(monkeypatch, tmp_path)
    code = main(["stats", "--backend", "faulty"])
    err = capsys.readouterr().err
    assert code == 1
    assert (
        "eventbus stats: internal error in plugin 't152_faulty_plugin': NotImplementedError: "
        "stats are not done yet"
    ) in err
    # Raised in core's code, though a plugin called it: not named as the plugin's (review 158).
    assert main(["stats", "--backend", "corefault"]) == 1
    err = capsys.readouterr().err
    assert "eventbus stats: internal error: ValueError: depth must be an int" in err, err


def test_a_plugin_that_fails_to_start_shows_its_traceback_with_v(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # The message says "rerun with -v for the traceback", and -v printed none (trial 162).
    _faulty_plugin(monkeypatch, tmp_path)
    assert main(["stats", "--backend", "nostart"]) == 1
    assert "Traceback" not in capsys.readouterr().err
    assert main(["-v", "stats", "--backend", "nostart"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "ZeroDivisionError" in err


def test_the_shared_backend_hint_suggests_the_distribution_whose_address_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # With NATS_URL set and eventbus-nats missing, the hint gave Redis's pip command.
    from types import SimpleNamespace

    from eventbus_core.cli import _ops

    monkeypatch.setattr(_ops, "get_registry", lambda: SimpleNamespace(backends={"memory": 1}))
    monkeypatch.setattr(_ops, "is_installed", lambda name: False)
    monkeypatch.delenv("REDIS_ADDR", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("NATS_URL", "nats://127.0.0.1:4222")
    hint = _ops.shared_backend_example("memory")
    assert "the backends of eventbus-nats: pip install" in hint, hint
    monkeypatch.setenv("NATS_URL", "  ")  # blank: read as unset, as the plugin reads it
    assert "the backends of eventbus-redis: pip install" in _ops.shared_backend_example("memory")


@pytest.mark.parametrize("command", ["dispatch", "replay"])
@pytest.mark.parametrize(
    ("second", "said"),
    [
        ("path=b.jsonl", "path twice"),
        ("PATH=b.jsonl", "PATH twice for --sink jsonl, as path and as PATH"),
    ],
)
def test_a_sink_option_given_twice_is_refused(
    command: str, second: str, said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # The last value won without a word, whatever its case (trial 190; replay too, review
    # 194), where --backend-option refuses the same mistake.
    from eventbus_core.cli import main

    argv = [command, "--sink", "jsonl", "--sink-opt", "path=a.jsonl", "--sink-opt", second]
    try:
        code = main(argv)
    except SystemExit as ended:  # dispatch's parser refuses it
        code = ended.code
    assert code == 2
    err = capsys.readouterr().err
    assert f"--sink-opt gives {said}" in err and err.rstrip().endswith("give it once"), err


def test_a_backend_option_is_matched_as_spelt_before_any_case() -> None:
    # REDIS_STREAM_MAX_LEN (the Go proxy's variable, as spelt) set eventbus's own
    # redis_stream_max_len, overriding EVENTBUS_REDIS_STREAM_MAX_LEN without a word (review 210).
    import argparse

    from eventbus_core.cli._backend_flags import plugin_overrides

    def given(option: str) -> dict[str, Any]:
        args = argparse.Namespace(backend_options=[option])
        return plugin_overrides(args)[0]

    assert given("REDIS_STREAM_MAX_LEN=7") == {"go_stream_max_len": "7"}
    assert given("redis_stream_max_len=7") == {"redis_stream_max_len": "7"}
    assert given("EVENTBUS_REDIS_STREAM_MAX_LEN=7") == {"redis_stream_max_len": "7"}
    assert given("Redis_Stream_Max_Len=7") == {"redis_stream_max_len": "7"}


# ------------------------------------------------------------------ trial 249: the outside


def _eventbus(*argv: str, **kwargs: Any) -> Any:
    import subprocess

    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    return subprocess.run(
        [sys.executable, "-m", "eventbus_core.cli", *argv],
        text=True,
        timeout=60,
        check=False,
        **kwargs,
    )


@pytest.mark.parametrize(
    "argv", [["--version"], ["plugins"], ["demo", "--requests", "20"], ["--help"], ["tail", "-h"]]
)
def test_a_full_or_closed_stdout_is_said_as_such(argv: list[str], tmp_path: Path) -> None:
    # "the backend failed: OSError: No space left on device" (on the memory backend),
    # "internal error", a traceback for --version; closed, output lost without a word.
    os.chdir(tmp_path)  # the demo's output file
    with open("/dev/full", "w") as full:
        done = _eventbus(*argv, stdout=full)
    assert done.returncode == 1, done.stderr
    assert "cannot write to standard output (OSError: [Errno 28]" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and "backend failed" not in done.stderr
    closed = _eventbus(*argv, stdout=None, preexec_fn=lambda: os.close(1))
    assert closed.returncode == 1, closed.stderr
    assert "standard output: it is closed" in closed.stderr, closed.stderr


@pytest.mark.parametrize(
    "value", ["99999999999d", "9999999999999999999999s", "0001-01-01T00:00:00Z", "1969-12-31"]
)
@pytest.mark.parametrize("flag", ["--since", "--until"])
def test_a_time_before_1970_is_refused_naming_the_flag(
    flag: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # A traceback (OverflowError), or Redis blamed for "Invalid stream ID" (trial 249).
    with pytest.raises(SystemExit) as ended:
        main(["replay", "--redis-url", CLOSED, flag, value, "--dry-run"])
    err = capsys.readouterr().err
    assert ended.value.code == 2, err
    assert f"argument {flag}: '{value}' is before 1970-01-01" in err, err
    assert "Traceback" not in err and "Redis" not in err


def test_a_line_past_the_bound_is_skipped_without_holding_it(tmp_path: Path) -> None:
    # `eventbus publish </dev/zero` read one endless line until the kernel killed it for the
    # machine's 24 GB (trial 249).
    from eventbus_core.cli._lines import MAX_LINE_BYTES

    good = b'{"RequestID":"r1","Method":"GET","Path":"/","Status":200}\n'
    path = tmp_path / "in.jsonl"
    with path.open("wb") as out:
        out.write(good)
        out.write(b"x" * (MAX_LINE_BYTES + 10) + b"\n")
        out.write(good)
    done = _eventbus(
        "publish", "-f", str(path), "--json", env={**os.environ, "LLM_PROXY_EVENT_BUS": "memory"}
    )
    assert done.returncode == 1, done.stderr
    assert "line 2: longer than 64 MiB" in done.stderr, done.stderr
    assert json.loads(done.stdout)["accepted"] == 2, done.stdout


def test_bounded_lines_reads_a_long_line_in_pieces() -> None:
    from eventbus_core.cli._lines import TooLong, bounded_lines

    data = io.BytesIO(b"ok\n" + b"y" * 50 + b"\nlast")
    assert list(bounded_lines(data, limit=10)) == [b"ok\n", TooLong(51), b"last"]
    text = io.StringIO("ab\n" + "z" * 20)
    assert list(bounded_lines(text, limit=10)) == ["ab\n", TooLong(20)]


def test_many_more_demo_workers_than_requests_do_not_hang(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # --workers 100000 --requests 10 simulated nothing in 25 s (trial 249).
    out = tmp_path / "demo.jsonl"
    argv = ["demo", "--workers", "100000", "--requests", "10", "--output", str(out), "--json"]
    assert main(argv) == 0, capsys.readouterr().err
    assert len(out.read_text().splitlines()) == 10


def test_a_file_flag_given_twice_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # `publish -f a -f b` published b alone, a's events left out without a word (trial 249).
    with pytest.raises(SystemExit) as ended:
        main(["publish", "-f", str(tmp_path / "a"), "-f", str(tmp_path / "b")])
    assert ended.value.code == 2
    assert "argument -f/--file: given twice" in capsys.readouterr().err
    with pytest.raises(SystemExit) as ended:  # the same mistake there (trial 253)
        main(["replay", "--dead-letters", str(tmp_path / "a"), "--dead-letters", "b"])
    assert ended.value.code == 2
    assert "argument --dead-letters: given twice" in capsys.readouterr().err
