"""`eventbus demo`: the main job, end to end on the configured backend (in-memory by default;
redis-streams when the Go proxy's REDIS_ADDR is set and LLM_PROXY_EVENT_BUS is not).

A backend that lives in one process (memory): proxy threads and a consumer thread in this
process. A backend shared between processes (capability `CrossProcess`: redis,
redis-streams, nats, a plugin's): publisher processes and a dispatcher process, in a namespace
of the run's own where the backend is `Isolatable` (see `eventbus_core._demo._shared`).
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

from eventbus_core._demo._child import DemoSettingsError
from eventbus_core._demo._report import DemoReport
from eventbus_core._demo._shared import DemoError, is_replaceable_file, run_shared_demo
from eventbus_core._demo._workload import DemoInterrupted, run_demo
from eventbus_core.capabilities import is_cross_process
from eventbus_core.cli._backend_flags import plugin_override_env
from eventbus_core.cli._ops import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    add_backend_options,
    exit_codes_help,
    open_bus,
    settings_from_args,
    shared_backend_example,
    with_backend_errors,
)
from eventbus_core.cli._output import OnePath, check_output, path_argument
from eventbus_core.cli._progress import Progress
from eventbus_core.cli._reach import ONE_SHOT_HELP

__all__ = ["add_parser", "run"]

_DEFAULT_PUBLISHERS = 2
_DEFAULT_WORKERS = 8
_MAX_PUBLISHERS = 32  # processes: more only loads the machine (trial 145: 100 took 29 s)


def add_parser(sub: Any) -> None:
    """Register the `demo` command."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "demo",
        help="run simulated LLM proxy traffic through the bus into a JSONL file",
        description="Simulate concurrent LLM proxy requests (chat completions, some streamed, "
        "embeddings, errors), publish one event per request, consume them into a JSONL file, "
        "and report published / delivered / dropped and the cost of publish(). Uses the "
        "backend from LLM_PROXY_EVENT_BUS (memory by default: one process, no server needed; "
        "redis-streams, with it unset, when the Go llm-proxy's REDIS_ADDR is set). "
        "With a backend shared between processes ('eventbus plugins' lists the installed "
        "ones), publisher processes and a dispatcher process (the jsonl sink) run against it, "
        "in a namespace of their own where the backend offers one (keys or a stream named "
        "after the run, unless you named the key or stream in its settings), deleted at the "
        "end.",
        epilog="Progress goes to stderr (a live line on a terminal), the summary to stdout. "
        "The --output path is checked before anything runs. Ctrl-C stops the demo within a "
        "second and says how far it got (on a shared backend, after ending its processes and "
        f"deleting its namespace unless --keep). {ONE_SHOT_HELP} "
        + exit_codes_help(
            "one was not, a demo process failed, or the backend did not answer",
            done="every accepted event was delivered",
            usage="usage or configuration error (--output included)",
        ),
    )
    parser.add_argument(
        "--requests", type=int, default=4_000, help="requests to simulate (default: %(default)s)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        help="concurrent proxy threads; with a shared backend, in all, spread over the "
        f"publisher processes, at least one each (default: {_DEFAULT_WORKERS}, or --publishers "
        "if more)",
    )
    parser.add_argument(
        "--publishers",
        type=int,
        metavar="N",
        help="shared backends only: publisher processes, at most "
        f"{_MAX_PUBLISHERS} (default: {_DEFAULT_PUBLISHERS})",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="shared backends only: leave the demo's namespace (keys, stream) in the backend, "
        "to look at it with eventbus stats, tail or replay",
    )
    parser.add_argument(
        "--output",
        type=path_argument,
        action=OnePath,
        default=Path("demo-events.jsonl"),
        help="JSONL file the consumer writes, replaced; missing directories on the way are "
        "created (default: %(default)s)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the summary as JSON (and no progress)"
    )
    add_backend_options(parser)
    parser.set_defaults(func=run)


