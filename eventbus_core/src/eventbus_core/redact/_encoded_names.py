"""Parameters whose names a server decodes to a credential name: percent-encoded
(`?api%5Fkey=`, `%61pi_key=`, `pass%77ord=`) or ending in brackets (`api_key[]=`, `token[0]=`,
as PHP and Rails read arrays). The other text rules see the name as written and miss them.

A name counts when, decoded and cut at its first `[`, it holds a credential name (`_redact`'s
`_ANY_SECRET_NAME`, passed in to avoid an import cycle) or, right after `?` or `&`, is one of
the short query names (`_query.QUERY_CREDENTIALS`). Every such name holds a `%XX` or ends in
`]`: the rule is tried only at those places (`_marks`), never by a search from every position,
which cost about 2 ms over a 20 KB prompt holding "20%".
"""

from __future__ import annotations

import re
import urllib.parse
from typing import Final

from eventbus_core.redact._query import QUERY_CREDENTIALS

__all__ = ["BRACKET_END_IN_BYTES", "ESCAPE_IN_BYTES", "mask_encoded_names"]

# Where such a name can be: a percent-escape in it (a pattern that starts with a literal, which
# `re` finds fast: an alternation with `]=` cost eight times more), or the `]=` that ends it.
_ESCAPE: Final = re.compile(r"%[0-9A-Fa-f]{2}")
_SEPARATORS: Final = frozenset(" \t\r\n\f\v?&=#\"'<>;,()")
_NAME_MAX: Final = 128
# From the mark on: the rest of the name, `=`, and the value (a colon that ends it is left out,
# as the other rules do: a URL quoted before ": the reason").
_REST: Final = re.compile(r"""[^\s?&=#"'<>;,()]{0,128}=(?P<value>[^&#\s"'<>;,]*[^&#\s"'<>;,:])""")
_SHORT_NAMES: Final = frozenset(QUERY_CREDENTIALS)


# The marks again, for the dispatcher's fast path, which looks for them in a payload part
# serialised to JSON bytes (a name escaped in JSON still holds them there). Both literal-prefixed,
# which `re` finds with a fast scan: `b"]=" in blob` took three times as long over a chat part.
# A text without `=`, or with `=` but neither mark, holds no such name; where this rule runs (the
# text rules, the gate) that is tested inline: a call per string cost a tenth of the redaction of
# a chat event.
ESCAPE_IN_BYTES: Final = re.compile(rb"%[0-9A-Fa-f]{2}")
BRACKET_END_IN_BYTES: Final = re.compile(rb"\]=")


def mask_encoded_names(text: str, secret_name: re.Pattern[str], mask: str) -> str:
    """`text` with the value of every such parameter replaced by `mask`."""
    pieces: list[str] = []
    done = 0  # text[:done] is in `pieces`
    for at in _marks(text):
        if at < done:
            continue  # a second escape of a name already judged
        start = at
        while start > 0 and at - start < _NAME_MAX and text[start - 1] not in _SEPARATORS:
            start -= 1
        rest = _REST.match(text, at)
        if rest is None:
            continue
        name = text[start : rest.start("value") - 1]
        if not _is_credential(name, start > 0 and text[start - 1] in "?&", secret_name):
            continue
        pieces += (text[done : rest.start("value")], mask)
        done = rest.end("value")
    if not pieces:
        return text
    pieces.append(text[done:])
    return "".join(pieces)


def _marks(text: str) -> list[int]:
    """Where `_REST` is tried, in order: each percent-escape and each `]=`."""
    marks = [m.start() for m in _ESCAPE.finditer(text)]
    at = text.find("]=")
    if at != -1:
        while at != -1:
            marks.append(at)
            at = text.find("]=", at + 2)
        marks.sort()
    return marks


def _is_credential(name: str, after_separator: bool, secret_name: re.Pattern[str]) -> bool:
    decoded = urllib.parse.unquote_plus(name).split("[", 1)[0].strip().lower()
    return bool(secret_name.search(decoded)) or (after_separator and decoded in _SHORT_NAMES)
