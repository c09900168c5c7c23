"""The `otlp` sink against a real HTTP receiver that decodes each request with
opentelemetry-proto's own message classes: GenAI attributes, exact timing, resource, content
capture (opt-in, redacted), no credential anywhere, retries and partial success."""

from __future__ import annotations

import base64
import gzip
import json
import logging
import os
import re
from collections.abc import Mapping
from typing import Any, ClassVar

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

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
from eventbus_core.sinks import helicone, lunary, otlp
from eventbus_core.sinks._genai import timestamp_ns
from tests.core.conftest_dispatch import SECRET_AUTH, SECRET_KEY, RecordingSink
from tests.core.receivers import Receiver

REQUEST = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": f"Say hi. My key is {SECRET_KEY}"},
    ],
    "max_tokens": 50,
    "temperature": 0.2,
}
RESPONSE = {
    "id": "chatcmpl-9xYz",
    "object": "chat.completion",
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Hi!"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 19, "completion_tokens": 3, "total_tokens": 22},
}


def chat_event(i: int, **fields: Any) -> Event:
    values: dict[str, Any] = {
        "request_id": f"req-{i}",
        "method": "POST",
        "path": "/v1/chat/completions?api_key=" + SECRET_KEY,
        "status": 200,
        "duration": 1_234_567_891 + i,
        "log_id": i,
        "request_body": json.dumps(REQUEST).encode(),
        "response_body": json.dumps(RESPONSE).encode(),
        "response_headers": {
            "Content-Type": ["application/json"],
            "Set-Cookie": [f"session={SECRET_AUTH}"],
            "Authorization": [SECRET_AUTH],
        },
    }
    values.update(fields)
    return Event(**values)


def feed(events: list[Event]) -> Subscription:
    sub = Subscription(1000)
    sub.offer(events)
    sub.finish()
    return sub


def attrs(kvs: Any) -> dict[str, Any]:
    def value(v: AnyValue) -> Any:
        kind = v.WhichOneof("value")
        if kind == "array_value":
            return [value(x) for x in v.array_value.values]
        if kind == "kvlist_value":
            return {kv.key: value(kv.value) for kv in v.kvlist_value.values}
        return getattr(v, kind) if kind else None

    return {kv.key: value(kv.value) for kv in kvs}


def decode(body: bytes, headers: Mapping[str, str]) -> ExportTraceServiceRequest:
    if headers.get("content-encoding") == "gzip":
        body = gzip.decompress(body)
    return ExportTraceServiceRequest.FromString(body)


async def dispatch(
    events: list[Event],
    options: dict[str, str],
    *,
    settings: EventBusSettings | None = None,
    **kw: Any,
) -> tuple[Any, RecordingSink, MemoryDeadLetter]:
    settings = settings or EventBusSettings()
    sink = otlp.build_sink(settings, options)
    recorder = RecordingSink("seen")  # shares the lane: sees the very payloads the span shows
    dead = MemoryDeadLetter()
    d = Dispatcher(
        feed(events),
        [sink, recorder],
        group_mode="shared",
        batch_size=kw.pop("batch_size", 10),
        flush_interval=0.01,
        dead_letter=dead,
        redactor=redactor_from_settings(settings),
        retry=kw.pop("retry", RetryPolicy(retries=2, base=0.001, cap=0.002)),
    )
    stats = await d.run()
    return stats, recorder, dead


