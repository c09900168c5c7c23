"""Query parameters that carry credentials under short names, for the text rules and the gate.

`?key=` (Google APIs), `token=`, `auth=`, `sig=`/`signature=` (signed URLs), the AWS and
Google Cloud signing parameters, `code=` (OAuth, Azure Functions): too common as words to be
credential names everywhere, so they count only right after `?` or `&`. One list, from which
both the text rule (`_redact`) and the fast path's test (`_gate`) are built, so neither can
miss a name the other has.
"""

from __future__ import annotations

import re
from typing import Any, Final

__all__ = [
    "QUERY_CREDENTIALS",
    "QUERY_NAMES_PATTERN",
    "QUERY_PAIR",
    "QUERY_PAIR_BYTES",
    "has_query_pair",
]

QUERY_CREDENTIALS: Final = (
    "key",
    "token",
    "auth",
    "sig",
    "signature",
    "x-amz-signature",
    "x-amz-credential",
    "x-goog-signature",  # Google Cloud Storage signed URLs
    "x-goog-credential",
    "x-amz-security-token",  # AWS temporary credentials in presigned URLs
    "code",  # OAuth authorization codes; Azure Functions' function keys
    "jwt",
    "private_token",  # GitLab
    "pwd",
    "subscription-key",  # Azure API Management
    # Session ids and tokens in URLs (a session id is a credential: whoever has it is logged in).
    "session",
    "session_id",
    "session_token",
    "sessionid",
    "jsessionid",
    "sid",
    "phpsessid",
)

_NAMES: Final = "|".join(re.escape(name) for name in QUERY_CREDENTIALS)
QUERY_NAMES_PATTERN: Final = _NAMES
"""An alternation of `QUERY_CREDENTIALS`, for patterns built elsewhere."""

QUERY_PAIR: Final = re.compile(
    rf"(?i)(?P<head>[?&](?:{_NAMES})=)(?P<value>[^&#\s\"'<>]*[^&#\s\"'<>:])"
)
"""`?name=value` / `&name=value` in text; the value runs to the next separator, less a colon
that ends it (a URL quoted before ": the reason" kept its colon in the mask)."""

QUERY_PAIR_BYTES: Final = re.compile(rf"(?i)[?&](?:{_NAMES})=[^&#\s\"'<>]".encode())
"""The same, on the JSON serialisation of a payload part (the gate's conservative test)."""


def has_query_pair(text: str | bytes) -> bool:
    """Whether `QUERY_PAIR` (`QUERY_PAIR_BYTES` for bytes) matches anywhere in `text`.

    Every match starts with `?` or `&` (no other character is either of them ignoring case),
    so the pattern is tried only there. Its `search()` tries every position, case-insensitively,
    at about 10 ns a character: 25 us over a chat payload that merely holds an `=`, against
    about 1 us this way.
    """
    if isinstance(text, str):
        return _tried_at_separators(QUERY_PAIR, text, "?", "&")
    return _tried_at_separators(QUERY_PAIR_BYTES, text, b"?", b"&")


def _tried_at_separators(pattern: re.Pattern[Any], text: Any, *separators: Any) -> bool:
    for separator in separators:
        at = text.find(separator)
        while at != -1:
            if pattern.match(text, at) is not None:
                return True
            at = text.find(separator, at + 1)
    return False
