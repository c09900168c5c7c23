"""`WaitSpy`: notices a call that waits or does I/O, made inside a call it watches.

The suite's time bounds catch a `publish()` that waits long, but one that writes to a fast
disk or a local server in every call, or sleeps a millisecond for room, returns well within any
bound a loaded machine allows: the verdict would depend on the storage's speed. The spy looks at
what the call does instead, with `sys.setprofile` on the calling thread, and records the first
call of these kinds (the lists are of common ways, not every one):

- a wait: `threading.Condition.wait` with a timeout that is not 0 (under `Event.wait`,
  `Queue.put`, `Future.result`, `Semaphore.acquire` and `Thread.join` alike, when they actually
  wait: a poll with a timeout of 0 is fine), `time.sleep`, `select.select` and polling objects
  (whatever their timeout: the spy does not see arguments of functions written in C);
- I/O: opening a file; reading, writing or flushing a file object over a file (an in-memory
  `BytesIO` or `StringIO` is fine, and so are `sys.stdout` and `sys.stderr`, diagnostics as
  logging's are); `os.write`, `os.read`, `os.pwrite`, `os.pread` on a regular file (the test
  looks at the descriptor: a pipe or an event loop's wake-up socket is fine), `os.open`,
  `os.fsync`, `os.fdatasync`, `os.sendfile`; file locks; SQLite statements and commits (on
  `:memory:` too); sending, receiving or connecting on a socket in blocking mode
  (`call_soon_threadsafe` writes to a non-blocking one: fine).

A wait for a lock makes no call the profile hook sees (`with lock:`), and a free lock's
`acquire()` cannot be told from a held one's; `watching_locks()` sees it instead: while it
runs, `threading.Lock` and `threading.RLock` (and so `Condition`, `Event`, `queue.Queue`, ...)
make locks whose blocking `acquire()` measures how long it waited when the lock was held, and
a wait of `lock_wait` seconds or more on the watched thread is recorded (trial 213: the guide's
`QueueBus` writing under the lock `publish()` takes waited 0.3 s a call and passed). A short
wait is no fault (a worker holds a lock briefly); only the ones a slow holder makes count. Locks
made before it ran, or by `from threading import Lock` bound earlier, are not watched.

Not counted: what the standard library's `logging` and `warnings` do (a warning about a full
buffer may go to a file), imports (a module loaded on first use reads its file once), and a
`Thread.start()` (it waits for the new thread to begin: a backend that starts its worker
lazily, after a fork, does it once). The suite also publishes a few events before it watches,
so that first-use work is done.

The spy needs the thread's profile hook: where another profiler holds it (`sys.getprofile()` is
set), it watches nothing and says so in `unavailable`, rather than displace that profiler.
"""

from __future__ import annotations

import io
import linecache
import logging
import os
import select
import socket
import stat
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import CodeType, FrameType
from typing import Any, Final, TypeVar

__all__ = ["WaitSpy"]

T = TypeVar("T")

_CONDITION_WAIT: Final = threading.Condition.wait.__code__
# Python functions under which a wait is allowed (see the module's docstring).
_THREAD_START: Final = frozenset({threading.Thread.start.__code__})
_LOGGING_DIR: Final = os.path.dirname(logging.__file__)
# `warnings.warn()` shows its source line (linecache reads the file) where pytest does not
# record warnings: the standard library's own reporting, as logging's (trial 137).
_REPORTING_FILES: Final = frozenset({warnings.__file__, linecache.__file__})
_IMPORT_FRAMES: Final = ("<frozen importlib._bootstrap", "<frozen zipimport")

_BLOCKING_FUNCTIONS: dict[Any, str] = {
    time.sleep: "time.sleep()",
    select.select: "select.select()",
    os.fsync: "os.fsync()",
    os.open: "os.open()",
    io.open: "open()",
}
for _name in ("fdatasync", "sendfile"):  # not on every platform
    if hasattr(os, _name):
        _BLOCKING_FUNCTIONS[getattr(os, _name)] = f"os.{_name}()"
try:
    import fcntl
except ImportError:  # not on Windows
    pass
else:
    _BLOCKING_FUNCTIONS.update({fcntl.flock: "fcntl.flock()", fcntl.lockf: "fcntl.lockf()"})

