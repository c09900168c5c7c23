"""EventBusMiddleware at the ASGI level: edge cases driven with hand-made messages."""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Sequence
from typing import Any

import pytest

from eventbus_core import Event, EventBusMiddleware, Redactor
from eventbus_core.asgi import Message, Receive, Scope, Send, canonical_header_name


class Recorder:
    """Collects published events (the test double of a bus)."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def publish(self, event: Event) -> None:
        self.events.append(event)

    def one(self) -> Event:
        assert len(self.events) == 1, self.events
        return self.events[0]


class Boom:
    """A bus whose publish fails."""

    def publish(self, event: Event) -> None:
        raise RuntimeError("bus broken")


def http_scope(
    path: str = "/v1/x", headers: Sequence[tuple[bytes, bytes]] = (), query: bytes = b""
) -> Scope:
    return {
        "type": "http",
        "method": "POST",
        "path": path,
        "query_string": query,
        "headers": list(headers),
    }


def reply(
    status: int = 200,
    headers: Sequence[tuple[bytes, bytes]] = (),
    chunks: Sequence[bytes] = (b"ok",),
) -> Any:
    """An app that reads the whole request body, then answers with `chunks`."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        more = True
        while more:
            msg = await receive()
            more = msg.get("more_body", False)
        await send({"type": "http.response.start", "status": status, "headers": list(headers)})
        for i, chunk in enumerate(chunks):
            await send(
                {"type": "http.response.body", "body": chunk, "more_body": i < len(chunks) - 1}
            )

    return app


async def drive(
    app: Any, scope: Scope, body_parts: Sequence[bytes | bytearray | memoryview] = (b"",)
) -> list[Message]:
    parts = list(body_parts)
    sent: list[Message] = []

    async def receive() -> Message:
        if parts:
            chunk = parts.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(parts)}
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


async def test_messages_pass_through_as_the_same_objects() -> None:
    bus = Recorder()
    start = {"type": "http.response.start", "status": 201, "headers": [(b"a", b"1")]}
    body = {"type": "http.response.body", "body": b"x"}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(start)
        await send(body)

    sent = await drive(EventBusMiddleware(app, bus=bus), http_scope())
    assert sent[0] is start
    assert sent[1] is body
    assert start == {"type": "http.response.start", "status": 201, "headers": [(b"a", b"1")]}
    assert bus.one().status == 201


async def test_request_body_in_chunks_is_cut_at_the_limit() -> None:
    bus = Recorder()
    mw = EventBusMiddleware(reply(), bus=bus, max_request_body=5, max_response_body=3)
    await drive(mw, http_scope(), [b"abc", bytearray(b"def"), memoryview(b"ghi")])
    evt = bus.one()
    assert evt.request_body == b"abcde"
    assert evt.response_body == b"ok"


async def test_zero_limits_keep_no_bodies() -> None:
    bus = Recorder()
    mw = EventBusMiddleware(
        reply(chunks=[b"a", b"b"]), bus=bus, max_request_body=0, max_response_body=0
    )
    sent = await drive(mw, http_scope(), [b"hello"])
    assert [m.get("body") for m in sent[1:]] == [b"a", b"b"]
    assert (bus.one().request_body, bus.one().response_body) == (None, None)


async def test_a_head_response_keeps_no_body() -> None:
    # The server sends no body for HEAD, whatever the application hands it: the event held
    # 4.9 KiB the client never got (trial 126). The application still sees every message.
    bus = Recorder()
    mw = EventBusMiddleware(reply(chunks=[b"page", b"!"]), bus=bus)
    sent = await drive(mw, {**http_scope(), "method": "HEAD"})
    assert [m.get("body") for m in sent[1:]] == [b"page", b"!"]
    assert (bus.one().method, bus.one().status, bus.one().response_body) == ("HEAD", 200, None)


async def test_path_with_query_and_request_id_from_request() -> None:
    bus = Recorder()
    scope = http_scope("/v1/models", [(b"x-request-id", b"req-7")], query=b"a=1&b=2")
    await drive(EventBusMiddleware(reply(headers=[(b"x-request-id", b"other")]), bus=bus), scope)
    assert (bus.one().path, bus.one().request_id) == ("/v1/models?a=1&b=2", "req-7")


