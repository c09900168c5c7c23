"""The shape the transformer gives a body that is not UTF-8 text: `{"base64": ...}`, with the
body's `content_type` when it has one. Sinks that pass such a body on, and the redaction that
must look inside it, recognise it by `is_binary_body()`."""

from __future__ import annotations

from typing import Any, Final

__all__ = ["BINARY_BODY_KEYS", "is_binary_body"]

BINARY_BODY_KEYS: Final = frozenset({"base64", "content_type"})
"""The keys of a body kept as base64 (`content_type` may be absent)."""


def is_binary_body(value: Any) -> bool:
    """True for a body the transformer kept as base64 (`decode_body()`'s `{"base64": ...}`)."""
    return isinstance(value, dict) and "base64" in value and value.keys() <= BINARY_BODY_KEYS
