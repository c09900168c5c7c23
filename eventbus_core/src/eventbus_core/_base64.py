"""Standard base64 for the wire format, with SIMD speed for large bodies when `pybase64` is
installed.

Event bodies are most of an event's bytes, so base64 is most of the wire codec's cost: the
standard library encodes ~1 µs per KB here, `pybase64` (`pip install 'eventbus-core[speedups]'`)
~0.25 µs. But `pybase64` releases the GIL on every call, and next to a busy event loop taking it
back can wait far longer than the work (measured: 24 µs per call on a 600-byte body against a
spinning thread, where the standard library took 0.7 µs). So it is used for bodies of
`FAST_FROM` bytes and more only, where the saving is large and letting other threads run during
the work is welcome. Both give the same bytes; decoding validates strictly either way, as Go does.
"""

from __future__ import annotations

import base64
import binascii
from typing import Final

__all__ = ["ACCELERATED", "FAST_FROM", "b64decode", "b64encode", "std_b64decode", "std_b64encode"]

FAST_FROM: Final = 16 * 1024
"""Bodies of this many bytes or more go to `pybase64` when it is installed."""
_FAST_FROM_TEXT: Final = FAST_FROM * 4 // 3


def std_b64encode(data: bytes) -> bytes:
    """Standard base64 of `data`, no line breaks (the standard library's)."""
    return binascii.b2a_base64(data, newline=False)


def std_b64decode(text: str | bytes) -> bytes:
    """Decode standard base64, refusing characters outside the alphabet (binascii.Error)."""
    return base64.b64decode(text, validate=True)


try:
    import pybase64 as _pybase64
except ImportError:  # the optional speedup is not installed
    ACCELERATED = False
else:
    ACCELERATED = True


def b64encode(data: bytes) -> bytes:
    """Standard base64 of `data`, no line breaks."""
    if ACCELERATED and len(data) >= FAST_FROM:
        encoded: bytes = _pybase64.b64encode(data)
        return encoded
    return binascii.b2a_base64(data, newline=False)


def b64decode(text: str | bytes) -> bytes:
    """Decode standard base64 strictly (binascii.Error on a character outside the alphabet)."""
    if ACCELERATED and len(text) >= _FAST_FROM_TEXT:
        decoded: bytes = _pybase64.b64decode(text, validate=True)
        return decoded
    return base64.b64decode(text, validate=True)
