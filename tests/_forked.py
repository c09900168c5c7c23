"""Waiting for a forked child without waiting for ever.

A forked child can hang where no code of ours runs: seen once in CI (stop 50), a child and its
one new thread were both stuck inside the GIL's pthread condition variable (one in
`pthread_cond_signal`'s `__condvar_quiesce_and_switch_g1`, the other cancelling a timed-out
`pthread_cond_timedwait`), glibc 2.36's lost-wakeup deadlock (sourceware bug 25847). The parent
then waited for the child for ever, and pytest-timeout's alarm did not end the wait. So the
parent waits a bounded time, kills a child that has not ended, and raises `ChildHung`; a test
may run its scenario once more then (`retried_if_hung`), saying so on stderr. A wrong result is
never retried: only a child that did not end at all.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["ChildHung", "read_from_child", "retried_if_hung", "wait_child"]

T = TypeVar("T")

CHILD_TIMEOUT = 60.0
"""Seconds a forked child may take: each scenario ends in a few seconds."""


class ChildHung(AssertionError):
    """A forked child did not end in time, and was killed."""


def wait_child(pid: int, timeout: float = CHILD_TIMEOUT) -> int:
    """The exit code of forked child `pid` once it ends (`os.waitstatus_to_exitcode`).

    Raises:
        ChildHung: it had not ended after `timeout` seconds (it is killed).
    """
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            _kill(pid)
            raise ChildHung(f"forked child {pid} had not ended after {timeout:g} s: killed")
        time.sleep(0.01)


def read_from_child(fd: int, pid: int, size: int, timeout: float = CHILD_TIMEOUT) -> bytes:
    """Up to `size` bytes from pipe `fd`, written by child `pid` (b"" once it closed it).

    Raises:
        ChildHung: nothing came within `timeout` seconds (the child is killed).
    """
    ready, _, _ = select.select([fd], [], [], timeout)
    if not ready:
        _kill(pid)
        raise ChildHung(f"forked child {pid} wrote nothing in {timeout:g} s: killed")
    return os.read(fd, size)


def retried_if_hung(scenario: Callable[[], T]) -> T:
    """`scenario()`, run once more if a child of it hung (see the module docstring)."""
    try:
        return scenario()
    except ChildHung as hung:
        print(f"{hung}; running the scenario once more", file=sys.stderr)
        return scenario()


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass
