"""Removing what a benchmark run wrote to Redis."""

from __future__ import annotations

from typing import Any


def delete_run_keys(client: Any, key: str) -> None:
    """Delete `key` and every key named after it, `<key>:*`: the counter, the dead letters, and
    the Redis writer's batch marker and lease (`<key>:writer:<id>`, which would otherwise stay
    for an hour)."""
    client.delete(key, *client.scan_iter(match=f"{key}:*", count=1000))
