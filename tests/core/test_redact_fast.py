"""The dispatcher's fast redaction (`Redactor.payload`, the gate of `redact/_gate.py`) gives
exactly what the careful walk (`Redactor.json`) gives, on many payloads built to catch it out."""

from __future__ import annotations

import dataclasses
import enum
import json
import random
import re
import sys
from typing import Any

import pytest

from eventbus_core import LLMTransformer, Redactor
from eventbus_core._demo._workload import simulated_request
from eventbus_core.redact._gate import SPECIAL_CASE_CHARS, needs_no_redaction
from eventbus_core.redact._redact import _KEY_PATTERNS, _SECRET_NAME, MASK

# Fragments a payload is built from: credentials of every rule, names that are and are not
# credentials, the characters that case-insensitive matching treats as ASCII, escapes.
FRAGMENTS = [
    "hello",
    "the quick brown fox",
    "max_tokens",
    "total_tokens",
    "monkey keys",
    "passes",
    "accessories",
    "task-1234",
    "though high",
    "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z",
    "sk-abcdefghijklmnopqrstuvwx",
    "AIzaSyA1234567890abcdefghijklmnopqrstuv",
    "AKIAIOSFODNN7EXAMPLE",
    "ASIAIOSFODNN7EXAMPLE",
    "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
    "github_pat_abcdefghijklmnopqrstuvwxyz0123456789",
    "xoxb-123456789012-abcdefghij",
    "hf_abcdefghijklmnopqrstuvwxyzABCDEF",
    "Bearer abcdefgh12345",
    "bearer zyxwvuts",
    "BEARER abcdefgh12345",
    "q=Bearer+abcdefgh12345",
    "q=BEARER%20abcdefgh12345",
    "password=hunter2",
    'api_key: "value here"',
    "Authorization: Basic dXNlcjpwYXNz",
    "Cookie: a=1; b=2",
    "x-api-key=abc&q=1",
    "client_secret",
    "access_token",
    "refresh-token",
    "idtoken",
    "auth_token",
    "private-key",
    "apikey",
    "passwd",
    "pa\u017fsword",  # long s: matches "s" under IGNORECASE
    "api_\u212aey",  # Kelvin sign: lowers to "k"
    "\u0130d_token",
    "\u0131d_token",
    'quote " and \\ backslash',
    "line\nbreak\ttab\x01ctl",
    "\u2028 \U0001f600 caf\u00e9",
    "",
    "headers",
    "Response_Headers",
]
KEYS = [
    "content",
    "role",
    "model",
    "usage",
    "password",
    "api_key",
    "apiKey",
    "API-KEY",
    "Authorization",
    "secret",
    "cookie",
    "max_tokens",
    "headers",
    "request_headers",
    "Response_Headers",
    "X-Amz-Security-Token",
    "pa\u017fsword",
    "api_\u212aey",
    "password\n",
    "notes",
]


class Color(enum.Enum):
    RED = "sk-abcdefghijklmnopqrstuvwx"


class Text(str):
    """A str subclass: the walk scrubs it as a string."""


@dataclasses.dataclass
class Box:
    secret: str = "hunter2"


# Fragments no rule masks: payloads made only of these are cleared by the gate, so the tests
# below cover both ways, and a single credential among harmless text.
HARMLESS = FRAGMENTS[:9] + FRAGMENTS[-6:-2]
HARMLESS_KEYS = ["content", "role", "model", "usage", "max_tokens", "notes"]
_POOL = [FRAGMENTS]


def _harmless() -> bool:
    return _POOL[0] is HARMLESS


def _text(rng: random.Random) -> str:
    return rng.choice(["", " ", "x=", ": "]).join(
        rng.choice(_POOL[0]) for _ in range(rng.randint(1, 3))
    )