_FILE_METHODS: Final = frozenset(
    {"read", "readinto", "readline", "readlines", "write", "writelines", "flush", "truncate"}
)
_SOCKET_METHODS: Final = frozenset(
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
_POLL_METHODS: Final = frozenset({"poll", "select", "control"})  # poll/epoll/devpoll, kqueue
_SQLITE_METHODS: Final = frozenset({"execute", "executemany", "executescript", "commit"})


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
        return f"{type(owner).__name__}.{name}() on a file" if _over_a_file(owner) else ""
    if isinstance(owner, socket.socket) and name in _SOCKET_METHODS:
        return f"socket.{name}() on a blocking socket" if _blocks(owner) else ""
    module = type(owner).__module__
    if module == "select" and name in _POLL_METHODS:
        return f"select.{type(owner).__name__}.{name}()"
    if module == "_ssl" and name in {"read", "write", "do_handshake"}:
        return f"ssl {name}()"
    if module == "sqlite3" and name in _SQLITE_METHODS:
        return f"sqlite3 {type(owner).__name__}.{name}()"
    return ""


_BUFFERED: Final = (io.BufferedReader, io.BufferedWriter, io.BufferedRandom, io.BufferedRWPair)


def _consoles() -> tuple[object, ...]:
    """The process's stdout and stderr: the objects there now, and the original ones (which
    pytest's `--capture=tee-sys` writes to as well, trial 142)."""
    return (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)


def _over_a_file(stream: io.IOBase) -> bool:
    """Whether `stream` writes to a file (a `FileIO` under its layers); `BytesIO`, `StringIO`
    or anything else: no. Asked of its layers, never by `fileno()`, which rolls a
    `SpooledTemporaryFile` over to disk (trial 141)."""
    if any(stream is console for console in _consoles()):
        return False  # diagnostics, as logging's (whatever object pytest's capture put there)
    for _ in range(4):
        if isinstance(stream, io.FileIO):
            return True
        if isinstance(stream, io.TextIOWrapper):
            stream = stream.buffer
        elif isinstance(stream, _BUFFERED) and hasattr(stream, "raw"):
            stream = stream.raw
        else:
            return False
    return False


def _blocks(sock: socket.socket) -> bool:
    try:
        return sock.gettimeout() != 0.0
    except OSError:  # closed: the call fails at once
        return False


def _os_call(name: str) -> Callable[..., Any]:
    """A Python stand-in for `os.<name>(fd, ...)`: unlike the builtin, its call shows the spy
    its descriptor, so that a regular file is told from a pipe."""
    original = getattr(os, name)

    def call(fd: int, *args: Any) -> Any:
        return original(fd, *args)

    call.__name__ = call.__qualname__ = name
    return call


_FD_CALLS: Final = tuple(n for n in ("write", "read", "pwrite", "pread") if hasattr(os, n))
_FD_CALL_CODE: Final = _os_call("write").__code__  # one code object for every stand-in


def _fd_call_on_a_file(frame: FrameType) -> str:
    """`os.<name>()` if the stand-in entered in `frame` works on a regular file, else ""."""
    local = frame.f_locals
    try:
        mode = os.fstat(local["fd"]).st_mode
    except (KeyError, OSError, TypeError):
        return ""
    name = getattr(local.get("original"), "__name__", "write")
    return f"os.{name}() on a file" if stat.S_ISREG(mode) else ""


class WaitSpy:
    """Records the first call that waits or does I/O inside `run()`, with where it was made.

    Args:
        thread_start_allowed: Let a `Thread.start()` wait for its thread (the suite's rule);
            False counts that wait too.
        lock_wait: Seconds of waiting for a held lock, inside `run()`, that count as a wait
            (`watching_locks()`).
    """

    def __init__(self, *, thread_start_allowed: bool = True, lock_wait: float = 0.1) -> None:
        self.found = ""
        self.unavailable = ""
        self.lock_wait = lock_wait
        self._allowed = _THREAD_START if thread_start_allowed else frozenset()
        self._running: int | None = None  # the thread inside run(), while it is

    @contextmanager
    def watching_locks(self) -> Iterator[None]:
        """While the block runs, locks made with `threading.Lock()` or `threading.RLock()` tell
        the spy how long a blocking `acquire()` on `run()`'s thread waited for a held lock."""
        made = (threading.Lock, threading.RLock)

        def lock() -> _WatchedLock:
            return _WatchedLock(made[0](), self)

        def rlock() -> _WatchedRLock:
            return _WatchedRLock(made[1](), self)

        threading.Lock, threading.RLock = lock, rlock  # type: ignore[assignment]
        try:
            yield
        finally:
            threading.Lock, threading.RLock = made

    def waited_for_lock(self, seconds: float) -> None:
        """A watched lock's `acquire()` waited `seconds` for another holder."""
        if self.found or seconds < self.lock_wait or threading.get_ident() != self._running:
            return
        caller = sys._getframe(2)  # acquire() or __enter__, then who took the lock
        if _allowed(caller, self._allowed):  # logging's lock, Thread.start(): not counted
            return
        self.found = (
            f"a wait of {seconds:.3f} s for a lock another thread held (lock_wait: "
            f"{self.lock_wait:g} s), called from {_where(caller)}"
        )

    @contextmanager
    def looking_at_descriptors(self) -> Iterator[None]:
        """While the block runs, `os.write`, `os.read`, `os.pwrite` and `os.pread` are Python
        stand-ins (for every thread: they call the builtins), whose calls the spy can see the
        descriptor of. Without it they are not looked at."""
        originals = {name: getattr(os, name) for name in _FD_CALLS}
        for name in _FD_CALLS:
            setattr(os, name, _os_call(name))
        try:
            yield
        finally:
            for name, function in originals.items():
                setattr(os, name, function)

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)`, watched (on this thread only) unless another profiler holds the hook."""
        if sys.getprofile() is not None:
            # Replacing it would detach that profiler, and a C profiler's object cannot be put
            # back as a hook (cProfile on 3.11 then fails the next call).
            self.unavailable = "another profiler holds this thread's sys.setprofile hook"
            return fn(*args)
        sys.setprofile(self._profile)
        self._running = threading.get_ident()
        try:
            return fn(*args)
        finally:
            self._running = None
            sys.setprofile(None)

    def _profile(self, frame: FrameType, event: str, arg: Any) -> None:
        if self.found:
            return
        if event == "call":
            if frame.f_code is _FD_CALL_CODE:
                what, caller = _fd_call_on_a_file(frame), frame.f_back
            elif frame.f_code is _CONDITION_WAIT and _may_wait(frame):
                what, caller = "threading.Condition.wait()", frame.f_back
            else:
                return
        elif event == "c_call":
            what, caller = _blocking_c_call(arg), frame
        else:
            return
        if what and not _allowed(caller, self._allowed):
            self.found = f"{what}, called from {_where(caller)}"


def _may_wait(frame: FrameType) -> bool:
    """Whether the `Condition.wait` entered in `frame` may wait: a timeout of 0 (or less) only
    polls (`Event.wait(0)`, `Semaphore.acquire(timeout=0)`, `ThreadPoolExecutor.submit()`)."""
    timeout = frame.f_locals.get("timeout")
    return timeout is None or not isinstance(timeout, int | float) or timeout > 0


def _allowed(frame: FrameType | None, codes: frozenset[CodeType]) -> bool:
    while frame is not None:
        code = frame.f_code
        if (
            code in codes
            or os.path.dirname(code.co_filename) == _LOGGING_DIR
            or code.co_filename in _REPORTING_FILES
            or code.co_filename.startswith(_IMPORT_FRAMES)
        ):
            return True
        frame = frame.f_back
    return False


def _where(frame: FrameType | None) -> str:
    if frame is None:
        return "?"
    code = frame.f_code
    return f"{code.co_qualname} ({code.co_filename}:{frame.f_lineno})"


class _WatchedLock:
    """A lock whose blocking `acquire()` tells `spy` how long it waited for a held lock."""

    # `__weakref__`: a correct backend may keep its locks in a WeakSet (review 217).
    __slots__ = ("__weakref__", "_lock", "_spy")

    def __init__(self, lock: Any, spy: WaitSpy) -> None:
        self._lock = lock
        self._spy = spy

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if self._lock.acquire(False):
            return True
        if not blocking:
            return False
        started = time.monotonic()
        got: bool = self._lock.acquire(True, timeout)
        self._spy.waited_for_lock(time.monotonic() - started)
        return got

    def __enter__(self) -> bool:
        if self._lock.acquire(False):
            return True
        started = time.monotonic()
        got: bool = self._lock.acquire()
        self._spy.waited_for_lock(time.monotonic() - started)
        return got

    def __exit__(self, *exc: object) -> None:
        self._lock.release()

    def release(self) -> None:
        self._lock.release()

    def locked(self) -> bool:
        return bool(self._lock.locked())

    def _at_fork_reinit(self) -> None:
        self._lock._at_fork_reinit()


class _WatchedRLock(_WatchedLock):
    """`_WatchedLock` for an `RLock`, with what `threading.Condition` asks of one."""

    __slots__ = ()

    def locked(self) -> bool:  # RLock has no locked() before Python 3.14
        return bool(getattr(self._lock, "locked", lambda: False)())

    def _is_owned(self) -> bool:
        return bool(self._lock._is_owned())

    def _release_save(self) -> Any:
        return self._lock._release_save()

    def _acquire_restore(self, state: Any) -> None:
        self._lock._acquire_restore(state)
