"""The transformer: an `Event` turned into a payload observability tools understand.

`LLMTransformer` (the default) decodes bodies (undoing `Content-Encoding: gzip`, `deflate`
or `br`), parses JSON, merges OpenAI-style SSE streams into one completion, extracts the
model and token usage, and keeps binary bodies as base64 (or a placeholder). Any callable
`transform(event) -> dict` can replace it (`Dispatcher(transform=...)` or
`EVENTBUS_TRANSFORMER=package.module:function`).

Payload keys: `type`, `log_id`, `request_id`, `method`, `path`, `status`, `duration_ms`,
`timestamp`, `model`, `usage` (`prompt_tokens`, `completion_tokens`, `total_tokens`),
`input` (request body), `output` (response body), `response_headers`, `metadata`.
"""

from __future__ import annotations

import base64
import gzip
import importlib
import json
import zlib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final, Literal

from eventbus_core._event import Event
from eventbus_core._sse import looks_like_sse, merge_sse
from eventbus_core._usage import usage_of

__all__ = ["LLMTransformer", "Payload", "Transform", "decode_body", "load_transform"]

Payload = dict[str, Any]
"""What sinks receive per event: a JSON-serialisable dict."""

Transform = Callable[[Event], Mapping[str, Any]]
"""`transform(event) -> payload`; must be pure and fast (it runs for every event)."""

_GZIP_MAGIC: Final = b"\x1f\x8b"


def _decompress(data: bytes, encoding: str | None) -> tuple[bytes, str | None]:
    """Undo Content-Encoding; returns the bytes and an error note if decoding failed."""
    codings = [c.strip().lower() for c in (encoding or "").split(",") if c.strip()]
    if not codings and data[:2] == _GZIP_MAGIC:
        codings = ["gzip"]  # request bodies carry no headers in the event: sniff
    try:
        for coding in reversed(codings):  # applied in order, so undone in reverse
            if coding in ("gzip", "x-gzip"):
                data = gzip.decompress(data)
            elif coding == "deflate":
                try:
                    data = zlib.decompress(data)
                except zlib.error:
                    data = zlib.decompress(data, -zlib.MAX_WBITS)  # raw deflate, as some send
            elif coding == "br":
                try:
                    import brotli  # type: ignore[import-untyped,import-not-found,unused-ignore]
                except ImportError:
                    return data, "br body not decoded: pip install 'eventbus-core[brotli]'"
                data = brotli.decompress(data)
            elif coding != "identity":
                return data, f"unsupported Content-Encoding {coding!r}"
    except (OSError, EOFError, zlib.error, ValueError) as exc:
        return data, f"could not undo Content-Encoding {encoding!r}: {exc}"
    except Exception as exc:  # brotli.error is not a subclass of the above
        return data, f"could not undo Content-Encoding {encoding!r}: {exc}"
    return data, None


def decode_body(
    data: bytes | None,
    *,
    content_encoding: str | None = None,
    content_type: str | None = None,
    binary: Literal["base64", "placeholder"] = "base64",
    max_bytes: int = 1 << 20,
) -> tuple[Any, dict[str, Any]]:
    """Decode one body into JSON-friendly data, with notes on what was done.

    Returns:
        `(value, info)`: value is parsed JSON, a merged SSE completion, text, `{"base64": ...}`
        or a placeholder string; info has `bytes`, and `streamed`, `truncated`, `error` when
        they apply.
    """
    if data is None:
        return None, {}
    info: dict[str, Any] = {"bytes": len(data)}
    raw, error = _decompress(data, content_encoding)
    if error:
        info["error"] = error
    if len(raw) > max_bytes:
        info["truncated"] = True
        return f"[body of {len(raw)} bytes omitted: larger than {max_bytes}]", info
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        kind = content_type or "application/octet-stream"
        if binary == "base64" and not error:
            return {"base64": base64.b64encode(raw).decode("ascii"), "content_type": kind}, info
        return f"[binary body: {len(raw)} bytes, {kind}]", info
    if looks_like_sse(text, content_type):
        info["streamed"] = True
        return merge_sse(text), info
    stripped = text.lstrip()
    if stripped[:1] in ("{", "[") or (content_type and "json" in content_type.lower()):
        try:
            return json.loads(text), info
        except ValueError:
            pass
    return text, info


class LLMTransformer:
    """The default transformer for LLM API traffic (see the module docstring).

    Args:
        binary: `base64` keeps binary bodies (images, audio) as base64; `placeholder` replaces
            them by a short description.
        max_body_bytes: Decoded bodies larger than this are replaced by a placeholder.
    """

    def __init__(
        self, *, binary: Literal["base64", "placeholder"] = "base64", max_body_bytes: int = 1 << 20
    ) -> None:
        if binary not in ("base64", "placeholder"):
            raise ValueError(f"binary must be 'base64' or 'placeholder', not {binary!r}")
        self.binary: Literal["base64", "placeholder"] = binary
        self.max_body_bytes = max_body_bytes

    def __call__(self, event: Event) -> Payload:
        """Transform one event into a payload."""
        content_type = event.header("Content-Type")
        encoding = event.header("Content-Encoding")
        request, req_info = decode_body(
            event.request_body, binary=self.binary, max_bytes=self.max_body_bytes
        )
        response, resp_info = decode_body(
            event.response_body,
            content_encoding=encoding,
            content_type=content_type,
            binary=self.binary,
            max_bytes=self.max_body_bytes,
        )
        model = None
        for body in (response, request):
            if isinstance(body, dict) and isinstance(body.get("model"), str):
                model = body["model"]
                break
        duration_ms = event.duration_ns / 1_000_000
        headers = event.response_headers
        metadata: dict[str, Any] = {
            "log_id": event.log_id,
            "request_id": event.request_id,
            "method": event.method,
            "path": event.path,
            "status": event.status,
            "duration_ns": event.duration_ns,
            "duration_ms": duration_ms,
            "content_type": content_type,
            "content_encoding": encoding,
            "streamed": bool(resp_info.get("streamed")),
            "request_body": req_info,
            "response_body": resp_info,
        }
        return {
            "type": "llm.request",
            "log_id": event.log_id,
            "request_id": event.request_id,
            "method": event.method,
            "path": event.path,
            "status": event.status,
            "duration_ms": duration_ms,
            "timestamp": datetime.now(UTC).isoformat(),
            "model": model,
            "usage": usage_of(response),
            "input": request,
            "output": response,
            "response_headers": None
            if headers is None
            else {k: list(v) for k, v in headers.items()},
            "metadata": metadata,
        }


def load_transform(spec: str) -> Transform:
    """Import a custom transformer from `package.module:attribute`.

    A class (or any callable that takes no event) is not guessed at: the attribute must be a
    callable `transform(event) -> dict`, e.g. a function or an instance.

    Raises:
        ValueError: `spec` is not `module:attribute` (EVENTBUS_TRANSFORMER).
        ImportError: the module cannot be imported or lacks the attribute.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(
            f"EVENTBUS_TRANSFORMER={spec!r} must be 'package.module:function', "
            "e.g. 'myproject.observability:transform'"
        )
    module = importlib.import_module(module_name)
    try:
        target = getattr(module, attr)
    except AttributeError:
        raise ImportError(
            f"EVENTBUS_TRANSFORMER={spec!r}: module {module_name!r} has no {attr!r}"
        ) from None
    if not callable(target):
        raise ValueError(f"EVENTBUS_TRANSFORMER={spec!r} is not callable")
    transform: Transform = target
    return transform
