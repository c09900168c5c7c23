"""`eventbus demo` on Redis: publisher processes and a dispatcher process, as in production.

The demo process starts one dispatcher process (the real `Dispatcher` with the jsonl sink) and
`publishers` publisher processes, all `sys.executable -m eventbus_core._demo._worker` (see that
module), so it runs wherever eventbus is installed. In order:

1. the dispatcher subscribes (list log: from now on) or joins its consumer group, says ready;
2. the publishers simulate their share of the requests, report progress, then their figures
   and the cost of each `publish()`;
3. the demo tells the dispatcher how many events were accepted; it stops once it has written
   them all (or after `idle_timeout` seconds without a new one) and reports;
4. the demo counts this run's lines in the file, by LogID, and cleans up.

Keys: each run gets its own, `eventbus-demo:<run>:events` (the list or the stream, with the
backend's derived keys beside it: `:seq`, `:writer:<id>`, `:dead`), all deleted at the end
unless `keep`, so repeated runs report exact counts. A key the user set (EVENTBUS_REDIS_KEY,
EVENTBUS_REDIS_STREAM) is used as it is and left in place; only the demo's consumer group is
removed from such a stream. Either way the consumer group (EVENTBUS_REDIS_GROUP) is the run's
own, so the demo never takes events from a real dispatcher's group.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from eventbus_core._demo._child import Child, DemoError, Inbox, expect
from eventbus_core._demo._report import DemoReport
from eventbus_core._demo._workload import DemoInterrupted, ProgressFactory, spread
from eventbus_core._settings import EventBusSettings

__all__ = ["REDIS_BACKENDS", "DemoError", "run_redis_demo"]

REDIS_BACKENDS: Final = ("redis", "redis-streams")
"""Backends the demo runs as separate processes (the others run in one process)."""

_READY_TIMEOUT = 60.0  # starting Python, importing the plugins, connecting to Redis
_SILENCE_TIMEOUT = 60.0  # publishers report every 0.1 s; this long without a word is a hang
_IDLE_TIMEOUT = 15.0  # the dispatcher gives up this long after the last new event


@dataclass(frozen=True)
class _Names:
    """Where this run's events go in Redis, and whose keys they are."""

    backend: str
    key: str  # the list (redis) or the stream (redis-streams)
    group: str
    fresh: bool  # the demo's own key: deleted at the end
    base: str  # prefix of every key of a fresh run

    def env(self, settings: EventBusSettings, requests: int) -> dict[str, str]:
        """The environment of the demo's processes."""
        env = {
            **os.environ,
            "LLM_PROXY_EVENT_BUS": self.backend,
            "REDIS_URL": str(settings.redis_url),
            "EVENTBUS_REDIS_GROUP": self.group,
        }
        streams = self.backend == "redis-streams"
        env["EVENTBUS_REDIS_STREAM" if streams else "EVENTBUS_REDIS_KEY"] = self.key
        if self.fresh:
            # The demo's own key keeps every event of the run: trimming would lose some
            # before the dispatcher read them, and the counts would no longer be exact.
            length = settings.redis_stream_max_len if streams else settings.redis_max_len
            var = "EVENTBUS_REDIS_STREAM_MAX_LEN" if streams else "EVENTBUS_REDIS_MAX_LEN"
            env[var] = str(max(length, requests) if length else 0)
        return env


def _names(settings: EventBusSettings, run: str) -> _Names:
    field = "redis_stream" if settings.backend == "redis-streams" else "redis_key"
    base = f"eventbus-demo:{run}"
    fresh = field not in settings.model_fields_set
    key = f"{base}:events" if fresh else str(getattr(settings, field))
    return _Names(settings.backend, key, base, fresh, base)


def _collect(
    inbox: Inbox,
    publishers: list[Child],
    progress: Callable[[int], None] | None,
    done: dict[Child, int],
) -> list[dict[str, Any]]:
    """Each publisher's result, advancing `progress` (and `done`, per publisher) as they
    report requests done."""
    done.update(dict.fromkeys(publishers, 0))
    results: dict[Child, dict[str, Any]] = {}
    running = set(publishers)
    while running:
        try:
            child, message = inbox.get(timeout=_SILENCE_TIMEOUT)
        except queue.Empty:
            raise DemoError(f"no publisher reported for {_SILENCE_TIMEOUT:.0f} s") from None
        if message is None:
            running.discard(child)
            if child not in results:
                raise child.failure()
            continue
        if "done" in message:
            now = int(message["done"])
            if progress is not None and now > done[child]:
                progress(now - done[child])
            done[child] = max(done[child], now)
        if "result" in message:
            results[child] = message["result"]
    return [results[p] for p in publishers]


def count_lines(output: Path, prefix: str) -> tuple[int, int]:
    """This run's events in the file: (distinct LogIDs, lines), for request ids with `prefix`."""
    ids: set[Any] = set()
    lines = 0
    if not output.exists():
        return 0, 0
    with output.open("rb") as fh:
        for raw in fh:
            try:
                payload = json.loads(raw)
            except ValueError:
                continue
            if isinstance(payload, dict) and str(payload.get("request_id", "")).startswith(prefix):
                lines += 1
                ids.add(payload.get("log_id"))
    return len(ids), lines


