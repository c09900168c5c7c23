"""CPU time of a running process, as the benchmarks measure it (Linux: `/proc/<pid>/stat`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

_TICK_SECONDS: Final = 1 / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds (all threads) that process `pid` has used so far.

    Unlike requests or events per second, this does not move when other work shares the machine.

    Raises:
        OSError: there is no `/proc/<pid>/stat` (not Linux, or the process is gone).
    """
    fields = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * _TICK_SECONDS