async def test_spans_follow_the_genai_conventions_with_exact_timing() -> None:
    with Receiver().running() as rx:
        stats, recorder, _ = await dispatch(
            [chat_event(1), chat_event(2)],
            {"endpoint": rx.url + "/v1/traces", "service_name": "proxy-eu"},
        )
    assert stats.sinks["otlp"].sent == 2
    [request] = rx.requests
    assert request.path == "/v1/traces"
    assert request.headers["content-type"] == "application/x-protobuf"
    export = decode(request.body, request.headers)
    [resource_spans] = export.resource_spans
    resource = attrs(resource_spans.resource.attributes)
    assert resource["service.name"] == "proxy-eu"
    [scope] = resource_spans.scope_spans
    assert scope.scope.name == "eventbus"
    spans = list(scope.spans)
    assert len(spans) == 2
    for span, payload in zip(spans, recorder.payloads, strict=True):
        a = attrs(span.attributes)
        assert span.name == "chat gpt-4o-mini"
        assert span.kind == Span.SpanKind.SPAN_KIND_CLIENT
        assert a["gen_ai.operation.name"] == "chat"
        assert a["gen_ai.provider.name"] == a["gen_ai.system"] == "openai"
        assert a["gen_ai.request.model"] == "gpt-4o-mini"
        assert a["gen_ai.response.model"] == "gpt-4o-mini-2024-07-18"
        assert a["gen_ai.response.id"] == "chatcmpl-9xYz"
        assert a["gen_ai.usage.input_tokens"] == 19
        assert a["gen_ai.usage.output_tokens"] == 3
        assert a["gen_ai.response.finish_reasons"] == ["stop"]
        assert a["gen_ai.request.max_tokens"] == 50
        assert a["gen_ai.request.temperature"] == pytest.approx(0.2)
        assert a["http.request.method"] == "POST"
        assert a["url.path"] == "/v1/chat/completions"  # no query string: it may hold keys
        assert a["http.response.status_code"] == 200
        assert a["eventbus.request_id"] == payload["request_id"]
        assert a["eventbus.log_id"] == payload["log_id"]
        # The event's timestamp ends the span; its exact duration starts it.
        duration_ns = payload["metadata"]["duration_ns"]
        assert span.end_time_unix_nano == timestamp_ns(payload["timestamp"])
        assert span.end_time_unix_nano - span.start_time_unix_nano == duration_ns
        assert len(span.trace_id) == 16 and len(span.span_id) == 8
        assert span.status.code == Status.StatusCode.STATUS_CODE_UNSET
        assert not span.events  # no content unless asked
    assert spans[0].span_id != spans[1].span_id


async def test_the_value_length_limit_cuts_span_attributes_not_the_resource() -> None:
    # `max_value_chars` cut `service.name` too ("svc-opt" became "svc-o"), so a backend filed
    # the traces under another service; OpenTelemetry's limits are for span attributes.
    with Receiver().running() as rx:
        await dispatch(
            [chat_event(1)],
            {"endpoint": rx.url + "/v1/traces", "service_name": "svc-opt", "max_value_chars": "5"},
        )
    [request] = rx.requests
    [resource_spans] = decode(request.body, request.headers).resource_spans
    assert attrs(resource_spans.resource.attributes)["service.name"] == "svc-opt"
    [span] = resource_spans.scope_spans[0].spans
    assert attrs(span.attributes)["url.path"] == "/v1/c"


async def test_no_credential_appears_anywhere_in_the_request() -> None:
    with Receiver().running() as rx:
        await dispatch(
            [chat_event(1), chat_event(2, status=401)],
            {"endpoint": rx.url + "/v1/traces", "capture_content": "true"},
        )
    [request] = rx.requests
    raw = request.body + json.dumps(request.headers).encode() + request.path.encode()
    for secret in (SECRET_KEY, SECRET_AUTH, SECRET_AUTH.split()[1]):
        assert secret.encode() not in raw
    # Still no credential when the dispatcher's own redaction is switched off: captured
    # content is always redacted by the sink itself.
    with Receiver().running() as rx:
        await dispatch(
            [chat_event(3)],
            {"endpoint": rx.url + "/v1/traces", "capture_content": "true"},
            settings=EventBusSettings(redact=False),
        )
    event = decode(rx.requests[0].body, rx.requests[0].headers).resource_spans[0]
    span = event.scope_spans[0].spans[0]
    assert SECRET_KEY.encode() not in span.SerializeToString()


