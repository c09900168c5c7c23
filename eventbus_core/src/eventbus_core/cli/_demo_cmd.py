"""`eventbus demo`: the main job, end to end on the configured backend (in-memory by default)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from eventbus_core._demo import run_demo
from eventbus_core._factory import create_bus
from eventbus_core._settings import EventBusSettings

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    """Register the `demo` command."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "demo",
        help="run simulated LLM proxy traffic through the bus into a JSONL file",
        description="Simulate concurrent LLM proxy requests (chat completions, some streamed, "
        "embeddings, errors), publish one event per request, consume them into a JSONL file, "
        "and report published / delivered / dropped and the cost of publish(). Uses the "
        "backend from LLM_PROXY_EVENT_BUS (memory by default: no server needed).",
    )
    parser.add_argument("--backend", help="override LLM_PROXY_EVENT_BUS for this run")
    parser.add_argument("--requests", type=int, default=4_000, help="requests to simulate")
    parser.add_argument("--workers", type=int, default=8, help="concurrent proxy threads")
    parser.add_argument(
        "--output",
        type=Path,
        default=Path("demo-events.jsonl"),
        help="JSONL file the consumer writes (default: %(default)s)",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo; exit 1 if an accepted event was not delivered."""
    if args.requests < 1 or args.workers < 1:
        raise ValueError("--requests and --workers must be at least 1")
    overrides = {"backend": args.backend} if args.backend else {}
    settings = EventBusSettings(**overrides)
    bus = create_bus(settings)
    report = run_demo(
        bus,
        backend=settings.backend,
        output=args.output,
        workers=args.workers,
        requests=args.requests,
    )
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print("eventbus demo: simulated LLM proxy traffic\n")
        print("\n".join(report.lines()))
    accounted = report.published + report.dropped == report.requests
    lossless = report.written == report.published
    if not (accounted and lossless):
        print("eventbus demo: FAILED: some accepted events were not delivered")
        return 1
    return 0
