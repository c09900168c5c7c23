"""The demo's processes as the demo sees them: started, JSON lines in and out, ended.

Each process is `sys.executable -P -m eventbus_core._demo._worker ROLE ...` (see that module);
a thread per process turns its stdout into messages on an `Inbox`, so the demo waits for
whatever comes first, from any of them, without polling.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
from typing import IO, Any, TypeAlias

__all__ = ["Child", "DemoError", "Inbox", "expect"]

Inbox: TypeAlias = "queue.Queue[tuple[Child, dict[str, Any] | None]]"
"""Messages of demo processes: `(child, message)`, and `(child, None)` at the end of its output."""


class DemoError(RuntimeError):
    """A demo process failed, or stopped answering."""


class DemoSettingsError(DemoError):
    """A demo process ended on a configuration error (its exit status 2)."""


class Child:
    """A demo process whose stdout JSON lines go to `inbox` as `(child, message)`; None at
    the end of its output."""

    def __init__(
        self,
        role: str,
        argv: list[str],
        env: dict[str, str],
        inbox: Inbox,
        *,
        stdin: bool = False,
    ) -> None:
        self.role = role
        # -P: the working directory is not put on sys.path, so a source checkout there cannot
        # shadow the installed package.
        command = [sys.executable, "-P", "-m", "eventbus_core._demo._worker", role, *argv]
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
            # Its own session: Ctrl-C reaches the demo only, which then stops its processes.
            start_new_session=True,
        )
        self.inbox = inbox
        self.reader = threading.Thread(target=self._read, name=f"demo-{role}", daemon=True)
        self.reader.start()

    def _read(self) -> None:
        stdout: IO[str] | None = self.proc.stdout
        for line in stdout if stdout is not None else ():
            try:
                message = json.loads(line)
            except ValueError:
                sys.stderr.write(line)  # not ours (a library printed): show it, where it belongs
                continue
            if isinstance(message, dict):
                self.inbox.put((self, message))
        self.inbox.put((self, None))

    def tell(self, message: dict[str, Any]) -> None:
        """Write one JSON line to the process's stdin, and close it."""
        stdin = self.proc.stdin
        if stdin is not None:
            stdin.write(json.dumps(message) + "\n")
            stdin.close()

    def failure(self) -> DemoError:
        """The error for a process that ended without its result."""
        code = self.proc.wait()
        kind = DemoSettingsError if code == 2 else DemoError
        return kind(
            f"the {self.role} process exited with status {code} before reporting "
            "(its error is above)"
        )

    def close(self, grace: float = 0.0) -> None:
        """Wait `grace` seconds for the process to end by itself, then end it (SIGTERM, and
        SIGKILL 5 s later): a process still running then belongs to a failed run."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.reader.join(5)
            self.proc.stdout.close()


def expect(inbox: Inbox, key: str, timeout: float) -> dict[str, Any]:
    """Wait for the next message carrying `key` from the one process writing to `inbox`.

    Raises:
        DemoError: the process ended first, or sent nothing for `timeout` seconds.
    """
    while True:
        try:
            child, message = inbox.get(timeout=timeout)
        except queue.Empty:
            raise DemoError(f"no {key!r} from the demo's process in {timeout:.0f} s") from None
        if message is None:
            raise child.failure()
        if key in message:
            return message
