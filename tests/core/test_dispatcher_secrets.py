"""No credential leaves through a dispatcher built in code: not to sinks, dead letters or logs."""

from __future__ import annotations

import asyncio
import base64
import importlib
import json
import logging
import pkgutil
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from eventbus_core import (
    NO_REDACTION,
    Dispatcher,
    Event,
    EventBusSettings,
    JsonlDeadLetter,
    MemoryDeadLetter,
    SettingsError,
    Subscription,
    TransientSinkError,
)
from eventbus_core._log import ScrubFilter
from eventbus_memory import InMemoryEventBus
from tests._python import run_python
from tests.core.conftest_dispatch import (
    FAST_RETRY,
    SECRET_KEY,
    AlwaysFailing,
    ListSource,
    RecordingSink,
    make_events,
    read_jsonl,
)

BEARER_KEY = "sk-live-0a1b2c3d4e5f6a7b8c9d0e1f"
QUERY_KEY = "qk-77aa88bb99cc00dd"
COOKIE = "session=c00k1e-s3cr3t-value"
BASIC = "Basic dXNlcjpodW50ZXIyaHVudGVyMg=="
SECRETS = (SECRET_KEY, BEARER_KEY, QUERY_KEY, "c00k1e-s3cr3t-value", "dXNlcjpodW50ZXIyaHVudGVyMg")


def secret_event(log_id: int = 1) -> Event:
    return Event(
        request_id=f"r{log_id}",
        method="POST",
        path=f"/v1/chat/completions?api_key={QUERY_KEY}&stream=false",
        status=401,
        duration=1_000_000,
        response_headers={
            "Authorization": f"Bearer {BEARER_KEY}",
            "Proxy-Authorization": BASIC,
            "Set-Cookie": COOKIE,
            "Content-Type": "application/json",
        },
        request_body=json.dumps(
            {"model": "gpt-4o", "messages": [{"role": "user", "content": f"key {SECRET_KEY}"}]}
        ).encode(),
        response_body=f'{{"error": "Authorization: Bearer {BEARER_KEY} refused"}}'.encode(),
        log_id=log_id,
    )


