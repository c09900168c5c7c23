"""The contract at process exit: what a bus accepted is delivered when its process ends without
`stop()`.

A script, a worker or a `multiprocessing` child that publishes and returns without `stop()` ends
with its bus's buffer in memory. A background writer is a daemon thread (it must not keep the
process alive), so it dies with the process: unless the exit waits for it, the buffer is gone
without a word. The core's exit wait does that for every `Batcher`, and for a writer of its own
registered with `eventbus_core.batching.deliver_at_exit()`; it runs at `atexit` and, in
`multiprocessing`'s fork and forkserver children (which end with `os._exit()`, without `atexit`),
as a `multiprocessing` finalizer. The test runs in such a child, so it goes through the
finalizer; `atexit` calls the same function.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
import tempfile
import warnings
from typing import Any

from eventbus_core._contract._base import ContractBase, make_event
from eventbus_core._subscription import SubscriptionClosed

__all__ = ["ExitContract"]

_EXIT_EVENTS = 300
# In the child the main thread keeps the GIL until it waits for something: a background writer
# runs only while the exit waits for it, as if the process ended right after publishing. (A
# writer that happened to run first would pass a bus that the exit does not wait for.) Far
# longer than publishing and the exit's first look take, far shorter than the child's limit: a
# correct bus with a busy thread of its own gets the GIL back after it (review 158).
_NO_SWITCHING = 1.0
# Python 3.12 and later warn of a fork while threads run (the reader bus's, pytest's): the
# child here runs only the bus's own code and ends with os._exit().
_THREADED_FORK = "This process .* is multi-threaded"
_CURE = (
    "a process that ends without stop() must deliver what its bus accepted: the exit waits for "
    "every Batcher, and for a writer of its own registered with "
    "eventbus_core.batching.deliver_at_exit() (a plain atexit handler does not run in "
    "multiprocessing's children)"
)


class ExitContract(ContractBase):
    """A process that publishes and ends without `stop()` delivers what its bus accepted."""

    def test_a_process_that_ends_without_stop_delivers_what_it_accepted(self) -> None:
        import pytest  # here: eventbus_core.testing imports without pytest

        if "fork" not in multiprocessing.get_all_start_methods():
            pytest.skip("multiprocessing's fork start method is not available on this platform")
        with tempfile.NamedTemporaryFile(prefix="eventbus-contract-exit-", delete=False) as f:
            report = f.name
        try:
            with self.bus() as reader:
                cross = not self.is_in_process(reader)
                # A bus shared across processes is read here, in the test's process: what the
                # child's writer stored before the child ended.
                sub = self.subscribe_bounded(reader, "exit-reader") if cross else None
                said = self._run_child(report, cross)
                assert not said, said
                if sub is not None:
                    try:
                        got = self.receive(sub, _EXIT_EVENTS)
                    except AssertionError as exc:
                        raise AssertionError(
                            f"a child process published {_EXIT_EVENTS} events and ended without "
                            f"stop(); a subscriber in another process {exc}: {_CURE}"
                        ) from None
                    ids = [e.request_id for e in got]
                    assert ids == [f"exit-{i}" for i in range(_EXIT_EVENTS)], (
                        f"a child process's events arrived as {ids[:5]}..., expected exit-0.."
                    )
        finally:
            os.unlink(report)

    def _run_child(self, report: str, cross: bool) -> str:
        """Run the child (`multiprocessing`, fork start method); what it reported, "" if well."""
        limit = 3 * self.receive_timeout + self.stop_slack
        child = multiprocessing.get_context("fork").Process(
            target=self._child, args=(report, cross), name="eventbus-contract-exit", daemon=True
        )
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_THREADED_FORK, category=DeprecationWarning)
            child.start()
        child.join(limit)
        if child.is_alive():
            child.kill()
            child.join()
            return (
                f"a child process that published and ended without stop() had not ended after "
                f"{limit:g} s (3 * receive_timeout + stop_slack): the wait at exit must be bounded"
            )
        with open(report) as got:
            said = got.read()
        if not said:
            return f"the child process ended (exit code {child.exitcode}) before reporting"
        return "" if said == "ok" else said

    def _child(self, report: str, cross: bool) -> None:
        """In the child: publish and return, without stop(). An in-process bus is read here,
        by a finalizer that runs after the exit's wait."""
        from multiprocessing import util

        def say(what: str) -> None:
            with contextlib.suppress(BaseException), open(report, "w") as out:
                out.write(what)

        try:
            # Before the bus and its threads exist: a thread already waiting for the GIL when
            # the interval changes waits out the old one (5 ms) first. Under load, a polling
            # writer's stale wait ran out just after the last publish, took every event before
            # the exit, and passed a bus whose exit does not wait for it (trial 198).
            sys.setswitchinterval(_NO_SWITCHING)
            bus = self.make_bus(10 * _EXIT_EVENTS)  # room for all, below half full: no wake
            sub = None if cross else bus.subscribe("exit")
            for i in range(_EXIT_EVENTS):
                bus.publish(make_event(i, request_id=f"exit-{i}"))
        except BaseException as exc:
            say(f"in a child process, making the bus and publishing failed: {exc!r}")
            return
        if sub is None:
            say("ok")
            return
        # Priority -1: after the exit's wait (priority 0), before the process ends.
        util.Finalize(None, self._count_delivered, args=(bus, sub, say), exitpriority=-1)

    def _count_delivered(self, bus: Any, sub: Any, say: Any) -> None:
        """What the subscription holds once the exit's wait is over: at once, without letting a
        background writer run. Only when the bus holds nothing any more (`queue_depth` 0) does
        it wait for what is on its way to the subscription."""
        got = 0
        with contextlib.suppress(TimeoutError, SubscriptionClosed):
            while got < _EXIT_EVENTS:
                sub.get(timeout=0)
                got += 1
            if bus.stats().queue_depth == 0:
                while got < _EXIT_EVENTS:
                    sub.get(timeout=self.receive_timeout)
                    got += 1
        if got == _EXIT_EVENTS:
            say("ok")
        else:
            say(
                f"a child process published {_EXIT_EVENTS} events and ended without stop(); "
                f"by then its subscriber had received {got}: {_CURE}"
            )
