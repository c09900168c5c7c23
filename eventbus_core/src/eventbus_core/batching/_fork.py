"""What a forked child must redo, in one place, including after a fork Python was not told of.

Every bus rebuilds its drainer, locks and connections in a forked child from hooks registered
here (`at_fork`), which run from `os.register_at_fork` when Python forks (`os.fork()`,
multiprocessing, gunicorn). Some servers fork from C without running Python's fork hooks: uWSGI
does, for the application it loaded before forking its workers (its default, without
`--lazy-apps`). Each worker then holds its parent's buses as they were: a drainer thread that
does not exist in it, and the parent's connection, which every worker would share (replies read
by the wrong process, events lost). `check_fork()` finds such a fork by the process id and runs the
child hooks then; the buses call it where it costs nothing per event: when the drainer is woken
(the first event after a quiet spell, or a buffer half full), at `flush()` and `stop()`, and now
and then while the buffer refuses events. What such a child buffered before is delivered by it.
"""

from __future__ import annotations

# The first name lookup (getaddrinfo) encodes the host with the idna codec, even an IP address,
# importing `encodings.idna` then: in a drainer thread, at a bus's first write. A fork in that
# moment left the child with the import half done and "unknown encoding: idna" at every connect
# for good, so it is imported here, before any drainer runs.
import encodings.idna  # noqa: F401
import os
import sys
import threading
from collections.abc import Callable
from typing import Final

from eventbus_core._log import get_logger

__all__ = [
    "at_fork",
    "check_fork",
    "check_fork_when_refusing",
    "fork_announced",
    "start_after_fork_in_child",
    "warn_of_thread_before_c_fork",
]

log = get_logger("eventbus")

Hook = Callable[[], None]

_before: list[Hook] = []
_after_in_parent: list[Hook] = []
_after_in_child: list[Hook] = []
# Run after every `after_in_child` hook: what starts the child's drainers, which must not cycle
# through state another hook has still to rebuild (in a fork found by `check_fork()` the buffer
# already holds the child's events: a drainer started first wrote them through its backend's
# parent state, trial 231).
_start_in_child: list[Hook] = []
_pid = os.getpid()
_announced = True  # how this process's latest fork was found (see `fork_announced`)
# Taken only in a child found by `check_fork()`: two threads that find the fork at once run the
# hooks once. A fresh lock per process: one held by the parent at the fork stays held.
_check_lock = threading.Lock()
_CHECK_WAIT: Final = 5.0
_hooks_thread: int | None = None  # the thread running the hooks of a fork found late
# Refused events between two looks for a fork no hook told of (see `check_fork_when_refusing`).
_REFUSALS_PER_CHECK: Final = 1024


def at_fork(
    *,
    before: Hook | None = None,
    after_in_parent: Hook | None = None,
    after_in_child: Hook | None = None,
) -> None:
    """Register fork hooks, as `os.register_at_fork` takes them (`before` hooks run in reverse
    order of registration, the `after_*` ones in order); `after_in_child` also runs when
    `check_fork()` finds a fork Python was not told of."""
    if before is not None:
        _before.insert(0, before)
    if after_in_parent is not None:
        _after_in_parent.append(after_in_parent)
    if after_in_child is not None:
        _after_in_child.append(after_in_child)


def start_after_fork_in_child(hook: Hook) -> None:
    """Register `hook` to run in a forked child after every `at_fork` `after_in_child` hook
    (also when `check_fork()` finds the fork): for starting threads, once all is rebuilt."""
    _start_in_child.append(hook)


def _run(hooks: list[Hook]) -> None:
    for hook in list(hooks):
        try:
            hook()
        except Exception:  # a fork hook must never take the process down
            log.exception("eventbus: fork hook %r failed", hook)


def _child() -> None:
    """Python's own child hook: the forking thread is the only one, so the process is the
    child's at once."""
    global _pid, _check_lock, _announced, _hooks_thread
    _pid = os.getpid()
    _check_lock = threading.Lock()
    _announced = True
    _hooks_thread = None  # a parent's thread that ran late hooks: not in this process
    _run_child_hooks()


