"""The fast path of payload redaction: one test over a whole part of a payload that proves the
default rules would change nothing in it, so the recursive walk (`Redactor.json`) is skipped.

The part is serialised once with orjson (about 1 µs for a chat body) and the bytes are searched
for what the rules look for. The argument that nothing can slip through:

- Every string and key of the part appears in the bytes as it is, except for `"`, `\\` and
  control characters, which are escaped. No hint or rule matches those characters, so a match
  inside one string is a match in the bytes too (the bytes may match more: that only sends the
  part down the careful path).
- Key patterns are case-sensitive, and are searched on the bytes themselves.
- Credential names are matched without regard to case (`_PAIR`, `_SECRET_KEY`) or after
  `str.lower()` (`_NAME`). On ASCII the bytes' `lower()` is the same; of all other characters
  only four match or lower to ASCII letters (`SPECIAL_CASE_CHARS`, per `re`'s IGNORECASE and
  `str.lower`, checked over all of Unicode by the tests); a part holding any of them is not
  judged here.
- A field named like a header mapping (`headers`, `response_headers`, `request_headers`) is
  masked by header name, which a credential-name test would not see (`X-Amz-Security-Token`):
  a part containing the word `headers` is not judged here either.
- Credential query parameters (`?key=...`, `_query.py`) are searched with the text rule's own
  names, compiled for bytes.
- Anything orjson does not serialise as plain JSON (subclasses, dataclasses, datetimes, keys
  that are not strings) raises, and is not judged here.

Only the default rules are judged; a `Redactor` with extra patterns always walks.
"""

from __future__ import annotations

import re
from typing import Any, Final

import orjson

from eventbus_core.redact._query import QUERY_PAIR_BYTES

__all__ = ["SPECIAL_CASE_CHARS", "needs_no_redaction"]

SPECIAL_CASE_CHARS: Final = "\u0130\u0131\u017f\u212a"
"""The non-ASCII characters that `re.IGNORECASE` matches to, or `str.lower()` turns into, ASCII
letters: dotted capital I, dotless i, long s, Kelvin sign."""
_SPECIAL_UTF8: Final = tuple(c.encode() for c in SPECIAL_CASE_CHARS)

_OPTIONS: Final = (
    orjson.OPT_PASSTHROUGH_SUBCLASS
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_DATETIME
)

# Each key pattern of `_redact._KEY_PATTERNS` is searched as it is: re finds a pattern's literal
# prefix ("sk-", "AIza", ...) with its own scan, which on these short needles is faster than
# `bytes.__contains__` (measured: nine searches over a 2.2 KB payload, 5.8 µs as compiled
# patterns, 9.4 µs as `in` tests), and only a prefix found is followed up. The bearer pattern
# starts with a character class, so its hint is searched first. Spelled out as `or` chains:
# several times cheaper than any().
_SK: Final = re.compile(rb"sk-(?:ant-|proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{16,}")
_AIZA: Final = re.compile(rb"AIza[0-9A-Za-z_\-]{35}")
_AKIA: Final = re.compile(rb"AKIA[0-9A-Z]{16}")
_ASIA: Final = re.compile(rb"ASIA[0-9A-Z]{16}")
_GH: Final = re.compile(rb"gh[pousr]_[A-Za-z0-9]{30,}")
_GITHUB_PAT: Final = re.compile(rb"github_pat_[A-Za-z0-9_]{30,}")
_XOX: Final = re.compile(rb"xox[abposr]-[A-Za-z0-9\-]{10,}")
_HF: Final = re.compile(rb"hf_[A-Za-z0-9]{30,}")
_BEARER_HINT: Final = re.compile(rb"earer ")
_BEARER: Final = re.compile(rb"[Bb]earer [A-Za-z0-9_\-.=+/]{8,}")

# Credential names (`_redact._SECRET_NAME`) in lower-cased bytes: every name holds one of the
# patterns below; where a needle is also part of ordinary words ("monkey", "accessories",
# "passes"), the pattern confirms it. "token" alone would hit every LLM payload ("max_tokens",
# "usage.total_tokens"): its names are looked for whole.
_SECRET: Final = re.compile(rb"secret")
_COOKIE: Final = re.compile(rb"cookie")
_ID_TOKEN: Final = re.compile(rb"id[_-]?token")
_KEY_HINT: Final = re.compile(rb"key")
_KEY_NAME: Final = re.compile(rb"(?:api|private)[_-]?key")
_AUTH_NAME: Final = re.compile(rb"auth(?:orization|[_-]?token)")
_PASS_NAME: Final = re.compile(rb"passw(?:ord|d)")
_ACCESS_NAME: Final = re.compile(rb"access[_-]?token")
_REFRESH_NAME: Final = re.compile(rb"refresh[_-]?token")
_HEADERS: Final = re.compile(rb"headers")


def _may_hold_key(blob: bytes) -> bool:
    return (
        _SK.search(blob) is not None
        or _AIZA.search(blob) is not None
        or _AKIA.search(blob) is not None
        or _ASIA.search(blob) is not None
        or _GH.search(blob) is not None
        or _GITHUB_PAT.search(blob) is not None
        or _XOX.search(blob) is not None
        or _HF.search(blob) is not None
        or (_BEARER_HINT.search(blob) is not None and _BEARER.search(blob) is not None)
    )


def _may_name(low: bytes) -> bool:
    return (
        _SECRET.search(low) is not None
        or _COOKIE.search(low) is not None
        or _ID_TOKEN.search(low) is not None
        or (_KEY_HINT.search(low) is not None and _KEY_NAME.search(low) is not None)
        or _AUTH_NAME.search(low) is not None
        or _PASS_NAME.search(low) is not None
        or _ACCESS_NAME.search(low) is not None
        or _REFRESH_NAME.search(low) is not None
    )


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
    if _may_hold_key(blob):
        return False
    if b"=" in blob and QUERY_PAIR_BYTES.search(blob) is not None:
        return False
    low = blob.lower()
    return _HEADERS.search(low) is None and not _may_name(low)
