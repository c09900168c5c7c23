"""Credential masking for URLs and free text."""

from __future__ import annotations

import pytest

from eventbus_core import RedactedURL, redact_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://user:pw@host:6379/0", "redis://user:***@host:6379/0"),
        ("redis://:pw@host", "redis://:***@host"),
        ("redis://tokenonly@host", "redis://***@host"),
        ("redis://host:6379/0", "redis://host:6379/0"),
        ("unix:///tmp/r.sock?password=pw&db=1", "unix:///tmp/r.sock?password=***&db=1"),
        (
            "error connecting to rediss://a:b@h:1 refused",
            "error connecting to rediss://a:***@h:1 refused",
        ),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_redacted_url_is_a_usable_str_with_a_safe_repr() -> None:
    url = RedactedURL("redis://u:topsecret@h:6379/0")
    assert url == "redis://u:topsecret@h:6379/0"
    assert "topsecret" not in repr(url) and "topsecret" not in url.redacted
