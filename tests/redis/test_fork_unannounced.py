"""Buses in children forked without Python's fork hooks, as uWSGI forks its workers from C
(the application loaded before the fork, its default without `--lazy-apps`).

`fork()` is called through ctypes here, so that, as under uWSGI, no `os.register_at_fork` hook
runs: each child starts with its parent's buses as they were, drainer and connection
included. The first publish of a burst finds the fork (`eventbus_core.batching.check_fork`) and
rebuilds them. Without it, the children shared their parent's Redis connection: replies read by
the wrong process, events lost or stored twice while every figure said written.
"""

from __future__ import annotations

import ctypes
import json
import os
from typing import Any

import pytest
import redis

from eventbus_core.testing import make_event
from eventbus_memory import InMemoryEventBus
from eventbus_redis import RedisEventBus, RedisStreamsEventBus
from tests._python import run_python
from tests._services import redis_url
from tests.redis.test_fork import make_bus, stored

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()"),
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),
]

CHILD_EVENTS = 200
CHILDREN = 2


def fork_without_hooks() -> int:
    """`fork()` from C, as uWSGI calls it: Python's fork hooks do not run. PyDLL keeps the GIL
    held across the call, so no other thread of this process was running Python code."""
    return int(ctypes.PyDLL(None).fork())


def children(work: Any) -> list[int]:
    """Fork CHILDREN children without hooks, each running `work(n)` and exiting with the code
    it returns (or 99 if it raised); their exit codes."""
    pids = []
    for n in range(CHILDREN):
        pid = fork_without_hooks()
        if pid == 0:
            code = 99
            try:
                code = work(n)
            finally:
                os._exit(code)
        pids.append(pid)
    return [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]


def in_a_fresh_interpreter(scenario: str, *args: str) -> list[int]:
    """Run `scenario(*args)` of this module in a new Python process; the children's exit codes
    it returns. Why: a fork no hook is told of keeps every lock as it was, and the test run's
    own leftover threads (other tests' drainers, logging) could hold one at that moment, which
    no application loaded by uWSGI has; a child then hung on it (seen once in 465 tests)."""
    code = (
        "import json, sys; import tests.redis.test_fork_unannounced as m; "
        f"print(json.dumps(m.{scenario}(*sys.argv[1:])))"
    )
    done = run_python(code, *args, timeout=120)
    assert done.returncode == 0, done.stderr
    codes: list[int] = json.loads(done.stdout.strip().splitlines()[-1])
    return codes


def publish_flush_stop(bus: RedisEventBus | RedisStreamsEventBus, n: int) -> int:
    for i in range(CHILD_EVENTS):
        bus.publish(make_event(i, request_id=f"child{n}-{i}"))
    if not bus.flush(20):
        return 11
    bus.stop(10)
    stats = bus.stats()
    if stats.dropped or stats.lost:
        return 12
    # The figures were the parent's at the fork: what it had published counts as written
    # (its to deliver), as after any fork.
    return 0 if stats.extra["written"] == stats.published else 13


def redis_children(url: str, prefix: str, kind: str, parent_published: str) -> list[int]:
    """The parent's side: a bus (and a client holding a connection, as a loaded application's
    would), events published first if `parent_published` is "yes", then the children."""
    client = redis.Redis.from_url(url)
    bus = make_bus(kind, client, prefix)
    client.ping()
    if parent_published == "yes":
        for i in range(20):
            bus.publish(make_event(i, request_id=f"parent-{i}"))
        assert bus.flush(10)
    codes = children(lambda n: publish_flush_stop(bus, n))
    bus.stop(10)
    return codes


@pytest.mark.redis
@pytest.mark.parametrize("kind", ["log", "streams"])
@pytest.mark.parametrize("parent_published", [False, True], ids=["idle-parent", "busy-parent"])
def test_children_forked_without_hooks_write_their_own_events(
    real: redis.Redis, prefix: str, kind: str, parent_published: bool
) -> None:
    published = "yes" if parent_published else "no"
    codes = in_a_fresh_interpreter("redis_children", redis_url(), prefix, kind, published)
    assert codes == [0] * CHILDREN
    bus = make_bus(kind, real, prefix)  # for its key names
    bus.stop(1)
    events = stored(real, bus)
    names = sorted(e["RequestID"] for e in events)
    expected = {f"child{n}-{i}" for n in range(CHILDREN) for i in range(CHILD_EVENTS)}
    if parent_published:
        expected |= {f"parent-{i}" for i in range(20)}
    assert names == sorted(expected)  # every child's events, each once
    log_ids = [e["LogID"] for e in events]
    assert len(set(log_ids)) == len(log_ids)


def memory_children() -> list[int]:
    bus = InMemoryEventBus(buffer_size=1000, publish_path="thread")
    warm = bus.subscribe("parent")
    bus.publish(make_event(0, request_id="parent-0"))
    assert bus.flush(10)
    assert warm.get(timeout=10).request_id == "parent-0"

    def work(n: int) -> int:
        sub = bus.subscribe("child")
        for i in range(CHILD_EVENTS):
            bus.publish(make_event(i, request_id=f"child{n}-{i}"))
        if not bus.flush(20):
            return 11
        got = [e.request_id for e in sub.get_batch(10_000, timeout=5)]
        bus.stop(10)
        return 0 if got == [f"child{n}-{i}" for i in range(CHILD_EVENTS)] else 12

    codes = children(work)
    bus.stop(10)
    return codes


def test_a_memory_bus_in_a_child_forked_without_hooks_delivers() -> None:
    assert in_a_fresh_interpreter("memory_children") == [0] * CHILDREN
