"""The processes of `eventbus demo` on a shared backend: `python -m eventbus_core._demo._worker
ROLE ...`.

Roles:
    publish   a proxy process: simulate requests and publish one event each to the bus;
    dispatch  the dispatcher process: the real `Dispatcher` with the jsonl sink, until it has
              written as many of this run's events as it is told to expect.

Both read the bus settings from the environment (LLM_PROXY_EVENT_BUS and the backend's own,
with the overrides of the backend's `Isolation.env`, which the demo sets for them), and speak
JSON lines: what they report on stdout, what they are told on stdin (dispatch
only). Their stderr is the demo's: warnings and errors show there, never on the demo's stdout.

Messages on stdout:
    publish   {"done": N} now and then (requests so far), then {"result": {...}};
    dispatch  {"ready": true} once it reads from the bus, then {"result": {...}}.
On stdin, dispatch reads one line: {"expect": N}, the number of events the publishers had
accepted. End of input instead (the demo stopped or died) makes it stop at once.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eventbus_core._demo._workload import simulate
from eventbus_core._errors import EventBusError, SettingsError
from eventbus_core._factory import create_bus
from eventbus_core._plugins import PluginLoadWarning, plugin_at_fault
from eventbus_core._settings import EventBusSettings
from eventbus_core._sink import Sink
from eventbus_core.capabilities import Flushable, capability
from eventbus_core.dispatch._dispatcher import Dispatcher
from eventbus_core.dispatch._setup import (
    build_sinks,
    redactor_from_settings,
    transform_from_settings,
)
from eventbus_core.redact._secrets import redact_url

__all__ = ["DeliveryWatch", "main"]

_PROGRESS_EVERY = 0.1  # seconds between {"done": N} lines: enough for a live display
_lock = threading.Lock()


def _say(message: dict[str, Any]) -> None:
    """Write one JSON line to stdout (from any thread: lines never interleave)."""
    with _lock:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()


def _publish(args: argparse.Namespace) -> int:
    settings = EventBusSettings()
    bus = create_bus(settings)
    done = 0
    last = time.monotonic()
    count_lock = threading.Lock()

    def progress(n: int) -> None:
        nonlocal done, last
        with count_lock:
            done += n
            now = time.monotonic()
            if now - last < _PROGRESS_EVERY:
                return
            last = now
            so_far = done
        _say({"done": so_far})

    costs = simulate(
        bus,
        workers=args.workers,
        requests=args.requests,
        seed=args.seed,
        first_worker=args.first_worker,
        first_request=args.first_request,
        prefix=args.prefix,
        progress=progress,
    )
    flushable = capability(bus, Flushable)
    if flushable is not None:
        flushable.flush(10.0)
    # stop() writes what is still buffered (bounded by EVENTBUS_STOP_TIMEOUT); what it could
    # not write moves from published to dropped, so the figures below are final.
    bus.stop()
    published, dropped = bus.stats()
    _say({"done": done})
    _say(
        {
            "result": {
                "requests": args.requests,
                "published": published,
                "dropped": dropped,
                "publish_ns": costs,
            }
        }
    )
    return 0


class DeliveryWatch:
    """A sink wrapper that hands its sink this run's events only, and counts them.

    Only payloads whose `request_id` starts with `prefix` are written: where the backend
    cannot give the run a namespace of its own (no `Isolatable`), the run's consumer group
    starts at the oldest entry the backend holds, and the demo's file got every event already
    there (real traffic, perhaps) besides its own (trial 117). Counting them lets the
    dispatcher process know when it has written everything the publishers accepted, without
    polling the file.

    Args:
        sink: The sink that stores the payloads.
        prefix: Request-id prefix of this run's events.
    """

    def __init__(self, sink: Sink, prefix: str) -> None:
        self.sink = sink
        self.name = sink.name
        self.prefix = prefix
        self.seen: set[str] = set()  # request ids: unique within a run, LogIDs need not be
        self._changed = threading.Condition()

    async def send(self, batch: Sequence[dict[str, Any]]) -> None:
        """Store this run's events of the batch in the sink, then count them."""
        mine = [p for p in batch if self._ours(p)]
        if not mine:
            return  # another's events only: taken (and acknowledged) without a word
        await self.sink.send(mine)
        ours = {p["request_id"] for p in mine}
        if ours - self.seen:
            with self._changed:
                self.seen |= ours
                self._changed.notify_all()

    def _ours(self, payload: dict[str, Any]) -> bool:
        request_id = payload.get("request_id")
        return isinstance(request_id, str) and request_id.startswith(self.prefix)

    async def close(self) -> None:
        """Close the sink."""
        await self.sink.close()

    def wait_for(self, expected: int, idle_timeout: float) -> bool:
        """Wait until `expected` distinct events were stored; False once `idle_timeout`
        seconds pass without a new one of this run."""
        with self._changed:
            deadline = time.monotonic() + idle_timeout
            while len(self.seen) < expected:
                before = len(self.seen)
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
                if len(self.seen) > before:
                    deadline = time.monotonic() + idle_timeout
            return True


