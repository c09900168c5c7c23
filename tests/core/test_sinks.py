"""Built-in sinks: jsonl (atomic batches, torn-tail repair, rotation), console, webhook."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from eventbus_core import (
    Dispatcher,
    EventBusSettings,
    MemoryDeadLetter,
    PermanentSinkError,
    PluginRegistry,
    RetryPolicy,
    SettingsError,
    Subscription,
    TransientSinkError,
    classify_status,
    parse_retry_after,
)
from eventbus_core.sinks import ConsoleSink, JsonlSink, WebhookSink
from eventbus_core.sinks import webhook as webhook_module
from eventbus_core.sinks.console import format_line
from tests._devices import FULL_MINOR, NULL_MINOR, make_device
from tests.core.conftest_dispatch import WebhookReceiver, make_events, read_jsonl, serve


def payloads(n: int, start: int = 1) -> list[dict[str, Any]]:
    return [{"log_id": i, "request_id": f"r{i}", "pad": "x" * 50} for i in range(start, start + n)]


# ------------------------------------------------------------------------------------- jsonl


async def test_jsonl_appends_whole_batches(tmp_path: Path) -> None:
    sink = JsonlSink(tmp_path / "sub" / "events.jsonl")
    await sink.send(payloads(3))
    await sink.send(payloads(2, start=4))
    await sink.close()
    assert [r["log_id"] for r in read_jsonl(tmp_path / "sub" / "events.jsonl")] == [1, 2, 3, 4, 5]


async def test_jsonl_cuts_a_torn_line_left_by_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"log_id":1}\n{"log_id":2}\n{"log_id":3,"request_')  # died mid-write
    sink = JsonlSink(path)
    await sink.send(payloads(1, start=4))
    await sink.close()
    assert [r["log_id"] for r in read_jsonl(path)] == [1, 2, 4]


async def test_jsonl_takes_back_a_batch_whose_write_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "events.jsonl"
    sink = JsonlSink(path)
    await sink.send(payloads(2))
    before = path.read_bytes()
    real_write = os.write

    def half_then_full(fd: int, data: Any) -> int:
        real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(OSError, match="No space"):
        await sink.send(payloads(5, start=3))
    monkeypatch.setattr(os, "write", real_write)
    assert path.read_bytes() == before  # none of the failed batch, no half line
    await sink.send(payloads(1, start=9))
    assert [r["log_id"] for r in read_jsonl(path)] == [1, 2, 9]


async def test_jsonl_rotates_by_size_and_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    sink = JsonlSink(path, max_bytes=1000, backups=50)
    for start in range(1, 100, 5):
        await sink.send(payloads(5, start=start))
    await sink.close()
    files = sorted(tmp_path.iterdir())
    assert len(files) > 5
    assert all(f.stat().st_size <= 1000 for f in files)
    ids = sorted(r["log_id"] for f in files for r in read_jsonl(f))
    assert ids == list(range(1, 101))


# ----------------------------------------------------------------------------------- console


async def test_console_writes_control_characters_escaped_so_one_event_is_one_line() -> None:
    # A client's path with CR/LF forged a second line; an ESC reached the terminal (helper-92).
    out = io.StringIO()
    await ConsoleSink(out).send(
        [{"method": "GET", "path": "/x\r\nPOST /admin 200", "request_id": "r\x1b[31m\x9b"}]
    )
    assert out.getvalue() == "GET /x\\x0d\\x0aPOST /admin 200 - - request_id=r\\x1b[31m\\x9b\n"
    # Nor Unicode's line separator (splitlines() splits there) or a bidi override (helper-93).
    line = format_line({"method": "GET", "path": "/a\u2028b\u202ec"})
    assert line == "GET /a\\u2028b\\u202ec - -" and len(line.splitlines()) == 1


async def test_console_prints_one_readable_line_per_event() -> None:
    out = io.StringIO()
    await ConsoleSink(out).send(
        [
            {
                "method": "POST",
                "path": "/v1/chat/completions",
                "status": 200,
                "duration_ms": 150.0,
                "model": "gpt-4o",
                "usage": {"prompt_tokens": 12, "completion_tokens": 30, "total_tokens": 42},
                "request_id": "req-1",
                "log_id": 7,
            },
            {"method": "GET", "path": "/health", "status": 204, "duration_ms": 0.25},
        ]
    )
    assert out.getvalue().splitlines() == [
        "POST /v1/chat/completions 200 150.0ms model=gpt-4o tokens=12+30=42 request_id=req-1 "
        "log_id=7",
        "GET /health 204 0.2ms",
    ]
    assert format_line({}) == "- - - -"


# ----------------------------------------------------------------------------------- webhook


def test_http_status_classes() -> None:
    assert classify_status(200) is None and classify_status(204) is None
    for status in (408, 429, 500, 502, 503, 504):
        assert isinstance(classify_status(status), TransientSinkError), status
    for status in (301, 400, 401, 403, 404, 413, 422):
        assert isinstance(classify_status(status), PermanentSinkError), status
    err = classify_status(503, retry_after=2.5)
    assert isinstance(err, TransientSinkError) and err.retry_after == 2.5


def test_retry_after_parsing_and_policy() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 0 ") == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
    policy = RetryPolicy(retries=3, base=1.0, cap=30.0, retry_after_max=120.0)
    for retry in (1, 2, 3):
        assert 2.0 ** (retry - 1) / 2 <= policy.delay(retry) <= 2.0 ** (retry - 1)
    assert 15.0 <= policy.delay(10) <= 30.0  # capped
    assert policy.delay(1, retry_after=7.0) == 7.0  # the destination's word wins
    assert policy.delay(1, retry_after=3600.0) == 120.0  # within reason


@pytest.mark.parametrize("header", ["-5", "nan", "NaN", "inf", "-inf", "1e999"])
def test_a_retry_after_no_server_could_mean_falls_back_to_the_backoff(header: str) -> None:
    # "-5" and "nan" were read as 0 s (retrying at once, twice); urllib3 ignores them too.
    assert parse_retry_after(header) is None


def test_a_nan_or_negative_retry_after_from_a_sink_is_no_delay_at_all() -> None:
    # TransientSinkError(retry_after=nan) reached asyncio.sleep(nan): the dispatcher's stop
    # then never ended (an outside trial: not stopped after 15 s, with a 3 s shutdown).
    for bad in (float("nan"), float("inf"), -1.0):
        assert TransientSinkError("down", retry_after=bad).retry_after is None
    policy = RetryPolicy(retries=3, base=1.0, cap=30.0, jitter=False)
    assert policy.delay(1, retry_after=float("nan")) == 1.0  # the backoff's


def test_a_sink_error_takes_any_integer_type_as_its_count() -> None:
    class Index:  # as numpy's integers: not an int, but an integer (operator.index)
        def __index__(self) -> int:
            return 3

    assert PermanentSinkError("x", delivered=Index()).delivered == 3  # type: ignore[arg-type]


@pytest.mark.parametrize("delivered", [2.5, "3", None, True])
def test_a_sink_error_with_a_count_that_is_not_an_int_says_so(delivered: object) -> None:
    # delivered=2.5 stopped that sink's worker for the rest of the run ("slice indices must be
    # integers", logged only at stop); None and "3" failed with an unrelated TypeError.
    with pytest.raises(TypeError, match=r"delivered=\.\.\.\) must be an int"):
        TransientSinkError("down", delivered=delivered)  # type: ignore[arg-type]


async def test_webhook_against_a_real_server_honours_503_429_and_retry_after() -> None:
    receiver = WebhookReceiver([(503, {"Retry-After": "0"}), (429, {"Retry-After": "0"})])
    with serve(receiver) as url:
        sink = WebhookSink(f"{url}/ingest", headers={"X-Token": "t0k"}, timeout=10)
        sub = Subscription(100)
        sub.offer(make_events(8))
        sub.finish()
        # A base delay of a minute: the test only finishes in time if Retry-After is obeyed.
        d = Dispatcher(
            sub,
            [sink],
            batch_size=8,
            flush_interval=0.01,
            retry=RetryPolicy(retries=3, base=60.0, cap=60.0),
            dead_letter=MemoryDeadLetter(),
        )
        stats = await d.run()
    assert receiver.statuses == [503, 429, 200]
    assert sorted(p["log_id"] for p in receiver.accepted) == list(range(1, 9))
    headers = receiver.requests[0][0]
    assert headers["x-token"] == "t0k" and headers["content-type"] == "application/json"
    s = stats.sinks["webhook"]
    assert (s.sent, s.retried, s.dead_lettered) == (8, 16, 0)


async def test_webhook_4xx_is_dead_lettered_without_retry() -> None:
    receiver = WebhookReceiver([(400, {})] * 5)
    dl = MemoryDeadLetter()
    with serve(receiver) as url:
        sub = Subscription(100)
        sub.offer(make_events(3))
        sub.finish()
        await Dispatcher(
            sub,
            [WebhookSink(url)],
            flush_interval=0.01,
            retry=RetryPolicy(base=60.0),
            dead_letter=dl,
        ).run()
    assert receiver.statuses == [400]
    assert [r["attempts"] for r in dl.records] == [1, 1, 1]
    assert dl.records[0]["error"].startswith("HTTP 400")


@pytest.mark.parametrize("padding", [0, 150])  # 150: the key straddles the message's cut
async def test_a_collector_quoting_the_sinks_own_keys_never_shows_them(
    caplog: pytest.LogCaptureFixture, padding: int
) -> None:
    # "Invalid API key provided: <key>": the sink's own header values reached every dead
    # letter and the log in clear (helper-72).
    async def refuses(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        sent = dict(scope["headers"])
        quoted = (
            f"{sent[b'x-api-key'].decode()} ({sent[b'authorization'].decode()}), "
            f"{sent[b'content-type'].decode()}"
        )
        said = f"{'.' * padding}Invalid API key provided: {quoted}"
        body = json.dumps({"error": {"message": said}})
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json")]})  # fmt: skip
        await send({"type": "http.response.body", "body": body.encode()})

    dl = MemoryDeadLetter()
    headers = {"X-Api-Key": "collector-7f3a9b2c55", "Authorization": "Bearer tok-4455667788"}
    with serve(refuses) as url:
        sub = Subscription(100)
        sub.offer(make_events(2))
        sub.finish()
        await Dispatcher(
            sub, [WebhookSink(url, headers=headers)], flush_interval=0.01, dead_letter=dl
        ).run()
    errors = [r["error"] for r in dl.records]
    assert len(errors) == 2 and all(e.startswith("HTTP 401") for e in errors)
    assert "Invalid API key provided: [" in errors[0]  # [REDACTED], perhaps cut
    assert padding or "application/json" in errors[0]  # not a secret: left as it is
    for text in [*errors, caplog.text]:
        assert "collector-7f3" not in text and "tok-44556" not in text


def test_the_sinks_own_keys_are_masked_however_a_collector_quotes_them() -> None:
    # Exact echoes were masked; the key JSON-escaped as PHP writes it (`\/`), percent-encoded or
    # upper-cased reached the log and every dead letter in clear (helper-77).
    from eventbus_core.sinks._http import HttpTarget

    key = "TrialOps/KEY+abc/def=="
    target = HttpTarget("http://127.0.0.1:1/x", headers={"X-Api-Key": key}, client=object())  # type: ignore[arg-type]
    for quoted in (
        key,
        key.replace("/", "\\/"),
        key.upper(),
        "TrialOps%2FKEY%2Babc%2Fdef%3D%3D",
        json.dumps({"k": key})[7:-2],
        # Escapings of their own (helper-81): Python's quote() keeping "/", "/" alone
        # encoded, .NET's "\u002B", and every character escaped.
        "TrialOps/KEY%2Babc/def%3D%3D",
        "TrialOps%2FKEY+abc%2Fdef==",
        key.replace("+", "\\u002B"),
        "".join(f"%{b:02X}" for b in key.encode()),
        "".join(f"\\u{ord(c):04x}" for c in key),
    ):
        said = target.mask_own(f"Invalid API key {quoted}, try again")
        assert said == "Invalid API key [REDACTED], try again", (quoted, said)


def test_control_characters_of_a_receivers_message_are_escaped() -> None:
    # A receiver's error body reached the log with ESC, BEL and NUL as they were: it could
    # colour the terminal or forge a log line.
    import httpx

    from eventbus_core.sinks._http import HttpTarget

    body = b"bad\n CRITICAL eventbus.fake: injected\x1b[31mRED\x1b[0m\r\x07\x00end"
    response = httpx.Response(500, headers={"content-type": "text/plain"}, content=body)
    target = HttpTarget("http://127.0.0.1:1/x", client=object())  # type: ignore[arg-type]
    said = str(target.error_for(response))
    assert "\x1b" not in said and "\x07" not in said and "\x00" not in said and "\n" not in said
    assert "injected\\x1b[31mRED" in said


async def test_a_huge_response_body_is_read_only_up_to_the_bound() -> None:
    # The sinks read whole bodies: one 50 MB answer raised the dispatcher's memory by 150 MB,
    # for good. Only the start of a body is ever used.
    from eventbus_core.sinks._http import _RESPONSE_KEPT, HttpTarget

    big = b"x" * (20 * 1024 * 1024)

    async def answers_big(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        status = 200 if scope["path"] == "/ok" else 500
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"text/plain")]})  # fmt: skip
        for at in range(0, len(big), 1 << 20):
            await send({"type": "http.response.body", "body": big[at : at + (1 << 20)],
                        "more_body": True})  # fmt: skip
        await send({"type": "http.response.body", "body": b""})

    with serve(answers_big) as url:
        for path in ("/ok", "/fail"):
            target = HttpTarget(f"{url}{path}")
            try:
                response = await target.post(b"{}")
            finally:
                await target.close()
            assert len(response.content) == _RESPONSE_KEPT
            error = target.error_for(response)
            assert (error is None) == (path == "/ok")
            if error is not None:
                assert str(error).startswith("HTTP 500: xxxx") and len(str(error)) < 300


async def test_a_compressed_response_is_undone_within_the_bound() -> None:
    # httpx asked for gzip and undid each chunk whole: a 200 KB gzip reply inflated to 200 MB
    # in memory (review-e). Identity is asked for; what comes compressed anyway is undone here,
    # within the bound, and a body past it is left out.
    import gzip
    import resource
    import zlib

    from eventbus_core.sinks._http import _RESPONSE_KEPT, HttpTarget

    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # gzip, made piecewise
    zeros = b"\0" * (1024 * 1024)
    bomb = b"".join([*(packer.compress(zeros) for _ in range(200)), packer.flush()])
    small = gzip.compress(b'{"error": "quota exceeded"}')
    asked: list[bytes] = []

    async def answers_gzip(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        asked.append(dict(scope["headers"]).get(b"accept-encoding", b""))
        body, status = (bomb, 200) if scope["path"] == "/bomb" else (small, 429)
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"application/json"), (b"content-encoding", b"gzip")]})  # fmt: skip
        await send({"type": "http.response.body", "body": body})

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with serve(answers_gzip) as url:
        bomb_target, small_target = HttpTarget(f"{url}/bomb"), HttpTarget(f"{url}/small")
        try:
            bombed = await bomb_target.post(b"{}")
            refused = await small_target.post(b"{}")
        finally:
            await bomb_target.close()
            await small_target.close()
    grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert asked == [b"identity", b"identity"]
    assert bombed.status_code == 200 and len(bombed.content) <= _RESPONSE_KEPT
    assert grown_kb < 50 * 1024, f"memory grew by {grown_kb} KB"
    assert "quota exceeded" in str(small_target.error_for(refused))


async def test_webhook_unreachable_is_transient() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nobody listens there
    sink = WebhookSink(f"http://127.0.0.1:{port}/x", connect_timeout=2)
    with pytest.raises(TransientSinkError, match="cannot reach") as info:
        await sink.send(payloads(1))
    # The label dead letters and eventbus_sink_failed_total{error_type} show, as documented.
    assert info.value.error_type == "connection"
    await sink.close()


def test_webhook_options_and_errors() -> None:
    settings = EventBusSettings()
    sink = webhook_module.build_sink(
        settings,
        {
            "url": "https://example.invalid/hook",
            "timeout": "2.5",
            "headers": '{"Authorization": "Bearer abc"}',
            "header_x_team": "obs",
        },
    )
    assert sink.timeout == 2.5
    assert sink.headers["Authorization"] == "Bearer abc" and sink.headers["x-team"] == "obs"
    with pytest.raises(SettingsError, match="EVENTBUS_SINK_WEBHOOK_URL"):
        webhook_module.build_sink(settings, {})
    with pytest.raises(SettingsError, match="EVENTBUS_SINK_WEBHOOK_TIMEOUT"):
        webhook_module.build_sink(settings, {"url": "http://x", "timeout": "soon"})
    # nan would time out every request, and dead-letter every batch, without a word at start.
    for bad in ("nan", "inf", "-inf"):
        with pytest.raises(SettingsError, match=r"CONNECT_TIMEOUT\) must be a finite number"):
            webhook_module.build_sink(settings, {"url": "http://x", "connect_timeout": bad})
    with pytest.raises(SettingsError, match=r"TIMEOUT\) must be > 0, got '0'"):
        webhook_module.build_sink(settings, {"url": "http://x", "timeout": "0"})
    with pytest.raises(SettingsError, match="JSON object") as info:
        webhook_module.build_sink(settings, {"url": "http://x", "headers": "Bearer secret"})
    assert "secret" not in str(info.value)
    # httpx would refuse it only when sending, quoting the value into the log and every
    # dead letter: refused here, by name, without the value.
    with pytest.raises(SettingsError, match=r"HEADER_<NAME>.*'x-api-key'") as info:
        webhook_module.build_sink(settings, {"url": "http://x", "header_x_api_key": "whSECRET\n"})
    assert "SECRET" not in str(info.value)


# ------------------------------------------------------------------------- plugin discovery


def test_builtin_sinks_are_registered_through_entry_points() -> None:
    registry = PluginRegistry()
    for name in ("console", "jsonl", "webhook", "otlp", "helicone", "lunary"):
        assert registry.sinks[name].plugin == name
    done = subprocess.run(
        [sys.executable, "-m", "eventbus_core.cli", "plugins", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert {"console", "jsonl", "webhook", "otlp", "helicone", "lunary"} <= set(
        json.loads(done.stdout)["sinks"]
    )


def test_sink_options_from_the_environment_and_their_errors(tmp_path: Path) -> None:
    from eventbus_core import sink_options_from_env
    from eventbus_core.sinks import console as console_module
    from eventbus_core.sinks import jsonl as jsonl_module

    env = {
        "EVENTBUS_SINK_JSONL_PATH": "/x.jsonl",
        "EVENTBUS_SINK_JSONL_MAX_BYTES": "1_000",
        "EVENTBUS_SINK_MY_SINK_URL": "u",
        "EVENTBUS_SINKS": "jsonl",
        "OTHER": "1",
    }
    assert sink_options_from_env("jsonl", env) == {"path": "/x.jsonl", "max_bytes": "1_000"}
    assert sink_options_from_env("my-sink", env) == {"url": "u"}
    settings = EventBusSettings()
    sink = jsonl_module.build_sink(
        settings, {"path": str(tmp_path / "a.jsonl"), "max_bytes": "1_000", "fsync": "yes"}
    )
    assert sink.file.max_bytes == 1000 and sink.file.fsync
    with pytest.raises(SettingsError, match="EVENTBUS_SINK_JSONL_MAX_BYTES"):
        jsonl_module.build_sink(settings, {"max_bytes": "big"})
    with pytest.raises(SettingsError, match="EVENTBUS_SINK_JSONL_FSYNC"):
        jsonl_module.build_sink(settings, {"fsync": "maybe"})
    # Both ways to give an option are named: the message cannot know which one was typed.
    with pytest.raises(
        SettingsError, match=r"--sink-opt stream=\.\.\. or EVENTBUS_SINK_CONSOLE_STREAM"
    ):
        console_module.build_sink(settings, {"stream": "printer"})
    assert console_module.build_sink(settings, {"stream": "stderr"})._stream is sys.stderr
    # A path that cannot be written is refused at start, not dead-lettered batch after batch.
    (tmp_path / "file").write_text("")
    for bad, why in ((tmp_path / "file" / "x.jsonl", "is a file"), (tmp_path, "is a directory")):
        with pytest.raises(SettingsError, match=f"--sink-opt path=.*JSONL_PATH.*{why}"):
            jsonl_module.build_sink(settings, {"path": str(bad)})


def test_an_unknown_sink_option_is_refused_with_the_known_ones(tmp_path: Path) -> None:
    from eventbus_core.sinks import console as console_module
    from eventbus_core.sinks import jsonl as jsonl_module

    settings = EventBusSettings()
    with pytest.raises(SettingsError, match="did you mean 'path'") as info:
        jsonl_module.build_sink(settings, {"pth": str(tmp_path / "a.jsonl")})
    message = str(info.value)
    assert "EVENTBUS_SINK_JSONL_PTH" in message and "backups, fsync, max_bytes, path" in message
    with pytest.raises(SettingsError, match="unknown sink option 'colour' of 'console'"):
        console_module.build_sink(settings, {"colour": "red"})
    with pytest.raises(SettingsError, match=r"webhook takes: .*header_<name>"):
        webhook_module.build_sink(settings, {"url": "http://127.0.0.1:9/", "retries": "3"})
    sink = webhook_module.build_sink(
        settings, {"url": "http://127.0.0.1:9/", "header_x_team": "ml", "header.X-Env": "dev"}
    )
    assert sink.headers["x-team"] == "ml" and sink.headers["X-Env"] == "dev"


async def test_webhook_timeout_is_transient() -> None:
    receiver = WebhookReceiver(hold_after=0)  # never answers until released
    with serve(receiver) as url:
        sink = WebhookSink(url, timeout=0.2, connect_timeout=2)
        with pytest.raises(TransientSinkError, match="timeout posting to") as info:
            await sink.send(payloads(1))
        assert info.value.error_type == "timeout"
        await sink.close()


async def test_webhook_timeout_bounds_a_whole_answer_trickled_a_byte_at_a_time() -> None:
    # httpx bounds each read: a receiver sending one byte a second held a batch for 19 s with
    # timeout=3 (helper-92). The timeout is for the whole request.
    handlers: list[asyncio.Task[Any]] = []
    ended = asyncio.Event()

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.append(asyncio.current_task())  # type: ignore[arg-type]
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n")
        with contextlib.suppress(ConnectionError):
            for _ in range(40):
                if ended.is_set():
                    break
                writer.write(b"x")
                await writer.drain()
                await asyncio.sleep(0.1)
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()

    server = await asyncio.start_server(trickle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sink = WebhookSink(f"http://127.0.0.1:{port}/", timeout=0.5, connect_timeout=2)
    started = time.monotonic()
    with pytest.raises(TransientSinkError, match=r"within 0\.5 s") as info:
        await sink.send(payloads(1))
    assert time.monotonic() - started < 2.5  # 4 s of trickle before
    assert info.value.error_type == "timeout"
    await sink.close()
    ended.set()
    await asyncio.gather(*handlers)
    server.close()
    await server.wait_closed()


def test_jsonl_on_a_device_writes_without_rotating_or_truncating_it(tmp_path: Path) -> None:
    import stat

    from eventbus_core._jsonl import JsonlFile

    # Rotating renamed the path: as root, a jsonl sink discarding to /dev/null moved the
    # machine's /dev/null away after max_bytes, and left a regular file in its place.
    null = make_device(tmp_path / "null", NULL_MINOR)
    sink = JsonlFile(null, max_bytes=10, backups=2)
    for _ in range(5):
        assert sink.append_lines([b"0123456789\n"]) == 11
    sink.close()
    assert stat.S_ISCHR(null.stat().st_mode) and sorted(tmp_path.iterdir()) == [null]
    # A full device: the write's own error, not one from taking back what was written.
    full = JsonlFile(make_device(tmp_path / "full", FULL_MINOR), max_bytes=0)
    with pytest.raises(OSError, match="No space left on device"):
        full.append_lines([b"x\n"])


def test_jsonl_follows_its_path_when_the_file_is_removed_or_moved(tmp_path: Path) -> None:
    from eventbus_core._jsonl import JsonlFile

    # It kept writing to the descriptor it had open: after an rm (or logrotate's move) every
    # batch, dead letters included, went to a file no path reached, counted as written.
    path = tmp_path / "dead.jsonl"
    sink = JsonlFile(path)
    sink.append_lines([b"1\n"])
    path.unlink()
    sink.append_lines([b"2\n"])
    assert path.read_bytes() == b"2\n"
    path.rename(tmp_path / "dead.jsonl.1")  # as logrotate moves it
    sink.append_lines([b"3\n"])
    assert path.read_bytes() == b"3\n" and (tmp_path / "dead.jsonl.1").read_bytes() == b"2\n"
    path.unlink()
    path.mkdir()  # it cannot be written any more: said, so the caller keeps the batch
    with pytest.raises(IsADirectoryError):
        sink.append_lines([b"4\n"])


@pytest.mark.parametrize(
    "url",
    [
        "hooks.slack.com/services/T0AAAA/B0BBBB/whsecT141abcdefghijklmnop",
        "htps://hooks.slack.com/services/T0AAAA/B0BBBB/whsecT141abcdefghijklmnop",
        "ftp://h.example/x?token=whsecT141abcdefghijklmnop",
    ],
)
def test_a_refused_webhook_url_shows_no_token(url: str) -> None:
    # Without a valid scheme, the URL was quoted whole, its path token too (trial 141).
    from eventbus_core.sinks import webhook as webhook_module

    with pytest.raises(SettingsError, match="must be an http") as info:
        webhook_module.build_sink(EventBusSettings(), {"url": url})
    assert "whsecT141" not in str(info.value), str(info.value)


def test_credentials_in_a_url_beside_an_authorization_header_show_no_query_token() -> None:
    from eventbus_core.sinks import WebhookSink

    with pytest.raises(SettingsError, match="holds a user:password@") as info:
        WebhookSink(
            "https://user:pw12345678@h.example/x?token=whsecT141tok",
            headers={"Authorization": "Bearer x"},
        )
    assert "whsecT141tok" not in str(info.value) and "pw12345678" not in str(info.value)


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("http://127.0.0.1:99999/hook", "is not a valid URL"),
        ("http://user:hunter2@[::1/hook", "is not a valid URL"),
        ("http:///hook", "names no host"),
        ("http://127.0.0.1:0/hook", "port 0 cannot be connected to"),
        ("http://user:hun ter2@127.0.0.1:99999/hook", "is not a valid URL"),
        ("http://user:hun/ter2@127.0.0.1:99999/hook", "is not a valid URL"),
        ("ftp://x/hook", "must be an http:// or https:// URL"),
        # A token pasted on its own: masked whole (trial 130).
        ("hunter2", r"an http:// or https:// URL, got a value that is not shown"),
        ("Hunter2-Secret", r"URL, got a value that is not shown \(it could be a credential\)"),
    ],
)
def test_a_webhook_url_that_can_never_work_is_refused_at_start(url: str, said: str) -> None:
    from eventbus_core.sinks import webhook as webhook_module

    # It started, then every batch failed, was retried as if the server were down, and was
    # dead-lettered.
    with pytest.raises(SettingsError, match=said) as info:
        webhook_module.build_sink(EventBusSettings(), {"url": url})
    assert "--sink-opt url=" in str(info.value) and "hunter2" not in str(info.value)


def test_jsonl_writes_to_a_pipe_and_never_waits_for_a_reader(tmp_path: Path) -> None:
    import threading

    from eventbus_core._jsonl import JsonlFile
    from eventbus_core.sinks import jsonl as jsonl_module

    # /dev/stdout in a container is a pipe. A named pipe nobody read made the open wait for
    # ever (deaf to SIGTERM), and a start-up check that opened and closed it handed its
    # reader an end of file before the first line.
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    sink = jsonl_module.build_sink(EventBusSettings(), {"path": str(fifo), "fsync": "true"})
    with pytest.raises(OSError, match="No such device or address"):  # nobody reads it yet
        sink.file.append_lines([b"lost\n"])
    got: list[bytes] = []
    reading = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reading.start()
    writer = JsonlFile(fifo, fsync=True)
    for _ in range(200):  # until the reader has opened its end
        try:
            writer.append_lines([b"1\n"])
            break
        except OSError:
            threading.Event().wait(0.01)
    writer.append_lines([b"2\n"])
    writer.close()
    reading.join(5)
    assert got == [b"1\n2\n"]


async def test_an_unreachable_webhook_never_shows_its_password_whatever_it_holds() -> None:
    from eventbus_core import TransientSinkError
    from eventbus_core.sinks import webhook as webhook_module

    # Free-text masking stopped at the space: every log line and dead letter showed the rest.
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    url = f"http://user:hun ter2@127.0.0.1:{port.getsockname()[1]}/hook"
    port.close()  # nothing listens there now
    sink = webhook_module.build_sink(EventBusSettings(), {"url": url})
    with pytest.raises(TransientSinkError) as info:
        await sink.send([{"a": 1}])
    assert "cannot reach" in str(info.value) and "ter2" not in str(info.value)
    assert "ter2" not in repr(sink) and "ter2" not in sink.url
    await sink.close()


def test_credentials_in_a_sinks_url_are_masked_when_a_receiver_quotes_them() -> None:
    # httpx sends `user:password@` as `Authorization: Basic ...`: a receiver quoting that
    # header back put the credential in the log and every dead letter (helper-89).
    import base64

    from eventbus_core.sinks._http import HttpTarget

    target = HttpTarget("https://hook:pa%24%24w0rd-9@hooks.example/x", client=object())  # type: ignore[arg-type]
    basic = base64.b64encode(b"hook:pa$$w0rd-9").decode()
    for quoted in (f"Basic {basic}", basic, "pa$$w0rd-9", "pa%24%24w0rd-9"):
        said = target.mask_own(f"401: bad credentials {quoted}")
        assert "w0rd" not in said and basic[:8] not in said and "[REDACTED]" in said, said
    assert HttpTarget("https://hooks.example/x", client=object()).mask_own("ok") == "ok"  # type: ignore[arg-type]
    lone = HttpTarget("https://tok-0123456789@hooks.example/x", client=object())  # type: ignore[arg-type]
    assert "0123456789" not in lone.mask_own("bad token tok-0123456789")


def test_the_start_of_a_sinks_own_key_quoted_alone_is_masked() -> None:
    # "Invalid API key provided: hk-ECHOKEYabcd..." reached the log and every dead letter
    # (helper-83): receivers often quote a key's start only.
    from eventbus_core.sinks._http import HttpTarget

    key = "hk-ECHOKEYabcdef0123456789"
    target = HttpTarget(
        "http://127.0.0.1:1/x", headers={"Authorization": f"Bearer {key}"}, client=object()
    )  # type: ignore[arg-type]
    for quoted in ("hk-ECHOKEYabcd...", "HK-ECHOKEYABCDEF0123****", key, "hk-ECHOKEYa..."):
        said = target.mask_own(f"Invalid API key provided: {quoted}")
        assert "ECHOKEY" not in said.upper() and "[REDACTED]" in said, said
    assert target.mask_own("a hk-ECHO word") == "a hk-ECHO word"  # too short to tell
    # Echoed back base64-encoded, with or without its padding (helper-83, helper-88).
    import base64

    encoded = base64.b64encode(key.encode()).decode()
    for quoted in (encoded, encoded.rstrip("=")):
        assert "[REDACTED]" in target.mask_own(f"got {quoted}") and encoded[
            :12
        ] not in target.mask_own(f"got {quoted}")
    # A long key quoted by a start shorter than half of it (helper-87: 14 of 51 characters).
    longer = "sk-helicone-ECHO" + "0123456789" * 3 + "abcde"
    target = HttpTarget(
        "http://127.0.0.1:1/x", headers={"Helicone-Auth": f"Bearer {longer}"}, client=object()
    )  # type: ignore[arg-type]
    assert "ECHO" not in target.mask_own(f"bad key {longer[:14]}...")


def test_the_start_of_a_long_header_value_of_short_words_quoted_alone_is_masked() -> None:
    # A passphrase-like header value: each word under 16 characters, so the start rule, which
    # looked at long words only, let "start=My Pl4in Sec" through to the error, the log and
    # every dead letter (trial 134).
    from eventbus_core.sinks._http import HttpTarget

    value = "My Pl4in Secret/Value+42"
    target = HttpTarget("http://127.0.0.1:1/x", headers={"X-Custom": value}, client=object())  # type: ignore[arg-type]
    for quoted in (value[:12], value[:10], value[:18] + "..."):
        said = target.mask_own(f"bad: start={quoted} url=/in")
        assert "Pl4in" not in said and "[REDACTED]" in said, said
    assert target.mask_own("My Pl4in") == "My Pl4in"  # too short a start to tell
    # The mask went on to the first space only: "[REDACTED] horse batter" (trial 137).
    phrase = "correct horse battery staple " + "x" * 300  # longer than the part matched whole
    target = HttpTarget("http://127.0.0.1:1/x", headers={"X-Passphrase": phrase}, client=object())  # type: ignore[arg-type]
    for quoted in (phrase[:20], phrase[:28], phrase[:200], phrase.upper()[:21]):
        said = target.mask_own(f"bad: start={quoted} url=/in")
        assert said == "bad: start=[REDACTED] url=/in", said


def test_the_secrets_of_a_sinks_url_quoted_alone_are_masked() -> None:
    # A receiver echoing the URL's ?token= value alone, or a Slack-style token in the URL's
    # path, reached the error, the log (httpx's at -vv) and every dead letter (trial 105).
    from eventbus_core._log import scrub
    from eventbus_core.sinks._http import HttpTarget

    url = "https://hooks.example/services/T0001/B0002/SlAcKpAtH0123456789abcde?token=QuErYtOk77&v=2"
    target = HttpTarget(url, client=object())  # type: ignore[arg-type]
    for secret in ("QuErYtOk77", "SlAcKpAtH0123456789abcde"):
        said = target.mask_own(f"refused {secret}, try again")
        assert said == "refused [REDACTED], try again", said
        assert secret not in scrub(f"HTTP Request: POST {url} 'HTTP/1.1 200 OK' saw {secret}")
    kept = "version 2024-01-01T10:00:00 of /services/T0001"  # neither is such a secret
    assert target.mask_own(kept) == kept
    # Ordinary ids and words in a URL stay in messages (trial 106).
    uuid = "0f8fad5b-d9cb-469f-a165-70867728950e"
    plain = HttpTarget(
        f"https://hooks.example/ingestEndpoint2024/{uuid}?key=events", client=object()
    )  # type: ignore[arg-type]
    said = f"no stream events at /ingestEndpoint2024/{uuid}"
    assert plain.mask_own(said) == said


def test_a_webhook_url_with_credentials_beside_an_authorization_header_is_refused() -> None:
    from eventbus_core.sinks import webhook as webhook_module

    url = "https://hook:HOOKPASS@hooks.example/x"
    assert webhook_module.build_sink(EventBusSettings(), {"url": url})  # Basic alone: fine
    with pytest.raises(SettingsError, match="take the credentials out of the URL") as info:
        webhook_module.build_sink(
            EventBusSettings(), {"url": url, "header_authorization": "Bearer HOOKTOKEN"}
        )
    assert "HOOKPASS" not in str(info.value) and "HOOKTOKEN" not in str(info.value)


@pytest.mark.parametrize(
    ("value", "said"), [("null", "not null"), ("true", "not true"), ('["sk-x"]', "not a list")]
)
def test_a_webhook_header_given_a_json_value_no_header_has_is_refused(
    value: str, said: str
) -> None:
    # null went out as the header value "None", true as "True" (trial 236).
    options = {"url": "https://hooks.example/x", "headers": f'{{"X-A": {value}, "X-B": 5}}'}
    with pytest.raises(SettingsError, match=f"header 'X-A' must have a string .* {said}$") as info:
        webhook_module.build_sink(EventBusSettings(), options)
    assert "sk-x" not in str(info.value)
    options["headers"] = '{"X-B": 5, "X-C": 2.5}'
    assert webhook_module.build_sink(EventBusSettings(), options).headers["X-B"] == "5"


def test_a_sinks_object_dump_shows_no_header_value() -> None:
    # `sink.headers` (public) and the target's headers printed their values in vars() dumps,
    # as an error reporter makes them (trial 141).
    from eventbus_core.sinks import WebhookSink, helicone, otlp

    key = "whsecT141KEYabcdef0123456789"
    sinks = [
        WebhookSink("https://h.example/x", headers={"Authorization": f"Bearer {key}"}),
        helicone.HeliconeSink(key),
        otlp.build_sink(EventBusSettings(), {"header_authorization": f"Bearer {key}"}),
    ]
    for sink in sinks:
        dumped = repr(vars(sink)) + repr(vars(getattr(sink, "target", None) or sink._target))
        config = getattr(sink, "config", None)
        if config is not None:
            dumped += repr(vars(config))
        assert key not in dumped.replace("\\", ""), (type(sink).__name__, dumped[:300])
        # Each shows itself, masked (the webhook sink was an object at 0x..., trial 240).
        assert key not in repr(sink) and "object at 0x" not in repr(sink), repr(sink)


def test_an_authentication_schemes_name_is_not_masked_in_a_receivers_error() -> None:
    # "the bearer token is invalid" read "the [REDACTED] token is invalid" (trial 141).
    from eventbus_core.sinks._http import HttpTarget

    key = "whsecT141KEYabcdef0123456789"
    target = HttpTarget(
        "http://127.0.0.1:1/x", headers={"Authorization": f"Bearer {key}"}, client=object()
    )  # type: ignore[arg-type]
    said = target.mask_own(f"the bearer token is invalid: Bearer {key}")
    assert said == "the bearer token is invalid: [REDACTED]", said
