"""The Go llm-proxy wire format: every Go sample round-trips without loss."""

from __future__ import annotations

import base64
import json
import random
from typing import Any

import pytest

from eventbus_core import Event, WireFormatError
from eventbus_core._base64 import FAST_FROM


def test_every_go_sample_reads_and_writes_without_loss(go_vectors: list[dict[str, Any]]) -> None:
    assert len(go_vectors) >= 7
    for sample in go_vectors:
        raw = json.dumps(sample).encode()
        event = Event.from_json(raw)
        assert json.loads(event.to_json()) == sample
        assert Event.from_json(event.to_json()) == event


def test_go_sample_fields_decode_to_python_values(go_vectors: list[dict[str, Any]]) -> None:
    by_id = {v["RequestID"]: Event.from_json(json.dumps(v)) for v in go_vectors}
    big = by_id["r-big"]
    assert big.log_id == 9007199254740993  # beyond a float's exact range: kept exactly
    assert big.path == "/health?x=1&y=<2>"
    binary = by_id["bin"]
    assert binary.request_body == b"\x00\x01\x02\xff\xfe\x80\n"
    assert binary.response_body == b""  # Go's empty, not nil, slice
    assert binary.response_headers == {}
    assert binary.duration_ns == 10_800_000_000_007
    chat = by_id["req-456"]
    assert chat.response_headers is not None
    assert chat.response_headers["Set-Cookie"] == ("a=1", "b=2")
    assert json.loads(chat.request_body or b"")["model"] == "gpt-4o"
    neg = by_id["neg"]
    assert (neg.log_id, neg.duration_ns) == (-1, -5000)


def test_nil_and_empty_are_distinct_on_the_wire() -> None:
    nil = json.loads(Event().to_json())
    assert nil["ResponseHeaders"] is None and nil["ResponseBody"] is None
    empty = json.loads(Event(response_headers={}, response_body=b"").to_json())
    assert empty["ResponseHeaders"] == {} and empty["ResponseBody"] == ""


def test_writes_go_key_names_and_integer_nanoseconds() -> None:
    doc = json.loads(Event(request_id="r", duration=1_500, response_body=b"\xff").to_json())
    assert list(doc) == [
        "LogID",
        "RequestID",
        "Method",
        "Path",
        "Status",
        "Duration",
        "ResponseHeaders",
        "ResponseBody",
        "RequestBody",
    ]
    assert doc["Duration"] == 1500
    assert doc["ResponseBody"] == base64.b64encode(b"\xff").decode()


def test_reads_what_go_reads() -> None:
    text = (
        '{"logid": 5, "REQUESTID": "r", "method": null, "Status": 201, "extra": {"x": [1.5]},'
        ' "ResponseBody": "aGVs\\nbG8=", "requestBody": [104, 105], "Duration": -0}'
    )
    event = Event.from_json(text)
    assert (event.log_id, event.request_id, event.method, event.status) == (5, "r", "", 201)
    assert event.response_body == b"hello"  # line breaks in base64 are ignored, as in Go
    assert event.request_body == b"hi"  # Go fills a []byte from an array of numbers too
    assert Event.from_json(bytearray(b"{}")) == Event()


@pytest.mark.parametrize(
    "event",
    [
        Event(),
        Event(
            log_id=2**63 - 1,
            request_id='q"\\\x00\x1f',
            method="\u00e9",
            path="/\u2028\U0001f600",
            status=599,
            duration=2**63 - 1,
            response_headers={"A": [], 'B"': ["x", "\u00fc"]},
            response_body=b"",
            request_body=bytes(range(256)),
        ),
        # Values the constructor refuses, but Go may write: decoded, they encode as they came.
        Event.from_json('{"LogID": -9223372036854775808, "Status": -1, "Duration": -5}'),
        Event(response_headers={}, response_body=b"\xff" * 1024),
        Event(request_body=b"only the request"),
    ],
)
def test_encoding_is_what_json_dumps_writes_for_the_go_struct(event: Event) -> None:
    # The encoder splices base64 bodies in by hand for speed; it must stay equal to plain JSON.
    expected = _reference_json(event)
    assert event.to_json() == expected
    assert Event.from_json(expected) == event


