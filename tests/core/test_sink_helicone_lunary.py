"""The `helicone` and `lunary` sinks against real HTTP receivers: the exact request shapes
and headers of the Go dispatcher's plugins (shared/docs/go-dispatcher.md §2.2, §2.3), and the
places where they do better (retry classification, Retry-After, token usage, timing, stable
run ids, no duplicate sends)."""

from __future__ import annotations

import json
import logging
import re
import uuid
from typing import Any

import pytest

from eventbus_core import (
    Dispatcher,
    Event,
    EventBusSettings,
    MemoryDeadLetter,
    RetryPolicy,
    SettingsError,
    Subscription,
)
from eventbus_core.dispatch._setup import redactor_from_settings
from eventbus_core.sinks import helicone, lunary
from tests.core.receivers import Receiver

API_KEY = "hk-live-0123456789abcdef"
REQUEST = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}
RESPONSE = {
    "id": "chatcmpl-x",
    "object": "chat.completion",
    "created": 1767600000,
    "model": "gpt-4o-mini",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 8, "completion_tokens": 2, "total_tokens": 10},
}
GO_KEYS = ["type", "event", "runId", "name", "timestamp", "input", "output", "tokensUsage"]
SLOW_BACKOFF = RetryPolicy(retries=3, base=3600.0, cap=3600.0)
"""Backoff long enough that a test only finishes if Retry-After: 0 replaced it."""


def chat_event(i: int, **fields: Any) -> Event:
    values: dict[str, Any] = {
        "request_id": f"req-{i}",
        "method": "POST",
        "path": "/v1/chat/completions",
        "status": 200,
        "duration": 812_345_678,
        "log_id": i,
        "request_body": json.dumps(REQUEST).encode(),
        "response_body": json.dumps(RESPONSE).encode(),
        "response_headers": {"Content-Type": ["application/json"]},
    }
    values.update(fields)
    return Event(**values)


async def dispatch(sink: Any, events: list[Event], **kw: Any) -> tuple[Any, MemoryDeadLetter]:
    sub = Subscription(1000)
    sub.offer(events)
    sub.finish()
    dead = MemoryDeadLetter()
    d = Dispatcher(
        sub,
        [sink],
        batch_size=kw.pop("batch_size", 10),
        flush_interval=0.01,
        dead_letter=dead,
        redactor=redactor_from_settings(EventBusSettings()),
        retry=kw.pop("retry", RetryPolicy(retries=3, base=0.001, cap=0.002)),
    )
    return await d.run(), dead


# ------------------------------------------------------------------------------------ lunary


async def test_lunary_sends_the_go_plugins_request() -> None:
    with Receiver().running() as rx:
        sink = lunary.build_sink(
            EventBusSettings(), {"api_key": API_KEY, "endpoint": rx.url + "/v1/runs/ingest"}
        )
        stats, _ = await dispatch(sink, [chat_event(1), chat_event(2)])
    assert stats.sinks["lunary"].sent == 2
    [request] = rx.requests  # one POST per batch
    assert request.path == "/v1/runs/ingest"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    body = json.loads(request.body)
    assert isinstance(body, list) and len(body) == 2  # a bare array, one entry per event
    first = body[0]
    assert [*first][: len(GO_KEYS)] == GO_KEYS
    assert [*first][-2:] == ["metadata", "log_id"]
    assert (first["type"], first["event"], first["name"]) == ("llm", "start", "gpt-4o-mini")
    assert uuid.UUID(first["runId"]).version == 5
    assert first["input"] == REQUEST
    assert first["output"] == RESPONSE  # the real response, not Go's wrapper
    assert first["tokensUsage"] == {"completion": 2, "prompt": 8}
    assert first["metadata"] == {
        "duration_ms": 812,
        "method": "POST",
        "path": "/v1/chat/completions",
        "request_id": "req-1",
        "status": 200,
    }
    assert first["log_id"] == 1
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", first["timestamp"])
    assert body[1]["runId"] != first["runId"]


