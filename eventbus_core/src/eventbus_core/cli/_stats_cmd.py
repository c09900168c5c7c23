"""`eventbus stats`: what the configured backend holds: published, retained, pending, lag.

For the Redis backends the figures are read from Redis itself, so they cover every process
that publishes or consumes there (Go and Python alike), following the layout in
`docs/backends/`: the LIST log `KEY` with its LogID counter `KEY:seq`, or the stream with its
consumer groups.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from eventbus_core._bus import EventBus
from eventbus_core._event import Event
from eventbus_core._settings import EventBusSettings
from eventbus_core.cli._ops import (
    EXIT_CODES_HELP,
    EXIT_OK,
    add_backend_options,
    open_bus,
    redis_client,
    refuse_memory,
    settings_from_args,
    with_redis_errors,
)
from eventbus_core.cli._reach import ONE_SHOT_HELP

__all__ = ["add_parser", "log_figures", "run", "stream_figures"]

DROPPED_NOTE = (
    "not kept in Redis: each publishing process counts its own drops "
    "(bus.stats().dropped, see docs/operations.md)"
)


def add_parser(sub: Any) -> None:
    """Register the `stats` command."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "stats",
        help="published, dropped, stream length, pending and lag of the configured backend",
        description="Show the figures of the configured backend. redis: events published "
        "(LogIDs assigned), retained in the list, trimmed or expired, newest and oldest "
        "LogID, TTL. redis-streams: stream length, entries added, and per consumer group "
        "the consumers, pending (delivered, not acknowledged) and lag (not yet delivered). "
        "Drops happen inside each publishing process and are counted there.",
        epilog=f"{ONE_SHOT_HELP} {EXIT_CODES_HELP}",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    add_backend_options(parser)
    parser.set_defaults(func=run)


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def _log_id(raw: Any) -> int | None:
    if raw is None:
        return None
    try:
        return Event.from_json(raw).log_id
    except ValueError:
        return None


def log_figures(client: Any, key: str) -> dict[str, Any]:
    """Figures of the LIST log at `key` (and its counter `key:seq`)."""
    pipe = client.pipeline(transaction=False)
    pipe.get(f"{key}:seq").llen(key).lindex(key, 0).lindex(key, -1).ttl(key)
    seq, length, newest, oldest, ttl = pipe.execute()
    published = int(seq or 0)
    return {
        "backend": "redis",
        "key": key,
        "published": published,
        "dropped": None,
        "dropped_note": DROPPED_NOTE,
        "length": int(length),
        "trimmed_or_expired": max(0, published - int(length)),
        "newest_log_id": _log_id(newest),
        "oldest_log_id": _log_id(oldest),
        "ttl_seconds": int(ttl) if int(ttl) >= 0 else None,
    }


def stream_figures(client: Any, stream: str) -> dict[str, Any]:
    """Figures of the stream `stream` and each of its consumer groups."""
    figures: dict[str, Any] = {
        "backend": "redis-streams",
        "stream": stream,
        "dropped": None,
        "dropped_note": DROPPED_NOTE,
    }
    if not client.exists(stream):
        figures.update(length=0, published=0, groups=[], exists=False)
        return figures
    info = {_text(k): v for k, v in client.xinfo_stream(stream).items()}
    pipe = client.pipeline(transaction=False)
    pipe.get(f"{stream}:seq").xlen(f"{stream}:dead")
    seq, dead = pipe.execute()
    added = info.get("entries-added")
    # Python publishers stamp LogIDs from `<stream>:seq`; entries-added (Redis 7+) also counts
    # what Go wrote. Take the larger: both include trimmed entries.
    candidates = [int(x) for x in (seq, added) if x is not None]
    figures.update(
        exists=True,
        length=int(info.get("length", 0)),
        published=max(candidates) if candidates else None,
        last_id=_text(info.get("last-generated-id")),
        dead_letters=int(dead),
    )
    groups = []
    for group in client.xinfo_groups(stream):
        g = {_text(k): v for k, v in group.items()}
        lag = g.get("lag")
        groups.append(
            {
                "name": _text(g.get("name")),
                "consumers": int(g.get("consumers", 0)),
                "pending": int(g.get("pending", 0)),
                "lag": int(lag) if lag is not None else None,
                "last_delivered_id": _text(g.get("last-delivered-id")),
            }
        )
    figures["groups"] = groups
    return figures


def _figures(settings: EventBusSettings, bus: EventBus) -> dict[str, Any]:
    if settings.backend == "redis":
        return log_figures(redis_client(settings), settings.redis_key)
    if settings.backend == "redis-streams":
        return stream_figures(redis_client(settings), settings.redis_stream)
    # A third-party backend: what its own stats() reports.
    return {"backend": settings.backend, **bus.stats().as_dict()}


def _print_text(figures: dict[str, Any]) -> None:
    groups = figures.pop("groups", None)
    note = figures.pop("dropped_note", None)
    first = ("backend", "key", "stream", "exists", "published", "dropped", "length")
    ordered = sorted(figures, key=lambda k: first.index(k) if k in first else len(first))
    for key in ordered:
        value = figures[key]
        shown = "-" if value is None else value
        if key == "dropped" and value is None and note:
            shown = note
        print(f"{key.replace('_', ' '):<20} {shown}")
    if groups is not None:
        if not groups:
            print("groups               none")
        for g in groups:
            lag = "?" if g["lag"] is None else g["lag"]
            print(
                f"group {g['name']:<14} consumers {g['consumers']}  pending {g['pending']}  "
                f"lag {lag}  last delivered {g['last_delivered_id']}"
            )


@with_redis_errors
def run(args: argparse.Namespace) -> int:
    """Print the backend's figures."""
    settings = settings_from_args(args)
    refuse_memory(settings, "stats")
    bus = open_bus(args, settings, "eventbus stats")
    try:
        figures = _figures(settings, bus)
    finally:
        bus.stop(timeout=1.0)
    if args.json:
        print(json.dumps(figures, indent=2, default=str))
    else:
        _print_text(figures)
    return EXIT_OK
