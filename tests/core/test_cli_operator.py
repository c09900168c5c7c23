"""The operator commands without Redis: help, exit codes, `publish` on the memory bus, progress."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from eventbus_core import BusStats, Event
from eventbus_core.cli import build_parser, main
from eventbus_core.cli._ops import format_event
from eventbus_core.cli._progress import Progress
from eventbus_core.cli._replay_cmd import parse_time
from eventbus_core.testing import RecordingBus

COMMANDS = ("tail", "publish", "stats", "replay")


def lines(*events: Event) -> str:
    return "".join(e.to_json().decode() + "\n" for e in events)


def ev(n: int, **fields: object) -> Event:
    values: dict[str, object] = {
        "request_id": f"req-{n}",
        "method": "POST",
        "path": "/v1/chat/completions",
        "status": 200,
        "duration": 1_500_000 + n,
        "request_body": b'{"model":"gpt-4o"}',
    }
    values.update(fields)
    return Event(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_everywhere(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "exit codes" in out
    assert "--backend" in out


def test_commands_are_registered() -> None:
    text = build_parser().format_help()
    for command in COMMANDS:
        assert command in text


@pytest.mark.parametrize("command", ["tail", "stats", "replay"])
def test_memory_backend_is_refused_with_advice(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([command]) == 2
    err = capsys.readouterr().err
    assert "Set LLM_PROXY_EVENT_BUS (or pass --backend) to a shared backend" in err
    assert "installed besides 'memory': " in err and "redis-streams" in err


def test_redis_backend_without_url_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stats", "--backend", "redis"]) == 2
    assert "REDIS_URL" in capsys.readouterr().err


def test_unreachable_redis_is_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    # Port 1 on loopback: nothing listens, the connection is refused at once.
    code = main(["stats", "--backend", "redis", "--redis-url", "redis://:pw@127.0.0.1:1/0"])
    assert code == 1
    err = capsys.readouterr().err
    assert "redis://127.0.0.1:1/0 did not answer" in err
    assert "pw" not in err


def test_publish_on_memory(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(lines(ev(1), ev(2)) + "\n"))
    assert main(["publish", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {
        "backend": "memory",
        "accepted": 2,
        "dropped": 0,
        "rejected": 0,
    }
    assert "memory backend lives in this process only" in captured.err


class LosingBus(RecordingBus):
    """Accepts every event, then gives the last one up at stop() (its backend went away)."""

    def stats(self) -> BusStats:
        figures = super().stats()
        return BusStats(figures.published, figures.dropped, lost=1 if self._stopped else 0)


def test_publish_exits_1_when_an_accepted_event_was_lost(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("eventbus_core.cli._ops.create_bus", lambda settings: LosingBus())
    monkeypatch.setattr("sys.stdin", io.StringIO(lines(ev(1), ev(2))))
    assert main(["publish", "--json"]) == 1
    summary = json.loads(capsys.readouterr().out)
    assert (summary["accepted"], summary["dropped"], summary["lost"]) == (2, 0, 1)
    monkeypatch.setattr("sys.stdin", io.StringIO(lines(ev(1))))
    assert main(["publish"]) == 1
    assert "1 lost" in capsys.readouterr().err


def test_publish_reports_bad_lines_and_goes_on(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(lines(ev(1)) + "{not json\n" + lines(ev(2))))
    assert main(["publish", "--json"]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["accepted"] == 2
    assert json.loads(captured.out)["rejected"] == 1
    assert "line 2:" in captured.err


def test_publish_reports_a_json_object_that_is_no_event(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Go's decoder ignores unknown keys: '{"foo": 1}' or a jsonl sink's line would decode to an
    # event with nothing in it; the help says such a line is reported.
    sink_line = '{"type": "llm.request", "log_id": 7, "request_id": "r"}\n'
    monkeypatch.setattr("sys.stdin", io.StringIO('{"foo": 1}\n' + sink_line + lines(ev(1))))
    assert main(["publish", "--json"]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["accepted"] == 1
    assert json.loads(captured.out)["rejected"] == 2
    assert "line 1: not an event" in captured.err and "line 2: not an event" in captured.err


def test_publish_refuses_a_sink_line_whose_method_path_and_status_alone_are_wire_fields(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The demo's output: Go's decoder reads its method, path and status (any case) and ignores
    # request_id, duration_ms, the bodies; it was accepted, all of those lost (trial 231).
    sink_line = json.dumps(
        {"type": "llm.request", "log_id": 7, "request_id": "r-1", "method": "POST",
         "path": "/v1/chat/completions", "status": 200, "duration_ms": 12.5,
         "response_headers": {"Content-Type": "application/json"}}
    )  # fmt: skip
    # A wire line with an extra key of that spelling keeps it: its own RequestID is there.
    extra = '{"RequestID": "r-2", "Method": "GET", "request_id": "mine"}'
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{sink_line}\n{extra}\n"))
    assert main(["publish", "--json"]) == 1
    captured = capsys.readouterr()
    assert (json.loads(captured.out)["accepted"], json.loads(captured.out)["rejected"]) == (1, 1)
    assert "line 1: a sink's output line, not an event: duration_ms, log_id, request_id" in (
        captured.err
    )
    assert "line 2" not in captured.err


def test_publish_tells_gos_zero_value_event_from_a_line_that_is_no_event(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Go's zero-value Event (the wire samples' first) was told to "give lines in the Go wire
    # format", which it is (helper-108).
    zero = '{"LogID":0,"RequestID":"","Method":"","Path":"","Status":0,"Duration":0,'
    zero += '"ResponseHeaders":null,"ResponseBody":null,"RequestBody":null}\n'
    monkeypatch.setattr("sys.stdin", io.StringIO(zero + '{"requestid": ""}\n' + '{"foo": 1}\n'))
    assert main(["publish"]) == 1
    err = capsys.readouterr().err
    assert "line 1: an empty event: it is in the Go wire format" in err
    assert "line 2: an empty event" in err  # Go reads field names in any case
    assert "line 3: not an event" in err and "give lines in the Go wire format" in err


def test_publish_does_not_echo_a_credential_of_a_bad_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = '{"Path": "/v1?api_key=sk-proj-abcdefghijklmnopqrst", oops\n'
    monkeypatch.setattr("sys.stdin", io.StringIO(bad))
    assert main(["publish", "--json"]) == 1
    err = capsys.readouterr().err
    assert "line 1: invalid JSON" in err and "sk-proj-abcdefghijklmnopqrst" not in err


def test_publish_strict_stops_at_the_first_bad_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text(lines(ev(1)) + '{"Status": "x"}\n' + lines(ev(2)))
    assert main(["publish", "--strict", "--json", "--file", str(path)]) == 1
    assert json.loads(capsys.readouterr().out)["accepted"] == 1


@pytest.mark.parametrize("via", ["file", "stdin"])
def test_publish_takes_each_line_on_its_own_bytes(
    via: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # One byte that is not UTF-8 used to end the whole run as an internal error, publishing
    # nothing; a byte-order mark made the first line invalid JSON; and a line with a value no
    # event can have was published as it was.
    data = (
        b"\xef\xbb\xbf" + lines(ev(1)).encode()
        + b'{"RequestID": "latin-1 \xe9", "Status": 200}\n'
        + b'{"RequestID": "r", "Status": 99999, "Duration": -5}\n'
        + lines(ev(2)).encode()
    )  # fmt: skip
    if via == "file":
        path = tmp_path / "events.jsonl"
        path.write_bytes(data)
        code = main(["publish", "--json", "--file", str(path)])
    else:
        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))
        code = main(["publish", "--json"])
    assert code == 1
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert (summary["accepted"], summary["rejected"]) == (3, 1)
    assert "line 3: Event status must be an HTTP status code 100-599" in captured.err


def test_format_event_line() -> None:
    line = format_event(ev(3, log_id=42, response_body=b"x" * 2048))
    assert line.split() == [
        "#42",
        "200",
        "POST",
        "/v1/chat/completions",
        "1.5ms",
        "req=18B",
        "resp=2.0KiB",
        "id=req-3",
    ]
    assert " 900µs " in format_event(Event(duration=900_000))


def test_a_tail_line_escapes_what_a_client_put_in_the_event() -> None:
    # Go percent-decodes the path: `/a%1b]0;x%07%0aFAKE` cleared screens, retitled terminals and
    # forged tail lines (trial 259). One line, every control character written out.
    event = Event(
        request_id="r\x1b[2J",
        method="GET",
        path="/a\x1b]0;pwned\x07\nFAKE LINE #999 200 GET /ok\u2028\u202e",
        status=200,
    )
    line = format_event(event)
    assert len(line.splitlines()) == 1
    assert not any(ord(c) < 0x20 or ord(c) in (0x2028, 0x202E) for c in line), line
    assert "/a\\x1b]0;pwned\\x07\\x0aFAKE LINE" in line and "id=r\\x1b[2J" in line
    # --json prints the event's JSON, whose strings escape what is below U+0020.
    assert not any(ord(c) < 0x20 for c in event.to_json().decode())


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_redraws_one_line_on_a_tty() -> None:
    out = FakeTTY()
    with Progress("replayed", 10, stream=out, interval=0) as progress:
        progress.interval = 0  # redraw on every step for the test
        progress.advance(4)
        progress.advance(6)
    text = out.getvalue()
    assert text.count("\r") == 3
    assert text.endswith("\n")
    assert "replayed 10/10 (100%)" in text


def test_progress_is_plain_lines_in_a_pipe() -> None:
    out = io.StringIO()
    with Progress("replayed", None, stream=out, interval=0) as progress:
        progress.advance(2)
    assert "\r" not in out.getvalue()
    assert out.getvalue().splitlines()[0].startswith("replayed 2")
    quiet = io.StringIO()
    with Progress("replayed", 5, stream=quiet, interval=3600) as progress:
        progress.advance(5)  # short work in a pipe: nothing at all
    assert quiet.getvalue() == ""


def test_parse_time_forms() -> None:
    assert parse_time("2026-01-31T12:00:00Z").isoformat() == "2026-01-31T12:00:00+00:00"
    assert parse_time("2026-01-31T12:00:00").utcoffset() is not None
    assert parse_time("15m") < parse_time("1m")
    with pytest.raises(Exception, match="not a time"):
        parse_time("yesterday")


def test_each_commands_exit_codes_say_what_1_means_for_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # One shared text ended "... each after delivering what was accepted, bounded" and listed
    # rejected input and dropped events for `stats` too, which delivers nothing (helper-110).
    def epilog(command: str) -> str:
        with pytest.raises(SystemExit):
            main([command, "--help"])
        return " ".join(capsys.readouterr().out.split())

    stats = epilog("stats")
    assert "1 the backend did not answer;" in stats and "accepted" not in stats
    publish = epilog("publish")
    assert "an input line was rejected" in publish
    assert "each after writing what was accepted (within EVENTBUS_STOP_TIMEOUT)." in publish
    assert "a sink refused or failed a send" in epilog("replay")
    demo = epilog("demo")  # it ended "... 130 interrupted", without 143 (helper-111)
    assert "0 every accepted event was delivered;" in demo
    assert demo.endswith("130 interrupted (Ctrl-C), 143 terminated (SIGTERM).")


def test_tail_shows_the_sizes_of_the_bodies_not_of_their_masks(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A gzip or binary body is printed as a 60-byte marker, and its size was the marker's
    # (trial 126).
    from eventbus_core.cli._tail_cmd import _emit
    from eventbus_core.redact._redact import Redactor

    event = Event(
        request_id="r1",
        method="POST",
        path="/v1/x",
        status=200,
        duration=1000,
        request_body=b"\x1f\x8b" + bytes(298),
        response_body=bytes(range(256)) * 8,
    )
    _emit(event, False, Redactor())
    line = capsys.readouterr().out
    assert "req=300B resp=2.0KiB" in line, line
    _emit(event, True, Redactor())  # the JSON line carries the marker, not the bytes
    from eventbus_core.cli._printing import UNREADABLE_BODY

    printed = Event.from_json(capsys.readouterr().out)
    assert printed.request_body == printed.response_body == UNREADABLE_BODY
