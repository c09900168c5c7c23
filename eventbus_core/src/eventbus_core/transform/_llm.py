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
import importlib
import json
import zlib
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal

import msgspec

from eventbus_core._errors import SettingsError
from eventbus_core._event import Event
from eventbus_core._utc import utc_now_iso
from eventbus_core.transform._sse import looks_like_sse, merge_sse
from eventbus_core.transform._usage import usage_of

__all__ = ["LLMTransformer", "Payload", "Transform", "decode_body", "load_transform"]

Payload = dict[str, Any]
"""What sinks receive per event: a JSON-serialisable dict."""

Transform = Callable[[Event], Mapping[str, Any]]
"""`transform(event) -> payload`; must be pure and fast (it runs for every event)."""

_GZIP_MAGIC: Final = b"\x1f\x8b"
_GZIP_WBITS: Final = 16 + zlib.MAX_WBITS
_ZLIB_WBITS: Final = zlib.MAX_WBITS
_RAW_WBITS: Final = -zlib.MAX_WBITS


# Reads body JSON as the json module does, about 1.5x faster than orjson with the test for long
# integers it needed (orjson reads an integer past 64 bits as a float; msgspec keeps it exact, as
# json does): 1.26 against 1.92 µs for a chat body, 29 against 52 µs for 64 KB of prose. What
# msgspec refuses and json reads (NaN, Infinity, lone surrogates, numbers past a float's range)
# is left to json (tests/core/test_fast_codecs.py compares them).
_JSON: Final = msgspec.json.Decoder()
# What a JSON body starts with, after ASCII whitespace, when the parser is tried on it first
# (`str.lstrip()` strips more than `bytes.lstrip()`, so both agree on a body that starts so).
_JSON_STARTS: Final = (b"{", b"[")


def _loads(raw: bytes, text: str) -> Any:
    """`json.loads(text)`, where `raw` is its UTF-8: msgspec whenever it reads it (the same
    result), the json module for what msgspec refuses (see `_JSON`).

    Raises:
        ValueError: `text` is not JSON.
    """
    try:
        return _JSON.decode(raw)
    except msgspec.DecodeError:
        return json.loads(text)


class _TooLarge(Exception):
    """Decoding would pass the size bound (the output so far is dropped)."""


def _inflate(data: bytes, wbits: int, limit: int) -> bytes:
    """Inflate a zlib, raw deflate or gzip stream (gzip: every concatenated member), producing
    at most `limit` bytes: memory stays bounded by the limit whatever the ratio of the input.

    Raises:
        _TooLarge: the output would exceed `limit`.
        zlib.error, EOFError: the data is not such a stream, or it is cut short.
    """
    out: list[bytes] = []
    produced = 0
    while True:
        inflater = zlib.decompressobj(wbits)
        pending = data
        while pending:
            room = limit - produced
            if room <= 0:
                raise _TooLarge
            chunk = inflater.decompress(pending, room)  # never more than `room` bytes
            produced += len(chunk)
            out.append(chunk)
            pending = inflater.unconsumed_tail
        if not inflater.eof:
            if produced >= limit:
                raise _TooLarge
            raise EOFError("compressed data ended before the end-of-stream marker")
        # gzip allows several members one after the other (and zero padding after them).
        data = inflater.unused_data.lstrip(b"\x00") if wbits == _GZIP_WBITS else b""
        if not data:
            return b"".join(out)


