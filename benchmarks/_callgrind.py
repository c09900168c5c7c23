"""One run of a benchmark's child process under valgrind's callgrind, for the `callgrind_*`
scripts: instructions counted per thread, so that their difference between two runs of
different sizes is the cost per call or per event."""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sys
import tempfile

__all__ = ["count_instructions"]

_TOTAL = re.compile(rb"^(?:summary|totals):\s*(\d+)", re.MULTILINE)


def count_instructions(valgrind: str, script: str, args: list[str]) -> tuple[int, int]:
    """(main thread, other threads) instructions of `python script *args` under callgrind
    (`--separate-threads=yes`: one output file per thread, `-01` the main thread's)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "cg.out")
        subprocess.run(
            [
                valgrind,
                "--tool=callgrind",
                "--separate-threads=yes",
                f"--callgrind-out-file={out}",
                sys.executable,
                script,
                *args,
            ],
            check=True,
            env={**os.environ, "PYTHONHASHSEED": "0"},  # the same start-up in both runs
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        main = other = 0
        for path in glob.glob(out + "*"):
            with open(path, "rb") as f:
                found = _TOTAL.search(f.read())
            count = int(found.group(1)) if found else 0
            if path.endswith("-01"):
                main += count
            else:
                other += count
        return main, other
