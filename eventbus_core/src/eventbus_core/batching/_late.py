"""`LateRefusals`: says in the log that `publish()` refused events because the bus was stopping
or stopped.

Such a refusal is counted in `stats().dropped`, and is the publisher's timing, not the buffer's,
so the full-buffer line (`DropReport`) leaves it out (review 217). Counted and never said, it
was lost in a server that stopped its bus while a request it had cut was still unwinding (trial
267): the process ended a moment later, and no line told of the event. The count is said at the
end of the stop, and at the process's exit for what came after it (`say_late_refusals()`, which
the exit's delivery calls: at the interpreter's exit, and in a `multiprocessing` child, which
ends without it).
"""

from __future__ import annotations

import contextlib
import weakref

from eventbus_core._log import get_logger
from eventbus_core.batching._fork import at_fork
from eventbus_core.batching._said_every import SaidEvery

__all__ = ["LateRefusals", "say_late_refusals"]

log = get_logger("eventbus")

# Stopped buses whose later refusals the interpreter's exit says.
_STOPPED: weakref.WeakSet[LateRefusals] = weakref.WeakSet()


class LateRefusals:
    """The count of events `publish()` refused once the bus's `stop()` had begun.

    `count()` is called under the bus's own counters' lock, where it counts the refusal (no I/O
    there: `publish()` must not log); `say()` at the end of the stop, and at the exit.

    Args:
        label: Names the bus in the line ("eventbus memory worker").
    """

    __slots__ = ("__weakref__", "_label", "_said", "refused")

    def __init__(self, label: str) -> None:
        self._label = label
        self.refused = 0
        # Each refusal said once, whoever says it (a stop and the exit at once).
        self._said = SaidEvery(self._say, 0.0)

    def count(self) -> None:
        """One more event refused after the stop began."""
        self.refused += 1

    def after_fork_in_child(self) -> None:
        """What the parent refused is the parent's to say."""
        self._said.after_fork_in_child(self.refused)

    def say(self) -> None:
        """Log what was refused since the last line, if anything; from now on the process's
        exit says what comes later."""
        _STOPPED.add(self)
        self._said.reach(self.refused)  # at once: its period is 0

    def _say(self, new: int, refused: int) -> None:
        log.warning(
            "%s refused %d event(s) (%d in all, counted in stats().dropped): they were "
            "published after stop() had begun; stop the bus once the code that publishes has "
            "finished (a server's requests, a worker's threads)",
            self._label,
            new,
            refused,
        )


def _forget_the_parents() -> None:
    # A forked child inherits its parent's stopped buses: their refusals are the parent's.
    for late in list(_STOPPED):
        late.after_fork_in_child()


at_fork(after_in_child=_forget_the_parents)


def say_late_refusals() -> None:
    """At the process's exit: every stopped bus says what it refused since its stop ended."""
    for late in list(_STOPPED):
        with contextlib.suppress(Exception):  # exiting: one bus's trouble must not hide others
            late.say()
