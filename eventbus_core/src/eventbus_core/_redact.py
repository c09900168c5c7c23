"""Redaction of secrets before anything leaves the process.

Header values of credentials (Authorization, cookies, API keys) are replaced by a mask.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

__all__ = ["MASK", "SENSITIVE_HEADERS", "is_sensitive_header", "redact_headers"]

MASK: Final = "[REDACTED]"

SENSITIVE_HEADERS: Final[frozenset[str]] = frozenset({
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "api-key",
    "x-auth-token",
    "x-access-token",
    "x-amz-security-token",
    "openai-api-key",
    "anthropic-api-key",
    "x-goog-api-key",
})
"""Header names (lower case) whose values are masked by default."""


def is_sensitive_header(name: str, extra: Iterable[str] = ()) -> bool:
    """True if header `name` carries a credential (by default list or `extra`)."""
    lowered = name.lower()
    return lowered in SENSITIVE_HEADERS or lowered in {e.lower() for e in extra}


def redact_headers(
    headers: Mapping[str, Iterable[str]] | None, extra: Iterable[str] = ()
) -> dict[str, list[str]] | None:
    """Return a copy of `headers` with every sensitive header's values masked."""
    if headers is None:
        return None
    extra_set = {e.lower() for e in extra}
    out: dict[str, list[str]] = {}
    for name, values in headers.items():
        lowered = name.lower()
        if lowered in SENSITIVE_HEADERS or lowered in extra_set:
            out[name] = [MASK for _ in values]
        else:
            out[name] = list(values)
    return out