async def test_generated_request_id_and_optional_response_header() -> None:
    bus = Recorder()
    headers = [(b"content-type", b"text/plain")]
    mw = EventBusMiddleware(reply(headers=headers), bus=bus, set_request_id=True)
    sent = await drive(mw, http_scope())
    rid = bus.one().request_id
    assert uuid.UUID(rid).version == 4
    assert sent[0]["headers"] == [(b"content-type", b"text/plain"), (b"x-request-id", rid.encode())]
    assert headers == [(b"content-type", b"text/plain")]  # the app's own list is untouched


async def test_set_request_id_echoes_the_request_and_never_duplicates() -> None:
    bus = Recorder()
    mw = EventBusMiddleware(reply(), bus=bus, set_request_id=True)
    sent = await drive(mw, http_scope(headers=[(b"x-request-id", b"abc")]))
    assert sent[0]["headers"] == [(b"x-request-id", b"abc")]
    mw = EventBusMiddleware(
        reply(headers=[(b"X-Request-ID", b"own")]), bus=bus, set_request_id=True
    )
    sent = await drive(mw, http_scope())
    assert sent[0]["headers"] == [(b"X-Request-ID", b"own")]
    assert bus.events[-1].request_id == "own"


async def test_custom_request_id_header_and_factory() -> None:
    bus = Recorder()
    mw = EventBusMiddleware(
        reply(), bus=bus, request_id_header="X-Correlation-ID", request_id_factory=lambda: "fixed"
    )
    await drive(mw, http_scope(headers=[(b"x-correlation-id", b"c-1")]))
    await drive(mw, http_scope())
    assert [e.request_id for e in bus.events] == ["c-1", "fixed"]


async def test_exception_before_the_response_is_a_500_event_and_propagates() -> None:
    bus = Recorder()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        raise ValueError("app bug")

    with pytest.raises(ValueError, match="app bug"):
        await drive(EventBusMiddleware(app, bus=bus), http_scope(), [b"in"])
    evt = bus.one()
    assert (evt.status, evt.request_body, evt.response_headers) == (500, b"in", None)


async def test_exception_mid_stream_keeps_the_sent_status_and_body() -> None:
    bus = Recorder()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        raise RuntimeError("upstream died")

    with pytest.raises(RuntimeError):
        await drive(EventBusMiddleware(app, bus=bus), http_scope())
    assert (bus.one().status, bus.one().response_body) == (200, b"part")


async def test_server_send_failing_on_disconnect() -> None:
    bus = Recorder()

    async def send(message: Message) -> None:
        if message.get("more_body") is False:
            raise OSError("client went away")

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    mw = EventBusMiddleware(reply(chunks=[b"a", b"b"]), bus=bus)
    with pytest.raises(OSError, match="went away"):
        await mw(http_scope(), receive, send)
    assert bus.one().response_body == b"ab"


async def test_publish_failure_never_reaches_the_app(caplog: pytest.LogCaptureFixture) -> None:
    mw = EventBusMiddleware(reply(), bus=Boom())
    with caplog.at_level(logging.DEBUG, logger="eventbus.middleware"):
        for _ in range(3):
            sent = await drive(mw, http_scope())
            assert sent[-1]["body"] == b"ok"
    assert mw.errors == 3
    assert sum(r.levelno == logging.ERROR for r in caplog.records) == 1  # logged once, loudly


async def test_malformed_messages_do_not_break_the_request() -> None:
    bus = Recorder()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(1, 2)]})
        await send({"type": "http.response.body", "body": 12})

    mw = EventBusMiddleware(app, bus=bus)
    sent = await drive(mw, http_scope())
    assert sent[1]["body"] == 12
    assert mw.errors >= 1


async def test_non_http_scopes_pass_straight_through() -> None:
    bus = Recorder()
    seen: list[Any] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append((scope, receive, send))

    async def receive() -> Message:
        return {}

    async def send(message: Message) -> None:
        return None

    scope: Scope = {"type": "websocket", "path": "/ws"}
    await EventBusMiddleware(app, bus=bus)(scope, receive, send)
    assert seen == [(scope, receive, send)]
    assert bus.events == []


async def test_lifespan_messages_pass_unchanged_and_publish_nothing() -> None:
    # The lifespan's `send` is wrapped only to let the bus deliver before the shutdown is
    # reported complete (test_middleware.py); every message still reaches the server as is.
    bus = Recorder()
    forwarded: list[Message] = []
    startup: Message = {"type": "lifespan.startup.complete"}
    failed: Message = {"type": "lifespan.startup.failed", "message": "boom"}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert await receive() == {"type": "lifespan.startup"}
        await send(startup)
        await send(failed)

    async def receive() -> Message:
        return {"type": "lifespan.startup"}

    async def send(message: Message) -> None:
        forwarded.append(message)

    await EventBusMiddleware(app, bus=bus)({"type": "lifespan"}, receive, send)
    assert forwarded[0] is startup and forwarded[1] is failed
    assert bus.events == []