def _run_child_hooks() -> None:
    """Every `after_in_child` hook, then what starts the drainers (`start_after_fork_in_child`)."""
    _run(_after_in_child)
    _run(_start_in_child)


def fork_announced() -> bool:
    """For an `after_in_child` hook: True when Python ran it at the fork itself, False when
    `check_fork()` found the fork later (this process may have used its parent's state by
    then: events it buffered cannot be told from its parent's)."""
    return _announced


def check_fork() -> bool:
    """Run the child hooks if this process is a child forked without Python's fork hooks (the
    buses it inherited are its parent's until then); True if it was. A system call (~0.3 µs):
    call it once per burst of events, not per event."""
    global _pid, _announced, _hooks_thread
    if os.getpid() == _pid or _hooks_thread == threading.get_ident():
        return False  # not a child; or a hook's own flush() while its thread runs the hooks
    lock = _check_lock
    if not lock.acquire(timeout=_CHECK_WAIT):
        return False
    try:
        if os.getpid() == _pid:  # another thread ran the hooks meanwhile
            return False
        parent = _pid
        _announced = False
        # The process becomes the child's only once every hook has run: another thread that
        # publishes meanwhile (uWSGI --threads) waits here for them, where it found the pid
        # changed already and started a drainer through state a hook still rebuilt (review
        # 237). The lock is this process's own (taken and released here), so it is kept.
        _hooks_thread = threading.get_ident()
        try:
            _run_child_hooks()
        finally:
            _hooks_thread = None
            _pid = os.getpid()
    finally:
        lock.release()
    log.info(
        "eventbus: process %d was forked from %d without Python's fork hooks (uWSGI does this "
        "without --lazy-apps); its buses were rebuilt for it",
        os.getpid(),
        parent,
    )
    return True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=lambda: _run(_before),
        after_in_parent=lambda: _run(_after_in_parent),
        after_in_child=_child,
    )


_warned_c_fork = 0  # the pid that warned of a thread in a master that forks from C


def warn_of_thread_before_c_fork(what: str) -> None:
    """Log a WARNING, once per process, when `what` (a thread about to start) starts in uWSGI's
    master process that loads the application before forking its workers from C (no
    `--lazy-apps`): a worker forked while such a thread runs Python code inherits the GIL held
    by a thread it does not have, and hangs for good, deaf to SIGINT (trial 242: every
    worker, when the master had published at import). Nothing else is done: the master may
    never fork again, and the thread is what delivers what it published."""
    global _warned_c_fork
    uwsgi = sys.modules.get("uwsgi")
    if uwsgi is None or _warned_c_fork == os.getpid():
        return
    try:
        master = uwsgi.worker_id() == 0
        options = getattr(uwsgi, "opt", {}) or {}
        lazy = bool(options.get("lazy-apps") or options.get("lazy"))
    except Exception:  # not the uWSGI module we know: say nothing
        return
    if not master or lazy:
        return
    _warned_c_fork = os.getpid()
    log.warning(
        "eventbus: %s starts a thread in uWSGI's master process, which forks its workers from C "
        "after loading the application (no --lazy-apps): a worker forked while this thread "
        "runs Python code inherits the GIL held by a thread it does not have and hangs for "
        "good. Run uWSGI with --lazy-apps, or publish and subscribe only in the workers (from "
        "a uwsgidecorators @postfork function, or at the first request); docs/operations.md, "
        "Forking servers",
        what,
    )


def check_fork_when_refusing(refused: int) -> None:
    """`check_fork()` at a buffer's first refused event and at every 1024th after it (`refused`
    counts them, this one included). A buffer that is full and never drains may be a child's
    whose parent's drainer was awake at a fork no hook told of: no wake, where the check
    otherwise runs, comes then."""
    if refused % _REFUSALS_PER_CHECK == 1:
        check_fork()
