"""Credential-named fields of a `multipart/form-data` body (an upload's form, a login POSTed by
a browser): the value after `Content-Disposition: form-data; name="password"` and its blank
line, up to the next boundary. The form-encoded spelling (`password=...`) was masked and this
one went out as sent, to sinks, dead letters and the store (trial 248).

Found by plain scanning, in time linear in the text: a regular expression for a part
backtracked on a long line of repeated `Content-Disposition` headers (15 KB took 15 s, review
252), on the publishing thread under `EVENTBUS_REDACT_ON_PUBLISH`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

__all__ = ["mask_multipart_fields", "may_hold_multipart"]

_HEADER: Final = "content-disposition:"
_LONGEST_HEADER: Final = 1024  # a Content-Disposition line: a name and a file name, no more
_MOST_HEADER_LINES: Final = 16  # a part's header lines before its blank line
# The field's name in one header line (bounded by the line): `name="..."` as a word of its own
# (`filename="..."` is another parameter), or unquoted (`name=password`, a token as MIME allows:
# trial 251 found it kept), spaces around `=` allowed as servers' parsers allow them (trial 253).
_NAME: Final = re.compile(r'(?:^|[;\s])name\s*=\s*(?:"([^"]*)"|([^";\s]+))', re.IGNORECASE)


def may_hold_multipart(lowered: str) -> bool:
    """Whether lower-cased text may hold a form-data part (the cheap test before the scan)."""
    return "form-data" in lowered


def _line_end(text: str, start: int) -> int:
    """Where the line that holds `start` ends (its `\\n`, or the end of the text)."""
    end = text.find("\n", start)
    return len(text) if end < 0 else end


def mask_multipart_fields(text: str, is_secret_name: Callable[[str], bool], mask: str) -> str:
    """`text` with the value of each form-data part whose name `is_secret_name` replaced by
    `mask` (an empty value stays empty; a part with no boundary after it is left as it is).

    Each step moves forward through the text: every header line is read once, and the search
    for a part's closing boundary starts where its value does and ends where that part ends,
    which is where the next search starts.
    """
    lowered = text.lower()
    pieces: list[str] = []
    done = 0  # text[:done] is in `pieces`
    at = lowered.find(_HEADER)
    while at >= 0:
        line_end = _line_end(text, at)
        header_end = min(line_end, at + _LONGEST_HEADER)
        found = (
            _NAME.search(text, at, header_end) if "form-data" in lowered[at:header_end] else None
        )
        # The part's other header lines, up to the blank line that ends them; its value
        # starts after that line.
        value_start = -1
        cursor = line_end + 1
        for _ in range(_MOST_HEADER_LINES if found is not None else 0):
            if cursor >= len(text):
                break
            end = _line_end(text, cursor)
            if text[cursor:end].strip("\r") == "":
                value_start = end + 1
                break
            cursor = end + 1
        if not 0 < value_start <= len(text):
            at = lowered.find(_HEADER, line_end)
            continue
        closing = text.find("\n--", value_start)
        if closing < 0:
            break  # no boundary after this value: none after any later one either
        value_end = closing - 1 if text[closing - 1 : closing] == "\r" else closing
        name = found.group(1) if found.group(1) is not None else found.group(2)  # type: ignore[union-attr]
        if value_end > value_start and is_secret_name(name):
            pieces += [text[done:value_start], mask]
            done = value_end
        at = lowered.find(_HEADER, closing)
    if not pieces:
        return text
    pieces.append(text[done:])
    return "".join(pieces)
