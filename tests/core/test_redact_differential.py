"""Differential tests of the dispatcher's redaction: the fast path (`Redactor.payload` and its
one-pass gate) against the careful walk (`Redactor.json`), and the gate's automaton against the
per-rule searches it replaced, on many generated inputs built to tell them apart: secrets deep
in arrays, keys differing in case, non-ASCII text, JSON text inside strings with escapes, a
secret split by an escape, cut-off bodies, header lines and URLs in prose.

Each test also shows it has teeth: a gate that clears everything makes it fail."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest

from eventbus_core import Event, LLMTransformer, Redactor
from eventbus_core.dispatch._payload import PayloadPreparer
from eventbus_core.redact import _gate, _redact
from eventbus_core.redact._encoded_names import BRACKET_END_IN_BYTES, ESCAPE_IN_BYTES
from eventbus_core.redact._gate import SPECIAL_CASE_CHARS, needs_no_redaction
from eventbus_core.redact._query import QUERY_PAIR_BYTES
from eventbus_core.redact._redact import MASK
from eventbus_core.redact._secrets import (
    BASIC_CREDENTIALS,
    ENCODED_URL_IN_TEXT,
    is_basic_credentials,
)

# ------------------------------------------------------------- the gate as it was before

_SCANS_KEY = [
    re.compile(
        rb"(?:(?<![A-Za-z0-9])|(?<=\\[nrtbf])|(?<=\\u[0-9A-Fa-f]{4}))sk-(?:ant-|proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{16,}"
    ),
    re.compile(rb"AIza[0-9A-Za-z_\-]{35}"),
    re.compile(rb"AKIA[0-9A-Z]{16}"),
    re.compile(rb"ASIA[0-9A-Z]{16}"),
    re.compile(rb"gh[pousr]_[A-Za-z0-9]{30,}"),
    re.compile(rb"github_pat_[A-Za-z0-9_]{30,}"),
    re.compile(rb"xox[abposr]-[A-Za-z0-9\-]{10,}"),
    re.compile(rb"hf_[A-Za-z0-9]{30,}"),
    re.compile(rb"gsk_[A-Za-z0-9]{20,}"),
    re.compile(rb"xai-[A-Za-z0-9]{20,}"),
    re.compile(rb"glpat-[A-Za-z0-9_\-]{20,}"),
    re.compile(rb"sk_live_[A-Za-z0-9]{16,}"),
    re.compile(rb"rk_live_[A-Za-z0-9]{16,}"),
    re.compile(rb"r8_[A-Za-z0-9]{20,}"),
    re.compile(rb"ya29\.[A-Za-z0-9_\-]{20,}"),
    re.compile(rb"(?i:bearer) [A-Za-z0-9_\-.=+/]{8,}"),  # the scheme in any case
]
# Basic credentials, added later: the shape after "basic ", decoding to `user:password`.
_SCAN_BASIC = re.compile(rb"(?i:basic) (" + BASIC_CREDENTIALS.encode("ascii") + rb")")
_SCANS_NAME = [
    re.compile(rb"secret"),
    re.compile(rb"cookie"),
    re.compile(rb"id[_-]?token"),
    re.compile(rb"(?:api|private|access)[_-]?key"),
    re.compile(rb"api[_-]?token"),  # added later, with the one below
    re.compile(rb"passphrase"),
    re.compile(rb"auth(?:orization|[_-]?token)"),
    re.compile(rb"passw(?:ord|d)"),
    re.compile(rb"access[_-]?token"),
    re.compile(rb"refresh[_-]?token"),
    re.compile(rb"headers"),
]


# Credentials in URLs, added to the rules after the scans were replaced: the one scan for them.
_SCAN_URL = re.compile(rb"[a-z][a-z0-9+.-]*://[^/\s:@]*(?::[^/\s@]*)?@", re.IGNORECASE)
# The same percent-encoded (once or twice), added later: the rule's own pattern, over the bytes;
# and an encoded `=`, where an encoded URL's query string may hold a credential.
_SCAN_ENCODED_URL = re.compile(ENCODED_URL_IN_TEXT.pattern.encode("ascii"), re.IGNORECASE)
_ENCODED_EQUALS = (b"%3d", b"%253d")


def scans_verdict(value: Any) -> bool:
    """`needs_no_redaction` as it was: one regex scan per key pattern and credential name."""
    try:
        blob = orjson.dumps(value, option=_gate._OPTIONS)
    except TypeError:
        return False
    if not blob.isascii() and any(c.encode() in blob for c in SPECIAL_CASE_CHARS):
        return False
    if any(p.search(blob) for p in (*_SCANS_KEY, _SCAN_URL, _SCAN_ENCODED_URL)):
        return False
    if any(is_basic_credentials(m.group(1)) for m in _SCAN_BASIC.finditer(blob)):
        return False
    if b"=" in blob and QUERY_PAIR_BYTES.search(blob) is not None:
        return False
    # Names a server decodes to a credential name (`?api%5Fkey=`, `api_key[]=`), added later:
    # a part with an `=` and an escape or a `]=` is not judged.
    if b"=" in blob and (ESCAPE_IN_BYTES.search(blob) or BRACKET_END_IN_BYTES.search(blob)):
        return False
    low = blob.lower()
    if any(equals in low for equals in _ENCODED_EQUALS):
        return False
    return not any(p.search(low) for p in _SCANS_NAME)


# ------------------------------------------------------------------------- generated inputs

SECRETS = [
    "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z",
    "sk-ant-abcdefghijklmnopqrstuv",
    "AIza" + "Sy" * 17 + "A",
    "AKIAIOSFODNN7EXAMPLE",
    "ASIAIOSFODNN7EXAMPLE",
    "ghr_" + "a1" * 15,
    "github_pat_" + "Z" * 30,
    "xoxs-1234567890-abc",
    "hf_" + "q" * 30,
    "gsk_Ab1Ab1Ab1Ab1Ab1Ab1Ab1Ab1",
    "xai-Cd2Cd2Cd2Cd2Cd2Cd2Cd2Cd2",
    "glpat-Ef3-Ef3-Ef3-Ef3-Ef3-Ef3-",
    "sk_live_Gh4Gh4Gh4Gh4Gh4Gh4",
    "rk_live_Ij5Ij5Ij5Ij5Ij5Ij5",
    "r8_Kl6Kl6Kl6Kl6Kl6Kl6Kl6Kl6",
    "ya29.Mn7_Mn7_Mn7_Mn7_Mn7_Mn7_",
    "Bearer eyJhbGciOi.J9x",
    "BEARER abcdefghij",
    "Basic dXNlcjpwYXNzd29yZA==",
    "basic Zm9vOmJhcjE=",
]
NEAR_MISSES = [
    "task-manager",
    "sk-short",
    "Asia Pacific",
    "AKIA-not-a-key",
    "monkey business",
    "keyboard",
    "accessories",
    "max_tokens",
    "total_tokens",
    "passes the test",
    "though it is high",
    "gh_not_a_token",
    "bearer ",
    "Bearer short",
    "BEARER abcdefgh12",
    "bEaReR abcdefgh12",
    "a basic understanding",
    "Basic Authentication",
    "basic abcdefgh",
    "basic McDonalds",
    "Basic LinkedIn",
    "basic aGVsbG8=",  # base64, but of no user:password
    "hf_short",
    "gsk_short",
    "risk_live_short",
    "the r8_engine",
    "ya29.short",
    "xox",
]
NAMES = [
    "password",
    "PASSWORD",
    "Password",
    "passwd",
    "api_key",
    "API-KEY",
    "apiKey",
    "x-api-key",
    "client_secret",
    "Client-Secret",
    "access_token",
    "AccessToken",
    "refresh-token",
    "id_token",
    "auth_token",
    "Authorization",
    "private_key",
    "Cookie",
    "secret",
    "api_token",
    "Access-Key",
    "passphrase",
    "pa\u017fsword",
    "api_\u212aey",
    "\u0130d_token",
]
PLAIN_KEYS = ["content", "role", "model", "messages", "text", "notes", "Usage", "arguments"]
PROSE = [
    "hello",
    "caf\u00e9 \u2603 \U0001f600",
    "\u2028line\u2029sep",
    'quote " backslash \\ tab\t nl\n ctl\x01',
    "/v1/chat/completions",
    "answer: 42",
    "",
]


def _secret_text(rng: random.Random) -> str:
    """Prose carrying a credential in one of the shapes the text rules know."""
    secret = rng.choice(SECRETS)
    name = rng.choice(NAMES)
    return rng.choice(
        [
            f"my key is {secret}, please",
            f'{{"{name}": "{secret}"}}',  # JSON text inside a string
            f'{{\\"{name}\\": \\"value here\\"}}',  # escaped JSON text inside a string
            f"{name}={secret}&q=1",
            f"{name}: Basic dXNlcjpwYXNz",
            f"{name.title()}: a=1; b=2\r\nnext: line",
            f"GET /v1/models?alt=json&key={secret[:12]} HTTP/1.1",
            f"https://api.example.com/x?token={secret}#frag",
            f"redis://user:{secret}@host:6379/0",
            "postgres://admin:plainpass42@db:5432/app",  # a password no key pattern knows
            "redis://s3cr3tt0ken@cache:6379",  # a lone token in the user part
            "see https://docs.example.com/a:b and mail ops@example.com",  # no credential
            # percent-encoded, once (urlencode's, quote's) or twice (a redirect URI inside one)
            "next=https%3A%2F%2Fuser%3AplainPw42%40host%2Fcb",
            "see https%3A//tok3nOnly%40host",
            "see https%253A%252F%252Fuser%253AtwicePw42%2540host",
            "see redis%253A//user%253AtwicePw43%2540host",
            "see https%253A%252F%252Fapp%252Fcb%253Ftoken%253DtwiceTok44",
            "see https%253A%252F%252Fhost%252Fusers%252F%2540me",  # no credential
            secret[: rng.randint(1, len(secret))],  # cut off, as a truncated body is
            json.dumps({name: secret})[: rng.randint(1, 30)],
            # split by an escape: the walk sees the text as it is, backslash and all
            secret[:2] + "\\u00" + secret[2:],
            json.dumps(secret)[1:-1].replace("-", "\\u002d"),
        ]
    )


def _text(rng: random.Random, dangerous: bool) -> str:
    parts = [rng.choice([*PROSE, *NEAR_MISSES]) for _ in range(rng.randint(1, 3))]
    if dangerous:
        parts.insert(rng.randint(0, len(parts)), _secret_text(rng))
    return rng.choice([" ", "", "\n", "\\n"]).join(parts)


def _value(rng: random.Random, depth: int, dangerous: bool) -> Any:
    kind = rng.random()
    if depth > 4 or kind < 0.3:
        return _text(rng, dangerous and rng.random() < 0.3)
    if kind < 0.4:
        return rng.choice([None, True, False, 0, -7, 2.5, 10**20, 1e-7])
    if kind < 0.65:
        return [_value(rng, depth + 1, dangerous) for _ in range(rng.randint(0, 4))]
    out: dict[str, Any] = {}
    for _ in range(rng.randint(0, 5)):
        if dangerous and rng.random() < 0.2:
            key = rng.choice([*NAMES, "headers", "Request_Headers", "RESPONSE_HEADERS"])
        else:
            key = rng.choice(PLAIN_KEYS)
        if key.lower().endswith("headers") and rng.random() < 0.7:
            out[key] = {
                rng.choice(["Authorization", "X-Api-Key", "Date", "X-Amz-Security-Token"]): [
                    _text(rng, dangerous)
                ]
            }
        else:
            out[key] = _value(rng, depth + 1, dangerous)
    return out


def payloads(seed: int, n: int) -> Iterator[dict[str, Any]]:
    """`n` payloads shaped like the transformer's: about half without any credential (so the
    gate clears them), the others with one or more somewhere."""
    rng = random.Random(seed)
    for _ in range(n):
        dangerous = rng.random() < 0.5
        yield {
            "type": "llm.request",
            "log_id": rng.randint(1, 10**6),
            "path": rng.choice(["/v1/chat/completions", "/v1/x?key=abc123456&alt=json"])
            if dangerous
            else "/v1/chat/completions",
            "status": 200,
            "model": rng.choice(["gpt-4o-mini", _text(rng, dangerous)]),
            "input": {"messages": [_value(rng, 2, dangerous) for _ in range(rng.randint(1, 3))]},
            "output": _value(rng, 1, dangerous),
            "response_headers": {
                "Content-Type": ["application/json"],
                "Authorization": ["Bearer sk-abcdefghijklmnopqrstuvwx"],
                rng.choice(["X-Request-Id", "Set-Cookie", "x-api-key"]): [_text(rng, dangerous)],
            },
            "metadata": {"note": _value(rng, 3, dangerous)},
        }


def _outcome(redact: Callable[[Any], Any], payload: Any) -> str:
    # The json module: it also writes integers past 64 bits, which the generator makes.
    return json.dumps(redact(payload), sort_keys=True)


# ------------------------------------------------------------------------------------ tests


@pytest.mark.parametrize("seed", range(6))
def test_the_gate_gives_the_verdict_of_the_scans_it_replaced(seed: int) -> None:
    verdicts = {True: 0, False: 0}
    for payload in payloads(seed, 300):
        for part in (payload, payload["input"], payload["output"], payload["metadata"]):
            verdict = needs_no_redaction(part)
            assert verdict == scans_verdict(part), part
            verdicts[verdict] += 1
    assert min(verdicts.values()) > 100, verdicts  # both ways are exercised


def test_the_gate_on_each_hint_alone_and_in_every_case() -> None:
    for word in [*SECRETS, *NEAR_MISSES, *NAMES, "headers", "HEADERS", "Cookie"]:
        for spelled in {word, word.upper(), word.lower()}:
            for part in ([spelled], {spelled: "x"}, {"x": f"a {spelled} b"}):
                assert needs_no_redaction(part) == scans_verdict(part), part


@pytest.mark.parametrize("seed", range(6))
def test_the_fast_path_gives_what_the_walk_gives(seed: int) -> None:
    redactor = Redactor()
    for payload in payloads(100 + seed, 300):
        assert _outcome(redactor.payload, payload) == _outcome(redactor.json, payload), payload


def test_events_through_the_preparer_as_through_the_walk() -> None:
    # Whole events, bodies as raw bytes (JSON with escapes, cut-off JSON, text), through the
    # dispatcher's preparer and through the transformer plus the walk.
    rng = random.Random(5)
    transform = LLMTransformer()
    preparer = PayloadPreparer(transform, Redactor())
    for n, payload in enumerate(payloads(200, 300)):
        body = json.dumps(payload["input"], ensure_ascii=rng.random() < 0.5).encode()
        if n % 4 == 1:
            body = body[: rng.randint(1, len(body))]  # truncated: not JSON any more
        elif n % 4 == 2:
            body = _text(rng, True).encode()
        event = Event(
            request_id=f"r{n}",
            method="POST",
            path=payload["path"],
            status=200,
            duration=1,
            request_body=body,
            response_body=json.dumps(payload["output"]).encode(),
            response_headers=payload["response_headers"],
        )
        fast = dict(preparer(event))
        walked = Redactor().json(dict(transform(event)))
        fast.pop("timestamp"), walked.pop("timestamp")
        assert json.dumps(fast, sort_keys=True) == json.dumps(walked, sort_keys=True), event


def test_a_gate_that_misses_a_hint_fails_these_tests(monkeypatch: pytest.MonkeyPatch) -> None:
    # The differential tests have teeth: a gate that clears everything (as one that lost a
    # hint would, for that hint) is caught by both comparisons.
    monkeypatch.setattr(_redact, "needs_no_redaction", lambda value: True)
    monkeypatch.setattr(_gate, "may_need_masking", lambda blob, low: False)
    redactor = Redactor()
    fast_differs = gate_differs = 0
    for payload in payloads(0, 100):
        fast_differs += _outcome(redactor.payload, payload) != _outcome(redactor.json, payload)
        gate_differs += _gate.needs_no_redaction(payload["output"]) != scans_verdict(
            payload["output"]
        )
    assert fast_differs > 10 and gate_differs > 10


def test_a_hint_hidden_by_an_overlapping_one_is_still_seen() -> None:
    # Lower-cased, "asiAKIA..." starts with the hint "asia", whose match (not an AWS key: it is
    # not upper case) overlaps the hint "akia" of a real key: matches that do not overlap
    # would report only the first.
    text = "id asiAKIAIOSFODNN7EXAMPLE here"
    assert not needs_no_redaction([text])
    assert not scans_verdict([text])
    redacted = Redactor().payload({"output": {"content": text}})
    assert "AKIAIOSFODNN7EXAMPLE" not in json.dumps(redacted)
    assert redacted == Redactor().json({"output": {"content": text}})


def test_remembered_header_verdicts_follow_a_change_of_extra_headers() -> None:
    redactor = Redactor()
    payload = {"response_headers": {"X-Tenant-Key": ["t-1"], "Authorization": ["Bearer x"]}}
    assert redactor.payload(payload)["response_headers"]["X-Tenant-Key"] == ["t-1"]
    redactor.extra_headers = frozenset({"x-tenant-key"})
    masked = redactor.payload(payload)["response_headers"]
    assert masked == {"X-Tenant-Key": ["[REDACTED]"], "Authorization": ["[REDACTED]"]}
    assert redactor.payload(payload) == redactor.json(payload)


def test_the_gate_clears_the_mask() -> None:
    # Masked header values go to the gate with the others (`_header_dict_fast`): the mask must
    # never send a payload down the walk, nor hide anything.
    assert needs_no_redaction([MASK, [MASK, MASK], {"x": MASK}])


def test_headers_of_names_seen_before_are_masked_as_the_walk_masks_them() -> None:
    # One redactor over many payloads: from the second time a set of names comes, its headers
    # take the remembered verdicts; values of every shape, names in every spelling.
    rng = random.Random(8)
    names = ["Authorization", "authorization", "Set-Cookie", "X-Api-Key", "X-Request-Id", "Date"]
    values: list[Any] = [["a"], ["Bearer x", "b"], "plain", [], ["sk-" + "a" * 20], {"n": 1}]
    redactor = Redactor(extra_headers=["X-Request-Id"])
    for _ in range(2_000):
        headers = {name: rng.choice(values) for name in rng.sample(names, rng.randint(0, 6))}
        payload = {"response_headers": headers, "output": {"text": rng.choice(["hi", "x=1"])}}
        assert _outcome(redactor.payload, payload) == _outcome(redactor.json, payload), payload


def test_fields_of_names_seen_before_are_redacted_as_the_walk_redacts_them() -> None:
    # One redactor over many payloads: fields of names seen before go to the gate without a
    # look at their names; credential names and header mappings must still be caught, whatever
    # their value's type, the first time and every time after.
    rng = random.Random(9)
    names: list[Any] = [
        "model", "note", "password", "api_key", "Api-Key", "headers", "Request_Headers",
        "response_headers", "metadata", 7, None, "secret_key", "DB_Password", "x-api-key-id",
        "secretary", "passwordless",
    ]  # fmt: skip
    values: list[Any] = [
        "", "hunter2", "sk-" + "b" * 20, 3, None, True, 2.5, ["x", "sk-" + "c" * 20],
        {"Authorization": ["Bearer abcdefgh"], "X-Id": ["1"]}, {"X-Amz-Security-Token": ["t0"]},
        {"password": "p"}, {"a": "b"},
    ]  # fmt: skip
    redactor = Redactor()
    for _ in range(3_000):
        payload = {name: rng.choice(values) for name in rng.sample(names, rng.randint(0, 6))}
        assert redactor.payload(payload) == redactor.json(payload), payload  # keys of two types