def _value(rng: random.Random, depth: int) -> Any:
    kind = rng.random()
    if depth > 3 or kind < 0.35:
        return _text(rng)
    if kind < 0.45:
        return rng.choice([None, True, 3, 2.5, -1, 10**30, float("nan")])
    if kind < 0.5 and not _harmless():
        return rng.choice([Text(_text(rng)), (_text(rng), 1), Color.RED, Box(), b"sk-bytes"])
    if kind < 0.75:
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    out: dict[Any, Any] = {}
    for _ in range(rng.randint(0, 5)):
        key: Any = rng.choice(HARMLESS_KEYS if _harmless() else KEYS)
        if rng.random() < 0.1 and not _harmless():
            key = rng.choice([1, None])
        out[key] = _value(rng, depth + 1)
    return out


def _payload(rng: random.Random) -> dict[Any, Any]:
    # Half the payloads are harmless but for at most one credential, name or odd value.
    _POOL[0] = FRAGMENTS if rng.random() < 0.5 else HARMLESS
    payload: dict[Any, Any] = {
        "type": "llm.request",
        "path": "/v1/chat/completions" if _harmless() else "/v1/x?api_key=abc123456",
        "input": _value(rng, 1),
        "output": _value(rng, 1),
        "metadata": _value(rng, 2),
    }
    if rng.random() < 0.8:
        headers: dict[str, Any] = {"Content-Type": ["application/json"]}
        for _ in range(rng.randint(0, 4)):
            name = rng.choice([*KEYS, "X-Request-Id", "Set-Cookie", "Proxy-Authorization"])
            if _harmless() and rng.random() < 0.5:
                name = rng.choice(["X-Request-Id", "Date", "Authorization", "Set-Cookie"])
            headers[name] = rng.choice([[_text(rng)], _text(rng), [_text(rng), "v"]])
        payload[rng.choice(["response_headers", "headers", "Request_Headers"])] = headers
    if rng.random() < 0.3 and not _harmless():
        payload[rng.choice(KEYS)] = _text(rng)
    if _POOL[0] is HARMLESS and rng.random() < 0.5:
        _POOL[0] = FRAGMENTS
        payload["metadata"] = [payload["metadata"], _value(rng, 3)]
    return payload


def _outcome(redact: Any, payload: Any) -> str:
    # NaN is not equal to itself: compare the JSON text (repr for what JSON cannot hold); a
    # payload the walk cannot take (a header name that is not a string) must fail alike.
    try:
        return json.dumps(redact(payload), default=repr)
    except Exception as exc:
        return f"raised {type(exc).__name__}"


def _same(r: Redactor, payload: Any) -> bool:
    return _outcome(r.payload, payload) == _outcome(r.json, payload)


@pytest.mark.parametrize("seed", range(8))
def test_the_fast_path_gives_what_the_walk_gives(seed: int) -> None:
    rng = random.Random(seed)
    r = Redactor()
    for _ in range(400):
        payload = _payload(rng)
        assert _same(r, payload), payload


def test_the_fast_path_on_realistic_payloads_and_their_credentials() -> None:
    rng = random.Random(7)
    r = Redactor()
    transform = LLMTransformer()
    cleared = 0
    for n in range(300):
        payload = dict(transform(simulated_request(rng, n)))
        if n % 3 == 0:
            payload["response_headers"] = {
                **(payload["response_headers"] or {}),
                "Authorization": ["Bearer sk-abcdefghijklmnopqrstuvwx"],
            }
        if n % 5 == 0:
            payload["input"] = {"messages": [{"content": f"my key is {rng.choice(FRAGMENTS)}"}]}
        cleared += needs_no_redaction([payload["input"], payload["output"]])
        assert _same(r, payload)
    assert cleared > 100  # the gate does clear ordinary traffic (else it would be no faster)


def test_other_rules_and_subclasses_take_the_walk() -> None:
    payload = {"input": {"content": "cust-123456 sk-abcdefghijklmnopqrstuvwx"}, "n": 1}
    extra = Redactor(extra_patterns=[r"cust-\d{6}"])
    assert extra.payload(payload) == extra.json(payload)
    assert extra.payload(payload)["input"]["content"] == f"{MASK} {MASK}"
    no_bodies = Redactor(bodies=False)
    assert no_bodies.payload(payload) == no_bodies.json(payload) == payload

    class Stricter(Redactor):
        def text(self, text: str) -> str:
            return MASK

    assert Stricter().payload({"input": {"content": "hello"}}) == {"input": {"content": MASK}}


