"""The dispatcher's fast codecs (msgspec, orjson) against the careful ones they stand in for, on
many inputs built to catch them out: the event decoder, body JSON, base64, the jsonl line."""

from __future__ import annotations

import base64
import binascii
import json
import random
from typing import Any

import pytest

from eventbus_core import Event, WireFormatError
from eventbus_core._event import _restore
from eventbus_core._jsonl import dumps_line, dumps_line_json
from eventbus_core._wire import _plain_b64decode, decode_event_careful
from eventbus_core.transform._llm import _loads, decode_body


def _outcome(decode: Any, data: Any) -> Any:
    try:
        event = decode(data)
    except WireFormatError as exc:
        return f"WireFormatError: {exc}"
    headers = None if event.response_headers is None else dict(event.response_headers)
    return (event, headers, type(event.response_headers).__name__)


def _doc(rng: random.Random) -> Any:
    body = rng.choice([None, b"", b'{"model":"gpt"}', bytes(range(256)), "caf\u00e9".encode()])
    b64: Any = None if body is None else base64.b64encode(body).decode()
    doc: dict[str, Any] = {
        "LogID": rng.choice([0, 7, None, 2**63 - 1, 2**63, 2**64, -1, 1.0, "7", True]),
        "RequestID": rng.choice(["r-1", "", None, 5, "\u2028"]),
        "Method": "POST",
        "Path": rng.choice(["/v1/x", None]),
        "Status": rng.choice([200, 0, None, -1, 1e3]),
        "Duration": rng.choice([1_500_000, None, 2**64, 1.5]),
        "ResponseHeaders": rng.choice(
            [
                *(None, {}, {"A": ["1", "2"]}, {"A": None}, {"A": [None]}, {"A": "x"}, []),
                *({"A": [1]}, {"A": ["1"], "a": ["2"]}, {"A": []}, {"": ["\u00e9\n"]}),
            ]
        ),
        "ResponseBody": b64,
        "RequestBody": rng.choice(
            [
                b64,
                None,
                "QQ==",
                "QQ=",
                "Q===",
                "QUJD\n",
                "QU JD",
                "=QQQ",
                "QR==",
                "QQ-_",
                "QUI=QUI=",
                "QUJDRA",
                7,
            ]
        ),
    }
    keys = list(doc)
    rng.shuffle(keys)
    out: Any = {k: doc[k] for k in keys if rng.random() < 0.9}
    if rng.random() < 0.2:
        out[rng.choice(["logid", "Logid", "STATUS", "requestBody", "Extra"])] = 3
    if rng.random() < 0.05:
        out = rng.choice([[], "x", 3])
    return out


