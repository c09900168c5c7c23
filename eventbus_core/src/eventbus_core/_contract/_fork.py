"""The contract after `os.fork()`: a bus made before the fork works on in the child.

gunicorn `--preload`, uWSGI and multiprocessing's fork start method build the bus in a parent
and fork workers that publish through the same object. The child has none of the parent's
threads (a background writer or drainer is simply gone) and may inherit a lock that one of them
held: a bus that does not start over in the child accepts every event there and delivers none.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
import time

from eventbus_core._bus import EventBus
from eventbus_core._contract._base import ContractBase, make_event
from eventbus_core._subscription import Subscription

__all__ = ["ForkContract"]

_CHILD_EVENTS = 50
_WHO_FORKS = "gunicorn --preload does this"


class ForkContract(ContractBase):
    """A bus made, used and left running in a parent keeps working in a forked child."""

    def test_the_bus_works_on_in_a_forked_child(self) -> None:
        if not hasattr(os, "fork"):
            import pytest  # here: eventbus_core.testing imports without pytest

            pytest.skip("os.fork() is not available on this platform")
        with self.bus() as bus:
            # A subscription made before the fork: the child's copy of it must end at the
            # child's stop() (a backend that dropped it there left its readers waiting for
            # ever, trial 124).
            early = self.subscribe_bounded(bus)
            # The parent uses the bus first: its background work (threads, connections) runs.
            self.publish_each(bus, (make_event(i, request_id=f"parent-{i}") for i in range(20)))
            self.settle_bounded(bus)
            failure = self._in_a_forked_child(bus, early)
        assert failure is None, failure

    def _in_a_forked_child(self, bus: EventBus, early: Subscription) -> str | None:
        """Fork; in the child, subscribe, publish, read back and stop. The child's failure, or
        None. The child never returns into the test run: it reports through a file."""
        with tempfile.NamedTemporaryFile(prefix="eventbus-contract-fork-", delete=False) as f:
            report = f.name
        # The child's own steps are bounded one by one; this bounds the whole of it.
        limit = 4 * self.receive_timeout + self.stop_timeout + 3 * self.stop_slack
        pid = os.fork()
        if pid == 0:  # the child
            said = "the child ended before reporting"
            try:
                said = self._child_steps(bus, early)
            except BaseException as exc:  # reported to the parent, whatever it is
                # A bound the child's call outlived says so already; where it was, not yet.
                what = (
                    str(exc) if isinstance(exc, AssertionError) else f"{type(exc).__name__}: {exc}"
                )
                said = f"in a child forked after the bus was used ({_WHO_FORKS}): {what}"
            finally:
                with contextlib.suppress(BaseException), open(report, "w") as out:
                    out.write(said)
                os._exit(0)
        try:
            deadline = time.monotonic() + limit
            while os.waitpid(pid, os.WNOHANG) == (0, 0):
                if time.monotonic() > deadline:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    return (
                        f"in a child forked after the bus was used, publishing, reading back and "
                        f"stopping did not finish within {limit:g} s (4 * receive_timeout + "
                        f"stop_timeout + 3 * stop_slack): the bus must work on after os.fork()"
                    )
                time.sleep(0.02)
            with open(report) as got:
                said = got.read()
        finally:
            os.unlink(report)
        return said or None

    def _child_steps(self, bus: EventBus, early: Subscription) -> str:
        """What the child does; "" when all went well, else what went wrong."""
        sub = self.subscribe_bounded(bus)
        events = [make_event(i, request_id=f"child-{i}") for i in range(_CHILD_EVENTS)]
        self.publish_each(bus, events)
        self.settle_bounded(bus)
        try:
            got = [e.request_id for e in self.receive(sub, _CHILD_EVENTS)]
        except AssertionError as exc:
            return (
                f"in a child forked after the bus was used ({_WHO_FORKS}), its subscriber "
                f"{exc}: the bus must start its background work over in the child "
                f"(os.register_at_fork), as the threads of the parent are gone there"
            )
        expected = [e.request_id for e in events]
        if got != expected:
            return (
                f"in a forked child, a subscriber received {got[:5]}..., expected {expected[:5]}..."
            )
        self.stop_bus(bus)
        return self._ended(early)

    def _ended(self, early: Subscription) -> str:
        """ "" if `early`, made before the fork, ends after the child's stop(), else why not."""
        reader = threading.Thread(target=lambda: sum(1 for _ in early), daemon=True)
        reader.start()
        reader.join(self.receive_timeout)
        if reader.is_alive():
            return (
                f"in a child forked after the bus was used ({_WHO_FORKS}), a subscription made "
                f"before the fork was still open {self.receive_timeout:g} s after the child's "
                "stop() (receive_timeout): stop() must finish() every subscription the child "
                "holds, those it inherited too, or whoever reads them waits for ever"
            )
        return ""