async def test_lunary_retries_500_and_429_with_retry_after_and_dead_letters_400(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    script = [(500, {"Retry-After": "0"}, b"oops"), (429, {"Retry-After": "0"}, b"slow down")]
    with Receiver(script).running() as rx:
        sink = lunary.LunarySink(API_KEY, endpoint=rx.url)
        stats, dead = await dispatch(sink, [chat_event(1)], retry=SLOW_BACKOFF)
    assert [r.status for r in rx.requests] == [500, 429, 200]
    assert len({r.body for r in rx.requests}) == 1  # the same runIds on every attempt
    assert stats.sinks["lunary"].failed_by_type == {"500": 1, "429": 1}
    assert not dead.records

    with Receiver(default=(400, {}, b'{"error":"bad event"}')).running() as rx:
        sink = lunary.LunarySink(API_KEY, endpoint=rx.url)
        stats, dead = await dispatch(sink, [chat_event(1), chat_event(2)], retry=SLOW_BACKOFF)
    assert len(rx.requests) == 1  # Go would retry a 400 three times
    assert [r["log_id"] for r in dead.records] == [1, 2]
    assert API_KEY not in caplog.text
    assert API_KEY not in json.dumps(dead.records)


async def test_lunary_end_events_complete_the_run() -> None:
    with Receiver().running() as rx:
        sink = lunary.build_sink(
            EventBusSettings(), {"api_key": API_KEY, "endpoint": rx.url, "end_events": "true"}
        )
        await dispatch(sink, [chat_event(1)])
    start, end = json.loads(rx.requests[0].body)
    assert (start["event"], end["event"]) == ("start", "end")
    assert start["runId"] == end["runId"]
    assert "input" not in end and end["output"] == RESPONSE
    assert end["timestamp"] > start["timestamp"]


def test_lunary_needs_a_key_and_never_shows_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLM_PROXY_API_KEY", raising=False)
    with pytest.raises(SettingsError, match="EVENTBUS_SINK_LUNARY_API_KEY"):
        lunary.build_sink(EventBusSettings(), {})
    monkeypatch.setenv("LLM_PROXY_API_KEY", API_KEY)  # the Go dispatcher's variable
    sink = lunary.build_sink(EventBusSettings(), {})
    assert sink.target.headers["authorization"] == f"Bearer {API_KEY}"
    assert API_KEY not in repr(sink) and API_KEY not in repr(EventBusSettings())


# ---------------------------------------------------------------------------------- helicone


async def test_helicone_sends_one_go_shaped_request_per_event() -> None:
    with Receiver().running() as rx:
        sink = helicone.build_sink(
            EventBusSettings(), {"api_key": API_KEY, "endpoint": rx.url + "/custom/v1/log"}
        )
        stats, _ = await dispatch(sink, [chat_event(1), chat_event(2), chat_event(3)])
    assert stats.sinks["helicone"].sent == 3
    assert len(rx.requests) == 3  # no batching on the wire, in order
    for n, request in enumerate(rx.requests, start=1):
        assert request.path == "/custom/v1/log"
        assert request.headers["content-type"] == "application/json"
        assert request.headers["authorization"] == f"Bearer {API_KEY}"
        body = json.loads(request.body)
        assert list(body) == ["providerRequest", "providerResponse", "timing"]
        assert body["providerRequest"] == {
            "url": "/v1/chat/completions",
            "json": REQUEST,
            "meta": {
                "method": "POST",
                "path": "/v1/chat/completions",
                "request_id": f"req-{n}",
                "provider": "openai",
                "Helicone-Provider": "openai",
            },
        }
        assert body["providerResponse"] == {"status": 200, "headers": {}, "json": RESPONSE}
        start, end = body["timing"]["startTime"], body["timing"]["endTime"]
        assert set(start) == set(end) == {"seconds", "milliseconds"}
        millis = (end["seconds"] - start["seconds"]) * 1000 + end["milliseconds"]
        assert millis - start["milliseconds"] in (812, 813)  # the real latency, not zero


async def test_helicone_and_lunary_send_the_path_without_its_query_string() -> None:
    # The middleware's events keep the query; `hmac=` or a signed URL's signature, which no
    # credential name marks, reached Helicone and Lunary (trial 163). Go's events carry none.
    event = chat_event(1, path="/v1/chat/completions?hmac=HMACSECRET777&api-version=2024")
    with Receiver().running() as rx:
        sinks = [
            helicone.build_sink(EventBusSettings(), {"api_key": API_KEY, "endpoint": rx.url}),
            lunary.build_sink(EventBusSettings(), {"api_key": API_KEY, "endpoint": rx.url}),
        ]
        for sink in sinks:
            await dispatch(sink, [event])
    assert len(rx.requests) == 2
    assert all(b"HMACSECRET777" not in r.body and b"api-version" not in r.body for r in rx.requests)
    helicone_body, [lunary_body] = (json.loads(r.body) for r in rx.requests)
    assert helicone_body["providerRequest"]["url"] == "/v1/chat/completions"
    assert helicone_body["providerRequest"]["meta"]["path"] == "/v1/chat/completions"
    assert lunary_body["metadata"]["path"] == "/v1/chat/completions"


async def test_helicone_retries_only_the_events_not_yet_logged() -> None:
    # Event 2 hits a 500 (Go: permanent, whole batch lost), then a 429; event 1 is not resent.
    script = [
        (200, {}, b""),
        (500, {"Retry-After": "0"}, b""),
        (429, {"Retry-After": "0"}, b""),
    ]
    with Receiver(script).running() as rx:
        sink = helicone.HeliconeSink(API_KEY, endpoint=rx.url)
        stats, dead = await dispatch(sink, [chat_event(i) for i in (1, 2, 3)], retry=SLOW_BACKOFF)
    ids = [json.loads(r.body)["providerRequest"]["meta"]["request_id"] for r in rx.requests]
    assert ids == ["req-1", "req-2", "req-2", "req-2", "req-3"]
    assert [r.status for r in rx.requests] == [200, 500, 429, 200, 200]
    s = stats.sinks["helicone"]
    assert (s.sent, s.dead_lettered, s.retried) == (3, 0, 4)
    assert not dead.records


async def test_helicone_cut_off_by_the_stop_says_how_many_it_logged() -> None:
    # The stop's cancellation lost that count: all ten were handed back, and the six logged
    # were logged again after a restart (trial 234).
    import asyncio

    import httpx

    from eventbus_core.transform._llm import LLMTransformer

    seen: list[httpx.Request] = []
    hang = asyncio.Event()

    async def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len(seen) == 7:
            await hang.wait()  # the seventh request never answers
        return httpx.Response(200, stream=httpx.ByteStream(b""))

    client = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    sink = helicone.HeliconeSink(API_KEY, client=client)
    payloads = [dict(LLMTransformer()(chat_event(i))) for i in range(1, 11)]
    task = asyncio.create_task(sink.send(payloads))
    while len(seen) < 7 and not task.done():
        await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError) as cut:
        await task
    assert getattr(cut.value, "delivered", None) == 6
    await client.aclose()


