"""Text from outside (a client's path, a receiver's answer) made safe to print on one line."""

from __future__ import annotations

import re
from typing import Final

__all__ = ["escape_control"]

# C0 and C1 controls and DEL: CR or LF would forge a line, ESC starts a terminal sequence.
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def escape_control(text: str) -> str:
    """`text` with every control character written as `\\xNN`."""
    return _CONTROL.sub(_escaped, text)


def _escaped(match: re.Match[str]) -> str:
    return f"\\x{ord(match.group()):02x}"