async def test_content_is_a_span_event_only_when_opted_in() -> None:
    with Receiver().running() as rx:
        await dispatch([chat_event(1)], {"endpoint": rx.url})
    assert b"Say hi" not in rx.requests[0].body
    assert b"You are terse" not in rx.requests[0].body

    with Receiver().running() as rx:
        await dispatch(
            [chat_event(1)],
            {"endpoint": rx.url},
            settings=EventBusSettings(otlp_capture_content=True),  # EVENTBUS_OTLP_CAPTURE_CONTENT
        )
    span = decode(rx.requests[0].body, rx.requests[0].headers).resource_spans[0]
    [event] = span.scope_spans[0].spans[0].events
    assert event.name == "gen_ai.client.inference.operation.details"
    a = attrs(event.attributes)
    assert a["gen_ai.input.messages"][0] == {
        "role": "system",
        "parts": [{"type": "text", "content": "You are terse."}],
    }
    user = a["gen_ai.input.messages"][1]["parts"][0]["content"]
    assert user.startswith("Say hi. My key is ") and SECRET_KEY not in user
    assert a["gen_ai.output.messages"] == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": "Hi!"}],
            "finish_reason": "stop",
        }
    ]


async def test_endpoint_headers_and_service_come_from_the_otel_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with Receiver().running() as rx:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rx.url + "/otlp/")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=acme,authorization=Basic%20abc")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
        monkeypatch.setenv("OTEL_SERVICE_NAME", "gateway")
        monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod")
        await dispatch([chat_event(1)], {})
        [request] = rx.requests
        assert request.path == "/otlp/v1/traces"
        assert request.headers["x-tenant"] == "acme"
        assert request.headers["authorization"] == "Basic abc"
        assert request.headers["content-encoding"] == "gzip"
        resource = attrs(
            decode(request.body, request.headers).resource_spans[0].resource.attributes
        )
        assert resource == {"service.name": "gateway", "deployment.environment": "prod"}

        # The signal-specific variable wins over the general one, the sink's options over both.
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", rx.url + "/traces-only")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-tenant=beta")
        await dispatch([chat_event(2)], {"header_x_team": "red", "service_name": "mine"})
        request = rx.requests[1]
        assert request.path == "/traces-only"
        assert (request.headers["x-tenant"], request.headers["x-team"]) == ("beta", "red")
        assert request.headers["authorization"] == "Basic abc"  # merged by name, not replaced
        resource = attrs(
            decode(request.body, request.headers).resource_spans[0].resource.attributes
        )
        assert resource["service.name"] == "mine"


async def test_503_is_retried_after_retry_after_and_400_is_dead_lettered() -> None:
    script = [(503, {"Retry-After": "0"}, b"busy"), (200, {}, b"")]
    with Receiver(script).running() as rx:
        stats, _, dead = await dispatch([chat_event(1)], {"endpoint": rx.url})
    assert [r.status for r in rx.requests] == [503, 200]
    assert rx.requests[0].body == rx.requests[1].body  # same spans, same ids: de-duplicable
    assert stats.sinks["otlp"].failed_by_type == {"503": 1}
    assert not dead.records

    with Receiver(default=(400, {}, b"bad span")).running() as rx:
        stats, _, dead = await dispatch([chat_event(1), chat_event(2)], {"endpoint": rx.url})
    assert len(rx.requests) == 1  # not retried
    assert [r["log_id"] for r in dead.records] == [1, 2]
    assert "HTTP 400" in dead.records[0]["error"]
    assert stats.sinks["otlp"].dead_lettered == 2


def partial_success(rejected: int, message: str) -> list[tuple[int, dict[str, str], bytes]]:
    """A receiver's script: one 200 that takes the request but rejects `rejected` spans."""
    reply = ExportTraceServiceResponse(
        partial_success=ExportTracePartialSuccess(rejected_spans=rejected, error_message=message)
    ).SerializeToString()
    return [(200, {"Content-Type": "application/x-protobuf"}, reply)]