@pytest.mark.parametrize("status", [401, 403, 404])
async def test_helicone_dead_letters_the_events_left_when_the_key_is_refused(
    status: int,
) -> None:
    script = [(200, {}, b""), (status, {}, b"no")]
    with Receiver(script).running() as rx:
        sink = helicone.HeliconeSink(API_KEY, endpoint=rx.url)
        stats, dead = await dispatch(sink, [chat_event(i) for i in (1, 2, 3)], retry=SLOW_BACKOFF)
    assert len(rx.requests) == 2  # not retried (Go retries a 401)
    assert [r["log_id"] for r in dead.records] == [2, 3]  # event 1 was logged: not here
    s = stats.sinks["helicone"]
    assert (s.sent, s.dead_lettered) == (1, 2)


@pytest.mark.parametrize("status", [400, 413, 422])
async def test_helicone_dead_letters_only_the_event_whose_request_was_refused(
    status: int,
) -> None:
    # A 400 is about that event's body, not about the events after it (helper-92: they were
    # dead-lettered unsent, as "HTTP 400"): they are sent on.
    script = [(200, {}, b""), (status, {}, b"bad body"), (200, {}, b""), (400, {}, b"bad")]
    with Receiver(script).running() as rx:
        sink = helicone.HeliconeSink(API_KEY, endpoint=rx.url)
        events = [chat_event(i) for i in (1, 2, 3, 4, 5)]
        stats, dead = await dispatch(sink, events, retry=SLOW_BACKOFF)
    ids = [json.loads(r.body)["providerRequest"]["meta"]["request_id"] for r in rx.requests]
    assert ids == ["req-1", "req-2", "req-3", "req-4", "req-5"]  # each sent once
    assert [(r["log_id"], r["attempts"]) for r in dead.records] == [(2, 1), (4, 1)]
    assert dead.records[0]["error"] == f"HTTP {status}: bad body"
    s = stats.sinks["helicone"]
    assert (s.sent, s.dead_lettered, s.retried) == (3, 2, 0)