def _unbrotli(data: bytes, limit: int) -> bytes:
    """Undo brotli, stopping once the output passes `limit` (see `_inflate`).

    brotli's `output_buffer_limit` (brotli >= 1.2) bounds each call's output to about the limit
    (it may overshoot by up to one internal block, so at most about twice the limit plus 32 KiB).

    Raises:
        _TooLarge, EOFError, brotli.error: as `_inflate`.
        ImportError: brotli is not installed, or too old to decode with a bound.
    """
    import brotli  # type: ignore[import-untyped,import-not-found,unused-ignore]

    decoder = brotli.Decompressor()
    if not hasattr(decoder, "can_accept_more_data"):
        raise ImportError("brotli >= 1.2 is needed to decode with a size bound")
    out: list[bytes] = []
    produced = 0
    chunk: bytes = decoder.process(data, output_buffer_limit=limit)
    while True:
        produced += len(chunk)
        if produced > limit or (produced == limit and not decoder.is_finished()):
            raise _TooLarge
        out.append(chunk)
        if decoder.is_finished():
            return b"".join(out)
        if decoder.can_accept_more_data():
            raise EOFError("brotli data ended before the end of the stream")
        chunk = decoder.process(b"", output_buffer_limit=limit - produced)


def _decompress(data: bytes, encoding: str | None, limit: int) -> tuple[bytes, str | None, bool]:
    """Undo Content-Encoding, producing at most `limit` bytes at each step.

    Returns the bytes, an error note if decoding failed (the bytes are then the input), and
    whether the output would have been larger than `limit` (the bytes are then the input too).
    """
    if not encoding:
        if not data.startswith(_GZIP_MAGIC):
            return data, None, False  # the usual body: nothing to undo, nothing to set up
        codings = ["gzip"]  # request bodies carry no headers in the event: sniff
    else:
        codings = [c.strip().lower() for c in encoding.split(",") if c.strip()]
        if not codings and data.startswith(_GZIP_MAGIC):
            codings = ["gzip"]  # an encoding of only separators: sniff as above
    original = data
    try:
        for coding in reversed(codings):  # applied in order, so undone in reverse
            if coding in ("gzip", "x-gzip"):
                data = _inflate(data, _GZIP_WBITS, limit)
            elif coding == "deflate":
                try:
                    data = _inflate(data, _ZLIB_WBITS, limit)
                except zlib.error:
                    data = _inflate(data, _RAW_WBITS, limit)  # raw deflate, as some send
            elif coding == "br":
                try:
                    data = _unbrotli(data, limit)
                except ImportError:
                    return (
                        original,
                        'br body not decoded: install brotli>=1.2 (pip install "brotli>=1.2")',
                        False,
                    )
            elif coding != "identity":
                return original, f"unsupported Content-Encoding {coding!r}", False
    except _TooLarge:
        return original, None, True
    except (OSError, EOFError, zlib.error, ValueError) as exc:
        return original, f"could not undo Content-Encoding {encoding!r}: {exc}", False
    except Exception as exc:  # brotli.error is not a subclass of the above
        return original, f"could not undo Content-Encoding {encoding!r}: {exc}", False
    return data, None, False


def decode_body(
    data: bytes | None,
    *,
    content_encoding: str | None = None,
    content_type: str | None = None,
    binary: Literal["base64", "placeholder"] = "base64",
    max_bytes: int = 1 << 20,
) -> tuple[Any, dict[str, Any]]:
    """Decode one body into JSON-friendly data, with notes on what was done.

    A compressed body is decoded incrementally and given up as soon as it passes `max_bytes`
    (a small "decompression bomb" never inflates in memory).

    Returns:
        `(value, info)`: value is parsed JSON, a merged SSE completion, text, `{"base64": ...}`
        or a placeholder string; info has `bytes`, and `streamed`, `truncated`, `error` when
        they apply.
    """
    if data is None:
        return None, {}
    info: dict[str, Any] = {"bytes": len(data)}
    if content_type and "text/event-stream" in content_type.lower():
        # Said by the content type: true whether or not the body is kept (below).
        info["streamed"] = True
    raw, error, too_large = _decompress(data, content_encoding, max_bytes + 1)
    if too_large:
        info["truncated"] = True
        return (
            f"[body omitted: larger than {max_bytes} bytes once decoded "
            f"({len(data)} bytes {content_encoding or 'gzip'})]",
            info,
        )
    if error:
        info["error"] = error
    if len(raw) > max_bytes:
        info["truncated"] = True
        return f"[body of {len(raw)} bytes omitted: larger than {max_bytes}]", info
    json_first = "streamed" not in info and raw.lstrip()[:1] in _JSON_STARTS
    if json_first:
        # The usual body, JSON: read from the bytes at once. Starting with `{` or `[` it is no
        # event stream, and what msgspec reads is valid UTF-8, so the text below is not needed
        # (its making and scans were a third of this function's cost for a chat body).
        try:
            return _JSON.decode(raw), info
        except (msgspec.DecodeError, RecursionError):
            pass  # not JSON, not UTF-8, what json reads another way, or nested too deep: below
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
            # msgspec has refused these bytes already when they were read first: json alone.
            return (json.loads(text) if json_first else _loads(raw, text)), info
        except ValueError:
            pass
        except RecursionError:
            # JSON nested past the parsers' depth (about a thousand levels): kept as the text it
            # is, which redaction and sinks take like any other (the whole event's transform
            # failed, and the body was lost).
            info["error"] = "JSON nested too deeply to parse: kept as text"
    return text, info