def test_the_fast_encoder_escapes_every_string_as_the_json_module() -> None:
    # Three writers: an event with bodies under FAST_FROM bytes is written whole by msgspec; the
    # head of one with a larger body by orjson, the bodies spliced in; what neither can write
    # (lone surrogates) goes the json module's way. Every character below U+0250 (controls,
    # quotes, backslash, DEL, Latin-1), line separators, a BOM, astral characters and lone
    # surrogates, in every string field, header names and values, on all three.
    rng = random.Random(7)
    alphabet = [chr(c) for c in range(0x250)] + ["\u2028", "\u2029", "\ufeff", "\U0001f600"]
    alphabet += ["\ud800", "\udfff"] * 3

    def text() -> str:
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 6)))

    for n in range(3000):
        event = Event(
            log_id=n,
            request_id=text(),
            method=text(),
            path=text(),
            status=rng.choice([0, 200, 599]),
            duration=rng.randrange(2**63),
            response_headers=None if n % 7 == 0 else {text(): [text(), text()], text(): []},
            response_body=None if n % 5 == 0 else text().encode(errors="surrogatepass"),
            request_body=b"x" * FAST_FROM if n % 3 == 0 else b"x",
        )
        expected = _reference_json(event)
        assert event.to_json() == expected
        assert event.to_json(log_id=False) == expected[expected.index(b",") + 1 :]


def _reference_json(event: Event) -> bytes:
    headers = event.response_headers
    doc = {
        "LogID": event.log_id,
        "RequestID": event.request_id,
        "Method": event.method,
        "Path": event.path,
        "Status": event.status,
        "Duration": event.duration_ns,
        "ResponseHeaders": None if headers is None else {k: list(v) for k, v in headers.items()},
        "ResponseBody": None
        if event.response_body is None
        else base64.b64encode(event.response_body).decode(),
        "RequestBody": None
        if event.request_body is None
        else base64.b64encode(event.request_body).decode(),
    }
    try:
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
    except UnicodeEncodeError:
        # A lone surrogate has no UTF-8: the whole event is written in ASCII escapes, which
        # Go's decoder reads (the surrogate as U+FFFD).
        return json.dumps(doc, separators=(",", ":")).encode("ascii")


def test_repeated_keys_resolve_as_in_go() -> None:
    # Go applies keys in order, matching names case-insensitively: the last one wins.
    assert Event.from_json('{"LogID": 1, "logid": 2, "LogID": 3}').log_id == 3
    assert Event.from_json('{"logid": 1, "LogID": 2}').log_id == 2


def test_invalid_utf8_in_strings_reads_as_replacement_character() -> None:
    assert Event.from_json(b'{"Path": "/a\xffb"}').path == "/a\ufffdb"


def test_a_cut_off_utf8_sequence_reads_as_one_replacement_character_per_byte_as_in_go() -> None:
    # Go's decoder replaces each byte it cannot read; Python's "replace" gave one U+FFFD for a
    # whole cut-off sequence, so the same bytes read as a different path (trial 166).
    event = Event.from_json(
        b'{"Path": "a\xe2\x82b\xf0\x9f\x98", "ResponseHeaders": {"X": ["\xe2\x82"]}}'
    )
    assert event.path == "a" + "\ufffd" * 2 + "b" + "\ufffd" * 3
    assert dict(event.response_headers or {}) == {"X": ("\ufffd" * 2,)}


@pytest.mark.parametrize(
    ("field", "text", "shown"),
    [("LogID", "1E2", "1E2"), ("Status", "1e400", "1e400"), ("Duration", "-0.5", "-0.5")],
)
def test_a_number_with_a_fraction_is_shown_as_it_was_written(
    field: str, text: str, shown: str
) -> None:
    # The error showed the float it became: 100.0 for 1E2, inf for 1e400 (trial 166).
    with pytest.raises(
        WireFormatError,
        match=f"'{field}' must be an integer, got number with a fraction or exponent: {shown}$",
    ):
        Event.from_json(f'{{"{field}": {text}}}')


def test_non_ascii_and_separators_round_trip() -> None:
    event = Event(path="/v1/caf\u00e9\u2028x", request_id="\U0001f600")
    assert Event.from_json(event.to_json()) == event
    lone = Event(path="\ud800")  # not encodable as UTF-8; written as an escape Go accepts
    assert json.loads(lone.to_json())["Path"] == "\ud800"


def test_a_lone_surrogate_reads_as_a_replacement_character_as_go_reads_it() -> None:
    # json keeps "\ud800" as a lone surrogate, which cannot be printed or written as UTF-8:
    # `eventbus tail` ended on such an event, a sink failed its whole batch (helper-89).
    event = Event.from_json(
        b'{"Path": "/a\\ud800b", "RequestID": "\\ud83d\\ude00", "Method": "\\udfff",'
        b' "ResponseHeaders": {"X-\\udc00": ["v\\ud800\\u0041"]}}'
    )
    assert (event.path, event.request_id, event.method) == ("/a\ufffdb", "\U0001f600", "\ufffd")
    assert dict(event.response_headers or {}) == {"X-\ufffd": ("v\ufffdA",)}
    event.to_json().decode("utf-8")  # writable as UTF-8 again