async def test_helicone_sends_events_without_a_json_response_too() -> None:
    with Receiver().running() as rx:
        sink = helicone.HeliconeSink(API_KEY, endpoint=rx.url)
        await dispatch(
            sink,
            [
                chat_event(1, response_body=b"upstream timed out", status=504),
                chat_event(
                    2, response_body=None, method="GET", path="/v1/models", request_body=None
                ),
                chat_event(3, response_body=b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe"),
            ],
        )
    first, second, third = (json.loads(r.body) for r in rx.requests)
    # A binary body is not JSON either; none at all is not (trial 133, review 138).
    assert third["providerResponse"]["note"] == "response was not JSON; omitted"
    assert first["providerResponse"] == {
        "status": 504,
        "headers": {},
        "json": {},
        "note": "response was not JSON; omitted",
        "textBody": "upstream timed out",
    }
    assert second["providerRequest"]["json"] == {}
    assert second["providerRequest"]["url"] == "/v1/models"
    assert second["providerResponse"]["json"] == {}
    assert "note" not in second["providerResponse"]  # no body is not "not JSON" (trial 133)


async def test_helicone_adds_usage_the_response_lacks() -> None:
    streamed = (
        b'data: {"object":"chat.completion.chunk","model":"m","choices":[{"index":0,'
        b'"delta":{"content":"Hi"}}]}\n\n'
        b'data: {"object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":5,'
        b'"completion_tokens":1,"total_tokens":6}}\n\ndata: [DONE]\n\n'
    )
    with Receiver().running() as rx:
        sink = helicone.HeliconeSink(API_KEY, endpoint=rx.url)
        await dispatch(
            sink,
            [
                chat_event(
                    1,
                    response_body=streamed,
                    response_headers={"Content-Type": "text/event-stream"},
                )
            ],
        )
    response = json.loads(rx.requests[0].body)["providerResponse"]["json"]
    assert response["usage"] == {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}
    assert response["choices"][0]["message"]["content"] == "Hi"


def test_helicone_key_stays_out_of_reprs_and_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLM_PROXY_API_KEY", raising=False)
    with pytest.raises(SettingsError, match="EVENTBUS_SINK_HELICONE_API_KEY"):
        helicone.build_sink(EventBusSettings(), {"endpoint": "https://example.invalid/log"})
    monkeypatch.setenv("EVENTBUS_SINK_HELICONE_API_KEY", API_KEY)
    with pytest.raises(SettingsError, match="http:// or https://") as info:
        helicone.build_sink(EventBusSettings(), {"api_key": API_KEY, "endpoint": "ftp://x"})
    assert API_KEY not in str(info.value)
    sink = helicone.build_sink(EventBusSettings(), {"api_key": API_KEY})
    assert API_KEY not in repr(sink)
    assert sink.endpoint == "https://api.worker.helicone.ai/custom/v1/log"


def test_missing_key_message_survives_log_scrubbing() -> None:
    from eventbus_core import EventBusSettings, SettingsError, redact_text
    from eventbus_core.sinks._keys import api_key

    with pytest.raises(SettingsError) as caught:
        api_key("helicone", {}, EventBusSettings(proxy_api_key=""))
    message = str(caught.value)
    # The CLI scrubs error lines: advice that looks like a credential would come out masked.
    assert redact_text(message) == message
    assert "EVENTBUS_SINK_HELICONE_API_KEY" in message


@pytest.mark.parametrize("make", [helicone.HeliconeSink, lunary.LunarySink])
def test_a_key_given_with_a_newline_at_its_end_loses_it(make: Any) -> None:
    # As the docs say of a key read from a file; inside, it is refused (below).
    sink = make("sk-hel-SECRETvalue\n")
    assert dict(sink.target.headers)["authorization"] == "Bearer sk-hel-SECRETvalue"


@pytest.mark.parametrize("make", [helicone.HeliconeSink, lunary.LunarySink])
@pytest.mark.parametrize("inside", ["\t", " ", "\u00a0", "\n", "\x01", "é"])
def test_a_key_with_a_space_or_tab_inside_is_refused_without_showing_it(
    make: Any, inside: str
) -> None:
    # A header may carry inner tabs and spaces, so the header check let a key with a tab
    # inside through; docs say a control character inside it is refused (trial 222).
    with pytest.raises(SettingsError, match="space, a control character or a non-ASCII") as info:
        make(f"sk-hel-SECRET{inside}value")
    assert "SECRET" not in str(info.value) and "API_KEY" in str(info.value)


@pytest.mark.parametrize("make", [helicone.HeliconeSink, lunary.LunarySink])
def test_credentials_in_the_endpoint_are_refused_for_they_would_replace_the_key(
    make: Any,
) -> None:
    # httpx sends a URL's user:password@ as Authorization: Basic, in place of the Bearer key:
    # the key was never sent and every request failed with 401 (trial 115).
    with pytest.raises(SettingsError, match="in place of the Authorization header") as info:
        make(API_KEY, endpoint="https://proxyuser:PROXYPASS@logs.example/v1/log")
    assert "PROXYPASS" not in str(info.value) and API_KEY not in str(info.value)
    assert "API_KEY" in str(info.value)  # which setting the header comes from
    assert "_ENDPOINT" in str(info.value)  # and the URL: it was not named (trial 133)
    assert make(API_KEY, endpoint="https://logs.example/v1/log").endpoint  # without: fine


@pytest.mark.parametrize("build", [helicone.build_sink, lunary.build_sink])
async def test_a_key_read_from_a_file_loses_its_newline_and_is_sent(
    build: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As the sinks' pages say: spaces and newlines at either end are dropped (a key read from a
    # file ends in one), for the option and for LLM_PROXY_API_KEY alike.
    monkeypatch.setenv("LLM_PROXY_API_KEY", f" {API_KEY}\n")
    with Receiver().running() as rx:
        for options in ({"endpoint": rx.url}, {"endpoint": rx.url, "api_key": f"{API_KEY}\r\n"}):
            stats, _ = await dispatch(build(EventBusSettings(), options), [chat_event(1)])
            assert sum(s.sent for s in stats.sinks.values()) == 1
    assert [r.headers["authorization"] for r in rx.requests] == [f"Bearer {API_KEY}"] * 2
