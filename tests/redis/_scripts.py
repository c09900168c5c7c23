"""Run the Redis backends' append scripts by hand, as another writer process would."""

from __future__ import annotations

from typing import Any

import redis

from eventbus_core import Event
from eventbus_redis._scripts import LOG_APPEND, tail_of


def append_as_writer(
    client: redis.Redis,
    key: str,
    events: list[Event],
    *,
    writer: str = "other",
    batch: int = 1,
    max_len: int = 0,
) -> Any:
    """Append `events` to the LIST log at `key` with the script, as writer `writer`'s batch
    number `batch` (under a lease it takes first); returns the script's reply."""
    marker = f"{key}:writer:{writer}"
    lease = f"{marker}:lease"
    client.set(lease, "t", px=60_000)
    script = client.register_script(LOG_APPEND)
    args: list[Any] = [batch, "t", 1, 60_000, max_len, 0, "", *(tail_of(e) for e in events)]
    return script(keys=[key, f"{key}:seq", marker, lease], args=args)
