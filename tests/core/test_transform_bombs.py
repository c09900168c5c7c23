"""Compressed bodies are decoded with a bound: a small "bomb" never inflates in memory."""

from __future__ import annotations

import functools
import gzip
import json
import tracemalloc
import zlib
from collections.abc import Callable

import brotli
import pytest

from eventbus_core import Event, LLMTransformer, decode_body

LIMIT = 1 << 20  # EVENTBUS_BODY_MAX_BYTES of the tests: 1 MiB
INFLATED = 64 << 20  # what each bomb inflates to: 64 times the limit
_ZEROS = bytes(1 << 20)


def _pack(compressor: Callable[[bytes], bytes], finish: Callable[[], bytes]) -> bytes:
    # Compressed a MiB at a time, so building the bomb never holds 64 MiB either.
    return b"".join([*(compressor(_ZEROS) for _ in range(INFLATED >> 20)), finish()])


@functools.cache
def bomb(encoding: str) -> bytes:
    if encoding == "gzip":
        c = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    elif encoding == "deflate":
        c = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS)
    elif encoding == "raw-deflate":
        c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    elif encoding == "gzip-members":
        # 64 members of 1 MiB each, concatenated: each alone is under the limit.
        return b"".join(gzip.compress(_ZEROS, 9) for _ in range(INFLATED >> 20))
    else:
        b = brotli.Compressor(quality=5)
        return _pack(b.process, b.finish)
    return _pack(c.compress, c.flush)


def _peak(fn: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("kind", ["gzip", "gzip-members", "deflate", "raw-deflate", "br"])
def test_a_bomb_is_given_up_at_the_limit_with_bounded_memory(kind: str) -> None:
    data = bomb(kind)
    assert len(data) < 300_000  # small enough to pass any capture cap
    encoding = {"gzip-members": "gzip", "raw-deflate": "deflate"}.get(kind, kind)
    result: list[object] = []
    peak = _peak(
        lambda: result.append(decode_body(data, content_encoding=encoding, max_bytes=LIMIT))
    )
    assert peak < 5 * LIMIT, f"peak {peak / 2**20:.1f} MiB while decoding a {kind} bomb"
    value, info = result[0]  # type: ignore[misc]
    assert info["truncated"] is True and "error" not in info
    assert isinstance(value, str) and value.startswith("[body omitted: larger than 1048576")


def test_the_transformer_marks_a_bomb_truncated() -> None:
    event = Event(
        request_id="r",
        status=200,
        response_headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        response_body=bomb("gzip"),
        request_body=bomb("gzip"),  # sniffed by its magic bytes
    )
    peak_box: list[dict[str, object]] = []
    peak = _peak(lambda: peak_box.append(LLMTransformer(max_body_bytes=LIMIT)(event)))
    payload = peak_box[0]
    assert payload["metadata"]["response_body"]["truncated"] is True  # type: ignore[index]
    assert payload["metadata"]["request_body"]["truncated"] is True  # type: ignore[index]
    assert str(payload["output"]).startswith("[body omitted")
    assert peak < 5 * LIMIT


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br"])
def test_bodies_up_to_the_limit_still_decode(encoding: str) -> None:
    raw = json.dumps({"text": "x" * (LIMIT - 12)}).encode()
    assert len(raw) == LIMIT
    packed = {"gzip": gzip.compress, "deflate": zlib.compress, "br": brotli.compress}[encoding](raw)
    value, info = decode_body(packed, content_encoding=encoding, max_bytes=LIMIT)
    assert "truncated" not in info and value == json.loads(raw)
    over = raw + b" "
    packed = {"gzip": gzip.compress, "deflate": zlib.compress, "br": brotli.compress}[encoding](
        over
    )
    _, info = decode_body(packed, content_encoding=encoding, max_bytes=LIMIT)
    assert info["truncated"] is True


def test_several_gzip_members_and_cut_streams() -> None:
    two = gzip.compress(b'{"a": ') + gzip.compress(b"1}")
    assert decode_body(two, content_encoding="gzip")[0] == {"a": 1}
    cut = gzip.compress(b"hello world" * 100)[:-12]
    value, info = decode_body(cut, content_encoding="gzip")
    assert "could not undo" in info["error"] and value != "hello world" * 100
    cut_br = brotli.compress(b"hello world" * 1000)[:-4]
    _, info = decode_body(cut_br, content_encoding="br")
    assert "could not undo" in info["error"]