# Response header names seen that are neither Content-Type nor Content-Encoding in any spelling:
# most responses carry the same dozen names, so a set difference tells that none of them is
# one of the two, instead of lowering every name in a Python loop (about 0.7 µs per event).
# Bounded, for traffic with ever new names; only plain str names are kept.
_OTHER_NAMES: set[str] = set()
_OTHER_NAMES_KEPT = 1024
_CONTENT_NAMES = frozenset({"content-type", "content-encoding"})


def _content_headers(event: Event) -> tuple[str | None, str | None]:
    """`event.header("Content-Type")` and `event.header("Content-Encoding")`, with one pass over
    the headers when either is not spelled that way (a response seldom has a Content-Encoding:
    two calls lowered every name twice), skipped when every other name is known not to be
    either (`_OTHER_NAMES`)."""
    headers = event.response_headers
    if not headers:
        return None, None
    content_type = headers.get("Content-Type")
    encoding = headers.get("Content-Encoding")
    if (content_type is None or encoding is None) and not (
        headers.keys() - _OTHER_NAMES <= {"Content-Type", "Content-Encoding"}
    ):
        for key, values in headers.items():
            lowered = key.lower()
            if content_type is None and lowered == "content-type":
                content_type = values
            elif encoding is None and lowered == "content-encoding":
                encoding = values
            elif (
                lowered not in _CONTENT_NAMES
                and type(key) is str
                and len(_OTHER_NAMES) < _OTHER_NAMES_KEPT
            ):
                _OTHER_NAMES.add(key)
    return (
        content_type[0] if content_type else None,
        encoding[0] if encoding else None,
    )


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
        content_type, encoding = _content_headers(event)
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
            "timestamp": utc_now_iso(),
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
    """Import a custom transformer from `package.module:attribute` (`EVENTBUS_TRANSFORMER`).

    A class (or any callable that takes no event) is not guessed at: the attribute must be a
    callable `transform(event) -> dict`, e.g. a function or an instance.

    Raises:
        SettingsError: `spec` is not `module:attribute`, its module cannot be imported (not
            found, or it raised while importing), or it lacks the attribute, or the attribute
            is not callable; the message names EVENTBUS_TRANSFORMER and its value.
    """
    given = f"EVENTBUS_TRANSFORMER={spec!r}"
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise SettingsError(
            f"{given} must be 'package.module:function', e.g. 'myproject.observability:transform'"
        )
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise SettingsError(
            f"{given}: cannot import {module_name!r} ({exc}); is it installed in this "
            "environment, and spelled right?"
        ) from exc
    except Exception as exc:  # the user's module failed while importing: say whose it is
        raise SettingsError(
            f"{given}: importing {module_name!r} raised {type(exc).__name__}: {exc}"
        ) from exc
    try:
        target = getattr(module, attr)
    except AttributeError:
        raise SettingsError(f"{given}: module {module_name!r} has no {attr!r}") from None
    if not callable(target):
        raise SettingsError(f"{given} is not callable")
    transform: Transform = target
    return transform