def assert_clean(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


@pytest.mark.parametrize("kind", ["memory", "jsonl"])
async def test_a_dispatcher_built_in_code_redacts_by_default(tmp_path: Path, kind: str) -> None:
    bus = InMemoryEventBus()
    good, broken = RecordingSink("good"), AlwaysFailing("broken")
    dead: MemoryDeadLetter | JsonlDeadLetter = (
        MemoryDeadLetter() if kind == "memory" else JsonlDeadLetter(tmp_path / "dead.jsonl")
    )
    # Built as docs/plugins/writing-a-sink.md shows: no redactor argument at all.
    d = Dispatcher(bus, [good, broken], flush_interval=0.01, retry=FAST_RETRY, dead_letter=dead)
    task = asyncio.create_task(d.run())
    for i in range(1, 4):
        bus.publish(secret_event(i))
    await bus.astop()
    stats = await task
    assert stats.sinks["broken"].dead_lettered == 3
    records = dead.records if isinstance(dead, MemoryDeadLetter) else read_jsonl(dead.path)
    delivered = json.dumps(good.payloads)
    dead_lettered = json.dumps(records)
    assert "[REDACTED]" in delivered and "[REDACTED]" in dead_lettered
    assert_clean(delivered)
    assert_clean(dead_lettered)
    assert good.payloads[0]["response_headers"]["Content-Type"] == ["application/json"]


async def test_a_dispatcher_built_in_code_applies_the_environments_extra_rules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Payloads and dead letters kept them in clear while the same process's log lines masked
    # them (helper-107).
    monkeypatch.setenv("EVENTBUS_REDACT_HEADERS", "X-Internal-Sig")
    monkeypatch.setenv("eventbus_redact_patterns", r"PIN-\d{4}")  # any case, as the settings
    bus = InMemoryEventBus()
    good, broken = RecordingSink("good"), AlwaysFailing("broken")
    dead = JsonlDeadLetter(tmp_path / "dead.jsonl")
    d = Dispatcher(bus, [good, broken], flush_interval=0.01, retry=FAST_RETRY, dead_letter=dead)
    task = asyncio.create_task(d.run())
    bus.publish(
        Event(
            request_id="r1",
            response_headers={"X-Internal-Sig": "SIGVALUE-abcdef"},
            response_body=b'{"note": "PIN-1234"}',
        )
    )
    await bus.astop()
    await task
    for text in (json.dumps(good.payloads), json.dumps(read_jsonl(dead.path))):
        assert "SIGVALUE-abcdef" not in text and "PIN-1234" not in text, text
        assert "[REDACTED]" in text
    monkeypatch.setenv("EVENTBUS_REDACT_PATTERNS", "([")
    with pytest.raises(SettingsError, match="EVENTBUS_REDACT_PATTERNS"):
        Dispatcher(InMemoryEventBus(), [RecordingSink()])


async def test_opting_out_of_redaction_is_explicit() -> None:
    sink = RecordingSink()
    source = ListSource([secret_event()])
    d = Dispatcher(source, [sink], flush_interval=0.01, redactor=NO_REDACTION)
    assert repr(d.redactor) == "NO_REDACTION"
    task = asyncio.create_task(d.run())
    await sink.wait_for(1)
    d.request_stop()
    await task
    assert sink.payloads[0]["response_headers"]["Set-Cookie"] == [COOKIE]
    assert QUERY_KEY in sink.payloads[0]["path"]


def test_redact_false_in_settings_means_no_redaction(tmp_path: Path) -> None:
    settings = EventBusSettings(sinks="console", redact=False, dead_letter_path="")
    assert Dispatcher.from_settings(settings, bus=InMemoryEventBus()).redactor is NO_REDACTION
    on = Dispatcher.from_settings(
        settings.model_copy(update={"redact": True}), bus=InMemoryEventBus()
    )
    assert on.redactor is not NO_REDACTION


# --------------------------------------------------------------------------- log lines


class LeakySource(ListSource):
    """A durable source whose every failure quotes a credential, as careless libraries do."""

    def __init__(self, events: Sequence[Event]) -> None:
        super().__init__(events)
        self.read_failures = 1
        self.ack_failures = 1

    def read(self, max_items: int, timeout: float) -> list[Any]:
        if self.read_failures:
            self.read_failures -= 1
            raise ConnectionError(f"redis://admin:{QUERY_KEY}@cache:6379 said: api_key={QUERY_KEY}")
        return super().read(max_items, timeout)

    def ack(self, tokens: Sequence[Any]) -> None:
        if self.ack_failures:
            self.ack_failures -= 1
            raise ConnectionError(f"XACK refused: Authorization: Bearer {BEARER_KEY}")
        super().ack(tokens)

    def close(self) -> None:
        raise RuntimeError(f"close failed, password={QUERY_KEY}")

    @property
    def exhausted(self) -> bool:
        if not self._pending:
            # A bug in the source: the reader task dies with this in its traceback.
            raise RuntimeError(f"source state lost; last token {SECRET_KEY}")
        return False


ECHO = json.dumps({"echo": {"headers": {"Cookie": COOKIE}, "key": SECRET_KEY}})


class LeakySink(RecordingSink):
    """Fails once with an error quoting the response body, then fails to close."""

    def __init__(self) -> None:
        super().__init__(
            "leaky",
            fail_times=1,
            error=lambda: TransientSinkError(f"HTTP 503: {ECHO}"),
        )

    async def close(self) -> None:
        raise OSError(f"could not close: Bearer {BEARER_KEY}")


async def test_every_log_line_of_the_dispatcher_is_scrubbed_tracebacks_included(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)

    def transform(event: Event) -> dict[str, Any]:
        if event.log_id == 2:
            body = (event.request_body or b"").decode()
            raise ValueError(f"cannot parse request body: {body}")
        return {"log_id": event.log_id, "note": "fine"}

    events = make_events(3, request_body=json.dumps({"note": SECRET_KEY}).encode())
    sink = LeakySink()
    d = Dispatcher(
        LeakySource(events),
        [sink],
        flush_interval=0.01,
        retry=FAST_RETRY,
        transform=transform,
        stats_interval=0.01,
    )
    await d.run()
    assert [p["log_id"] for p in sink.payloads] == [1, 2, 3]
    text = caplog.text
    for expected in (
        "transform failed",
        "reading failed",
        "acknowledging",
        "closing source",
        "closing sink",
        "retrying in",
        "dispatcher task read-shared failed",
        "Traceback (most recent call last)",
    ):
        assert expected in text, expected
    assert "[REDACTED]" in text
    assert_clean(text)
    for record in caplog.records:
        assert record.exc_info is None  # the traceback travels as scrubbed text only
    assert "transform_error" in sink.payloads[1]
    assert_clean(json.dumps(sink.payloads))


@pytest.mark.parametrize(
    "quote",
    [
        repr,  # a mappingproxy of tuples
        lambda headers: repr(dict(headers)),
        lambda headers: json.dumps({k: list(v) for k, v in headers.items()}),
        lambda headers: f"token {headers['X-Amz-Security-Token'][0]} refused",
    ],
    ids=["repr-proxy", "repr-dict", "json", "bare-value"],
)
async def test_a_transformer_error_quoting_the_headers_is_masked(
    caplog: pytest.LogCaptureFixture, quote: Any
) -> None:
    # Whatever form the message gives the headers in, their credentials reach neither the
    # payload's transform_error nor the log.
    caplog.set_level(logging.DEBUG)
    secrets = {
        "Authorization": ("Basic dXNlcjpodW50ZXIyaHVudGVyMg==",),
        "Set-Cookie": ("session=s3ss10nValue0001", "csrftoken=csrfValue0000002"),
        "x-api-key": ("apikeyvalue000000003",),
        "X-Amz-Security-Token": ("amzSecurityTokenValue0004",),
        # Characters JSON or repr escape: the value is quoted escaped, and must be found so.
        "Proxy-Authorization": ('Digest username="bob", response="r3sp0nseValue05"',),
        "X-Goog-Api-Key": ("g00gKeyValue06\\x-\u00e9t\u00e9-tail0000007",),
    }
    headers = {**secrets, "Content-Type": ("application/json",), "X-Request-Id": ("req-77",)}

    def transform(event: Event) -> dict[str, Any]:
        raise ValueError(f"bad headers: {quote(event.response_headers)}")

    bus = InMemoryEventBus()
    sink = RecordingSink()
    task = asyncio.create_task(
        Dispatcher(bus, [sink], flush_interval=0.01, retry=FAST_RETRY, transform=transform).run()
    )
    bus.publish(
        Event(request_id="r1", method="POST", path="/", status=200, response_headers=headers)
    )
    await bus.astop()
    await task
    error = sink.payloads[0]["transform_error"]
    assert "[REDACTED]" in error
    for text in (error, caplog.text):
        for values in secrets.values():
            for value in values:
                # Nor any part of it, escaped or not: each run of 10 letters and digits.
                for part in re.findall(r"[A-Za-z0-9]{10,}", value):
                    assert part not in text, (part, text)
    if "X-Request-Id" in error:
        assert "req-77" in error  # what is not a credential stays


def transform_quoting_a_customer(event: Event) -> dict[str, Any]:
    """A transformer (EVENTBUS_TRANSFORMER) whose error quotes what the user pattern masks."""
    raise ValueError("customer zq-314159 could not be parsed")


async def test_user_patterns_from_settings_are_masked_in_logs_too(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = EventBusSettings(
        sinks="console",
        dead_letter_path="",
        flush_interval=0.01,
        redact_patterns=r"\bzq-\d{6}\b",
        transformer=f"{__name__}:transform_quoting_a_customer",
    )
    sub = Subscription(10)
    sub.offer(make_events(1))
    sub.finish()
    stats = await Dispatcher.from_settings(settings, bus=sub).run()
    assert stats.sinks["console"].sent == 1
    assert "could not be parsed" in caplog.text
    assert "zq-314159" not in caplog.text


def _package_modules(package: str) -> list[Any]:
    root = importlib.import_module(package)
    names = [m.name for m in pkgutil.walk_packages(root.__path__, package + ".")]
    return [root] + [importlib.import_module(n) for n in names if not n.endswith("__main__")]


@pytest.mark.parametrize(
    "package", ["eventbus_core", "eventbus_memory", "eventbus_redis", "eventbus_nats"]
)
def test_every_logger_of_eventbus_scrubs(package: str) -> None:
    loggers = [
        value
        for module in _package_modules(package)
        for value in vars(module).values()
        if isinstance(value, logging.Logger)
    ]
    assert loggers, package
    for logger in loggers:
        assert logger.name.startswith("eventbus"), logger.name
        assert any(isinstance(f, ScrubFilter) for f in logger.filters), logger.name


def test_a_redis_warning_is_scrubbed(caplog: pytest.LogCaptureFixture) -> None:
    from eventbus_redis import _writer

    caplog.set_level(logging.DEBUG)
    try:
        raise ConnectionError(f"Error connecting to redis://u:{QUERY_KEY}@h:6379 ({SECRET_KEY})")
    except ConnectionError as exc:
        _writer.log.warning("redis unreachable: %s", exc, exc_info=True)
    assert "redis unreachable" in caplog.text and "ConnectionError" in caplog.text
    assert_clean(caplog.text)


def test_a_nats_warning_is_scrubbed(caplog: pytest.LogCaptureFixture) -> None:
    from eventbus_nats import _link

    caplog.set_level(logging.DEBUG)
    _link.log.warning("nats unreachable at nats://u:%s@h:4222 (%s)", QUERY_KEY, SECRET_KEY)
    assert "nats unreachable" in caplog.text
    assert_clean(caplog.text)


async def test_httpx_request_lines_of_the_http_sinks_are_scrubbed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from eventbus_core.sinks.webhook import WebhookSink
    from tests.core.receivers import Receiver

    caplog.set_level(logging.DEBUG)
    caplog.set_level(
        logging.DEBUG, logger="httpx"
    )  # `eventbus dispatch` quiets it (run in-process by other tests)
    with Receiver().running() as rx:
        sink = WebhookSink(f"{rx.url}/hook?token=tok3n-in-the-url&alt=json")
        await sink.send([{"request_id": "r1"}])
        await sink.close()
    assert "HTTP Request" in caplog.text  # httpx's own line, at INFO
    assert "tok3n-in-the-url" not in caplog.text


def test_the_cli_scrubs_libraries_log_lines_too() -> None:
    # After the CLI set up logging, a line from a library's own (unscrubbed) logger.
    code = (
        "import logging\n"
        "from eventbus_core.cli import main\n"
        "main(['-vv', 'plugins'])\n"
        f"logging.getLogger('some.library').warning('GET https://h/x?api_key={SECRET_KEY}')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert "GET https://h/x?api_key=" in done.stderr, done.stderr
    assert SECRET_KEY not in done.stderr


@pytest.mark.parametrize(
    "quote",
    [
        lambda event: f"KeyError: {json.loads(event.request_body)['password']!r}",
        lambda event: f"unknown key {event.path.split('api_key=')[1].split('&')[0]}",
        lambda event: (
            "bad creds "
            + base64.b64decode(event.response_headers["Authorization"][0].split()[1]).decode()
        ),
        lambda event: f"count {json.loads(event.response_body)['auth']['client_secret']}",
        lambda event: f"see {json.loads(event.response_body)['note'].split('//')[1]}",
    ],
    ids=["body-password", "query-key", "decoded-basic", "nested-number", "url-password"],
)
async def test_a_transformer_error_quoting_a_masked_value_alone_is_masked(
    caplog: pytest.LogCaptureFixture, quote: Any
) -> None:
    # Only the credential headers' values were looked for: a body's password, a query's
    # api_key or a decoded Basic header quoted alone went to every sink, dead letter and the
    # log (trial 105).
    caplog.set_level(logging.DEBUG)
    event = Event(
        request_id="r1",
        method="POST",
        path="/v1/chat?api_key=QuErYkEy0001&alt=json",
        status=200,
        response_headers={"Authorization": ("Basic dXNlcjpCYVNpQ3B3MDAwMg==",)},  # user:BaSiCpw0002
        request_body=b'{"model": "m", "password": "BoDyPw0003"}',
        response_body=json.dumps(
            {"auth": {"client_secret": 31415926535}, "note": "db at redis://u:UrLpW0004@h"}
        ).encode(),
    )

    def transform(event: Event) -> dict[str, Any]:
        raise ValueError(quote(event))

    bus = InMemoryEventBus()
    sink = RecordingSink()
    task = asyncio.create_task(
        Dispatcher(bus, [sink], flush_interval=0.01, retry=FAST_RETRY, transform=transform).run()
    )
    bus.publish(event)
    await bus.astop()
    await task
    error = sink.payloads[0]["transform_error"]
    assert "[REDACTED]" in error, error
    for text in (error, caplog.text):
        for secret in ("QuErYkEy0001", "BaSiCpw0002", "BoDyPw0003", "31415926535", "UrLpW0004"):
            assert secret not in text, (secret, text)


def test_user_patterns_mask_log_lines_of_a_publishing_process() -> None:
    # Applied to logs only once a Dispatcher was built: a middleware's or publisher's process
    # logged them as they were (trial 105).
    code = """
import logging, os
os.environ["EVENTBUS_REDACT_PATTERNS"] = r"corp-[0-9a-f]{8}"
logging.basicConfig(level=logging.INFO)
from eventbus_core import create_bus, get_logger
bus = create_bus()
get_logger("eventbus.app").error("publishing for corp-deadbeef failed")
bus.stop()
"""
    done = run_python(code)
    assert done.returncode == 0, done.stderr
    assert "publishing for [REDACTED] failed" in done.stderr, done.stderr
    assert "corp-deadbeef" not in done.stderr


def test_the_masked_parts_of_a_text_are_read_off_its_redacted_copy() -> None:
    from eventbus_core.redact._masked_values import _masked_in_text

    mask = "[REDACTED]"
    assert _masked_in_text("a S3cret1 b", f"a {mask} b") == {"S3cret1"}
    assert _masked_in_text("x=AAAA&y=BBBB", f"x={mask}&y={mask}") == {"AAAA", "BBBB"}
    # Two masks side by side, then one at the end: each run stays its own, none takes the
    # text between them.
    assert _masked_in_text("a XXXX b ZZZZ", f"a {mask}{mask} b {mask}") == {"XXXX", "ZZZZ"}
    assert _masked_in_text("same", "same") == set()


def test_a_webhook_sinks_url_attribute_shows_no_credential() -> None:
    # The raw URL, password and token, was a public attribute (trial 157); requests still go
    # to the URL as given.
    from eventbus_core.sinks.webhook import WebhookSink

    sink = WebhookSink("https://user:t157pw@hooks.example/in?token=t157tok&q=1")
    assert "t157pw" not in sink.url and "t157tok" not in sink.url
    assert "hooks.example/in" in sink.url
    assert "t157pw" not in repr(sink)


def test_a_webhook_url_refused_in_code_shows_no_credential_of_its_query() -> None:
    # The command line masked the same error; a sink built in code raised it as it was
    # (trial 159).
    from eventbus_core import SettingsError
    from eventbus_core.sinks.webhook import WebhookSink

    url = "https://u:t159pw@hooks.example/in?access_token=t159tok&client_secret=t159sec"
    with pytest.raises(SettingsError) as raised:
        WebhookSink(url, headers={"Authorization": "Bearer x"})
    for secret in ("t159pw", "t159tok", "t159sec"):
        assert secret not in str(raised.value)


@pytest.mark.parametrize(
    ("sink", "arguments", "message"),
    [
        ("jsonl", {"max_bytes": -1}, "max_bytes must be an int"),
        ("jsonl", {"backups": "x"}, "backups must be an int"),
        ("webhook", {"timeout": "5"}, "timeout must be a number"),
        (
            "webhook",
            {"connect_timeout": 0},
            "connect_timeout must be a finite number of seconds > 0",
        ),
        ("webhook", {"timeout": -1}, "timeout must be a finite number of seconds > 0, got -1"),
        ("jsonl", {"fsync": "no"}, "fsync must be True or False"),  # trial 161
        ("webhook", {"client": "x"}, "client must be an httpx.AsyncClient"),
        # Raised from deep inside without the argument's name (trial 234).
        ("jsonl", {"path": 5}, "path must be a str or a path, not int"),
        ("webhook", {"url": 123}, "'url' of 'webhook' .* must be a str"),
        ("webhook", {"headers": "X: y"}, "headers must be a mapping of names to values"),
        ("webhook", {"headers": {"X": None}}, "header 'X' has a NoneType value"),
    ],
)
def test_built_in_sinks_built_in_code_check_their_arguments(
    sink: str, arguments: dict[str, Any], message: str
) -> None:
    # Their options were checked on the command line only: timeout="5" failed and dropped
    # every batch, max_bytes=-1 rotated at every one (trial 159).
    from eventbus_core.sinks.jsonl import JsonlSink
    from eventbus_core.sinks.webhook import WebhookSink

    build = {
        "jsonl": lambda: JsonlSink(**{"path": "x.jsonl", **arguments}),
        "webhook": lambda: WebhookSink(**{"url": "https://hooks.example/in", **arguments}),
    }[sink]
    with pytest.raises((ValueError, TypeError), match=message):
        build()
