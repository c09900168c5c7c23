"""The `otlp` sink: each event as an OpenTelemetry span, over OTLP/HTTP (protobuf), following
the GenAI semantic conventions, so any OTLP backend (an OpenTelemetry Collector, Langfuse,
Arize Phoenix, OpenLIT, Grafana Tempo, ...) shows the proxy's traffic as LLM traces.

One `ExportTraceServiceRequest` per dispatcher batch, POSTed with `Content-Type:
application/x-protobuf`; the dispatcher's retries, `Retry-After` and dead letters apply
(408, 429 and 5xx retried; other statuses dead-lettered). A partial success (the backend
took the request but rejected some spans) is not retried, as the OTLP specification asks: it
is logged at WARNING and counted in `rejected_spans` (`SinkStats.figures["rejected"]`, metric
`eventbus.sink.rejected`).

Options (`--sink-opt key=value` or `EVENTBUS_SINK_OTLP_<KEY>`), each winning over the
standard variable in brackets:
    endpoint: Full URL of the traces receiver [OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, or
        OTEL_EXPORTER_OTLP_ENDPOINT + /v1/traces]; default http://localhost:4318/v1/traces.
    headers: `k=v,k2=v2` or a JSON object [OTEL_EXPORTER_OTLP_(TRACES_)HEADERS].
    header_<name>: One header; underscores in `<name>` become dashes.
    timeout: Seconds per request [OTEL_EXPORTER_OTLP_(TRACES_)TIMEOUT, in milliseconds].
    compression: gzip or none [OTEL_EXPORTER_OTLP_(TRACES_)COMPRESSION].
    service_name: The resource's service.name [OTEL_SERVICE_NAME]; default llm-proxy.
    capture_content: Prompts and completions as a span event [EVENTBUS_OTLP_CAPTURE_CONTENT].
    provider: gen_ai.provider.name for every span (default: guessed from the path).
    certificate, client_certificate, client_key: TLS files [OTEL_EXPORTER_OTLP_*].
    max_value_chars: Longest string attribute [OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT].
Needs the `eventbus-core[otlp]` extra (opentelemetry-proto).
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from eventbus_core._log import get_logger
from eventbus_core._settings import EventBusSettings
from eventbus_core.hookspecs import RegisterFn, hookimpl
from eventbus_core.redact._redact import Redactor
from eventbus_core.sinks._http import HttpTarget, receiver_text
from eventbus_core.sinks._otlp_config import OtlpConfig, otlp_config
from eventbus_core.sinks._otlp_spans import SpanEncoder

if TYPE_CHECKING:
    import httpx

__all__ = ["OtlpSink", "build_sink", "eventbus_register_sinks"]

log = get_logger("eventbus.sinks.otlp")

_PROTOBUF = "application/x-protobuf"


class OtlpSink:
    """Export batches of payloads as OTLP spans (see the module docstring).

    Args:
        config: Endpoint, headers, resource, content capture (`otlp_config()` builds it).
        redactor: Applied to prompts and completions before they are captured, on top of
            the dispatcher's own redaction (default: the built-in rules), so that captured
            content is redacted even with EVENTBUS_REDACT=false.
        client: A ready `httpx.AsyncClient` (not closed here).
        name: The sink's name in stats and dead letters.
    """

    def __init__(
        self,
        config: OtlpConfig | None = None,
        *,
        redactor: Redactor | None = None,
        client: httpx.AsyncClient | None = None,
        name: str = "otlp",
    ) -> None:
        from eventbus_core import __version__

        self.config = config or OtlpConfig()
        self.name = name
        redactor = redactor or Redactor()
        self.encoder = SpanEncoder(
            self.config.resource,
            capture_content=self.config.capture_content,
            scrub=redactor.json,
            provider=self.config.provider,
            max_value_chars=self.config.max_value_chars,
            scope_version=__version__,
        )
        headers = {**self.config.headers, "content-type": _PROTOBUF}
        if self.config.compression == "gzip":
            headers["content-encoding"] = "gzip"
        self.target = HttpTarget(
            self.config.endpoint,
            headers=headers,
            timeout=self.config.timeout,
            connect_timeout=min(5.0, self.config.timeout) or 5.0,
            client=client,
            ssl_context=self.config.ssl_context,
            where="sink 'otlp' (OTEL_EXPORTER_OTLP_HEADERS, or its 'headers' option)",
        )
        self.rejected_spans = 0

    async def send(self, batch: Sequence[Mapping[str, Any]]) -> None:
        """Export the batch in one request; raise a `SinkError` unless it was accepted."""
        if not batch:
            return
        body = self.encoder.request(batch).SerializeToString()
        if self.config.compression == "gzip":
            body = await asyncio.to_thread(gzip.compress, body)
        response = await self.target.post(body)
        error = self.target.error_for(response)
        if error is not None:
            raise error
        self._partial_success(response, len(batch))

    def _partial_success(self, response: httpx.Response, sent: int) -> None:
        from google.protobuf.message import DecodeError
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceResponse,
        )

        if not response.content or _PROTOBUF not in response.headers.get("content-type", ""):
            return
        reply = ExportTraceServiceResponse()
        try:
            reply.ParseFromString(response.content)
        except DecodeError:
            return  # a 2xx with an unreadable body still means "accepted"
        said = reply.partial_success.rejected_spans
        # A receiver counting more than it was sent is read as all of them, and said: the
        # figure went past the events sent ("rejected 3 of 2", trial 146).
        rejected = min(max(said, 0), sent)
        if said or reply.partial_success.error_message:
            self.rejected_spans += rejected
            log.warning(
                "otlp sink %s: the receiver accepted the request but rejected %d of %d "
                "span(s)%s: %s (not retried, as OTLP asks)",
                self.name,
                rejected,
                sent,
                f" (it said {said}, not a count of the spans sent)" if said != rejected else "",
                # The receiver's words: the sink's own headers masked, as in its errors.
                receiver_text(reply.partial_success.error_message, self.target.mask_own)
                or "no reason given",
            )

    def figures(self) -> dict[str, int]:
        """`rejected`: spans (one per event) the receiver took the request for but rejected."""
        return {"rejected": self.rejected_spans}

    async def close(self) -> None:
        """Close the HTTP client."""
        await self.target.close()

    def __repr__(self) -> str:
        from eventbus_core.redact._secrets import redact_one_url

        return f"<OtlpSink {self.name!r} endpoint={redact_one_url(self.config.endpoint)!r}>"


def build_sink(settings: EventBusSettings, options: Mapping[str, str]) -> OtlpSink:
    """Sink factory: `otlp` with its options and the OTEL_* variables."""
    from eventbus_core._extras import require

    require("otlp", what="the otlp sink")
    config = otlp_config(options, capture_content=settings.otlp_capture_content)
    redactor = Redactor(
        extra_headers=settings.redact_header_names,
        extra_patterns=settings.redact_pattern_list,
    )
    return OtlpSink(config, redactor=redactor)


@hookimpl
def eventbus_register_sinks(register: RegisterFn) -> None:
    """Register the `otlp` sink."""
    register("otlp", build_sink)