def _check(args: argparse.Namespace) -> None:
    for flag, value in (("--requests", args.requests), ("--workers", args.workers)):
        if value is not None and value < 1:
            raise UsageError(f"{flag} {value}: must be at least 1")
    if args.publishers is not None and not 1 <= args.publishers <= _MAX_PUBLISHERS:
        raise UsageError(
            f"--publishers {args.publishers}: must be from 1 to {_MAX_PUBLISHERS} (each is a "
            "process of its own)"
        )
    # Each publisher process runs one proxy thread at least: fewer workers than that was
    # raised in silence (trial 145).
    if args.workers is not None and args.publishers and args.workers < args.publishers:
        raise UsageError(
            f"--workers {args.workers} is fewer than --publishers {args.publishers}: each "
            f"publisher process runs at least one worker; give --workers {args.publishers} or "
            "more, or fewer publishers"
        )
    check_output(args.output, "--output")


def _check_publishers(args: argparse.Namespace, multi_process: bool, backend: str) -> None:
    # The shared backends installed, as every command names them (it said "--backend redis
    # ... or --redis-url" where no Redis backend was installed: trial 208).
    if args.publishers is not None and not multi_process:
        raise UsageError(
            f"--publishers runs separate processes, which need a backend they share, and "
            f"{backend!r} lives inside each process: pass --backend with a shared backend and "
            f"its address; {shared_backend_example(backend)}"
        )
    if args.keep and not multi_process:
        # Accepted and ignored, it would promise a namespace to look at that never existed.
        raise UsageError(
            "--keep leaves the demo's events in a backend they share, to look at with eventbus "
            f"stats, tail or replay; {backend!r} keeps nothing after the demo: pass --backend "
            f"with a shared backend and its address, or drop --keep; "
            f"{shared_backend_example(backend)}"
        )
    if multi_process and not is_replaceable_file(args.output):
        raise UsageError(
            f"--output {str(args.output)!r} is not a regular file: with separate processes "
            "the demo replaces the file and reads it back to count what was written; give a "
            "file path, e.g. demo-events.jsonl"
        )


def run(args: argparse.Namespace) -> int:
    """Run the demo; exit 1 if an accepted event was not delivered, 130 on Ctrl-C."""
    try:
        return _run(args)
    except DemoInterrupted as stopped:
        print(stopped.summary(), file=sys.stderr)
        if args.json:  # a script reading stdout gets JSON in every outcome
            shown = {
                "interrupted": True,
                "requests": stopped.requests,
                "simulated": stopped.done,
                "detail": stopped.detail,
            }
            print(json.dumps(shown, indent=2))
        return 130


@with_backend_errors
def _run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    _check(args)
    # An unreachable backend is one clear line before anything starts.
    bus = open_bus(args, settings, "eventbus demo")
    multi_process = is_cross_process(bus)
    try:
        _check_publishers(args, multi_process, settings.backend)
    except UsageError:
        bus.stop(timeout=0)
        raise
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

    if multi_process:
        try:
            report = run_shared_demo(
                bus,
                settings,
                output=args.output,
                publishers=args.publishers or _DEFAULT_PUBLISHERS,
                workers=args.workers or max(_DEFAULT_WORKERS, args.publishers or 0),
                requests=args.requests,
                keep=args.keep,
                progress=progress,
                env=plugin_override_env(args),
            )
        except DemoError as exc:
            print(f"eventbus demo: FAILED: {exc}", file=sys.stderr)
            return EXIT_USAGE if isinstance(exc, DemoSettingsError) else EXIT_FAILED
    else:
        report = run_demo(
            bus,
            backend=settings.backend,
            output=args.output,
            workers=args.workers or _DEFAULT_WORKERS,
            requests=args.requests,
            progress=progress,
        )
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print("eventbus demo: simulated LLM proxy traffic\n")
        print("\n".join(report.lines()))
    if report.output_error:
        print(f"eventbus demo: FAILED: {report.output_error}", file=sys.stderr)
        return EXIT_FAILED
    if not report.lossless:
        print("eventbus demo: FAILED: some accepted events were not delivered", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