def test_field_names_match_under_go_case_folding() -> None:
    # Go's decoder matches "\u017ftatus" (long s) to Status, and the Kelvin sign to k.
    event = Event.from_json('{"\u017ftatus": 201, "Pat\u0127": "/x", "\u212aey": 1}')
    assert event.status == 201 and event.path == ""


def test_an_invalid_event_is_refused_without_quoting_it() -> None:
    # The message quoted the input's start, a bearer token or cookie with it (helper-89).
    data = b'{"Authorization": "Bearer sk-proj-abcdefghijklmnopqrstuvwxyz" oops'
    with pytest.raises(WireFormatError) as info:
        Event.from_json(data)
    assert "sk-proj" not in str(info.value) and "Bearer" not in str(info.value)
    assert "line 1 column" in str(info.value)
    # Nor a value of the wrong type (helper-93: a token given as the Status was quoted).
    for doc in (
        '{"Status": "Bearer sk-proj-abcdefghijklmnopqrstuvwxyz"}',
        '{"RequestID": {"token": "sk-proj-abcdefghijklmnopqrstuvwxyz"}}',
        '{"ResponseHeaders": {"A": [{"k": "sk-proj-abcdefghijklmnopqrstuvwxyz"}]}}',
    ):
        with pytest.raises(WireFormatError) as info:
            Event.from_json(doc)
        assert "sk-proj" not in str(info.value), str(info.value)
    with pytest.raises(WireFormatError, match=r"'Status' must be an integer, got string of 2"):
        Event.from_json('{"Status": "ok"}')


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not json", "invalid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b"null", "must be a JSON object"),
        (b'{"Status": "200"}', "'Status' must be an integer, got string"),
        (b'{"Duration": 1.5}', "'Duration' must be an integer"),
        (b'{"Duration": 1e3}', "'Duration' must be an integer"),
        (b'{"LogID": 9223372036854775808}', "overflows a 64-bit integer"),
        (b'{"RequestID": 7}', "'RequestID' must be a string"),
        (b'{"ResponseBody": "***"}', "'ResponseBody' must be standard base64"),
        (b'{"ResponseBody": "QQ"}', "'ResponseBody' must be standard base64"),
        (b'{"ResponseHeaders": {"A": "b"}}', "header 'A' in 'ResponseHeaders' must be a list"),
        (b'{"ResponseHeaders": []}', "'ResponseHeaders' must be an object"),
        (b'{"Status": NaN}', "NaN is not a JSON value"),
        (b"\xff\xfe{", "invalid JSON"),
    ],
)
def test_bad_input_says_what_is_wrong(data: bytes, message: str) -> None:
    with pytest.raises(WireFormatError, match=message.replace("(", r"\(")) as info:
        Event.from_json(data)
    assert isinstance(info.value, ValueError)


def test_the_fast_base64_agrees_with_the_standard_library() -> None:
    import binascii
    import os

    from eventbus_core import _base64

    if not _base64.ACCELERATED:
        pytest.skip("pybase64 is not installed (pip install 'eventbus-core[speedups]')")
    for size in (0, 1, 2, 3, 57, 1024, _base64.FAST_FROM - 1, _base64.FAST_FROM, 70_001):
        data = os.urandom(size)
        encoded = _base64.b64encode(data)
        assert encoded == _base64.std_b64encode(data)
        assert _base64.b64decode(encoded.decode()) == data == _base64.std_b64decode(encoded)
    for bad in ("QQ", "***", "QUJD\n", "QU=J", "QUJD" * 10_000 + "*", "QUJD" * 10_000 + "Q"):
        for decode in (_base64.b64decode, _base64.std_b64decode):
            with pytest.raises(binascii.Error):
                decode(bad)


def test_a_long_number_is_summed_up_and_null_is_named_as_json_names_it() -> None:
    # A 5,000-digit number with a fraction was quoted whole; null was "NoneType" (trial 169),
    # and the other kinds Python's names (trial 172).
    with pytest.raises(WireFormatError, match=r"'Status' .* exponent of 5003 characters$"):
        Event.from_json('{"Status": 1' + "0" * 5000 + ".5}")
    with pytest.raises(WireFormatError, match="got null"):
        Event.from_json("null")
    for text, kind in [
        ('{"Status": true}', "boolean: true"),
        ('{"Path": [1]}', "array"),
        ('{"Path": {}}', "object"),
        ("[]", "array"),
        ('"x"', "string"),
    ]:
        with pytest.raises(WireFormatError, match=f"got {kind}"):
            Event.from_json(text)
