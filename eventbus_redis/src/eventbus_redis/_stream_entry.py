"""Events read from a Redis stream entry: one decoder for every reader, with a LogID unique per
stream whoever wrote the entry.

Why: payloads carry the event's `log_id` so that sinks and their readers can drop redelivered
duplicates, which needs it unique per stream. eventbus's writers stamp LogIDs from the counter
`<stream>:seq` (1, 2, 3, ...), but the Go llm-proxy publishes to the stream with LogID 0 on every
event. An entry whose LogID is 0 therefore gets one derived from its stream entry id, which
Redis makes unique per stream, in a range that counter LogIDs never reach:

    log_id = 2**62 + milliseconds * 2**19 + sequence        (entry id "milliseconds-sequence")

- Disjoint: counter LogIDs stay below 2**62 (4.6e18; at a million events a second, 146,000
  years; the Lua append path is exact only to 2**53 anyway).
- In range: milliseconds below 2**43 (until the year 2248) and sequence below 2**19 (524,288
  entries within one millisecond, more than Redis can add) keep it within int64 (at most
  2**63 - 1), which JSON, Go's `int64` LogID and eventbus's Event accept. An entry id outside
  that (only possible with ids chosen by hand) keeps LogID 0.
- Reversible: `entry_id_from_log_id()` gives the entry back, e.g. to find it with XRANGE.
- Above 2**53: a JavaScript reader's `JSON.parse` rounds such numbers; compare them as strings
  (or BigInt) there.
"""

from __future__ import annotations

from typing import Any, Final

from eventbus_core import COUNTED_LOG_IDS_BELOW, Event, WireFormatError, get_logger
from eventbus_redis._entries import entry_data

log = get_logger("eventbus.redis")

__all__ = [
    "STREAM_LOG_ID_BASE",
    "entry_id_from_log_id",
    "event_from_entry_data",
    "event_from_stream_entry",
    "log_id_from_entry_id",
]

STREAM_LOG_ID_BASE: Final = COUNTED_LOG_IDS_BELOW
"""LogIDs from here up were derived from a stream entry id (the entry carried LogID 0): core's
range for LogIDs that are not counted."""

_SEQ_BITS: Final = 19
_MAX_MS: Final = (1 << 43) - 1
_MAX_SEQ: Final = (1 << _SEQ_BITS) - 1


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes | bytearray) else str(value)


def log_id_from_entry_id(entry_id: str | bytes) -> int:
    """The LogID an entry with LogID 0 gets from its stream entry id ("ms-seq"); 0 when the id
    is outside the mapping's range (ids chosen by hand only)."""
    ms_text, _, seq_text = _text(entry_id).partition("-")
    try:
        ms, seq = int(ms_text), int(seq_text or 0)
    except ValueError:
        return 0
    if not (0 <= ms <= _MAX_MS and 0 <= seq <= _MAX_SEQ):
        return 0
    return STREAM_LOG_ID_BASE + (ms << _SEQ_BITS) + seq


def entry_id_from_log_id(log_id: int) -> str | None:
    """The stream entry id a derived LogID came from (None for a counter LogID)."""
    if not STREAM_LOG_ID_BASE <= log_id < 1 << 63:
        return None
    offset = log_id - STREAM_LOG_ID_BASE
    return f"{offset >> _SEQ_BITS}-{offset & _MAX_SEQ}"


def event_from_stream_entry(entry_id: str | bytes, fields: Any) -> Event:
    """Decode a stream entry's `data` field (the event's Go wire JSON) into an `Event`, with a
    LogID derived from `entry_id` when the entry carries LogID 0 (see the module docstring).

    `fields` is the entry's field mapping as redis-py returns it (bytes or str keys).

    Raises:
        WireFormatError: the entry has no `data` field, or it does not decode.
    """
    data = entry_data(fields)
    if data is None:
        raise WireFormatError("entry has no 'data' field")
    return event_from_entry_data(entry_id, data)


def event_from_entry_data(entry_id: str | bytes, data: str | bytes) -> Event:
    """`event_from_stream_entry` for an entry whose `data` field is already taken out.

    Raises:
        WireFormatError: `data` does not decode.
    """
    event = Event.from_json(data)
    if event.log_id == 0:
        derived = log_id_from_entry_id(entry_id)
        if derived:
            return event.with_log_id(derived)
        _warn_underived(entry_id)
    return event


_warned_underived: list[bool] = []


def _warn_underived(entry_id: str | bytes) -> None:
    """Say once per process that an entry kept LogID 0: its id is outside the range a LogID is
    derived from, so de-duplicating by `log_id` would take such entries for one (they went
    by silently, trial 178)."""
    if _warned_underived:
        return
    _warned_underived.append(True)
    log.warning(
        "eventbus redis: stream entry %s carries LogID 0 and its id is outside the range a "
        "LogID is derived from (milliseconds up to %d, sequence up to %d: ids Redis makes "
        "itself until the year 2248); it and any other such entry keep LogID 0, which is not "
        "unique (ids chosen by hand, XADD with an explicit id, give this; said once)",
        _text(entry_id),
        _MAX_MS,
        _MAX_SEQ,
    )
