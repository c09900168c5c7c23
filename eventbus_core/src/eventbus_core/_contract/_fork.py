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
import warnings

from eventbus_core._bus import EventBus
from eventbus_core._contract._base import ContractBase, make_event
from eventbus_core._subscription import Subscription, SubscriptionClosed

__all__ = ["ForkContract"]

_CHILD_EVENTS = 50
_COPIES_WAIT = 0.2  # seconds a subscription that has all of the child's events is read on
_WHO_FORKS = "gunicorn --preload does this"


class ForkContract(ContractBase):
    """A bus made, used and left running in a parent keeps working in a forked child."""

    def test_the_bus_works_on_in_a_forked_child(self) -> None:
        if not hasattr(os, "fork"):
            import pytest  # here: eventbus_core.testing imports without pytest

            pytest.skip("os.fork() is not available on this platform")
        with self.bus() as bus:
            # Subscriptions made before the fork belong to the child too: they receive what the
            # child publishes, stay in its stats() and end at its stop() (a backend that
            # dropped them there left their readers waiting for ever, trial 124). Two: a bus
            # that carried one on only passed with one (trial 128).
            early = [self.subscribe_bounded(bus, f"before-fork-{i}") for i in range(2)]
            # The parent uses the bus first: its background work (threads, connections) runs.
            self.publish_each(bus, (make_event(i, request_id=f"parent-{i}") for i in range(20)))
            self.settle_bounded(bus)
            # Delivery before any fork first: a bus that delivers nothing at all (one that
            # stores what it cannot decode, say) would be told its fork handling is at fault
            # (trial 135). The other subscription keeps the parent's events for the child.
            try:
                self.receive(early[0], 20)
            except AssertionError as exc:
                raise AssertionError(
                    f"before any fork, a subscriber of the parent {exc}: the bus does not "
                    "deliver, fork or not"
                ) from None
            failure = self._in_a_forked_child(bus, early)
        assert failure is None, failure

    def _in_a_forked_child(self, bus: EventBus, early: list[Subscription]) -> str | None:
        """Fork; in the child, subscribe, publish, read back and stop. The child's failure, or
        None. The child never returns into the test run: it reports through a file."""
        with tempfile.NamedTemporaryFile(prefix="eventbus-contract-fork-", delete=False) as f:
            report = f.name
        # The child's own steps are bounded one by one; this bounds the whole of it.
        limit = 6 * self.receive_timeout + self.stop_timeout + 3 * self.stop_slack
        with warnings.catch_warnings():  # Python 3.12+: a fork while threads run
            warnings.filterwarnings(
                "ignore", message="This process .* is multi-threaded", category=DeprecationWarning
            )
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
                        f"stopping did not finish within {limit:g} s (6 * receive_timeout + "
                        f"stop_timeout + 3 * stop_slack): the bus must work on after os.fork()"
                    )
                time.sleep(0.02)
            with open(report) as got:
                said = got.read()
        finally:
            os.unlink(report)
        return said or None

    def _child_steps(self, bus: EventBus, early: list[Subscription]) -> str:
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
                f"(os.register_at_fork), as the threads of the parent are gone there, and "
                f"deliver every event the child publishes"
            )
        expected = [e.request_id for e in events]
        if got != expected:
            return (
                f"in a forked child, a subscriber received {got[:5]}..., expected {expected[:5]}..."
            )
        try:
            again = self.bounded(self.get_limit(), sub.get, timeout=_COPIES_WAIT).request_id
        except (TimeoutError, SubscriptionClosed):
            again = None
        if again is not None:
            return (
                f"in a forked child, a subscriber received {again!r} again after the "
                f"{len(expected)} events the child published (trial 132)"
            )
        missing = self._child_events_missing(early, set(expected))
        if missing:
            return missing
        self.stop_bus(bus)
        rows = self.stats_bounded(bus).subscribers
        names = [figures.name for figures in rows]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            return f"in a forked child, stats() lists subscriptions {twice} more than once"
        listed = {figures.name: figures for figures in rows}
        if sub.name in listed and listed[sub.name].delivered != len(expected):
            return (
                f"in a forked child, stats() says {listed[sub.name].delivered} events were "
                f"delivered to subscription {sub.name!r}, which received {len(expected)}"
            )
        gone = [sub.name for sub in early if sub.name not in listed]
        if gone:
            return (
                f"in a child forked after the bus was used ({_WHO_FORKS}), stats() after stop() "
                f"does not list the subscriptions made before the fork {gone} (listed: "
                f"{sorted(listed)}): they are the child's too, with their figures"
            )
        # Their figures go on in the child: frozen at the fork, they passed (trial 130).
        stale = [s.name for s in early if listed[s.name].delivered < len(expected)]
        if stale:
            return (
                f"in a child forked after the bus was used ({_WHO_FORKS}), stats() counts fewer "
                f"events delivered to the subscriptions made before the fork {stale} than the "
                f"{len(expected)} the child published and they received: their figures must "
                "go on in the child"
            )
        return self._ended(early)

    def _child_events_missing(self, early: list[Subscription], expected: set[str]) -> str:
        """ "" if each of `early` receives every event of `expected` once (after whatever it
        still held from the parent), within `receive_timeout` s each, else what went wrong."""
        for sub in early:
            seen: dict[str, int] = {}
            deadline = time.monotonic() + self.receive_timeout
            while (left := deadline - time.monotonic()) > 0:
                # Once all came, a short look for copies: a child that delivered each event
                # twice passed (trial 130).
                wait = left if not expected <= seen.keys() else min(left, _COPIES_WAIT)
                try:
                    got = self.bounded(self.get_limit(), sub.get, timeout=wait).request_id
                except (TimeoutError, SubscriptionClosed):
                    break
                seen[got] = seen.get(got, 0) + 1
            where = (
                f"in a child forked after the bus was used ({_WHO_FORKS}), subscription "
                f"{sub.name!r}, made before the fork,"
            )
            if not expected <= seen.keys():
                return (
                    f"{where} received {len(expected & seen.keys())} of the {len(expected)} "
                    f"events the child published within {self.receive_timeout:g} s "
                    "(receive_timeout): a subscription the child inherited is the child's, and "
                    "receives what is published there"
                )
            twice = sorted(e for e in expected if seen[e] > 1)
            if twice:
                return f"{where} received {len(twice)} of the child's events more than once"
        return ""

    def _ended(self, early: list[Subscription]) -> str:
        """ "" if each of `early`, made before the fork, ends after the child's stop(), else
        why not."""
        for sub in early:
            reader = threading.Thread(target=lambda s=sub: sum(1 for _ in s), daemon=True)
            reader.start()
            reader.join(self.receive_timeout)
            if reader.is_alive():
                return (
                    f"in a child forked after the bus was used ({_WHO_FORKS}), subscription "
                    f"{sub.name!r}, made before the fork, was still open "
                    f"{self.receive_timeout:g} s after the child's stop() (receive_timeout): "
                    "stop() must finish() every subscription the child holds, those it "
                    "inherited too, or whoever reads them waits for ever"
                )
        return ""
