"""Helpers for stream entries: replies of XREAD/XREADGROUP, and moving entries to dead letters."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Final

import redis

from eventbus_core import LineBudget, get_logger

__all__ = [
    "DeadEntry",
    "dead_letter",
    "entry_order",
    "fields_as_json",
    "leading_log_id",
    "stream_entries",
    "text",
]

log = get_logger("eventbus.redis")


def entry_order(entry_id: str) -> tuple[int, int]:
    """A stream entry id as a key that sorts entries in stream order ("10-0" after "9-5")."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


DeadEntry = tuple[str, Any, str, int]
"""An entry to dead-letter: (entry id, raw data, reason, deliveries so far)."""


_LEADING_LOG_ID: Final = re.compile(rb'\{\s*"LogID"\s*:\s*(\d+)')
_DEAD_LINES: Final = LineBudget()  # a poison batch or a crashing dispatcher: examples, not all


def leading_log_id(raw: Any) -> int:
    """The LogID an entry's JSON starts with (the Go wire format's first field), 0 if none."""
    if isinstance(raw, str):
        raw = raw.encode()
    found = _LEADING_LOG_ID.match(raw) if isinstance(raw, bytes) else None
    return int(found.group(1)) if found else 0


def text(value: Any) -> str:
    """An id or name from Redis as `str`, whatever the client's decode_responses setting."""
    return value.decode() if isinstance(value, bytes) else str(value)


def stream_entries(reply: Any) -> list[Any]:
    """The `(id, fields)` entries of a one-stream XREAD/XREADGROUP reply (RESP2 or RESP3)."""
    if not reply:
        return []
    if isinstance(reply, dict):  # RESP3 clients answer {stream: [entries]}
        value = next(iter(reply.values()))
        return list(value[0] if value and isinstance(value[0], list) else value)
    return list(reply[0][1])


def raw_stream_entries(reply: Any) -> list[Any]:
    """The `[id, [field, value, ...]]` entries of a one-stream XREADGROUP reply as a connection
    reads it, without redis-py's reply callbacks (RESP2 or RESP3)."""
    if not reply:
        return []
    if isinstance(reply, dict):  # RESP3: {stream: entries}
        return list(next(iter(reply.values())))
    return list(reply[0][1])


def entry_data(fields: Any) -> Any:
    """The `data` field of a stream entry, from the mapping redis-py's callbacks make or from
    the flat `[field, value, ...]` list of a raw reply; None if there is none."""
    if not fields:
        return None
    if isinstance(fields, list | tuple):
        if len(fields) == 2 and fields[0] == b"data":  # what every writer of events sends
            return fields[1]
        for i in range(0, len(fields) - 1, 2):
            if fields[i] in (b"data", "data"):
                return fields[i + 1]
        return None
    return fields.get(b"data", fields.get("data"))


def fields_as_json(fields: Any) -> bytes:
    """A stream entry's fields as one JSON object (bytes undecodable as UTF-8 kept with
    backslash escapes): the dead letter of an entry that has no `data` field."""
    if isinstance(fields, Mapping):
        pairs = list(fields.items())
    else:  # a flat [field, value, ...] list (RESP3 without decoding into a mapping)
        pairs = list(zip(fields[::2], fields[1::2], strict=False))
    return json.dumps(
        {_as_text(k): _as_text(v) for k, v in pairs}, ensure_ascii=False, separators=(",", ":")
    ).encode()


def _as_text(value: Any) -> str:
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else str(value)


def dead_letter(
    client: redis.Redis,
    stream: str,
    group: str,
    consumer: str,
    dead_letter_stream: str,
    max_len: int,
    dead: list[DeadEntry],
) -> None:
    """Add each entry to `dead_letter_stream` with its reason and acknowledge it, atomically.

    Fields of a dead letter: data (the raw entry data; for an entry without one, its fields
    as a JSON object: `fields_as_json`), reason, stream, id, group, consumer, deliveries.
    XADD and XACK run in one MULTI/EXEC: an entry is never acknowledged without its dead
    letter, nor dead-lettered and left pending.
    """
    pipe = client.pipeline(transaction=True)
    for entry_id, data, reason, n in dead:
        pipe.xadd(
            dead_letter_stream,
            {
                "data": data,
                "reason": reason,
                "stream": stream,
                "id": entry_id,
                "group": group,
                "consumer": consumer,
                "deliveries": n,
            },
            maxlen=max_len or None,
            approximate=True,
        )
        pipe.xack(stream, group, entry_id)
    pipe.execute()
    for entry_id, _, reason, _ in dead:
        _DEAD_LINES.warning(
            log,
            "the consumer's dead_lettered (eventbus_consumer_dead_lettered_total)",
            "eventbus redis: entry %s of %s dead-lettered to %s: %s",
            entry_id,
            stream,
            dead_letter_stream,
            reason,
        )