def test_the_four_special_characters_are_all_there_are() -> None:
    # Every non-ASCII character that IGNORECASE matches to, or lower() turns into, ASCII: one
    # regex pass over all of Unicode, and one over its lower-cased characters joined by a
    # separator (lower() may lengthen a character, so each is found back by counting).
    chars = "".join(map(chr, range(0x80, sys.maxunicode + 1)))
    found = set(re.findall(r"[a-z]", chars, re.IGNORECASE))
    sep = "\U0010ffff"
    lowered = sep.join(c.lower() for c in chars)
    for m in re.finditer(r"[\x00-\x7f]", lowered):
        found.add(chars[lowered.count(sep, 0, m.start())])
    assert found == set(SPECIAL_CASE_CHARS)


def test_every_credential_name_and_key_pattern_is_seen_by_the_gate() -> None:
    # Each alternative of the name and key rules, alone in a payload, is never cleared.
    names = re.findall(r"[a-z][a-z\[\]_\-?]*", _SECRET_NAME.replace("(?:", ""))
    spelled = {re.sub(r"\[_-\]\?", sep, n) for n in names for sep in ("", "_", "-")}
    for name in spelled:
        assert not needs_no_redaction({name: "x"}), name
        assert not needs_no_redaction([f"{name.upper()}=v"]), name
    samples = [
        "sk-ant-abcdefghijklmnopqrstuv",
        "AIza" + "a" * 35,
        "AKIA" + "A" * 16,
        "ASIA" + "B" * 16,
        "ghs_" + "a" * 30,
        "github_pat_" + "a" * 30,
        "xoxp-abcdefghij",
        "hf_" + "a" * 30,
        "gsk_Ab1Ab1Ab1Ab1Ab1Ab1Ab1Ab1",
        "xai-Cd2Cd2Cd2Cd2Cd2Cd2Cd2Cd2",
        "glpat-Ef3-Ef3-Ef3-Ef3-Ef3-Ef3-",
        "sk_live_Gh4Gh4Gh4Gh4Gh4Gh4",
        "rk_live_Ij5Ij5Ij5Ij5Ij5Ij5",
        "r8_Kl6Kl6Kl6Kl6Kl6Kl6Kl6Kl6",
        "ya29.Mn7_Mn7_Mn7_Mn7_Mn7_Mn7_",
        "Bearer abc.def+/=",
        "BEARER abc.def+/=",
        "bEaReR abc.def+/=",
        "q=Bearer+abc.def%2B%2F",
        "q=bearer%20abc.def+/=",
        "Basic dXNlcjpwYXNzd29yZA==",
        "BASIC Zm9vOmJhcjE=",
    ]
    assert len(samples) >= len(_KEY_PATTERNS)
    for sample in samples:
        assert not needs_no_redaction({"content": f"see {sample}!"}), sample


