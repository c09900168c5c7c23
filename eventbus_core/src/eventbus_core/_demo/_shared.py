"""`eventbus demo` on a shared backend: publisher processes and a dispatcher process, as in
production.

A backend shared between processes (capability `CrossProcess`: Redis, NATS, a plugin's) runs
the demo as separate processes. The demo process starts one dispatcher process (the real
`Dispatcher` with the jsonl sink) and `publishers` publisher processes, all
`sys.executable -m eventbus_core._demo._worker` (see that module), so it runs wherever
eventbus is installed. In order:

1. the dispatcher subscribes (from now on) or joins its consumer group, says ready;
2. the publishers simulate their share of the requests, report progress, then their figures
   and the cost of each `publish()`;
3. the demo tells the dispatcher how many events were accepted; it stops once it has written
   them all (or after `idle_timeout` seconds without a new one) and reports;
4. the demo counts this run's lines in the file, by LogID, and cleans up.

Namespace: a backend that is `Isolatable` gives each run one of its own (environment
variables for the processes: a key, stream or file, and a consumer group, of the run's own),
deleted at the end unless `keep`, so repeated runs report exact counts; a namespace the user
configured is used as it is and left in place (the backend decides, see its `isolate()`).
Without `Isolatable`, the processes use the configured one, with a consumer group of the run's
own, and this run's events are told apart by their request ids; the report says that both stay
in the backend.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from eventbus_core._bus import EventBus
from eventbus_core._demo._child import Child, DemoError, Inbox, expect
from eventbus_core._demo._report import DemoReport
from eventbus_core._demo._workload import DemoInterrupted, ProgressFactory, spread
from eventbus_core._env_typos import spelling_read
from eventbus_core._log import scrub
from eventbus_core._settings import EventBusSettings
from eventbus_core.capabilities import ConsumerGroups, Isolatable, Isolation, capability
from eventbus_core.cli._ending import within_ending

__all__ = ["DemoError", "run_shared_demo"]

_READY_TIMEOUT = 60.0  # starting Python, importing the plugins, connecting to the backend
_SILENCE_TIMEOUT = 60.0  # publishers report every 0.1 s; this long without a word is a hang
_IDLE_TIMEOUT = 15.0  # the dispatcher gives up this long after the last new event


def _isolation(bus: EventBus, run: str, requests: int) -> tuple[Isolation, list[str]]:
    """The run's namespace, and the dispatcher's extra arguments (a group of its own where
    the backend gives no namespace)."""
    isolatable = capability(bus, Isolatable)
    if isolatable is not None:
        return isolatable.isolate(run, requests), []
    if capability(bus, ConsumerGroups) is None:
        # No group to name either (helper-112: a "consumer group" was said to be left in a
        # backend that has none).
        def events_left(keep: bool) -> str:
            return (
                "left in place: the backend cannot give a run a namespace of its own (no "
                "Isolatable capability), so this run's events stay in it"
            )

        return Isolation(env={}, where="the configured one", cleanup=events_left), []
    group = f"eventbus-demo-{run}"

    def left_in_place(keep: bool) -> str:
        return (
            "left in place: the backend cannot give a run a namespace of its own (no Isolatable "
            "capability), so this run's events and consumer group stay in it"
        )

    shared = Isolation(
        env={}, where=f"the configured one, consumer group {group}", cleanup=left_in_place
    )
    return shared, ["--group", group]


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
    """This run's events in the file: (distinct events, lines), for request ids with `prefix`.

    Events are told apart by request id (unique within a run: `{prefix}{n:06d}`), not by
    LogID, which a shared backend need not stamp."""
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
            request_id = payload.get("request_id") if isinstance(payload, dict) else None
            if isinstance(request_id, str) and request_id.startswith(prefix):
                lines += 1
                ids.add(request_id)
    return len(ids), lines


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


def is_replaceable_file(path: Path) -> bool:
    """True if `path` is missing or a regular file: what the multi-process demo may delete and
    write anew (never a device such as /dev/null, a pipe or a socket)."""
    return not path.exists() or path.resolve().is_file()


def with_overrides(base: Mapping[str, str], overrides: Mapping[str, str]) -> dict[str, str]:
    """`base` with `overrides` set, and every other spelling of an overridden name removed.

    eventbus reads variable names whatever their case: a child given `REDIS_URL` beside the
    user's own `redis_url` would warn that both are set, though the user set one, and this
    process has already settled which value the run uses.
    """
    replaced = {name.upper() for name in overrides}
    kept = {name: value for name, value in base.items() if name.upper() not in replaced}
    return {**kept, **overrides}


def run_shared_demo(
    bus: EventBus,
    settings: EventBusSettings,
    *,
    output: Path,
    publishers: int = 2,
    workers: int = 8,
    requests: int = 4_000,
    seed: int = 7,
    keep: bool = False,
    progress: ProgressFactory | None = None,
    env: Mapping[str, str] | None = None,
) -> DemoReport:
    """Run the demo as separate processes on the shared backend of `bus` (stopped here).

    Args:
        bus: A bus of `settings`, whose backend answers (for the set-up; then stopped).
        settings: The settings the processes start from (`LLM_PROXY_EVENT_BUS` and the
            backend's own, from the environment, with the isolation's overrides).
        output: The JSONL file the dispatcher writes (replaced).
        publishers: Publisher processes (at most `requests`).
        workers: Proxy threads in all, spread over the publishers (at least one each).
        requests: Exactly how many requests to simulate, spread over the publishers.
        seed: Seed of the simulated traffic.
        keep: Leave the run's namespace in the backend.
        progress: Shows the requests done, as the publishers report them.
        env: Environment variables the processes get on top of this process's own: the
            backend settings given on the command line (`--backend-option`, `--redis-url`),
            so that every process uses the backend this one checked.

    Raises:
        DemoError: a demo process failed or stopped answering.
        DemoInterrupted: Ctrl-C; the demo's processes were ended and its namespace deleted
            (unless `keep`) before it was raised.
    """
    publishers = max(1, min(publishers, requests))
    run = uuid.uuid4().hex[:12]
    try:
        isolation, dispatcher_args = _isolation(bus, run, requests)
    finally:
        bus.stop(timeout=1.0)  # the demo's processes have buses of their own
    env_given = dict(env or {})
    env = with_overrides(
        os.environ, {**env_given, "LLM_PROXY_EVENT_BUS": settings.backend, **isolation.env}
    )
    ids = f"req-{run}"  # request ids are req-<run>-<n>: this run's, whoever else writes
    prefix = f"{ids}-"
    path = output.resolve()
    if not is_replaceable_file(path):
        # Run as root, unlinking /dev/null or /dev/full would remove the machine's device.
        raise DemoError(f"{output} is not a regular file; the demo would replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)  # the jsonl sink appends; the file holds this run only
    children: list[Child] = []
    done: dict[Child, int] = {}
    finished = False
    interrupted = False
    cleanup = ""
    try:
        dispatcher_inbox: Inbox = queue.Queue()
        argv = ["--output", str(path), "--prefix", prefix, "--idle-timeout", str(_IDLE_TIMEOUT)]
        dispatcher = Child("dispatch", argv + dispatcher_args, env, dispatcher_inbox, stdin=True)
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
        # A signal now must not leave processes or keys behind.
        with within_ending(interrupted=interrupted):
            for child in children:
                child.close(grace=10.0 if finished else 0.0)
            cleanup = _clean_up(isolation, keep)
            if keep:
                cleanup += _keep_hint(settings.backend, env_given)
    if interrupted:
        where = f"; {isolation.kind} {isolation.where}: {cleanup}" if isolation.where else ""
        raise DemoInterrupted(
            sum(done.values()), requests, f"its {len(children)} processes were stopped{where}"
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
        namespace=isolation.where,
        namespace_kind=isolation.kind,
        cleanup=cleanup,
    )


def _keep_hint(backend: str, given: Mapping[str, str]) -> str:
    """What the `--keep` hint must add for its command to find the run's events: the backend,
    where the environment does not select it (`--backend` did: the hint's `eventbus stats`
    looked at the default memory backend and exited 2, trial 126), and the backend settings
    the command line gave (a backend's address flag: the hint's command looked at the address
    of the environment instead, trial 229). An address is shown masked, as every line the demo
    prints; any other value is only named (it may be a credential)."""
    spelt = spelling_read("LLM_PROXY_EVENT_BUS", os.environ)
    by_flag = spelt is None or os.environ[spelt].strip().lower() != backend
    if not given:
        return f" (with LLM_PROXY_EVENT_BUS={backend}, or --backend {backend})" if by_flag else ""
    shown = [
        f"{name}={scrub(value)}" if "://" in value else f"{name} as this demo's flags set it"
        for name, value in sorted(given.items())
    ]
    needed = [f"LLM_PROXY_EVENT_BUS={backend}"] if by_flag else []
    return f" (with {', '.join(needed + shown)})"


def _clean_up(isolation: Isolation, keep: bool) -> str:
    """`isolation.cleanup(keep)`, or what was left and why when it fails: a backend that
    stopped answering after every event was delivered must not turn the run's report into an
    error (exit 1 and no summary, helper-109), nor hide the namespace it left."""
    try:
        return isolation.cleanup(keep)
    except Exception as exc:
        # Not "delete it": a backend keeps more than the named key or stream for a run (a
        # Redis run's counter and writer markers, helper-111).
        return (
            f"NOT deleted: {scrub(str(exc))}; the run's {isolation.kind} {isolation.where} and "
            "what the run made beside it stay in the backend"
        )