async def test_exclusions_exact_and_prefix() -> None:
    bus = Recorder()
    mw = EventBusMiddleware(reply(), bus=bus, exclude_paths=["/health", "/internal/*"])
    for path in ("/health", "/internal/metrics", "/internal/", "/healthz", "/v1/x"):
        await drive(mw, http_scope(path))
    assert [e.path for e in bus.events] == ["/healthz", "/v1/x"]


async def test_exclusions_match_the_path_within_the_app_under_a_root_path() -> None:
    # Behind `uvicorn --root-path /api`, or mounted at /api, scope["path"] is "/api/health":
    # exclude_paths=["/health"] published every health probe (trial 215).
    bus = Recorder()
    mw = EventBusMiddleware(reply(), bus=bus, exclude_paths=["/health", "/internal/*"])
    for path in ("/api/health", "/api/internal/x", "/api/healthz", "/apihealth", "/health"):
        await drive(mw, {**http_scope(path), "root_path": "/api"})
    await drive(mw, {**http_scope("/api/health"), "root_path": ""})  # /api/health itself
    assert [e.path for e in bus.events] == ["/api/healthz", "/apihealth", "/api/health"]


async def test_cache_hits_skipped_unless_asked() -> None:
    bus = Recorder()
    headers = [(b"X-Proxy-Cache", b" Hit ")]
    await drive(EventBusMiddleware(reply(headers=headers), bus=bus), http_scope())
    assert bus.events == []
    await drive(
        EventBusMiddleware(reply(headers=[(b"x-proxy-cache", b"miss")]), bus=bus), http_scope()
    )
    await drive(
        EventBusMiddleware(reply(headers=headers), bus=bus, skip_cache_hits=False), http_scope()
    )
    assert len(bus.events) == 2


async def test_redaction_default_extra_and_off() -> None:
    headers = [(b"set-cookie", b"s=1"), (b"x-secret", b"v"), (b"vary", b"a"), (b"vary", b"b")]
    bus = Recorder()
    await drive(
        EventBusMiddleware(reply(headers=headers), bus=bus, extra_sensitive_headers=["X-Secret"]),
        http_scope(),
    )
    await drive(EventBusMiddleware(reply(headers=headers), bus=bus, redact=False), http_scope())
    masked, raw = (dict(e.headers) for e in bus.events)
    assert masked == {
        "Set-Cookie": ("[REDACTED]",),
        "X-Secret": ("[REDACTED]",),
        "Vary": ("a", "b"),
    }
    assert raw == {"Set-Cookie": ("s=1",), "X-Secret": ("v",), "Vary": ("a", "b")}


async def test_headers_named_like_credentials_are_masked_too() -> None:
    # Not on the list, but a credential by their words: the text rules masked them where an
    # error quoted them, while the event carried them to every sink.
    named = [b"X-Api-Secret", b"X-Db-Password", b"Password", b"X-Upstream-Authorization"]
    headers = [*((name, b"S3cr3tV4l") for name in named), (b"X-Secretary", b"kept")]
    bus = Recorder()
    await drive(EventBusMiddleware(reply(headers=headers), bus=bus), http_scope())
    await drive(EventBusMiddleware(reply(headers=headers), bus=bus, redact=False), http_scope())
    masked, raw = (dict(e.headers) for e in bus.events)
    assert "S3cr3tV4l" not in repr(masked) and masked["X-Secretary"] == ("kept",)
    assert raw["X-Api-Secret"] == ("S3cr3tV4l",)  # redact=False masks nothing
    payload_headers = Redactor().headers({"X-Db-Password": ["S3cr3tV4l"]})
    assert payload_headers == {"X-Db-Password": ["[REDACTED]"]}


