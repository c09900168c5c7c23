"""Liveness and readiness of a running dispatcher, for Kubernetes probes.

Alive (`/healthz`): the dispatcher's event loop is running and answers (a heartbeat task on
it ticks every second; a loop blocked for `stall_after` seconds is not alive). Ready
(`/readyz`): the dispatcher runs and is not stopping; the backend answers (buses that offer
`Reachable`); every lane's source is reading, with its consumer group joined (sources that
report `group_joined`); and no sink is failing for good: none has given events up (dead
letters) since it last sent a batch, none is stalled (shedding its share to dead letters), and
none has an event waiting longer than `max_lag`. A loop that is not alive is not ready either.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from eventbus_core.capabilities import Reachable, capability
from eventbus_core.redact._secrets import redact_url

__all__ = ["Check", "Health", "HealthProbe"]


@dataclass(frozen=True, slots=True)
class Check:
    """One condition of a probe: what was checked, whether it holds, and why not."""

    name: str
    ok: bool
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Health:
    """A probe's answer: ok when every check holds."""

    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        """True when every check holds."""
        return all(c.ok for c in self.checks)

    def as_dict(self) -> dict[str, Any]:
        """`{"status": "ok" | "fail", "checks": [...]}` for the endpoint's JSON body."""
        return {
            "status": "ok" if self.ok else "fail",
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks],
        }


class HealthProbe:
    """Answers the probes for one dispatcher (see the module docstring).

    Args:
        dispatcher: The dispatcher (its `stats()` and `owned_bus` are read).
        bus: The bus to check for reachability; the dispatcher's own bus by default.
        max_lag: Seconds a sink's oldest unsent event may wait (0: no limit).
        check_timeout: Seconds the backend's `check()` may take.
        stall_after: Seconds without a heartbeat after which the loop counts as stuck.
        say: What puts the backend check's message in the command line's terms (the flag
            that gave the address, where it named the variable: trial 239).
    """

    def __init__(
        self,
        dispatcher: Any,
        bus: Any = None,
        *,
        max_lag: float = 300.0,
        check_timeout: float = 2.0,
        stall_after: float = 30.0,
        say: Callable[[str], str] | None = None,
    ) -> None:
        self.dispatcher = dispatcher
        self._say = say
        self.bus = bus
        self.max_lag = max_lag
        self.check_timeout = check_timeout
        self.stall_after = stall_after
        self.state = "starting"  # starting -> running -> stopping -> stopped
        self._beat: float | None = None

    async def heartbeat(self) -> None:
        """Tick on the dispatcher's event loop until cancelled (run it beside the dispatcher)."""
        self.state = "running"
        while True:
            self._beat = time.monotonic()
            await asyncio.sleep(1.0)

    def liveness(self) -> Health:
        """Alive unless the dispatcher has ended or its loop stopped answering."""
        if self.state == "stopped":
            return Health((Check("dispatcher", False, "the dispatcher has stopped"),))
        stuck = self._stuck_loop()
        if stuck is not None:
            return Health((stuck,))
        return Health((Check("dispatcher", True, self.current_state()),))

    def current_state(self) -> str:
        """`state`, with "stopping" once the dispatcher winds down (its `stopping`)."""
        if self.state == "running" and getattr(self.dispatcher, "stopping", False) is True:
            return "stopping"
        return self.state

    def _stuck_loop(self) -> Check | None:
        """The failed check of a loop silent for more than `stall_after` seconds, or None."""
        beat = self._beat
        silent = 0.0 if beat is None else time.monotonic() - beat
        if silent <= self.stall_after:
            return None
        return Check("event_loop", False, f"the event loop has not answered for {silent:.0f} s")

    def readiness(self) -> Health:
        """Ready when the dispatcher runs, its backend answers, its sources read and no sink
        is failing for good."""
        state = self.current_state()
        if state != "running":
            return Health((Check("dispatcher", False, f"the dispatcher is {state}"),))
        stuck = self._stuck_loop()
        if stuck is not None:  # not alive, so not ready: whatever its figures last said
            return Health((stuck,))
        checks = [Check("dispatcher", True, "running")]
        backend = self._backend()
        if backend is not None:
            checks.append(backend)
        stats = self.dispatcher.stats()
        for lane, figures in stats.lanes.items():
            checks.append(_lane_check(lane, figures))
        for name, sink in stats.sinks.items():
            checks.append(self._sink_check(name, sink))
        return Health(tuple(checks))

    def _backend(self) -> Check | None:
        bus = self.bus if self.bus is not None else getattr(self.dispatcher, "owned_bus", None)
        reachable = capability(bus, Reachable) if bus is not None else None
        if reachable is None:
            return None
        try:
            reachable.check(self.check_timeout)
        except Exception as exc:
            detail = redact_url(str(exc)) or type(exc).__name__
            return Check("backend", False, self._say(detail) if self._say else detail)
        return Check("backend", True, "reachable")

    def _sink_check(self, name: str, sink: Any) -> Check:
        if sink.stalled:
            return Check(
                f"sink:{name}",
                False,
                "stalled: its share of new events is dead-lettered (shared consumer mode) until "
                "its queue drains to half",
            )
        if sink.failed_since_sent:
            return Check(
                f"sink:{name}",
                False,
                f"{sink.failed_since_sent} event(s) it failed to deliver since it last sent a "
                "batch (dead-lettered, or kept for redelivery where the dead letter could not "
                "be written)",
            )
        if self.max_lag and sink.lag_seconds > self.max_lag:
            return Check(
                f"sink:{name}",
                False,
                f"stalled: its oldest unsent event has waited {sink.lag_seconds:.0f} s "
                f"(more than EVENTBUS_READY_MAX_LAG={self.max_lag:g})",
            )
        return Check(f"sink:{name}", True, "delivering")


def _lane_check(lane: str, figures: dict[str, Any]) -> Check:
    name = f"source:{lane}"
    if figures.get("group_joined") is False:
        error = figures.get("last_error")
        why = f" (last error: {redact_url(str(error))})" if error else ""
        # Not "yet": a consumer that joined long ago has to join again once its server answers
        # (trial 163 read "not joined yet" of a group minutes old, under a paused Redis).
        return Check(name, False, f"consumer group not joined (joins once reachable){why}")
    errors = figures.get("read_errors") or 0
    if errors:
        return Check(name, False, f"reading failed {errors} time(s) in a row")
    return Check(name, True, "reading")