def _dispatch(args: argparse.Namespace) -> int:
    # Small batches and a short flush interval: the demo waits for the last partial batch.
    settings = EventBusSettings(
        batch_size=500, flush_interval=0.2, dead_letter_path="", stats_interval=0
    )
    bus = create_bus(settings)
    (jsonl,) = build_sinks(settings, [("jsonl", {"path": str(args.output), "max_bytes": "0"})])
    watch = DeliveryWatch(jsonl, args.prefix)
    # Shared mode: the consumer group is exactly the bus's default group, which the backend's
    # isolation made the run's own (or --group, where the backend has no isolation), so it
    # never takes events from a real dispatcher's group.
    dispatcher = Dispatcher(
        bus,
        [watch],
        batch_size=settings.batch_size,
        flush_interval=settings.flush_interval,
        queue_size=max(settings.sink_queue_size, settings.batch_size),
        subscription_buffer=settings.dispatch_buffer,
        transform=transform_from_settings(settings),
        redactor=redactor_from_settings(settings),
        group_mode="shared",
        group=args.group,
        shutdown_timeout=settings.shutdown_timeout,
        stats_interval=0,
    )
    # Started means subscribed: a subscription took its position in the log, and a consumer
    # group starts where the backend starts it. Publishers may start now.
    dispatcher.start()
    _say({"ready": True})
    line = sys.stdin.readline()
    expected = int(json.loads(line)["expect"]) if line.strip() else None
    complete = expected is not None and watch.wait_for(expected, args.idle_timeout)
    dispatcher.stop()
    bus.stop()
    stats = dispatcher.stats()
    sink = stats.sinks[watch.name]
    _say(
        {
            "result": {
                "complete": complete,
                "delivered": len(watch.seen),
                "read": stats.read,
                "sent": sink.sent,
                "dead_lettered": sink.dead_lettered,
                "dropped": sink.dropped + stats.source_dropped,
            }
        }
    )
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m eventbus_core._demo._worker")
    roles = parser.add_subparsers(dest="role", required=True)
    pub = roles.add_parser("publish")
    pub.add_argument("--requests", type=int, required=True)
    pub.add_argument("--workers", type=int, required=True)
    pub.add_argument("--first-worker", type=int, default=0)
    pub.add_argument("--first-request", type=int, default=0)
    pub.add_argument("--seed", type=int, default=7)
    pub.add_argument("--prefix", default="req")
    pub.set_defaults(func=_publish)
    disp = roles.add_parser("dispatch")
    disp.add_argument("--output", type=Path, required=True)
    disp.add_argument("--prefix", required=True)
    disp.add_argument("--idle-timeout", type=float, default=15.0)
    disp.add_argument("--group", default=None, help="consumer group (default: the bus's)")
    disp.set_defaults(func=_dispatch)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one demo process; return its exit code (1 with one line on stderr on failure)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format=f"eventbus demo {args.role}: %(levelname)s %(message)s"
    )
    # A plugin's load failure is logged as one line, as the demo itself says it; its
    # PluginLoadWarning would say it a second time, in warnings' raw format (trial 231).
    warnings.filterwarnings("ignore", category=PluginLoadWarning)
    try:
        code: int = args.func(args)
    except BrokenPipeError:
        return 1  # the demo went away; nobody is left to tell
    except Exception as exc:
        # A bug in a plugin's code is named as the plugin's, as every command names it.
        owner = "" if isinstance(exc, EventBusError) else plugin_at_fault(exc)
        # eventbus's own errors as the commands say them, without the class (trial 214); a
        # bug's class is part of what it says.
        kind = "" if isinstance(exc, EventBusError) else f"{type(exc).__name__}: "
        print(
            f"eventbus demo {args.role}: error{f' in {owner}' if owner else ''}: "
            f"{kind}{redact_url(str(exc))}",
            file=sys.stderr,
        )
        # A setting the backend refused (a key of another type): the demo exits 2 for it, as
        # every command does for a configuration error (helper-113: it exited 1).
        return 2 if isinstance(exc, SettingsError) else 1
    return code


if __name__ == "__main__":
    raise SystemExit(main())