def test_the_rules_the_gate_was_written_for_are_unchanged() -> None:
    # `_gate.py` spells out a search for each key pattern and credential name: a change to the
    # rules must change the gate too, and this test, so that none is forgotten.
    assert _KEY_PATTERNS == (
        r"(?:(?<![A-Za-z0-9])|(?<=\\[nrtbf])|(?<=\\u[0-9A-Fa-f]{4})|(?<=%[0-9A-Fa-f]{2})"
        r"|(?<=%25[0-9A-Fa-f]{2})|(?<=%2525[0-9A-Fa-f]{2}))"
        r"sk-(?:ant-|proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{16,}",
        r"AIza[0-9A-Za-z_\-]{35,}",
        r"(?:AKIA|ASIA)[0-9A-Z]{16}",
        r"gh[pousr]_[A-Za-z0-9]{30,}",
        r"github_pat_[A-Za-z0-9_]{30,}",
        r"xox[abposr]-[A-Za-z0-9\-]{10,}",
        r"hf_[A-Za-z0-9]{30,}",
        r"gsk_[A-Za-z0-9]{20,}",
        r"xai-[A-Za-z0-9]{20,}",
        r"glpat-[A-Za-z0-9_\-]{20,}",
        r"sk_live_[A-Za-z0-9]{16,}",
        r"rk_live_[A-Za-z0-9]{16,}",
        r"r8_[A-Za-z0-9]{20,}",
        r"ya29\.[A-Za-z0-9_\-]{20,}",
        r"(?<=(?i:bearer) )[A-Za-z0-9_\-.=+/]{8,}",
        r"(?<=(?i:bearer)\+)(?:[A-Za-z0-9_\-.=/]|%(?!20)[0-9A-Fa-f]{2}){8,}",
        r"(?<=(?i:bearer)%20)(?:[A-Za-z0-9_\-.=/]|%(?!20)[0-9A-Fa-f]{2}){8,}",
        r"(?<=(?i:basic) )(?P<eventbus_basic>"
        r"(?=[A-Za-z0-9+/=]{8})(?=[A-Za-z0-9+/]*(?:[0-9+/]|[a-z][A-Z]))"
        r"(?:[A-Za-z0-9+/]{4})+(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?(?![A-Za-z0-9+/=]))",
    )
    assert _SECRET_NAME == (
        r"(?:api[_-]?key|apikey|x[_-]?api[_-]?key|authorization|password|passwd|secret"
        r"|client[_-]?secret|access[_-]?token|refresh[_-]?token|id[_-]?token|auth[_-]?token"
        r"|private[_-]?key|cookie|api[_-]?token|access[_-]?key|passphrase|session[_-]?token"
        r"|security[_-]?token)"
    )


def test_credential_query_parameters_are_never_cleared_by_the_gate() -> None:
    from eventbus_core.redact._query import QUERY_CREDENTIALS

    redactor = Redactor()
    for name in QUERY_CREDENTIALS:
        for spelled in (name, name.upper()):
            payload = {"path": f"/v1/x?alt=json&{spelled}=s3cr3t-value", "status": 200}
            assert not needs_no_redaction([payload["path"]]), spelled
            assert "s3cr3t-value" not in str(redactor.payload(payload)), spelled
            assert redactor.payload(payload) == redactor.json(payload), spelled


def test_query_pairs_are_found_where_a_search_finds_them() -> None:
    # `has_query_pair` tries the pattern only at `?` and `&`: the same verdict as a search, on
    # text built from separators, credential names in every case, values and odd characters.
    from eventbus_core.redact._query import QUERY_PAIR, QUERY_PAIR_BYTES, has_query_pair

    rng = random.Random(5)
    parts = ["?", "&", "=", "key", "KEY", "Token", "sig", "x-amz-signature", "auth", "v", " ",
             "#", "'", "&&", "??", "\u212a", "\u017f", "é", "ke", "y="]  # fmt: skip
    seen = {True: 0, False: 0}
    for _ in range(5000):
        pieces = [rng.choice(parts) for _ in range(rng.randint(0, 8))]
        if rng.random() < 0.5:  # a pair, well-formed or nearly so, somewhere in the text
            pair = rng.choice("?&") + rng.choice(parts[3:10]) + rng.choice(["=", "=v", "=#"])
            pieces.insert(rng.randint(0, len(pieces)), pair)
        text = "".join(pieces)
        found = has_query_pair(text)
        assert found == (QUERY_PAIR.search(text) is not None), text
        raw = text.encode()
        assert has_query_pair(raw) == (QUERY_PAIR_BYTES.search(raw) is not None), text
        seen[found] += 1
    assert min(seen.values()) > 500  # both verdicts were put to the test


def test_credential_names_a_server_decodes_are_never_cleared_by_the_gate() -> None:
    # `?api%5Fkey=` and `api_key[]=` hold no hint of the other rules: the gate cleared them,
    # and the dispatcher's payloads kept the key (helper-89).
    redactor = Redactor()
    for text in ("/x?api%5Fkey=S1", "see /x?api_key[]=S2 ok", "u?pass%77ord=S3", "?k%65y=S4"):
        payload = {"input": {"content": text}}
        assert not needs_no_redaction(payload), text
        assert "S" + text.split("=S")[1][:1] not in json.dumps(redactor.payload(payload)), text
    for text in ("20% = more", "a[0] = b", "page[size] 10"):  # nothing to mask: the walk agrees
        payload = {"input": {"content": text}}
        assert redactor.payload(payload) == redactor.json(payload) == payload, text


