"""The contract suite's watched locks (`WaitSpy.watching_locks()`): they time a wait for a held
lock on the watched thread, and behave as the locks they stand in for everywhere else."""

from __future__ import annotations

import queue
import threading
import time
import weakref

from eventbus_core._contract._waits import WaitSpy


def test_a_wait_for_a_lock_a_slow_thread_holds_is_found_and_named() -> None:
    spy = WaitSpy(lock_wait=0.05)
    with spy.watching_locks():
        lock = threading.Lock()
    held = threading.Event()

    def slow_holder() -> None:
        with lock:
            held.set()
            time.sleep(1.0)  # long past lock_wait, however late this thread gets the CPU

    threading.Thread(target=slow_holder, daemon=True).start()
    held.wait(5)

    def publish() -> None:
        with lock:
            pass

    spy.run(publish)
    assert spy.found.startswith("a wait of ") and "for a lock another thread held" in spy.found
    assert "publish" in spy.found


def test_a_short_wait_or_one_outside_run_is_not_counted() -> None:
    spy = WaitSpy(lock_wait=0.05)
    with spy.watching_locks():
        lock = threading.Lock()
    with lock:
        pass  # not inside run()
    spy.run(lambda: lock.acquire() and lock.release())  # free: no wait
    assert spy.found == ""


def test_watched_locks_work_as_the_standard_library_uses_them() -> None:
    # Condition (with an RLock), Event, Queue, a WeakSet of locks (review 217: a TypeError).
    spy = WaitSpy()
    with spy.watching_locks():
        lock, rlock = threading.Lock(), threading.RLock()
        assert len(weakref.WeakSet([lock, rlock])) == 2
        condition = threading.Condition()
        with condition, condition:  # reentrant
            assert not condition.wait(0.01)
        event = threading.Event()
        threading.Thread(target=event.set, daemon=True).start()
        assert event.wait(5)
        q: queue.Queue[int] = queue.Queue(maxsize=1)
        q.put(1)
        assert q.get(timeout=1) == 1
        assert lock.acquire(False) and not lock.acquire(False) and lock.locked()
        lock.release()
    assert not isinstance(threading.Lock(), type(lock))  # the real ones are back
