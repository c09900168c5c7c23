"""Text from outside (a client's path, a receiver's answer) made safe to print on one line."""

from __future__ import annotations

import re
from typing import Final

__all__ = ["escape_control"]

# C0 and C1 controls and DEL: CR or LF would forge a line, ESC starts a terminal sequence; the
# Unicode line and paragraph separators (`str.splitlines()` splits at them) and the bidi
# controls (U+202E would show a line reordered).
_CONTROL: Final = re.compile(
    r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)


def escape_control(text: str) -> str:
    """`text` with every control character written as `\\xNN` (`\\uNNNN` past U+00FF)."""
    return _CONTROL.sub(_escaped, text)


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
