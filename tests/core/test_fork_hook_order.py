"""A backend's `at_fork` child hook runs before the core's batchers start draining again.

In a fork Python is not told of (uWSGI forks its workers from C), `check_fork()` finds the fork
when the child's events are already buffered. The batcher's drainer, started by the core's own
hook, which is registered first, wrote them through the backend's parent state before the
backend's hook had rebuilt it (trial 231: a subscription rebuilt after them never got them);
so did a drainer that another thread of the child started while the hooks ran (review 237).
"""

from __future__ import annotations

import os

import pytest

from tests._python import run_python

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")

_SCENARIO = r"""
import ctypes, os, sys, threading, time
from eventbus_core.batching import Batcher, at_fork
from eventbus_core.testing import make_event

state = {"generation": "parent"}
written = []  # (generation, request id) of each event the drainer handed on


class Backend:
    batcher = None

    def cycle(self):
        _first, batch = self.batcher.take(100)
        if not batch:
            return False
        written.extend((state["generation"], e.request_id) for e in batch)
        self.batcher.settle(len(batch), delivered=True)
        return True

    def next_due(self, now):
        return None


hook_runs = threading.Event()


def rebuild_in_child():
    hook_runs.set()
    time.sleep(0.3)  # a backend reconnecting: a drainer running meanwhile cycles on
    state["generation"] = "child"


def another_thread():
    # uWSGI --threads: a thread of the child publishes while the hooks run (review 237).
    hook_runs.wait(5)
    for n in range(5, 10):
        backend.batcher.publish(make_event(n, request_id=f"child-{n}"))


backend = Backend()
backend.batcher = Batcher(backend, buffer_size=100, linger=0.01, path="thread")
backend.batcher.start()
at_fork(after_in_child=rebuild_in_child)  # as writing-a-backend.md says to register it
backend.batcher.publish(make_event(0, request_id="before"))
assert backend.batcher.flush(5)
pid = ctypes.PyDLL(None).fork()  # no Python fork hook runs, as under uWSGI
if pid == 0:
    code = 3
    try:
        for n in range(5):  # fewer than half the buffer: not found by publish()
            backend.batcher.publish(make_event(n, request_id=f"child-{n}"))
        other = threading.Thread(target=another_thread)
        other.start()
        ok = backend.batcher.flush(5)  # finds the fork, runs the hooks, delivers
        other.join(5)
        ok = backend.batcher.flush(5) and ok
        mine = sorted(w for w in written if w[1] != "before")
        print(mine, file=sys.stderr)
        code = 0 if ok and mine == sorted(("child", f"child-{n}") for n in range(10)) else 1
    finally:
        os._exit(code)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def test_a_backends_fork_hook_runs_before_the_drainer_takes_the_childs_events() -> None:
    done = run_python(_SCENARIO, timeout=60)
    assert done.returncode == 0, (done.returncode, done.stderr)