@pytest.mark.parametrize("small", [1 << 30, 0], ids=["msgspec", "orjson"])
@pytest.mark.parametrize("seed", range(4))
def test_the_fast_decoder_reads_what_the_careful_one_reads(
    seed: int, small: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Both fast paths, whatever the size: msgspec's (events up to `_SMALL` bytes) and orjson's.
    monkeypatch.setattr("eventbus_core._wire._SMALL", small)
    rng = random.Random(seed)
    careful = lambda data: decode_event_careful(data, _restore)  # noqa: E731
    for _ in range(500):
        text = json.dumps(_doc(rng))
        if rng.random() < 0.1:  # duplicate keys, letter case, bad UTF-8, NaN, not JSON
            text = rng.choice(
                [
                    text[:-1] + ', "LogID": 9, "logid": 8}',
                    text[:-1] + ', "Status": 201}',
                    text.replace('"Method": "POST"', '"Method": "PO\\ud800ST"'),
                    text.replace('"Method": "POST"', '"Method": "PO\ud800ST"'),  # raw, in a str
                    text.replace('"Method": "POST"', '"Method": "P\\u004fST"'),
                    text.replace('"POST"', '"POST" '),
                    text[:-1] + ', "X": NaN}',
                    text[:10],
                ]
            )
        encoded = text.encode(errors="surrogatepass")
        for data in (text, encoded, encoded[:-3] + b"\xff}"):
            assert _outcome(Event.from_json, data) == _outcome(careful, data), data


@pytest.mark.parametrize("small", [1 << 30, 0], ids=["msgspec", "orjson"])
@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("nested, unknown key", "nested deeper"),
        ("nested, header list", "nested deeper"),
        ("nested, top level", "nested deeper"),
        ("long integer, LogID", "'LogID' overflows a 64-bit integer: a number of 5001 digits"),
    ],
)
def test_hostile_json_is_a_wire_format_error(
    where: str, message: str, small: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The json module raises RecursionError past the recursion limit, and Python's int() a
    # plain ValueError for more than 4,300 digits: each must come out as the decoder's own
    # error, which readers dead-letter or skip (a dispatcher took the others for an outage and
    # retried the same entry for ever). The long integer's error names the field it was in.
    monkeypatch.setattr("eventbus_core._wire._SMALL", small)
    deep = "[" * 5000 + "]" * 5000
    text = {
        "nested, unknown key": '{"LogID": 1, "X": ' + deep + "}",
        "nested, header list": '{"ResponseHeaders": {"A": ' + deep + "}}",
        "nested, top level": deep,
        "long integer, LogID": '{"LogID": 1' + "0" * 5000 + "}",
    }[where]
    for data in (text, text.encode()):
        with pytest.raises(WireFormatError, match=message):
            Event.from_json(data)


@pytest.mark.parametrize("small", [1 << 30, 0], ids=["msgspec", "orjson"])
def test_an_integer_of_any_length_in_an_unknown_key_is_skipped_as_go_skips_it(
    small: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Refused with Python's advice to raise sys.set_int_max_str_digits() (trial 166).
    monkeypatch.setattr("eventbus_core._wire._SMALL", small)
    text = '{"Status": 200, "X": [1' + "0" * 5000 + ", -2e400]}"
    for data in (text, text.encode()):
        assert Event.from_json(data).status == 200


def test_events_round_trip_through_the_fast_decoder() -> None:
    event = Event(
        request_id="r",
        method="GET",
        path="/p?q=1",
        status=201,
        duration=12,
        response_headers={"X": ["a", "b"], "Y": []},
        response_body=bytes(range(256)) * 5,
        request_body=b"",
        log_id=3,
    )
    assert Event.from_json(event.to_json()) == event


@pytest.mark.parametrize("simd", [True, False], ids=["pybase64", "standard-library"])
def test_plain_base64_is_decoded_as_the_strict_decoder_does(
    simd: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Both ways of the fast path: pybase64 where installed (a dependency of eventbus-core),
    # the standard library's checked decode where not.
    monkeypatch.setattr("eventbus_core._wire.ACCELERATED", simd)
    rng = random.Random(3)
    samples = ["", "QQ==", "QUI=", "QR==", "QUJD", "QQ=", "Q===", "=QQQ", "QU=D", "Q\u00e9==", "QQ"]
    samples += [base64.b64encode(rng.randbytes(rng.randint(0, 40))).decode() for _ in range(300)]
    for text in samples:
        try:
            strict: bytes | None = binascii.a2b_base64(text, strict_mode=True)
        except (binascii.Error, ValueError):
            strict = None
        plain = _plain_b64decode(text)
        assert plain is None or plain == strict, text
        if strict is not None and "=" not in text[:-2]:
            assert plain == strict, text  # plainly valid: never sent the slow way


def test_body_json_is_read_as_the_json_module_reads_it() -> None:
    texts = [
        '{"a": 1, "b": [true, null, 2.5, -0, 1e-7, 1E400], "a": 2}',
        '{"big": 18446744073709551616, "neg": -9223372036854775809, "ok": 9223372036854775808}',
        # Each alone too: one long run must not hide that another number was read as a float.
        '{"neg": -9223372036854775809}',
        "[-9223372036854775808, 18446744073709551615, -99999999999999999999]",
        '{"big": 18446744073709551616}',
        '{"id": "12345678901234567890123"}',
        "[NaN, Infinity, -Infinity]",
        '"\\ud800 lone"',
        '"caf\u00e9 \\u00e9 \\n"',
        "\ufeff{}",
        "{bad",
        '{"x": 0.1, "y": 1.7976931348623157e308, "z": 5e-324}',
    ]
    for text in texts:
        try:
            expected: Any = json.loads(text)
        except ValueError:
            with pytest.raises(ValueError, match=r"."):
                _loads(text.encode(), text)
            continue
        got = _loads(text.encode(), text)
        assert json.dumps(got) == json.dumps(expected), text
        assert type(got) is type(expected)


def _decoded(body: bytes, content_type: str | None) -> str:
    value, info = decode_body(body, content_type=content_type)
    return json.dumps([value, info], sort_keys=True)


def test_a_json_body_read_at_once_is_decoded_as_the_text_way_decodes_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # `decode_body` reads a body that starts with `{` or `[` straight from its bytes; anything
    # the bytes' parser refuses or reads differently goes the way every other body goes (the
    # text made first). The two must agree on every body, whatever its content type.
    bodies = [
        b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}',
        b" \n\t[1, 2.5, -0, 1e-7, null, true]",
        b'{"big": 18446744073709551616, "neg": -99999999999999999999}',
        b'{"a": NaN}',
        b'{"s": "\\ud800 lone"}',
        b'{"s": "caf\xc3\xa9"}',
        b'{"s": "caf\xe9"}',  # not UTF-8
        b'{"a": 1} trailing',
        b"{not json",
        b"[",
        b'\xc2\xa0{"a": 1}',  # a no-break space first: stripped as text only
        b'\x0b\x0c{"a": 1}',
        b'\xef\xbb\xbf{"a": 1}',  # a byte-order mark
        b'data: {"a": 1}\n\n',
        b'{"a": 1}\n\ndata: {"b": 2}\n\n',
        b"",
        b"plain text",
    ]
    content_types = [None, "application/json", "text/event-stream", "text/plain"]
    fast = [_decoded(b, ct) for b in bodies for ct in content_types]
    monkeypatch.setattr("eventbus_core.transform._llm._JSON_STARTS", ())
    slow = [_decoded(b, ct) for b in bodies for ct in content_types]
    assert fast == slow


def _random_json(rng: random.Random, depth: int = 0) -> str:
    """JSON text as anyone may write it: any spacing, escapes, numbers spelled many ways."""
    kind = rng.randrange(9 if depth < 4 else 6)
    if kind == 0:
        return rng.choice(["null", "true", "false"])
    if kind == 1:  # integers of any length, negative zero
        return rng.choice(["-0", "0", str(rng.randint(-(10**25), 10**25)), str(rng.randint(-9, 9))])
    if kind == 2:  # decimals with more digits than a float holds, exponents near the limits
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 25)))
        exponent = rng.choice(["", f"e{rng.randint(-330, 310)}", f"E+{rng.randint(0, 30)}"])
        return f"{rng.choice(['', '-'])}{rng.randint(0, 999)}.{digits}{exponent}"
    if kind == 3:
        return repr(rng.uniform(-1e300, 1e300)) if rng.random() < 0.5 else repr(rng.random())
    if kind in (4, 5):  # strings: escapes, non-ASCII, raw or escaped
        chars = ["a", "b", " ", "\\", '"', "\u00e9", "\u2028", "\U0001f600", "\x7f", "\x01"]
        text = "".join(rng.choice(chars) for _ in range(rng.randint(0, 12)))
        return json.dumps(text, ensure_ascii=rng.random() < 0.5)
    space = rng.choice(["", " ", "\n  ", "\t"])
    if kind in (6, 7):
        items = [_random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
        return "[" + f",{space}".join(items) + "]"
    keys = [rng.choice(["a", "b", "model", "é", ""]) for _ in range(rng.randint(0, 4))]
    pairs = [f"{json.dumps(k)}{space}:{space}{_random_json(rng, depth + 1)}" for k in keys]
    return "{" + f",{space}".join(pairs) + "}"


def test_random_body_json_is_read_as_the_json_module_reads_it() -> None:
    rng = random.Random(21)
    for _ in range(5000):
        text = _random_json(rng)
        expected = json.loads(text)
        got = _loads(text.encode(), text)
        assert json.dumps(got) == json.dumps(expected), text  # floats by their repr
        assert type(got) is type(expected), text


def test_integers_at_the_64_bit_edges_are_read_exactly() -> None:
    # orjson reads integers outside [-2**63, 2**64) as floats; the json module and msgspec keep
    # them. Every integer near an edge, alone or among others, must come back as json reads it.
    rng = random.Random(11)
    edges = [-(2**63), 2**63, 2**64, 10**18, 10**19, 10**20]
    numbers = [edge + delta for edge in edges for delta in range(-3, 4)]
    numbers += [-n for n in numbers]
    numbers += [rng.randint(-(2**70), 2**70) for _ in range(200)]
    for number in numbers:
        for text in (str(number), f'{{"n": {number}, "s": "x"}}', f"[1.5, {number}, 7]"):
            got = _loads(text.encode(), text)
            expected = json.loads(text)
            assert got == expected and json.dumps(got) == json.dumps(expected), text


def test_jsonl_lines_hold_what_the_json_module_wrote() -> None:
    payloads: list[Any] = [
        {"a": 'caf\u00e9 \u2028 \x01 "q" \\', "n": [1, 2.5, None, True], "t": (1, 2)},
        {1: "int key", None: "none key"},
        {"big": 2**70, "nested": {"x": {"y": []}}},
        {"bytes": b"ab", "set": {1}},
    ]
    for payload in payloads:
        line = dumps_line(payload)
        assert line.endswith(b"\n") and line.count(b"\n") == 1
        assert json.loads(line) == json.loads(dumps_line_json(payload))
    # A lone surrogate has no UTF-8: the line is written with ASCII escapes, and reads back the
    # same (it failed the line and its dead letter for ever, and the event stayed pending).
    for payload in ({"lone": "\ud800", "b": "caf\u00e9"}, {"\udfff": ["x\udc80y"]}):
        line = dumps_line(payload)
        assert line.isascii() and line.endswith(b"\n") and json.loads(line) == payload
