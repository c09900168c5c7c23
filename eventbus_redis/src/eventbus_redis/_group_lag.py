"""A consumer group's lag, from `XINFO GROUPS` and `XINFO STREAM` together.

Redis (7+) reports a group's `lag` as entries added minus entries read, and keeps the read count
by adding one per entry it hands out. Entries that `MAXLEN` trims before the group is handed them
are never counted read, so once the group has fallen behind the trim, Redis reports them as lag
for ever: an outside trial saw a lag of 278 on a stream with nothing left to read. Where the
stream itself says how far behind the group is, that answer is used instead:

- the group has been handed the newest entry (its last-delivered id is the stream's
  last-generated id), or the stream is empty: nothing is left, lag 0;
- the group's last-delivered id is older than the stream's first entry: every entry is left,
  lag = the stream's length;
- otherwise Redis's own figure (None when Redis cannot tell), at most the stream's length (no
  more entries than it holds can be left: while the group catches up after a trim, Redis's
  figure still holds the trimmed ones).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["group_lag"]


def _id(value: Any) -> tuple[int, int] | None:
    """A stream id (`b"1700000000000-3"`) as a comparable pair; None when there is none."""
    if value is None:
        return None
    ms, _, seq = (value.decode() if isinstance(value, bytes) else str(value)).partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        return None


def group_lag(group: Mapping[str, Any], stream: Mapping[str, Any]) -> int | None:
    """Entries of the stream not yet handed to the group.

    Args:
        group: The group's row of `XINFO GROUPS` (keys as redis-py gives them).
        stream: `XINFO STREAM` of the stream (the same).
    """
    reported = group.get("lag")
    redis_lag = None if reported is None else int(reported)
    length = int(stream.get("length") or 0)
    delivered = _id(group.get("last-delivered-id"))
    newest = _id(stream.get("last-generated-id"))
    first_entry = stream.get("first-entry")
    first = _id(first_entry[0]) if first_entry else None
    if length == 0 or (delivered is not None and newest is not None and delivered >= newest):
        return 0
    if delivered is not None and first is not None and delivered < first:
        return length
    return None if redis_lag is None else min(redis_lag, length)