def test_url_credentials_are_never_cleared_by_the_gate() -> None:
    redactor = Redactor()
    for url in ("postgres://u:p@db", "redis://:tok@h", "redis://token@h", "x://@h/p"):
        payload = {"input": {"content": f"use {url} now"}}
        if url != "x://@h/p":  # nothing to mask there: the walk leaves it as it is
            assert not needs_no_redaction(payload), url
        assert redactor.payload(payload) == redactor.json(payload), url


def test_a_credential_in_one_part_leaves_the_other_parts_as_they_are() -> None:
    # The careful walk goes only into the parts the gate does not clear: the response of an
    # event whose request holds a key is handed on as it is (not copied), its headers are
    # still masked by name, and the result is what the walk of the whole payload gives.
    redactor = Redactor()
    output = {"choices": [{"message": {"content": "hello"}}], "usage": {"total_tokens": 3}}
    payload = {
        "path": "/v1/chat/completions",
        "input": {"messages": [{"role": "user", "content": "hi"}], "api_key": "s3cr3t-value"},
        "output": output,
        "response_headers": {"Authorization": ["Bearer x"], "Date": ["today"]},
        "metadata": {"request_body": {"bytes": 10}},
    }
    redacted = redactor.payload(payload)
    assert redacted == redactor.json(payload)
    assert redacted["input"]["api_key"] == MASK
    assert redacted["output"] is output
    assert redacted["metadata"]["request_body"] is payload["metadata"]["request_body"]
    assert redacted["input"]["messages"] is payload["input"]["messages"]
    assert redacted["response_headers"] == {"Authorization": [MASK], "Date": ["today"]}


def test_a_credential_in_the_path_is_masked_in_both_places_the_payload_holds_it() -> None:
    # The walk scrubs each string object once per payload: the path (also in `metadata`)
    # comes out masked in both, the same as the walk of everything gives.
    from eventbus_core import Event

    key = "AIzaSyA1234567890abcdefghijklmnopqrstuv"
    event = Event(
        request_id="r",
        method="POST",
        path=f"/v1beta/models/gemini-pro:generateContent?key={key}",
        status=200,
        request_body=b'{"contents": []}',
        response_body=b'{"candidates": []}',
    )
    payload = dict(LLMTransformer()(event))
    redactor = Redactor()
    redacted = redactor.payload(payload)
    assert redacted == redactor.json(payload)
    assert (
        redacted["path"]
        == redacted["metadata"]["path"]
        == (f"/v1beta/models/gemini-pro:generateContent?key={MASK}")
    )
    assert key not in json.dumps(redacted)


def test_the_key_prefilters_and_the_automaton_list_the_same_starts() -> None:
    # `_may_hold_key_bytes` (a body's prefilter) and `_key_starts` look for the literal starts
    # that `_KEY_STARTS` lists: a start missing from either would send a key past the rule on
    # that path. And every key pattern's match begins where `_key_starts` looks.
    from eventbus_core.redact._redact import _KEY_STARTS, _key_starts, _may_hold_key_bytes

    for start in _KEY_STARTS:
        assert _may_hold_key_bytes(f"x {start} y".encode()), start
        assert _key_starts(f"x {start} y", f"x {start} y".lower()), start
    assert not _may_hold_key_bytes(b"a message with none of them " * 4)
    samples = [
        "sk-proj-" + "a" * 20,
        "AIza" + "b" * 35,
        "AKIA" + "C" * 16,
        "ASIA" + "D" * 16,
        *(f"gh{c}_" + "e" * 30 for c in "pousr"),
        "github_pat_" + "f" * 30,
        *(f"xox{c}-" + "g" * 10 for c in "abposr"),
        "hf_" + "h" * 30,
        "bEaReR abcdefgh",
    ]
    patterns = [re.compile(p) for p in _KEY_PATTERNS]
    for sample in samples:
        text = f"see: {sample} ok"
        match = next(m for p in patterns if (m := p.search(text)))
        assert match.start() in _key_starts(text, text.lower()), sample
