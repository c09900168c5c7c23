"""Query parameters that carry credentials under short names, for the text rules and the gate.

`?key=` (Google APIs), `token=`, `auth=`, `sig=`/`signature=` (signed URLs), the AWS signing
parameters: too common as words to be credential names everywhere, so they count only right
after `?` or `&`. One list, from which both the text rule (`_redact`) and the fast path's test
(`_gate`) are built, so neither can miss a name the other has.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["QUERY_CREDENTIALS", "QUERY_PAIR", "QUERY_PAIR_BYTES"]

QUERY_CREDENTIALS: Final = (
    "key",
    "token",
    "auth",
    "sig",
    "signature",
    "x-amz-signature",
    "x-amz-credential",
)

_NAMES: Final = "|".join(re.escape(name) for name in QUERY_CREDENTIALS)

QUERY_PAIR: Final = re.compile(rf"(?i)(?P<head>[?&](?:{_NAMES})=)(?P<value>[^&#\s\"'<>]+)")
"""`?name=value` / `&name=value` in text; the value runs to the next separator."""

QUERY_PAIR_BYTES: Final = re.compile(rf"(?i)[?&](?:{_NAMES})=[^&#\s\"'<>]".encode())
"""The same, on the JSON serialisation of a payload part (the gate's conservative test)."""
