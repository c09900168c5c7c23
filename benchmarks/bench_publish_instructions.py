"""Instructions per `InMemoryEventBus.publish()` call, on both publishing paths, under callgrind.

Timings on a shared 2-core machine move by tens of percent from run to run; instruction counts
do not. This runs a small publisher under `valgrind --tool=callgrind` twice, with `n` and with
`2 n` publishes of one prebuilt event, and reports the difference per call: everything that
is not the extra publishes (start-up, imports, the drainer's start) cancels out. The drainer
lingers for longer than the run, so what is counted is the hot path: the `publish()` call and
the `for` loop around it (a bare `deque.append` loop is shown for scale).

    .venv/bin/python benchmarks/bench_publish_instructions.py          # needs valgrind
    .venv/bin/python benchmarks/bench_publish_instructions.py --n 50000
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CASES = ("thread", "asyncio", "deque")


def _publisher(case: str, n: int) -> None:
    """The measured process: `n` publishes on `case`'s path."""
    from eventbus_core.testing import make_event
    from eventbus_memory import InMemoryEventBus

    event = make_event(1)
    if case == "deque":
        buf: collections.deque[object] = collections.deque()
        append = buf.append
        for _ in range(n):
            append(event)
        return
    # A drainer that waits longer than the run: the publishes only append.
    bus = InMemoryEventBus(
        4 * n + 10, linger=3600.0, publish_path="thread" if case == "thread" else "asyncio"
    )
    bus._batcher._high_water = 10 * n + 10  # no half-full wake either

    def run() -> None:
        publish = bus.publish
        for _ in range(n):
            publish(event)

    if case == "asyncio":

        async def main() -> None:
            run()

        asyncio.run(main())
    else:
        run()


def _instructions(case: str, n: int, workdir: str) -> int:
    out = Path(workdir) / f"callgrind.{case}.{n}"
    subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            sys.executable,
            __file__,
            "--run",
            case,
            "--n",
            str(n),
        ],
        check=True,
        capture_output=True,
    )
    text = out.read_text(errors="replace")
    match = re.search(r"^(?:summary|totals):\s+(\d+)", text, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no instruction total in {out}")
    return int(match.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=20_000, help="publishes (default 20000)")
    parser.add_argument("--run", choices=CASES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        _publisher(args.run, args.n)
        return 0
    if shutil.which("valgrind") is None:
        print("skipped: valgrind is not installed (apt-get install valgrind)")
        return 0  # `dev.py bench` runs every script: a missing tool is not a failure
    n = args.n
    print(f"instructions per call (callgrind, {n} vs {2 * n} calls, difference / {n})")
    with tempfile.TemporaryDirectory() as workdir:
        for case in CASES:
            once = _instructions(case, args.n, workdir)
            twice = _instructions(case, 2 * args.n, workdir)
            label = "deque.append loop" if case == "deque" else f"publish(), {case} path"
            print(f"  {label:<24} {(twice - once) / args.n:8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
