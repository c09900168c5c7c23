"""LLM payloads as OTLP spans: one `ExportTraceServiceRequest` per batch.

Each payload becomes one CLIENT span named `{operation} {model}` with the GenAI semantic
conventions' attributes, HTTP attributes, the request id and LogID, and the exact start and
end. Its ids are derived from the event (LogID and request id), so a batch sent again, or an
event delivered again, carries the same span id and backends can de-duplicate.
Prompts and completions are added only when asked, as the span event
`gen_ai.client.inference.operation.details` (the conventions' name for it).

Needs `opentelemetry-proto` (the `eventbus-core[otlp]` extra).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from eventbus_core.sinks import _genai
from eventbus_core.sinks._genai_messages import (
    input_messages,
    output_messages,
    system_instructions,
)

if TYPE_CHECKING:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

__all__ = ["CONTENT_EVENT", "SpanEncoder", "span_attributes"]

CONTENT_EVENT = "gen_ai.client.inference.operation.details"


def _ids(payload: Mapping[str, Any]) -> tuple[bytes, bytes]:
    log_id, request_id = payload.get("log_id") or 0, payload.get("request_id") or ""
    if log_id and request_id:
        key = f"eventbus|{log_id}|{request_id}"  # stable across retries and redeliveries
    else:
        key = f"eventbus|{log_id}|{request_id}|{payload.get('timestamp')}|{payload.get('path')}"
    digest = hashlib.sha256(key.encode()).digest()
    return digest[:16], digest[16:24]


def span_attributes(payload: Mapping[str, Any], provider: str | None = None) -> dict[str, Any]:
    """The span's attributes for one payload (plain values; None and empty left out)."""
    operation = _genai.operation_name(payload)
    attrs: dict[str, Any] = {}
    if operation is not None:
        name = provider or _genai.provider_name(payload)
        attrs["gen_ai.operation.name"] = operation
        attrs["gen_ai.provider.name"] = name
        attrs["gen_ai.system"] = name  # the name before semantic conventions 1.37
        attrs["gen_ai.request.model"] = _genai.request_model(payload)
        attrs["gen_ai.response.model"] = _genai.response_model(payload)
        attrs["gen_ai.response.id"] = _genai.response_id(payload)
        prompt, completion = _genai.usage_tokens(payload)
        attrs["gen_ai.usage.input_tokens"] = prompt
        attrs["gen_ai.usage.output_tokens"] = completion
        attrs["gen_ai.response.finish_reasons"] = _genai.finish_reasons(payload) or None
        attrs.update(_genai.request_attributes(payload))
    method, status = payload.get("method"), payload.get("status")
    attrs["http.request.method"] = method or None
    attrs["url.path"] = str(payload.get("path") or "").split("?", 1)[0] or None
    if isinstance(status, int) and status > 0:
        attrs["http.response.status_code"] = status
        if status >= 400:
            attrs["error.type"] = str(status)
    attrs["eventbus.request_id"] = payload.get("request_id") or None
    attrs["eventbus.log_id"] = payload.get("log_id") or None
    metadata = payload.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("streamed"), bool):
        attrs["eventbus.streamed"] = metadata["streamed"]
    if payload.get("transform_error"):
        attrs["eventbus.transform_error"] = str(payload["transform_error"])
    return {k: v for k, v in attrs.items() if v is not None and v != ""}