async def test_partial_success_is_logged_and_not_retried(caplog: pytest.LogCaptureFixture) -> None:
    script = partial_success(1, "too old")
    caplog.set_level(logging.WARNING, "eventbus.sinks.otlp")
    with Receiver(script).running() as rx:
        settings = EventBusSettings()
        sink = otlp.build_sink(settings, {"endpoint": rx.url})
        await sink.send([{"path": "/v1/chat/completions", "log_id": 1, "request_id": "a"}] * 2)
        await sink.close()
    assert len(rx.requests) == 1
    assert sink.rejected_spans == 1
    assert "rejected 1 of 2 span(s): too old" in caplog.text

    # A dispatcher's figures and metrics carry it: it was a WARNING line only (trial 102).
    from prometheus_client import CollectorRegistry, generate_latest

    from eventbus_core.metrics import register_prometheus

    with Receiver(script * 2).running() as rx:
        stats, _, dead = await dispatch([chat_event(1), chat_event(2)], {"endpoint": rx.url})
    assert stats.sinks["otlp"].figures == {"rejected": 1}
    assert stats.sinks["otlp"].sent == 2 and not dead.records  # sent: OTLP forbids a retry
    assert stats.sinks["seen"].figures == {}  # a sink without figures of its own

    class Stopped:  # the stopped dispatcher's figures, as a scrape reads them
        sources: ClassVar[dict[str, Any]] = {}

        def stats(self) -> Any:
            return stats

    registry = CollectorRegistry()
    register_prometheus(dispatcher=Stopped(), registry=registry)
    text = generate_latest(registry).decode()
    assert 'eventbus_sink_rejected_total{sink="otlp"} 1.0' in text, text
    assert 'eventbus_sink_rejected_total{sink="seen"}' not in text


def test_other_protocols_and_bad_headers_are_refused_without_showing_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    with pytest.raises(SettingsError, match=r"OTEL_EXPORTER_OTLP_PROTOCOL='grpc'.*http/protobuf"):
        otlp.build_sink(EventBusSettings(), {})
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_PROTOCOL")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer x,hunter2-secret")
    with pytest.raises(SettingsError, match="OTEL_EXPORTER_OTLP_HEADERS: entry 2") as info:
        otlp.build_sink(EventBusSettings(), {})
    assert "hunter2" not in str(info.value)
    with pytest.raises(SettingsError, match="did you mean 'endpoint'"):
        otlp.build_sink(EventBusSettings(), {"endpont": "http://x"})
    # A value httpx would refuse when it sends (quoting it in the error that reaches the log
    # and every dead letter) is refused when the sink is built, without the value.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=otlp%0ASECRETkey123")
    with pytest.raises(SettingsError, match=r"OTEL_EXPORTER_OTLP_HEADERS.*'x-api-key'") as info:
        otlp.build_sink(EventBusSettings(), {})
    assert "SECRET" not in str(info.value)


def test_a_timeout_that_is_not_a_finite_number_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # nan would time out every request: every batch dead-lettered, and nothing said at start.
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TIMEOUT", raising=False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "nan")
    with pytest.raises(SettingsError, match="OTEL_EXPORTER_OTLP_TRACES_TIMEOUT must be a number"):
        otlp.build_sink(EventBusSettings(), {})
    # 0 or less times out every request just the same.
    for bad in ("0", "-5"):
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", bad)
        with pytest.raises(SettingsError, match=r"milliseconds > 0"):
            otlp.build_sink(EventBusSettings(), {})
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")
    with pytest.raises(SettingsError, match=r"EVENTBUS_SINK_OTLP_TIMEOUT\) must be a finite"):
        otlp.build_sink(EventBusSettings(), {"timeout": "inf"})
    with pytest.raises(SettingsError, match=r"EVENTBUS_SINK_OTLP_TIMEOUT\) must be > 0"):
        otlp.build_sink(EventBusSettings(), {"timeout": "0"})
    for module in (helicone, lunary):
        name = module.__name__.rsplit(".", 1)[1]
        with pytest.raises(SettingsError, match=f"EVENTBUS_SINK_{name.upper()}_TIMEOUT"):
            module.build_sink(EventBusSettings(), {"api_key": "k", "timeout": "nan"})


def test_header_values_are_percent_decoded_before_they_are_stripped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As OpenTelemetry's SDK reads the variable: "%20x" is "x", not " x" (which httpx refuses).
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "c=%20x,%20d%20=y")
    sink = otlp.build_sink(EventBusSettings(), {})
    assert (sink.target.headers["c"], sink.target.headers["d"]) == ("x", "y")


