"""The values redaction masks in an event, for text that quotes them without their names.

A transformer's exception may quote one value alone (`KeyError: 'hunter2'` for a body's
password, `bad creds user:pw` for a decoded Basic header): the text rules recognise a credential
by its name or its shape, which such a message does not put next to it. These values are then
masked wherever the message holds them (`dispatch._payload`).

Each is found by comparing a part of the event with what the redactor makes of it: a JSON body
walked beside its masked copy (every leaf under a masked value), a text (the path, a body that
is not JSON) split at the masks of its redacted copy, which differs from it only there. The
credential headers' values, and the `user:password` a Basic one carries, are taken whole.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator
from typing import Any, Final

from eventbus_core._event import Event
from eventbus_core.redact._redact import MASK, Redactor

__all__ = ["masked_values"]

# Shorter values are not looked for: masking every "1" of a message would say nothing.
SHORTEST: Final = 4
# Bodies longer than this are not parsed again for it (the message is about one event).
_LONGEST_BODY: Final = 1 << 20


def masked_values(event: Event, redactor: Redactor) -> set[str]:
    """Every value of `event` that `redactor` masks (at least `SHORTEST` characters), as it
    stands in the event."""
    found: set[str] = set()
    for name, values in (event.response_headers or {}).items():
        if redactor._masks_header(name):
            for value in values:
                found.add(value)
                found.update(_basic_credentials(value))
    found.update(_masked_in_text(event.path, redactor.text(event.path)))
    for body in (event.request_body, event.response_body):
        if body and len(body) <= _LONGEST_BODY:
            found.update(_masked_in_body(body, redactor))
    return {value for value in found if len(value) >= SHORTEST}


def _basic_credentials(value: str) -> set[str]:
    """`user:password` and `password` of a `Basic` header value; none for anything else."""
    scheme, _, encoded = value.strip().partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return set()
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return set()
    _, colon, password = decoded.partition(":")
    return {decoded, password} if colon else {decoded}


def _masked_in_body(body: bytes, redactor: Redactor) -> set[str]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        text = body.decode("latin-1")  # as the redactor reads such a body
    try:
        parsed = json.loads(text)
    except ValueError:
        return _masked_in_text(text, redactor.text(text))
    return set(_masked_leaves(parsed, redactor.json(parsed)))


def _masked_leaves(original: Any, masked: Any) -> Iterator[str]:
    """The leaves of `original` where `masked` (its redacted copy) differs: each string or
    number under a value masked whole, and what the text rules cut out of a string."""
    if isinstance(original, dict) and isinstance(masked, dict):
        for key, value in original.items():
            yield from _masked_leaves(value, masked.get(key))
    elif isinstance(original, list) and isinstance(masked, list) and len(original) == len(masked):
        for value, copy in zip(original, masked, strict=True):
            yield from _masked_leaves(value, copy)
    elif isinstance(original, str) and isinstance(masked, str):
        if original != masked:
            yield from _masked_in_text(original, masked)
    elif original != masked:  # masked whole: a number, a list or an object under a name
        yield from _leaves(original)


def _leaves(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, list):
        for item in value:
            yield from _leaves(item)
    elif value is not None and not isinstance(value, bool):
        yield str(value)


def _masked_in_text(original: str, redacted: str) -> set[str]:
    """What of `original` became a mask in `redacted`, which differs from it only at masks.

    `redacted` is split at its masks; the pieces between stand in `original` in that order,
    and what lies between two of them there is what was masked."""
    if original == redacted:
        return set()
    pieces = redacted.split(MASK)
    if not original.startswith(pieces[0]):
        return set()  # not a copy that differs only at masks: nothing to tell
    found = set()
    at = len(pieces[0])
    last = len(pieces) - 1
    for n, piece in enumerate(pieces[1:], start=1):
        # An empty piece: masks side by side (nothing between), or the text ends with one.
        end = original.find(piece, at) if piece else len(original) if n == last else at
        if end == -1:
            break
        if end > at:
            found.add(original[at:end])
        at = end + len(piece)
    return found
