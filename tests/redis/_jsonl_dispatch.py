"""`eventbus dispatch --sink jsonl` in a process of its own, for tests of its exit status."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

__all__ = ["JsonlDispatch"]


class JsonlDispatch:
    """The dispatcher writing to `out`, with the environment `env` and more `flags`; killed on
    leaving the `with` block if it still runs."""

    def __init__(self, out: Path, env: Mapping[str, str], *flags: str) -> None:
        self.out = out
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "eventbus_core.cli", "dispatch", "--sink", "jsonl"),
                *("--sink-opt", f"path={out}", *flags),
            ],
            env=dict(env),
            stderr=subprocess.PIPE,
            text=True,
        )

    def __enter__(self) -> JsonlDispatch:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            self.proc.communicate(timeout=30)

    def lines(self) -> int:
        """Lines written so far."""
        try:
            return self.out.read_text().count("\n")
        except FileNotFoundError:
            return 0

    def running(self) -> None:
        """Fail the test, with the dispatcher's log, if it has exited."""
        assert self.proc.poll() is None, self.proc.communicate()[1]

    def wait_for(self, n: int, seconds: float) -> bool:
        """Whether `n` lines are written within `seconds` (the dispatcher still running)."""
        deadline = time.monotonic() + seconds
        while self.lines() < n:
            self.running()
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def stop(self) -> tuple[int, str]:
        """SIGTERM, as a service manager stops it: its exit status and its log."""
        self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=60)
        return self.proc.returncode, err