def _cleanup(client: Any, names: _Names, keep: bool) -> str:
    """Delete the run's keys (or the demo's group, on a stream of the user's); say what."""
    var = "EVENTBUS_REDIS_STREAM" if names.backend == "redis-streams" else "EVENTBUS_REDIS_KEY"
    if keep:
        return f"kept (--keep): {var}={names.key} eventbus stats shows it"
    if names.fresh:
        keys = list(client.scan_iter(match=f"{names.base}:*", count=1000))
        if keys:
            client.delete(*keys)
        return f"deleted at the end ({len(keys)} keys)"
    if names.backend == "redis-streams":
        client.xgroup_destroy(names.key, names.group)
        return f"yours ({var}): left in place, the demo's group {names.group} removed"
    return f"yours ({var}): left in place"


def _start_publishers(
    env: dict[str, str],
    inbox: Inbox,
    ids: str,
    requests: int,
    publishers: int,
    workers: int,
    seed: int,
) -> list[Child]:
    """Start the publishers, each with its share of the requests and of the proxy threads."""
    shares = spread(requests, publishers)
    threads = spread(max(workers, publishers), publishers)
    started = []
    for i in range(publishers):
        argv = [
            f"--requests={shares[i]}",
            f"--workers={threads[i]}",
            f"--first-worker={sum(threads[:i])}",
            f"--first-request={sum(shares[:i])}",
            f"--seed={seed}",
            f"--prefix={ids}",
        ]
        started.append(Child("publish", argv, env, inbox))
    return started


def run_redis_demo(
    client: Any,
    settings: EventBusSettings,
    *,
    output: Path,
    publishers: int = 2,
    workers: int = 8,
    requests: int = 4_000,
    seed: int = 7,
    keep: bool = False,
    progress: ProgressFactory | None = None,
) -> DemoReport:
    """Run the demo as separate processes on the Redis backend of `settings`.

    Args:
        client: A redis-py client of `settings.redis_url` (for the set-up and the clean-up).
        settings: Backend (`redis` or `redis-streams`), URL and key settings.
        output: The JSONL file the dispatcher writes (replaced).
        publishers: Publisher processes (at most `requests`).
        workers: Proxy threads in all, spread over the publishers (at least one each).
        requests: Exactly how many requests to simulate, spread over the publishers.
        seed: Seed of the simulated traffic.
        keep: Leave the demo's keys in Redis.
        progress: Shows the requests done, as the publishers report them.

    Raises:
        DemoError: a demo process failed or stopped answering.
        DemoInterrupted: Ctrl-C; the demo's processes were ended and its keys deleted (unless
            `keep`) before it was raised.
    """
    publishers = max(1, min(publishers, requests))
    run = uuid.uuid4().hex[:12]
    names = _names(settings, run)
    env = names.env(settings, requests)
    ids = f"req-{run}"  # request ids are req-<run>-<n>: this run's, whoever else writes
    prefix = f"{ids}-"
    path = output.resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)  # the jsonl sink appends; the file holds this run only
    children: list[Child] = []
    done: dict[Child, int] = {}
    finished = False
    interrupted = False
    cleanup = ""
    try:
        if not names.fresh and names.backend == "redis-streams":
            # A new group on an existing stream would start at its beginning: start at its end.
            client.xgroup_create(names.key, names.group, id="$", mkstream=True)
        dispatcher_inbox: Inbox = queue.Queue()
        argv = ["--output", str(path), "--prefix", prefix, "--idle-timeout", str(_IDLE_TIMEOUT)]
        dispatcher = Child("dispatch", argv, env, dispatcher_inbox, stdin=True)
        children.append(dispatcher)
        expect(dispatcher_inbox, "ready", _READY_TIMEOUT)
        start = time.perf_counter()
        inbox: Inbox = queue.Queue()
        with progress() if progress is not None else contextlib.nullcontext(None) as advance:
            pubs = _start_publishers(env, inbox, ids, requests, publishers, workers, seed)
            children.extend(pubs)
            results = _collect(inbox, pubs, advance, done)
        published = sum(int(r["published"]) for r in results)
        dispatcher.tell({"expect": published})
        wait = _IDLE_TIMEOUT + settings.shutdown_timeout + 30
        expect(dispatcher_inbox, "result", wait)
        seconds = time.perf_counter() - start
        finished = True
    except KeyboardInterrupt:
        interrupted = True
    finally:
        for child in children:
            child.close(grace=10.0 if finished else 0.0)
        cleanup = _cleanup(client, names, keep)
    if interrupted:
        raise DemoInterrupted(
            sum(done.values()),
            requests,
            f"its {len(children)} processes were stopped; redis key {names.key}: {cleanup}",
        )
    delivered, written = count_lines(path, prefix)
    return DemoReport(
        backend=settings.backend,
        requests=sum(int(r["requests"]) for r in results),
        published=published,
        dropped=sum(int(r["dropped"]) for r in results),
        delivered=delivered,
        written=written,
        output=output,
        seconds=seconds,
        publish_ns=[int(c) for r in results for c in r["publish_ns"]],
        publishers=publishers,
        redis_key=names.key,
        cleanup=cleanup,
    )