class SpanEncoder:
    """Builds export requests (see the module docstring).

    Args:
        resource: Resource attributes (`service.name` among them).
        capture_content: Add prompts and completions as a span event.
        scrub: Applied to the payload's `input` and `output` before they become content
            (redaction); identity when None.
        provider: `gen_ai.provider.name` for every span, instead of guessing from the path.
        max_value_chars: Longest string attribute value (OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT);
            0 for no limit.
        scope_version: Version of the instrumentation scope (`eventbus`).
    """

    def __init__(
        self,
        resource: Mapping[str, Any],
        *,
        capture_content: bool = False,
        scrub: Callable[[Any], Any] | None = None,
        provider: str | None = None,
        max_value_chars: int = 0,
        scope_version: str = "",
    ) -> None:
        from eventbus_core._extras import require

        require("otlp", what="the otlp sink")
        self.resource = dict(resource)
        self.capture_content = capture_content
        self.scrub = scrub or (lambda value: value)
        self.provider = provider
        self.max_value_chars = max_value_chars
        self.scope_version = scope_version

    def request(self, batch: Sequence[Mapping[str, Any]]) -> ExportTraceServiceRequest:
        """One export request holding one span per payload, in order."""
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )
        from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
        from opentelemetry.proto.resource.v1.resource_pb2 import Resource
        from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans

        scope = ScopeSpans(
            scope=InstrumentationScope(name="eventbus", version=self.scope_version),
            spans=[self.span(p) for p in batch],
        )
        # Resource attributes are exempt from the value length limit (OpenTelemetry's
        # attribute limits apply to spans): a cut `service.name` filed traces elsewhere.
        resource = Resource(attributes=self._key_values(self.resource, limit=0))
        return ExportTraceServiceRequest(
            resource_spans=[ResourceSpans(resource=resource, scope_spans=[scope])]
        )

    def span(self, payload: Mapping[str, Any]) -> Span:
        """The span of one payload."""
        from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

        trace_id, span_id = _ids(payload)
        start, end = _genai.span_times(payload)
        attrs = span_attributes(payload, self.provider)
        operation = attrs.get("gen_ai.operation.name")
        if operation:
            # The conventions' `{operation} {request model}`, the operation alone without one:
            # named after the response's model, a span carried a model no attribute had
            # (trial 250, an Azure deployment's request without `model`).
            model = attrs.get("gen_ai.request.model")
            name = f"{operation} {model}" if model else str(operation)
        else:
            name = str(payload.get("method") or "HTTP")
        status = payload.get("status")
        error = isinstance(status, int) and status >= 400
        span = Span(
            trace_id=trace_id,
            span_id=span_id,
            name=name,
            kind=Span.SpanKind.SPAN_KIND_CLIENT,
            start_time_unix_nano=start,
            end_time_unix_nano=end,
            attributes=self._key_values(attrs),
            status=Status(
                code=Status.StatusCode.STATUS_CODE_ERROR
                if error
                else Status.StatusCode.STATUS_CODE_UNSET,
                message=f"HTTP {status}" if error else "",
            ),
        )
        if self.capture_content and operation:
            span.events.append(self._content_event(payload, end, str(operation)))
        return span

    def _content_event(self, payload: Mapping[str, Any], when: int, operation: str) -> Any:
        from opentelemetry.proto.trace.v1.trace_pb2 import Span

        request, response = self.scrub(payload.get("input")), self.scrub(payload.get("output"))
        attrs: dict[str, Any] = {"gen_ai.operation.name": operation}
        attrs["gen_ai.input.messages"] = input_messages(request)
        system = system_instructions(request)
        if system:
            attrs["gen_ai.system_instructions"] = system
        attrs["gen_ai.output.messages"] = output_messages(response)
        return Span.Event(
            time_unix_nano=when, name=CONTENT_EVENT, attributes=self._key_values(attrs)
        )

    # ------------------------------------------------------------------- value encoding

    def _key_values(self, attrs: Mapping[str, Any], *, limit: int | None = None) -> list[KeyValue]:
        """`attrs` as OTLP key-values, strings cut at `limit` characters (None: the value
        length limit, `max_value_chars`; 0: none)."""
        from opentelemetry.proto.common.v1.common_pb2 import KeyValue

        cut = self.max_value_chars if limit is None else limit
        return [KeyValue(key=k, value=self._any(v, cut)) for k, v in attrs.items()]

    def _any(self, value: Any, limit: int) -> AnyValue:
        from opentelemetry.proto.common.v1.common_pb2 import (
            AnyValue,
            ArrayValue,
            KeyValue,
            KeyValueList,
        )

        if isinstance(value, bool):
            return AnyValue(bool_value=value)
        if isinstance(value, int) and -(2**63) <= value < 2**63:
            return AnyValue(int_value=value)
        if isinstance(value, float):
            return AnyValue(double_value=value)
        if isinstance(value, list | tuple):
            return AnyValue(array_value=ArrayValue(values=[self._any(v, limit) for v in value]))
        if isinstance(value, dict):
            pairs = [
                KeyValue(key=str(k), value=self._any(v, limit))
                for k, v in value.items()
                if v is not None
            ]
            return AnyValue(kvlist_value=KeyValueList(values=pairs))
        text = "" if value is None else str(value)
        if limit and len(text) > limit:
            text = text[:limit]
        return AnyValue(string_value=text)