async def test_headers_named_with_a_credential_word_are_masked_and_counts_are_kept() -> None:
    # Trial 165: X-Custom-Token, Token, X-Credentials, Jwt, Helicone-Auth and X-Hub-Signature
    # reached every sink in clear, while the log scrubber took those words for credentials.
    # The CORS flag and the rate limits' token counts are no credentials: kept.
    named = [b"X-Custom-Token", b"Token", b"X-Credentials", b"Jwt", b"Helicone-Auth"]
    named += [b"X-Hub-Signature-256", b"X-Client-Key"]
    # A describing word before the credential word: a password-reset token is one (172).
    named += [b"X-Reset-Token", b"X-Usage-Token"]
    # A provider's key under an application's own name, and a session id (trial 266).
    named += [b"X-Openai-Key", b"X-Anthropic-Key", b"X-Session-Id", b"X-Llm-Key"]
    named += [b"X-Reset-Session-Id", b"X-Used-Openai-Key"]  # described before: still one
    kept = [b"Access-Control-Allow-Credentials", b"X-Ratelimit-Remaining-Tokens"]
    kept += [b"X-Cache-Key", b"Idempotency-Key", b"X-Model-Key", b"X-Session-Id-Count"]
    kept += [b"Www-Authenticate", b"X-Passthrough"]
    # About a credential, not one: Bedrock's token counts were masked (review 170, trial 169).
    kept += [b"X-Amzn-Bedrock-Input-Token-Count", b"X-Token-Limit", b"X-Auth-Method"]
    kept += [b"X-Ratelimit-Remaining-Token", b"X-Auth_Method"]
    headers = [(name, b"S3cr3tV4l") for name in (*named, *kept)]
    bus = Recorder()
    await drive(EventBusMiddleware(reply(headers=headers), bus=bus), http_scope())
    [event] = bus.events
    shown = {name.encode(): values for name, values in event.headers.items()}
    assert {n: shown[n] for n in named} == dict.fromkeys(named, ("[REDACTED]",))
    assert {n: shown[n] for n in kept} == dict.fromkeys(kept, ("S3cr3tV4l",))
    # The dispatcher's redaction of a payload (what a Go proxy's event brings) agrees.
    payload = Redactor().headers({n.decode(): ["S3cr3tV4l"] for n in (*named, *kept)})
    assert payload == {
        n.decode(): ["[REDACTED]" if n in named else "S3cr3tV4l"] for n in (*named, *kept)
    }


@pytest.mark.parametrize(
    ("headers", "options", "expected_id", "expected_headers"),
    [
        # Each case runs three times on one middleware with names no other test uses: the
        # first request derives each name's Go form and meaning, the later ones find them in
        # the per-name cache (`NAMES`). Both must give the same event.
        (
            [(b"Content-Type", b"a/b"), (b"x-ReQ-unseen-1", b"r-1"), (b"Set-Cookie", b"s=1")],
            {"request_id_header": "X-Req-Unseen-1"},
            "r-1",
            {"Content-Type": ("a/b",), "X-Req-Unseen-1": ("r-1",), "Set-Cookie": ("[REDACTED]",)},
        ),
        (
            [(b"x-unseen-2", b"\xe9"), (b"X-Unseen-2", b"b"), (b"x-request-id", b"")],
            {},
            "made",
            {"X-Unseen-2": ("\xe9", "b"), "X-Request-Id": ("",)},
        ),
        (
            [(b"x-request-id", b""), (b"X-Request-ID", b"second"), (b"x-unseen-3", b"v")],
            {},
            "second",
            {"X-Request-Id": ("", "second"), "X-Unseen-3": ("v",)},
        ),
        (
            [(b"X Unseen 4", b"v"), (b"x-unseen-5", b"w"), (b"my-unseen-secret", b"k")],
            {"extra_sensitive_headers": ["X Unseen 4", "My-Unseen-Secret"]},
            "made",
            {
                "X Unseen 4": ("[REDACTED]",),
                "X-Unseen-5": ("w",),
                "My-Unseen-Secret": ("[REDACTED]",),
            },
        ),
        (
            [(b"authorization", b"Bearer sk-1"), (b"x-unseen-6", b"hit\xa0")],
            {"redact": False},
            "made",
            {"Authorization": ("Bearer sk-1",), "X-Unseen-6": ("hit\xa0",)},
        ),
    ],
)
async def test_header_copy_is_the_same_on_first_sight_and_after(
    headers: list[tuple[bytes, bytes]],
    options: dict[str, Any],
    expected_id: str,
    expected_headers: dict[str, tuple[str, ...]],
) -> None:
    bus = Recorder()
    mw = EventBusMiddleware(
        reply(headers=headers), bus=bus, request_id_factory=lambda: "made", **options
    )
    for _ in range(3):
        await drive(mw, http_scope())
    assert [e.request_id for e in bus.events] == [expected_id] * 3
    assert [dict(e.headers) for e in bus.events] == [expected_headers] * 3


