"""The fast path of payload redaction: one test over a whole part of a payload that proves the
default rules would change nothing in it, so the recursive walk (`Redactor.json`) is skipped.

The part is serialised once with orjson (about 1 µs for a chat body) and the bytes are searched
in one pass for a hint of anything the rules look for; a hint found is confirmed by the search
the rule stands for (see `_HINTS`). The argument that nothing can slip through:

- Every string and key of the part appears in the bytes as it is, except for `"`, `\\` and
  control characters, which are escaped. No hint or rule matches those characters, so a match
  inside one string is a match in the bytes too (the bytes may match more: that only sends the
  part down the careful path).
- Every match of a rule contains its hint (lower-cased, and the search is over the lower-cased
  bytes), and every occurrence of every hint is reported, so no rule's confirming search is
  skipped where it could match. Key patterns are case-sensitive, and are confirmed on the
  bytes themselves.
- Credential names are matched without regard to case (`_PAIR`, `_ANY_SECRET_NAME`) or after
  `str.lower()` (`_NAME_FINDER`). On ASCII the bytes' `lower()` is the same; of all other characters
  only four match or lower to ASCII letters (`SPECIAL_CASE_CHARS`, per `re`'s IGNORECASE and
  `str.lower`, checked over all of Unicode by the tests); a part holding any of them is not
  judged here.
- A field named like a header mapping (`headers`, `response_headers`, `request_headers`) is
  masked by header name, which a credential-name test would not see (`X-Amz-Security-Token`):
  a part containing the word `headers` is not judged here either.
- Credential query parameters (`?key=...`, `_query.py`) are searched with the text rule's own
  names, compiled for bytes. Names a server decodes to a credential name (`?api%5Fkey=`,
  `api_key[]=`, `_encoded_names.py`) each hold a `%XX` or a `]=`: a part with an `=` and either
  is not judged here.
- Credentials in URLs (`scheme://user:password@`, `_secrets.URL_IN_TEXT`): behind the hint
  `://`, the rule's pattern from its `://` on is tried, on the bytes, at each `://` of a part
  that holds an `@`. The bytes can only match more: a string's user excludes whitespace, `/`
  and `:`, and its password whitespace and `/`; escaping turns a character into ASCII that the
  pattern allows; and a byte pattern's `\\s` is ASCII only.
- The same with separators percent-encoded (`scheme%3A%2F%2Fuser%3Apassword%40`, `%3A//`,
  `://user:password%40`; `_secrets.ENCODED_URL_IN_TEXT`), or encoded twice (`%253A%252F%252F`,
  `%253A//`): behind the hints `://`, `%3a%2f%2f`, `%3a//`, `%253a%252f%252f` and `%253a//`,
  tried the same way, ignoring case as the rule does. (Spellings no encoder writes, which mix
  the forms, such as `%3A%2F/` or `%253A%2F%2F`, are not hinted.)
- HTTP Basic credentials (`_redact._KEY_PATTERNS`' last, after "basic " in any case): behind
  the hint `basic `, `_secrets.BASIC_CREDENTIALS` is tried on the bytes right after it. The bytes
  can only match more (escaping gives ASCII the pattern may allow). When every hint found is
  this one, those places are all there is to try: no other hint can start inside "basic ", so
  the non-overlapping search missed none.
- A query string inside an encoded URL (`%3Ftoken%3D...`, `_redact._ENCODED_QUERY_PAIR`): every
  match holds an encoded `=` (`%3d`, or `%253d` encoded twice), so a part holding either hint is
  not judged here.
- A body the transformer kept as base64 (`{"base64": ...}`, not UTF-8) hides its text from
  every hint: a part holding the key `base64` is not judged here (the walk decodes it).
- Anything orjson does not serialise as plain JSON (subclasses, dataclasses, datetimes, keys
  that are not strings) raises, and is not judged here.

Only the default rules are judged; a `Redactor` with extra patterns always walks.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final

import ahocorasick_rs
import orjson

from eventbus_core.redact._encoded_names import BRACKET_END_IN_BYTES, ESCAPE_IN_BYTES
from eventbus_core.redact._query import has_query_pair
from eventbus_core.redact._secrets import (
    BASIC_CREDENTIALS,
    ENCODED_URL_CREDENTIALS,
    OPENAI_KEY,
    URL_CREDENTIALS,
    is_basic_credentials,
)

__all__ = ["SPECIAL_CASE_CHARS", "may_need_masking", "needs_no_redaction"]

SPECIAL_CASE_CHARS: Final = "\u0130\u0131\u017f\u212a"
"""The non-ASCII characters that `re.IGNORECASE` matches to, or `str.lower()` turns into, ASCII
letters: dotted capital I, dotless i, long s, Kelvin sign."""
_SPECIAL_UTF8: Final = tuple(c.encode() for c in SPECIAL_CASE_CHARS)

_OPTIONS: Final = (
    orjson.OPT_PASSTHROUGH_SUBCLASS
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_DATETIME
)

# The hints: what every match of a rule the gate stands for must contain, lower-cased, each
# with the search that confirms it (None: the hint alone is enough). All hints are looked for
# in one pass over the lower-cased bytes by an Aho-Corasick automaton (ahocorasick_rs, in
# Rust): a chat payload costs ~1 µs instead of ~20 µs for twenty separate scans. A hint found
# only costs its confirmation at that place, which finds what the test the gate made before
# the automaton found (a key pattern on the original bytes, a credential name on the
# lower-cased ones), so the verdict is the same; the tests compare the two on generated
# payloads.
#
# Key patterns (`_redact._KEY_PATTERNS`) are case-sensitive: each is confirmed on the original
# bytes. Its hint, its literal start lower-cased, is in the lower-cased bytes whenever the
# pattern matches (lower() only changes A-Z); "sk-" in "task-", or "asia" in "Asia", only costs
# the confirming search.
_SK: Final = re.compile(OPENAI_KEY.encode())
_AIZA: Final = re.compile(rb"AIza[0-9A-Za-z_\-]{35}")
_AKIA: Final = re.compile(rb"AKIA[0-9A-Z]{16}")
_ASIA: Final = re.compile(rb"ASIA[0-9A-Z]{16}")
_GH: Final = re.compile(rb"gh[pousr]_[A-Za-z0-9]{30,}")
_GITHUB_PAT: Final = re.compile(rb"github_pat_[A-Za-z0-9_]{30,}")
_XOX: Final = re.compile(rb"xox[abposr]-[A-Za-z0-9\-]{10,}")
_HF: Final = re.compile(rb"hf_[A-Za-z0-9]{30,}")
_GSK: Final = re.compile(rb"gsk_[A-Za-z0-9]{20,}")
_XAI: Final = re.compile(rb"xai-[A-Za-z0-9]{20,}")
_GLPAT: Final = re.compile(rb"glpat-[A-Za-z0-9_\-]{20,}")
_SK_LIVE: Final = re.compile(rb"sk_live_[A-Za-z0-9]{16,}")
_RK_LIVE: Final = re.compile(rb"rk_live_[A-Za-z0-9]{16,}")
_R8: Final = re.compile(rb"r8_[A-Za-z0-9]{20,}")
_YA29: Final = re.compile(rb"ya29\.[A-Za-z0-9_\-]{20,}")
_BEARER: Final = re.compile(rb"(?i:bearer) [A-Za-z0-9_\-.=+/]{8,}")
_BEARER_PLUS: Final = re.compile(rb"(?i:bearer)\+(?:[A-Za-z0-9_\-.=/]|%(?!20)[0-9A-Fa-f]{2}){8,}")
_BEARER_20: Final = re.compile(rb"(?i:bearer)%20(?:[A-Za-z0-9_\-.=/]|%(?!20)[0-9A-Fa-f]{2}){8,}")
# `_redact.BASIC_CREDENTIALS` (the same source, compiled for bytes), tried right after "basic ".
_BASIC: Final = re.compile(BASIC_CREDENTIALS.encode("ascii"))

# Credential names (`_redact._SECRET_NAME`) in lower-cased bytes: every name holds one of the
# hints below. "key" is also part of ordinary words ("monkey", "keyboard"): its names confirm
# it. "token" alone would hit every LLM payload ("max_tokens", "usage.total_tokens"): its names
# are hints whole. `headers`: see the module docstring.
#
# The credential names with "key" are `(?:api|private|access)[_-]?key`: what may stand right
# before an occurrence of the hint in a match.
_KEY_NAME_STARTS: Final = tuple(
    word + separator for word in (b"api", b"private", b"access") for separator in (b"", b"_", b"-")
)
# `_secrets.URL_IN_TEXT` after its `://` (the same source, compiled for bytes): every match of
# the rule is `://` followed by a match of this.
_URL_CREDENTIALS_AFTER: Final = re.compile(URL_CREDENTIALS.encode("ascii"))

# A confirmation is tried at one occurrence of its hint (`at`, where the hint starts in `low`),
# never by a search of the whole part: a search tries every position, and a pattern that
# does not start with a literal (`(?:api|private)...`, `[Bb]earer`) costs about 10 ns a byte
# there (30 us over a chat payload whose prose says "key"). Every occurrence of every hint is
# reported, so trying each one finds a match wherever the search would.
_Confirm = Callable[[bytes, bytes, int], bool]


def _starts_at(pattern: re.Pattern[bytes]) -> _Confirm:
    """For a key pattern whose hint is its own start: a match begins where the hint does."""
    return lambda blob, low, at: pattern.match(blob, at) is not None


def _key_name(blob: bytes, low: bytes, at: int) -> bool:
    return low.endswith(_KEY_NAME_STARTS, 0, at)


# The same with the separators of the user part percent-encoded (`_secrets.ENCODED_URL_IN_TEXT`),
# after the `://` (`%3a//`, `%3a%2f%2f`) its separator may be spelled as.
_ENCODED_URL_CREDENTIALS_AFTER: Final = re.compile(ENCODED_URL_CREDENTIALS.encode("ascii"), re.I)


def _url_credentials(blob: bytes, low: bytes, at: int) -> bool:
    return (
        _URL_CREDENTIALS_AFTER.match(blob, at + 3) is not None
        or _ENCODED_URL_CREDENTIALS_AFTER.match(blob, at + 3) is not None
    )


def _encoded_url_credentials(length: int) -> _Confirm:
    """For a hint that is the separator `://` encoded, `length` bytes long."""
    return lambda blob, low, at: _ENCODED_URL_CREDENTIALS_AFTER.match(blob, at + length) is not None


def _separated(*words: bytes) -> tuple[bytes, ...]:
    """`first[_-]?second` spelled out: the three ways."""
    first, second = words
    return tuple(first + sep + second for sep in (b"", b"_", b"-"))


_HINTS: Final[tuple[tuple[tuple[bytes, ...], _Confirm | None], ...]] = (
    ((b"sk-",), _starts_at(_SK)),
    ((b"aiza",), _starts_at(_AIZA)),
    ((b"akia",), _starts_at(_AKIA)),
    ((b"asia",), _starts_at(_ASIA)),
    # GitHub's prefixes in full: a bare "gh" is common in prose ("though", "high").
    ((b"ghp_", b"gho_", b"ghu_", b"ghs_", b"ghr_"), _starts_at(_GH)),
    ((b"github_pat_",), _starts_at(_GITHUB_PAT)),
    ((b"xox",), _starts_at(_XOX)),
    ((b"hf_",), _starts_at(_HF)),
    ((b"gsk_",), _starts_at(_GSK)),
    ((b"xai-",), _starts_at(_XAI)),
    ((b"glpat-",), _starts_at(_GLPAT)),
    ((b"sk_live_",), _starts_at(_SK_LIVE)),
    ((b"rk_live_",), _starts_at(_RK_LIVE)),
    ((b"r8_",), _starts_at(_R8)),
    ((b"ya29.",), _starts_at(_YA29)),
    ((b"bearer ",), _starts_at(_BEARER)),
    ((b"bearer+",), _starts_at(_BEARER_PLUS)),
    ((b"bearer%20",), _starts_at(_BEARER_20)),
    ((b"basic ",), lambda blob, low, at: _basic_at(blob, at)),
    ((b"://",), _url_credentials),
    ((b"%3a%2f%2f",), _encoded_url_credentials(9)),
    ((b"%3a//",), _encoded_url_credentials(5)),
    # Encoded twice: a URL inside a query value of a URL that is itself a query value.
    ((b"%253a%252f%252f",), _encoded_url_credentials(15)),
    ((b"%253a//",), _encoded_url_credentials(7)),
    # An encoded `=` (once or twice): a query string inside an encoded URL (`%3Ftoken%3D...`)
    # may follow.
    ((b"%3d", b"%253d"), None),
    ((b"key",), _key_name),
    (
        (
            b"secret",
            b"cookie",
            b"headers",
            b"password",
            b"passwd",
            b"authorization",
            b"passphrase",
        ),
        None,
    ),
    # A body kept as base64 (not UTF-8): its text is hidden from every hint; the walk decodes it.
    ((b'"base64":',), None),
    (_separated(b"id", b"token"), None),
    (_separated(b"auth", b"token"), None),
    (_separated(b"access", b"token"), None),
    (_separated(b"refresh", b"token"), None),
    (_separated(b"api", b"token"), None),
    (_separated(b"session", b"token"), None),
    (_separated(b"security", b"token"), None),
)
_NEEDLES: Final = [needle for needles, _ in _HINTS for needle in needles]
_BASIC_HINT: Final = _NEEDLES.index(b"basic ")
_CONFIRMS: Final = [confirm for needles, confirm in _HINTS for _ in needles]
# Two automata over the same hints. Leftmost-first matching reports a match whenever any hint
# occurs (the leftmost one), and its search skips ahead with a prefilter: about 1 µs over a
# chat payload that holds no hint, the usual case. Its matches do not overlap, so one may hide
# another hint's occurrence: a payload with any hint is searched again with overlapping
# matches (about 4 µs), which report every occurrence of every hint.
_ANY_HINT: Final = ahocorasick_rs.BytesAhoCorasick(
    _NEEDLES, matchkind=ahocorasick_rs.MatchKind.LeftmostFirst
)
_EVERY_HINT: Final = ahocorasick_rs.BytesAhoCorasick(_NEEDLES)


def may_need_masking(blob: bytes, low: bytes) -> bool:
    """True if a key pattern may match in `blob` or a credential name (or `headers`) appear in
    `low`, its `lower()`; False only if none can."""
    hits = _ANY_HINT.find_matches_as_indexes(low)
    if not hits:
        return False
    # Only the word "basic" (common in prompts): each occurrence is confirmed where it is,
    # without the overlapping search below (no other hint can start inside "basic ", so these
    # matches hide none).
    for index, at, _ in hits:
        if index != _BASIC_HINT:
            break
        if _basic_at(blob, at):
            return True
    else:
        return False
    confirms = _CONFIRMS
    for index, at, _ in _EVERY_HINT.find_matches_as_indexes(low, overlapping=True):
        confirm = confirms[index]
        if confirm is None or confirm(blob, low, at):
            return True
    return False


def _basic_at(blob: bytes, at: int) -> bool:
    """Whether Basic credentials (`user:password` in base64) follow the "basic " at `at`."""
    match = _BASIC.match(blob, at + 6)
    return match is not None and is_basic_credentials(match.group())


def needs_no_redaction(value: Any) -> bool:
    """True if the default rules would leave `value` (parsed JSON) exactly as it is; False when
    they might change it, or when this test cannot tell (see the module docstring).

    `value` is a part of a payload, or a list of parts.
    """
    try:
        blob = orjson.dumps(value, option=_OPTIONS)
    except TypeError:  # orjson.JSONEncodeError: not plain JSON
        return False
    if not blob.isascii() and any(c in blob for c in _SPECIAL_UTF8):
        return False
    # A query credential, or a name a server decodes to a credential name (`?api%5Fkey=`,
    # `api_key[]=`, `_encoded_names`): one test of "=" for both.
    if b"=" in blob and (
        has_query_pair(blob)
        or ESCAPE_IN_BYTES.search(blob) is not None
        or BRACKET_END_IN_BYTES.search(blob) is not None
    ):
        return False
    return not may_need_masking(blob, blob.lower())