def test_a_missing_extra_names_both_pip_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    from eventbus_core import _extras

    monkeypatch.setattr(_extras, "_installed", lambda module: False)
    with pytest.raises(ImportError) as info:
        otlp.build_sink(EventBusSettings(), {})
    message = str(info.value)
    assert 'pip install "eventbus-core[otlp]"' in message
    assert 'pip install "./eventbus_core[otlp]"' in message


def test_timestamps_keep_nanoseconds() -> None:
    assert timestamp_ns("2026-01-05T10:00:00.123456789+01:00") == 1767603600123456789
    assert timestamp_ns("2026-01-05T09:00:00.5Z") == 1767603600500000000
    assert timestamp_ns("not a time") is None


async def test_a_partial_success_counting_more_spans_than_sent_counts_the_batch(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # "rejected 3 of 2 span(s)", and 3 added to the metric (trial 146).
    script = partial_success(3, "bad")
    caplog.set_level(logging.WARNING, "eventbus.sinks.otlp")
    with Receiver(script).running() as rx:
        sink = otlp.build_sink(EventBusSettings(), {"endpoint": rx.url})
        await sink.send([{"path": "/v1/chat/completions", "log_id": 1, "request_id": "a"}] * 2)
        await sink.close()
    assert sink.rejected_spans == 2
    assert "rejected 2 of 2 span(s) (it said 3, not a count of the spans sent): bad" in caplog.text


async def test_a_partial_success_message_has_the_sinks_own_headers_masked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Logged as the receiver wrote it, the token it quoted showed (trial 115).
    message = "rejected: token OTLPTOKEN_SECRET_qq lacks scope\n\x1b[31mforged line"
    script = partial_success(1, message)
    caplog.set_level(logging.WARNING, "eventbus.sinks.otlp")
    with Receiver(script).running() as rx:
        sink = otlp.build_sink(
            EventBusSettings(),
            {"endpoint": rx.url, "headers": "authorization=Bearer%20OTLPTOKEN_SECRET_qq"},
        )
        await sink.send([{"path": "/v1/chat/completions", "log_id": 1, "request_id": "a"}])
        await sink.close()
    assert rx.requests[0].headers["authorization"] == "Bearer OTLPTOKEN_SECRET_qq"
    assert "rejected 1 of 1 span(s): rejected: token" in caplog.text
    assert "OTLPTOKEN_SECRET_qq" not in caplog.text
    assert "\n" not in caplog.records[-1].getMessage()  # one line, as the receiver's errors
    assert "\x1b" not in caplog.records[-1].getMessage()


# Errors name the variable or option that was set (trial 133).


@pytest.mark.parametrize(
    ("options", "environ", "named"),
    [
        ({}, {"OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "abc"}, "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT"),
        ({}, {"OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "-1"}, "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT"),
        ({"max_value_chars": "x"}, {}, "max_value_chars"),
        ({}, {"OTEL_EXPORTER_OTLP_TRACES_HEADERS": "x%20y=1"}, "OTEL_EXPORTER_OTLP_TRACES_HEADERS"),
        ({}, {"OTEL_EXPORTER_OTLP_HEADERS": "a=b%0Ac"}, "OTEL_EXPORTER_OTLP_HEADERS"),
        ({"header_x_k": "v\u00e9"}, {}, "header_x_k"),
        # The general variable was named for the traces one, and the option by neither (206).
        (
            {},
            {"OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "brotli"},
            r"'brotli' \(OTEL_EXPORTER_OTLP_TRACES_COMPRESSION\)",
        ),
        ({}, {"OTEL_EXPORTER_OTLP_COMPRESSION": "br"}, r"'br' \(OTEL_EXPORTER_OTLP_COMPRESSION\)"),
        ({"compression": "zstd"}, {}, "EVENTBUS_SINK_OTLP_COMPRESSION"),
        ({"headers": "a b=1"}, {}, "'headers'"),
        ({"certificate": "/nonexistent/ca.pem"}, {}, "'certificate'.*'/nonexistent/ca.pem'"),
        (
            {},
            {"OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": "/nonexistent/c.crt"},
            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE: the TLS file '/nonexistent/c.crt' does not",
        ),
        # A key without its certificate was ignored without a word.
        ({"client_key": "/nonexistent/c.key"}, {}, "'client_key'.* is set, but no client cert"),
        (
            {},
            {"OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY": "/k"},
            "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY is set, but no client certificate",
        ),
    ],
)
def test_an_otlp_setting_error_names_what_was_set(
    options: dict[str, str], environ: dict[str, str], named: str
) -> None:
    from eventbus_core.sinks._otlp_config import otlp_config

    with pytest.raises(SettingsError, match=named) as raised:
        otlp_config(options, capture_content=False, environ=environ)
    assert "\u00e9" not in str(raised.value) and "c \t" not in str(raised.value)


def test_an_otlp_client_key_file_that_is_missing_is_named(tmp_path: Any) -> None:
    from eventbus_core.sinks._otlp_config import otlp_config

    cert = tmp_path / "client.crt"
    cert.write_text("not a certificate")
    environ = {
        "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": str(cert),
        "OTEL_EXPORTER_OTLP_CLIENT_KEY": str(tmp_path / "missing.key"),
    }
    with pytest.raises(SettingsError, match="OTEL_EXPORTER_OTLP_CLIENT_KEY: the TLS file"):
        otlp_config({}, capture_content=False, environ=environ)
    environ["OTEL_EXPORTER_OTLP_CLIENT_KEY"] = str(cert)
    with pytest.raises(SettingsError, match="OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE: cannot load"):
        otlp_config({}, capture_content=False, environ=environ)


@pytest.mark.parametrize(
    "variable", ["OTEL_EXPORTER_OTLP_CLIENT_KEY", "OTEL_EXPORTER_OTLP_CERTIFICATE"]
)
def test_pem_content_given_for_a_tls_path_is_never_shown(variable: str) -> None:
    # The error printed the whole private key, taken for a missing file's name (trial 137).
    from eventbus_core.sinks._otlp_config import otlp_config

    body = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQCSeCrEt0123456789"
    pem = f"-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----"
    # The key's body alone, and the whole PEM base64-encoded, were printed (trial 141); so
    # was a body whose own '/' cut it into short runs (trial 142).
    cut = "MC4CAQAwBQYDK2VwBCIEIJ/SeCrEt9x+ZqT1m2/4kLpQ8vWn0bYcR3uHsDfAgE1o"
    for given in (pem, body, base64.b64encode(pem.encode()).decode(), cut):
        environ = {variable: given, "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": os.devnull}
        if variable == "OTEL_EXPORTER_OTLP_CERTIFICATE":
            del environ["OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE"]
        with pytest.raises(SettingsError, match=f"{variable} must be the path") as raised:
            otlp_config({}, capture_content=False, environ=environ)
        assert "SeCrEt" not in str(raised.value) and given[5:25] not in str(raised.value)
    path = "/etc/ssl/nodir/client-2026.key"  # a path is still shown, to check it (trial 143)
    with pytest.raises(SettingsError, match=re.escape(path)):
        otlp_config(
            {},
            capture_content=False,
            environ={
                variable: path,
                **(
                    {"OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": os.devnull}
                    if variable.endswith("CLIENT_KEY")
                    else {}
                ),
            },
        )


def test_a_malformed_resource_entry_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    from eventbus_core.sinks._otlp_config import otlp_config

    with caplog.at_level(logging.WARNING):
        config = otlp_config(
            {}, capture_content=False, environ={"OTEL_RESOURCE_ATTRIBUTES": "garbage,a=1"}
        )
    assert config.resource["a"] == "1"
    assert "OTEL_RESOURCE_ATTRIBUTES: entry 1 is not key=value" in caplog.text, caplog.text


def test_an_endpoint_with_credentials_beside_an_authorization_header_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # otlp.md says so (trial 163 found the Basic credentials sent, and no word of it): httpx
    # sends the URL's user:password@ in place of the header.
    for var in [v for v in os.environ if v.startswith("OTEL_")]:
        monkeypatch.delenv(var)
    options = {"endpoint": "http://user:pw123SECRET@127.0.0.1:9/v1/traces"}
    with pytest.raises(SettingsError, match="HTTP Basic") as raised:
        otlp.build_sink(EventBusSettings(), {**options, "header_authorization": "Bearer abc"})
    assert "pw123SECRET" not in str(raised.value)


def test_gemini_generation_config_gives_the_request_attributes() -> None:
    # Gemini's parameters live in `generationConfig`, under camelCase names: none reached the
    # span, though the attribute table names Gemini (trial 189).
    from eventbus_core.sinks._otlp_spans import span_attributes

    body = {
        "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
        "generationConfig": {
            "maxOutputTokens": 20,
            "temperature": 0.4,
            "topP": 0.9,
            "topK": 40,
            "stopSequences": ["END"],
            "candidateCount": 2,
            "seed": 7,
            "presencePenalty": 0.5,
            "frequencyPenalty": 0.25,
        },
    }
    payload = {"path": "/v1beta/models/gemini-1.5-pro:streamGenerateContent", "input": body}
    a = span_attributes(payload)
    assert a["gen_ai.provider.name"] == "gcp.gemini"
    assert a["gen_ai.request.max_tokens"] == 20
    assert a["gen_ai.request.temperature"] == pytest.approx(0.4)
    assert a["gen_ai.request.top_p"] == pytest.approx(0.9)
    assert a["gen_ai.request.top_k"] == 40.0
    assert a["gen_ai.request.stop_sequences"] == ["END"]
    assert a["gen_ai.request.choice.count"] == 2
    assert a["gen_ai.request.seed"] == 7
    assert a["gen_ai.request.presence_penalty"] == pytest.approx(0.5)
    assert a["gen_ai.request.frequency_penalty"] == pytest.approx(0.25)
    assert a["gen_ai.request.stream"] is True
    snake = {"generation_config": {"max_output_tokens": 9, "top_p": 0.5, "candidate_count": 3}}
    a = span_attributes({"path": "/v1beta/models/gemini-1.5-pro:generateContent", "input": snake})
    assert (a["gen_ai.request.max_tokens"], a["gen_ai.request.choice.count"]) == (9, 3)
    assert a["gen_ai.request.top_p"] == pytest.approx(0.5)
    plain = span_attributes({"path": "/v1beta/models/gemini-1.5-pro:generateContent", "input": {}})
    assert not any(k.startswith("gen_ai.request.") and k != "gen_ai.request.model" for k in plain)


def test_span_names_gemini_ids_and_token_counts_follow_the_conventions() -> None:
    # Trial 250: a span without a request model was named after the response's; Gemini's
    # responseId was left out; a count of 2**70 went out as a string, -1 as it was.
    from eventbus_core.sinks._otlp_spans import span_attributes

    azure = {
        "path": "/openai/deployments/prod-gpt/chat/completions",
        "input": {"messages": []},
        "output": {"id": "chatcmpl-1", "model": "gpt-4o-2024-05-13"},
        "usage": {"prompt_tokens": 2**70, "completion_tokens": -1},
    }
    a = span_attributes(azure)
    assert "gen_ai.request.model" not in a and a["gen_ai.response.model"] == "gpt-4o-2024-05-13"
    assert "gen_ai.usage.input_tokens" not in a and "gen_ai.usage.output_tokens" not in a
    gemini = {
        "path": "/v1beta/models/gemini-1.5-pro:generateContent",
        "input": {},
        "output": {"responseId": "resp-42", "modelVersion": "gemini-1.5-pro-002"},
        "usage": {"prompt_tokens": 7, "completion_tokens": 3},
    }
    g = span_attributes(gemini)
    assert g["gen_ai.response.id"] == "resp-42"
    assert (g["gen_ai.usage.input_tokens"], g["gen_ai.usage.output_tokens"]) == (7, 3)
    from eventbus_core.sinks._otlp_spans import SpanEncoder

    encoder = SpanEncoder({"service.name": "t"})
    assert encoder.span({**azure, "method": "POST", "status": 200}).name == "chat"
    assert encoder.span({**gemini, "method": "POST"}).name == "generate_content gemini-1.5-pro"