@pytest.mark.parametrize("value", [b"hit", b" HIT\t", b"\r\nHiT \x0b\x0c"])
async def test_cache_hits_are_skipped_on_first_sight_and_after(value: bytes) -> None:
    bus = Recorder()
    mw = EventBusMiddleware(reply(headers=[(b"x-proxy-cache", value), (b"a", b"1")]), bus=bus)
    for _ in range(3):
        await drive(mw, http_scope())
    assert bus.events == []


async def test_a_cache_value_that_only_looks_like_hit_is_published() -> None:
    bus = Recorder()
    # U+00A0 is whitespace to str.strip() but not to bytes.strip(): not a hit.
    mw = EventBusMiddleware(reply(headers=[(b"X-Proxy-Cache", b"hit\xa0")]), bus=bus)
    for _ in range(3):
        await drive(mw, http_scope())
    assert len(bus.events) == 3


async def test_trailers_end_the_response() -> None:
    bus = Recorder()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [], "trailers": True})
        await send({"type": "http.response.body", "body": b"x", "more_body": False})
        assert bus.events == []  # not yet: the trailers are still to come
        await send({"type": "http.response.trailers", "headers": [], "more_trailers": False})
        assert len(bus.events) == 1

    await drive(EventBusMiddleware(app, bus=bus), http_scope())


@pytest.mark.parametrize(
    "made",
    [None, "", "abc\r\nX-Injected: 1", "line\nbreak", "nul\x00", "\u20ac-euro", " padded "],
)
async def test_a_request_id_factory_id_that_cannot_be_a_header_value_is_replaced(
    made: Any,
) -> None:
    # With set_request_id the id goes out as a response header: CR/LF would inject headers
    # (and the server refuses a control character outright, failing the response).
    bus = Recorder()
    mw = EventBusMiddleware(reply(), bus=bus, set_request_id=True, request_id_factory=lambda: made)
    sent = await drive(mw, http_scope())
    rid = bus.one().request_id
    assert uuid.UUID(rid).version == 4
    assert sent[0]["headers"] == [(b"x-request-id", rid.encode())]
    assert mw.errors == 1


async def test_a_request_id_factory_may_return_any_value_whose_text_is_an_id() -> None:
    bus = Recorder()
    mw = EventBusMiddleware(reply(), bus=bus, request_id_factory=lambda: uuid.UUID(int=7))
    await drive(mw, http_scope())
    assert bus.one().request_id == str(uuid.UUID(int=7))
    assert mw.errors == 0


@pytest.mark.parametrize("timeout", [float("nan"), float("inf"), -1, "5", None, True])
def test_shutdown_flush_timeout_must_be_finite_seconds(timeout: Any) -> None:
    # inf or nan made the lifespan shutdown wait without end for a bus that cannot deliver.
    with pytest.raises(ValueError, match="shutdown_flush_timeout must be a"):
        EventBusMiddleware(reply(), bus=Recorder(), shutdown_flush_timeout=timeout)


def test_invalid_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="max_request_body"):
        EventBusMiddleware(reply(), bus=Recorder(), max_request_body=-1)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"x-request-id", "X-Request-Id"),
        (b"content-type", "Content-Type"),
        (b"WWW-AUTHENTICATE", "Www-Authenticate"),
        (b"etag", "Etag"),
        (b"with space", "with space"),
    ],
)
def test_canonical_header_names_as_go(raw: bytes, expected: str) -> None:
    assert canonical_header_name(raw) == expected
    # A str too, for an Event built by hand, as the quick start says (trial 140).
    assert canonical_header_name(raw.decode()) == expected


async def test_headers_given_as_a_generator_still_reach_the_server() -> None:
    bus = Recorder()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        pairs = [(b"content-type", b"text/plain"), (b"x-a", b"1")]
        await send({"type": "http.response.start", "status": 200, "headers": iter(pairs)})
        await send({"type": "http.response.body", "body": b"ok"})

    sent = await drive(EventBusMiddleware(app, bus=bus), http_scope())
    assert list(sent[0]["headers"]) == [(b"content-type", b"text/plain"), (b"x-a", b"1")]
    assert dict(bus.one().headers) == {"Content-Type": ("text/plain",), "X-A": ("1",)}


async def test_no_extra_tasks_or_threads() -> None:
    seen: list[tuple[int, int]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        seen.append((len(asyncio.all_tasks()), threading.active_count()))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    await drive(app, http_scope())
    await drive(EventBusMiddleware(app, bus=Recorder()), http_scope())
    assert seen[0] == seen[1]
