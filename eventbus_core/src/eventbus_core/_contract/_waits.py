"""`WaitSpy`: notices a call that waits or does I/O, made inside a call it watches.

The suite's time bounds catch a `publish()` that waits long, but one that writes to a fast
disk or a local server in every call, or sleeps a millisecond for room, returns well within any
bound a loaded machine allows: the verdict would depend on the storage's speed. The spy looks at
what the call does instead, with `sys.setprofile` on the calling thread, and records the first
call of these kinds:

- a wait: `threading.Condition.wait` (under `Event.wait`, `Queue.put`, `Future.result`,
  `Semaphore.acquire` and `Thread.join` alike, but only when they actually wait), `time.sleep`,
  `select`, polling objects;
- I/O: opening a file, reading, writing or flushing one, `os.read`/`os.write`/`os.fsync`, file
  locks, and sending, receiving or connecting on a socket in blocking mode (an event loop's
  wake-up pipe is non-blocking: `call_soon_threadsafe` is fine).

Not counted: what `logging` does (a warning about a full buffer may go to a file), and a
`Thread.start()` (it waits for the new thread to begin: a backend that starts its worker
lazily, after a fork, does it once).
"""

from __future__ import annotations

import io
import logging
import os
import select
import socket
import sys
import threading
import time
from collections.abc import Callable
from types import CodeType, FrameType
from typing import Any, TypeVar

__all__ = ["WaitSpy"]

T = TypeVar("T")

# Python functions that wait when they are entered.
_WAITING_CODES: dict[CodeType, str] = {
    threading.Condition.wait.__code__: "threading.Condition.wait()",
}
# Python functions under which a wait is allowed (see the module's docstring).
_ALLOWED_CODES: frozenset[CodeType] = frozenset({threading.Thread.start.__code__})
_LOGGING_DIR = os.path.dirname(logging.__file__)

_BLOCKING_FUNCTIONS: dict[Any, str] = {
    time.sleep: "time.sleep()",
    select.select: "select.select()",
    os.read: "os.read()",
    os.write: "os.write()",
    os.fsync: "os.fsync()",
    os.open: "os.open()",
    io.open: "open()",
}
try:
    import fcntl
except ImportError:  # not on Windows
    pass
else:
    _BLOCKING_FUNCTIONS.update({fcntl.flock: "fcntl.flock()", fcntl.lockf: "fcntl.lockf()"})
_FILE_METHODS = frozenset(
    {"read", "readinto", "readline", "readlines", "write", "writelines", "flush", "truncate"}
)
_SOCKET_METHODS = frozenset(
    {
        "send",
        "sendall",
        "sendto",
        "sendmsg",
        "recv",
        "recv_into",
        "recvfrom",
        "recvfrom_into",
        "recvmsg",
        "connect",
        "connect_ex",
        "accept",
    }
)
_POLL_METHODS = frozenset({"poll", "select", "control"})  # poll/epoll/devpoll/selectors, kqueue


def _blocking_c_call(function: Any) -> str:
    """What `function` (a builtin about to be called) is, if it waits or does I/O; else ""."""
    try:
        known = _BLOCKING_FUNCTIONS.get(function)
    except TypeError:  # an unhashable callable: not one of them
        known = None
    if known is not None:
        return known
    owner = getattr(function, "__self__", None)
    name = getattr(function, "__name__", "")
    if owner is None or isinstance(owner, type(sys)):
        return ""
    if isinstance(owner, io.IOBase) and name in _FILE_METHODS:
        return f"{type(owner).__name__}.{name}() on a file"
    if isinstance(owner, socket.socket) and name in _SOCKET_METHODS:
        return f"socket.{name}() on a blocking socket" if _blocks(owner) else ""
    if type(owner).__module__ == "select" and name in _POLL_METHODS:
        return f"select.{type(owner).__name__}.{name}()"
    if type(owner).__module__ == "_ssl" and name in {"read", "write", "do_handshake"}:
        return f"ssl {name}()"
    return ""


def _blocks(sock: socket.socket) -> bool:
    try:
        return sock.gettimeout() != 0.0
    except OSError:  # closed: the call fails at once
        return False


class WaitSpy:
    """Records the first call that waits or does I/O inside `run()`, with where it was made."""

    def __init__(self, *, thread_start_allowed: bool = True) -> None:
        self.found = ""
        self._allowed = _ALLOWED_CODES if thread_start_allowed else frozenset()

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)`, watched (on this thread only)."""
        previous = sys.getprofile()
        sys.setprofile(self._profile)
        try:
            return fn(*args)
        finally:
            sys.setprofile(previous)

    def _profile(self, frame: FrameType, event: str, arg: Any) -> None:
        if self.found:
            return
        if event == "call":
            what = _WAITING_CODES.get(frame.f_code, "")
            caller = frame.f_back
        elif event == "c_call":
            what = _blocking_c_call(arg)
            caller = frame
        else:
            return
        if what and not _allowed(caller, self._allowed):
            self.found = f"{what}, called from {_where(caller)}"


def _allowed(frame: FrameType | None, codes: frozenset[CodeType]) -> bool:
    while frame is not None:
        if frame.f_code in codes or frame.f_code.co_filename.startswith(_LOGGING_DIR):
            return True
        frame = frame.f_back
    return False


def _where(frame: FrameType | None) -> str:
    if frame is None:
        return "?"
    code = frame.f_code
    return f"{code.co_qualname} ({code.co_filename}:{frame.f_lineno})"
