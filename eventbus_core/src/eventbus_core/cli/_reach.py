"""Whether the backend answers: checked once at start-up, and watched by long-running commands.

One behaviour for every command that talks to a backend:

- at start-up it asks the bus once (`Reachable.check()`, a single round trip with a short
  timeout) and fails fast with one line, exit 1, if the backend does not answer;
- `--wait-for-backend SECONDS` makes it retry that check until the backend answers or the time
  runs out (for a service that may start before its Redis);
- after start-up, `tail` and `dispatch` ride out outages (the backends reconnect by themselves),
  and `BackendWatch` says so on stderr: a warning when the backend stops answering, again every
  `repeat` seconds while it stays down, and one when it answers again.

A bus without the `Reachable` capability (the in-memory one, or a plugin that does not offer
it) is taken to be reachable.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Final

from eventbus_core._errors import BackendUnavailableError, SettingsError
from eventbus_core._log import get_logger
from eventbus_core.capabilities import Reachable, capability

__all__ = ["LONG_RUNNING_HELP", "ONE_SHOT_HELP", "BackendWatch", "ensure_reachable"]

log = get_logger("eventbus.cli")

CHECK_TIMEOUT: Final = 2.0  # one round trip to a healthy server takes well under a millisecond
_RETRY_PAUSE: Final = 0.5

ONE_SHOT_HELP: Final = (
    "If the backend does not answer, it says where it looked and exits 1 at once; "
    "--wait-for-backend SECONDS waits for it first."
)
LONG_RUNNING_HELP: Final = (
    "The backend is checked at start-up: if it does not answer, one line says where it "
    "looked and the command exits 1 at once (--wait-for-backend SECONDS waits for it first). "
    "Once running, it rides out outages (the backend reconnects by itself), with a warning on "
    "stderr when the backend stops answering, every 30 s while it stays down, and when it is "
    "back."
)


def ensure_reachable(
    bus: object,
    *,
    wait: float = 0.0,
    command: str = "eventbus",
    say: Callable[[str], str] = str,
) -> None:
    """Return once the bus's backend answers; retry for `wait` seconds at most. `say` words the
    backend's message for the line that says it waits (the command line's flags for its
    variables: `_ops.flag_terms`).

    Raises:
        BackendUnavailableError: it did not answer (the last check's message).
    """
    reachable = capability(bus, Reachable)
    if reachable is None:
        return
    deadline = time.monotonic() + max(0.0, wait)
    said_waiting = False
    while True:
        left = deadline - time.monotonic()
        try:
            reachable.check(timeout=min(CHECK_TIMEOUT, left) if wait > 0 else CHECK_TIMEOUT)
            return
        except BackendUnavailableError as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                if wait > 0:  # its own figure is the last try's share of the wait
                    raise BackendUnavailableError(
                        f"{exc} (after waiting {wait:g} s, --wait-for-backend)"
                    ) from None
                raise
            if not said_waiting:
                print(
                    f"{command}: the backend does not answer yet; waiting up to {wait:g} s "
                    f"({say(str(exc))})",
                    file=sys.stderr,
                    flush=True,
                )
                said_waiting = True
            time.sleep(min(_RETRY_PAUSE, left))


class BackendWatch:
    """Checks the backend every `interval` seconds in a daemon thread and logs its outages.

    Logged at WARNING (visible without -v): the first failed check, then at most one line every
    `repeat` seconds while the outage lasts, and the recovery with how long it lasted. Nothing
    is logged while the backend answers. Does nothing for a bus without `Reachable`.
    """

    def __init__(
        self,
        bus: object,
        *,
        command: str,
        interval: float = 5.0,
        repeat: float = 30.0,
        say: Callable[[str], str] = str,
    ) -> None:
        self._reachable = capability(bus, Reachable)
        self.command = command
        self._say = say  # words the backend's messages (see `ensure_reachable`)
        self.interval = interval
        self.repeat = repeat
        self.down_since: float | None = None
        self._last_warning = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="eventbus-watch", daemon=True)

    def __enter__(self) -> BackendWatch:
        if self._reachable is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(CHECK_TIMEOUT + 1.0)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.poll()

    def poll(self) -> None:
        """Check once and log what changed (also called directly by tests)."""
        if self._reachable is None:
            return
        now = time.monotonic()
        try:
            self._reachable.check(timeout=CHECK_TIMEOUT)
        except (BackendUnavailableError, SettingsError) as exc:
            # SettingsError: the server came back refusing this connection (its certificate
            # expired, TLS gone, credentials changed): an outage to report like any other,
            # never the end of the watch.
            # It answered, refusing (a key replaced by one of another type, say): not an outage.
            refusing = isinstance(exc, SettingsError)
            if self.down_since is None:
                self.down_since = now
                self._last_warning = now
                log.warning(
                    "%s: the backend %s (%s); retrying until it is back (Ctrl-C to stop)",
                    self.command,
                    "refuses the settings" if refusing else "stopped answering",
                    self._say(str(exc)),
                )
            elif now - self._last_warning >= self.repeat:
                self._last_warning = now
                log.warning(
                    "%s: the backend has %s for %.0f s (%s); still retrying",
                    self.command,
                    "refused the settings" if refusing else "not answered",
                    now - self.down_since,
                    self._say(str(exc)),
                )
            return
        if self.down_since is not None:
            log.warning(
                # Counted from the first check that failed: the outage began up to a check
                # interval (and its timeout) before that, which an outside trial read as 5 s
                # too short when the message said only "after".
                "%s: the backend answers again, %.0f s after it was first seen not answering; "
                "carrying on",
                self.command,
                now - self.down_since,
            )
            self.down_since = None
