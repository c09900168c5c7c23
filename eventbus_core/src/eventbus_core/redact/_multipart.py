"""Credential-named fields of a `multipart/form-data` body (an upload's form, a login POSTed by
a browser): the value after `Content-Disposition: form-data; name="password"` and its blank
line, up to the next boundary. The form-encoded spelling (`password=...`) was masked and this
one went out as sent, to sinks, dead letters and the store (trial 248).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

__all__ = ["mask_multipart_fields", "may_hold_multipart"]

# One part: its Content-Disposition line with the field's name, the part's other header lines,
# the blank line, then the value, which ends where the next boundary's line starts ("\r\n--";
# a bare "\n" from a client that writes one is taken too). The lazy value can only end there.
_PART: Final = re.compile(
    r'(?P<head>content-disposition:[ \t]*form-data;[^\r\n]*?\bname="(?P<name>[^"\r\n]*)"'
    r"[^\r\n]*\r?\n(?:[^\r\n]+\r?\n)*\r?\n)(?P<value>.*?)(?=\r?\n--)",
    re.IGNORECASE | re.DOTALL,
)


def may_hold_multipart(lowered: str) -> bool:
    """Whether lower-cased text may hold a form-data part (the cheap test before the search)."""
    return "form-data" in lowered


def mask_multipart_fields(text: str, is_secret_name: Callable[[str], bool], mask: str) -> str:
    """`text` with the value of each form-data part whose name `is_secret_name` replaced by
    `mask` (an empty value stays empty)."""

    def masked(match: re.Match[str]) -> str:
        if match.group("value") and is_secret_name(match.group("name")):
            return match.group("head") + mask
        return match.group(0)

    return _PART.sub(masked, text)
