"""`eventbus demo`: the main job, end to end on the configured backend (in-memory by default).

Memory (or any backend that is not Redis): proxy threads and a consumer thread in this process.
`redis` and `redis-streams`: publisher processes and a dispatcher process against Redis, on
keys of their own that are deleted at the end (see `eventbus_core._demo._shared`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from eventbus_core._demo._report import DemoReport
from eventbus_core._demo._shared import REDIS_BACKENDS, DemoError, run_redis_demo
from eventbus_core._demo._workload import DemoInterrupted, run_demo
from eventbus_core.cli._ops import (
    EXIT_FAILED,
    EXIT_OK,
    UsageError,
    add_backend_options,
    open_bus,
    redis_client,
    settings_from_args,
    with_redis_errors,
)
from eventbus_core.cli._output import check_output
from eventbus_core.cli._progress import Progress
from eventbus_core.cli._reach import ONE_SHOT_HELP

__all__ = ["add_parser", "run"]

_DEFAULT_PUBLISHERS = 2


def add_parser(sub: Any) -> None:
    """Register the `demo` command."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "demo",
        help="run simulated LLM proxy traffic through the bus into a JSONL file",
        description="Simulate concurrent LLM proxy requests (chat completions, some streamed, "
        "embeddings, errors), publish one event per request, consume them into a JSONL file, "
        "and report published / delivered / dropped and the cost of publish(). Uses the "
        "backend from LLM_PROXY_EVENT_BUS (memory by default: one process, no server needed). "
        "With redis or redis-streams, publisher processes and a dispatcher process (the jsonl "
        "sink) run against REDIS_URL, on keys of their own (eventbus-demo:<run>:...) that are "
        "deleted at the end, unless EVENTBUS_REDIS_KEY / EVENTBUS_REDIS_STREAM names one.",
        epilog="Progress goes to stderr (a live line on a terminal), the summary to stdout. "
        "The --output path is checked before anything runs. Ctrl-C stops the demo within a "
        "second and says how far it got (on Redis, after ending its processes and deleting "
        f"its keys unless --keep). {ONE_SHOT_HELP} "
        "exit codes: 0 every accepted event was delivered; 1 one was not, a demo process "
        "failed, or Redis did not answer; 2 usage or configuration error (--output included); "
        "130 interrupted",
    )
    parser.add_argument(
        "--requests", type=int, default=4_000, help="requests to simulate (default: %(default)s)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=8,
        help="concurrent proxy threads; with Redis, in all, spread over the publisher "
        "processes (default: %(default)s)",
    )
    parser.add_argument(
        "--publishers",
        type=int,
        metavar="N",
        help=f"Redis backends only: publisher processes (default: {_DEFAULT_PUBLISHERS})",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="Redis backends only: leave the demo's keys in Redis, to look at them with "
        "eventbus stats, tail or replay",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=Path("demo-events.jsonl"),
        help="JSONL file the consumer writes, replaced (default: %(default)s)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the summary as JSON (and no progress)"
    )
    add_backend_options(parser)
    parser.set_defaults(func=run)


def _check(args: argparse.Namespace, multi_process: bool) -> None:
    for flag, value in (("--requests", args.requests), ("--workers", args.workers)):
        if value < 1:
            raise UsageError(f"{flag} {value}: must be at least 1")
    if args.publishers is not None:
        if not multi_process:
            raise UsageError(
                "--publishers runs separate processes, which need a backend they share: "
                "pass --backend redis (or redis-streams) with REDIS_URL or --redis-url"
            )
        if args.publishers < 1:
            raise UsageError(f"--publishers {args.publishers}: must be at least 1")
    check_output(args.output, "--output")


def run(args: argparse.Namespace) -> int:
    """Run the demo; exit 1 if an accepted event was not delivered, 130 on Ctrl-C."""
    try:
        return _run(args)
    except DemoInterrupted as stopped:
        print(stopped.summary(), file=sys.stderr)
        return 130


@with_redis_errors
def _run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    multi_process = settings.backend in REDIS_BACKENDS
    _check(args, multi_process)
    # An unreachable backend is one clear line before anything starts.
    bus = open_bus(args, settings, "eventbus demo")
    client = None
    if multi_process:
        bus.stop(timeout=1.0)  # the demo's processes have buses of their own
        client = redis_client(settings)
    report: DemoReport

    @contextlib.contextmanager
    def progress() -> Iterator[Callable[[int], None]]:
        # On stderr, and not at all with --json: stdout holds only the summary.
        with Progress("requests", args.requests, enabled=not args.json) as shown:
            lock = threading.Lock()  # proxy threads (memory) count requests done at once

            def advance(n: int) -> None:
                with lock:
                    shown.advance(n)

            yield advance

    if client is not None:
        try:
            report = run_redis_demo(
                client,
                settings,
                output=args.output,
                publishers=args.publishers or _DEFAULT_PUBLISHERS,
                workers=args.workers,
                requests=args.requests,
                keep=args.keep,
                progress=progress,
            )
        except DemoError as exc:
            print(f"eventbus demo: FAILED: {exc}", file=sys.stderr)
            return EXIT_FAILED
    else:
        report = run_demo(
            bus,
            backend=settings.backend,
            output=args.output,
            workers=args.workers,
            requests=args.requests,
            progress=progress,
        )
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print("eventbus demo: simulated LLM proxy traffic\n")
        print("\n".join(report.lines()))
    if not report.lossless:
        print("eventbus demo: FAILED: some accepted events were not delivered", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
