"""What a backend may offer beyond the bus contract, declared as small Protocols.

Every bus has `publish`, `subscribe`, `stop` and `stats` (`eventbus_core.EventBus`). Anything
more is a *capability*, declared here and detected with `capability(bus, Protocol)`; the
dispatcher, the command line and the demo use only these, never a backend's name or a
`hasattr` on a method name. A backend offers a capability simply by having the members below
(structural typing); `docs/plugins/writing-a-backend.md` shows a minimal example of each, and
`eventbus_core.testing` has a contract test class per capability.

| capability | used by |
|---|---|
| `Flushable` | `eventbus publish` (back-pressure), the demo, `flush()` in tests |
| `Buffered` | `eventbus publish`: how often its back-pressure waits (every half buffer) |
| `CrossProcess` | `demo` (separate processes); `tail`, `stats`, `replay`, `dispatch` |
| `Reachable` | every command: fail fast with one line when the backend does not answer |
| `ConsumerGroups` | the dispatcher: at-least-once delivery through acknowledged consumers |
| `ReadableLog` | `eventbus replay`, `eventbus tail -n` |
| `LogSources` | `eventbus replay --source NAME`: a backend that keeps more than one log |
| `Describable` | `eventbus stats`, the `tail`/`replay` headers (`location`) |
| `Isolatable` | `eventbus demo`: a throwaway namespace per run, for its processes |

Sources (what `ConsumerGroups.consumer()` returns) may offer `KeepAlive`, `SourceFigures`,
`Exhaustible` and `Backlog` (read by the metrics of `eventbus_core.metrics`), `ReadAhead`
(used by the dispatcher's inline batches) and `Releasable` (the dispatcher's hand-back at
shutdown).

Sinks may offer `BlockingSend`: the dispatcher then stores full batches from the lane's own
thread, right after preparing them (`docs/plugins/writing-a-sink.md`).

Wrappers (`RedactingBus`) set `__wrapped__` to the bus they wrap; `capability()` looks through
them, since every capability but `publish()` is the wrapped bus's own.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Protocol, TypeVar, cast, runtime_checkable

from eventbus_core._event import Event
from eventbus_core._log import get_logger
from eventbus_core._source import AckableSource

__all__ = [
    "Backlog",
    "BlockingSend",
    "Buffered",
    "ConsumerGroups",
    "CrossProcess",
    "Describable",
    "Exhaustible",
    "Flushable",
    "Isolatable",
    "Isolation",
    "KeepAlive",
    "LogSources",
    "ParentsDeliveries",
    "Reachable",
    "ReadAhead",
    "ReadableLog",
    "Releasable",
    "SinkFigures",
    "SourceFigures",
    "capability",
    "foreign_tokens",
    "is_cross_process",
    "split_tokens",
]

_log = get_logger("eventbus")

T = TypeVar("T")

_MAX_WRAPPERS = 8  # a wrapper chain longer than this is a cycle, not a design


@runtime_checkable
class Flushable(Protocol):
    """A bus that can wait until what was accepted is stored or handed on."""

    def flush(self, timeout: float | None = 5.0) -> bool:
        """Wait until every event accepted so far is written to the backend (or, in memory,
        in every subscriber's buffer), or given up by `stop()`; True if that happened within
        `timeout` seconds (None: no limit). An
        event the backend refused for good (NATS: larger than the server's `max_payload`) is
        no longer waited for: it is counted in `stats().lost`, and logged. A `timeout` that
        is neither None nor a number of seconds (NaN, a str) raises `ValueError` or
        `TypeError` (`eventbus_core.check_stop_timeout(timeout, "flush()")`)."""


@runtime_checkable
class Buffered(Protocol):
    """A bus whose `publish()` holds at most `buffer_size` events not yet stored, and drops
    (counting) beyond that.

    A tool that publishes in bulk (`eventbus publish`) waits for `flush()` every half of it:
    sized by `OBSERVABILITY_BUFFER_SIZE` instead, it dropped most of a file on a bus whose own
    setting made its buffer smaller (trial 176). Every built-in bus has it."""

    buffer_size: int


@runtime_checkable
class CrossProcess(Protocol):
    """A bus whose events are seen by every process connected to the same backend.

    `cross_process` is True for a networked backend (Redis, NATS): another process's
    `subscribe()` receives what this one publishes, which is what the multi-process demo,
    `eventbus tail` and `eventbus dispatch` rely on. An in-process bus either lacks the
    attribute or says False.
    """

    @property
    def cross_process(self) -> bool:
        """True if other processes on the same backend see this bus's events."""


@runtime_checkable
class Reachable(Protocol):
    """A bus that can tell, with one round trip, whether its backend answers."""

    def check(self, timeout: float = 2.0) -> None:
        """Return if the backend answers within `timeout` seconds.

        Raises:
            BackendUnavailableError: it does not (the message says where it looked, with no
                credentials, and what to check).
            SettingsError: it answers, but refuses the settings (wrong credentials, a
                database it does not have): waiting cannot help, and commands exit 2.
        """


@runtime_checkable
class ConsumerGroups(Protocol):
    """At-least-once consumption: named groups whose members share the work, each delivery
    pending until acknowledged (Redis streams, NATS JetStream durable consumers)."""

    @property
    def default_group(self) -> str:
        """The group `consumer()` joins when none is named (the dispatcher's default)."""

    def consumer(
        self, group: str | None = None, name: str | None = None, *, batch_size: int = 100
    ) -> AckableSource:
        """Return a member `name` of `group` (created if missing, from the oldest entry the
        backend still holds). The same name after a restart resumes its own pending entries."""


@runtime_checkable
class ReadableLog(Protocol):
    """A backend that keeps a log which can be read again by LogID (and perhaps by time)."""

    @property
    def time_index(self) -> bool:
        """True if `read_range()` accepts `since`/`until` (the log knows when entries came)."""

    def read_range(
        self,
        first_id: int | None = None,
        last_id: int | None = None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Iterator[Event | None]:
        """Yield the retained events with LogID in `[first_id, last_id]` (and, with a time
        index, added within `[since, until]`), oldest first; None for an entry that does not
        decode, so the caller can count it. Reading consumes nothing.

        Raises:
            ValueError: `since`/`until` given to a log without a time index.
            BackendUnavailableError: the backend does not answer.
        """

    def newest(self, n: int) -> list[Event]:
        """Return the `n` newest retained events, oldest first (for `tail -n`)."""


@runtime_checkable
class LogSources(Protocol):
    """A backend that keeps more than one log on the same server, any of which `eventbus
    replay --source NAME` can read (the Redis backends: the list `log` and the `stream`)."""

    @property
    def log_sources(self) -> tuple[str, ...]:
        """The names `log_source()` accepts; the first is the bus's own log."""

    def log_source(self, name: str) -> ReadableLog:
        """The log called `name`, as configured (no I/O).

        Raises:
            ValueError: no log of that name (the message lists `log_sources`).
        """


@runtime_checkable
class Describable(Protocol):
    """A backend that reports figures of the whole backend, across every process."""

    @property
    def location(self) -> str:
        """Where the events are, in a few words and without credentials (`stream
        LLM_PROXY_EVENTS`, `key llm-proxy-events`): the header of `tail` and `replay`."""

    def describe(self) -> Mapping[str, Any]:
        """Return plain-data figures read from the backend itself (retained, published,
        groups with pending and lag, ...), for `eventbus stats`. Does I/O.

        Plain data means JSON-serialisable values. `eventbus stats` prints each key on a line,
        except `groups`: a list of mappings, one per consumer group, printed one per line
        (its `name` first). Put a `backend` key first, with the backend's name.

        Raises:
            BackendUnavailableError: the backend does not answer.
        """


@dataclass(frozen=True)
class Isolation:
    """A namespace of its own for one run of the demo (what `Isolatable.isolate()` returns).

    Args:
        env: Environment variables that put a bus built from the environment (the demo's
            publisher and dispatcher processes) in that namespace: a key, stream or file of
            its own, a consumer group of its own, a retention that keeps the whole run.
        where: The name of the run's namespace (a key, stream or file), for the report.
        kind: What `where` names, in a word or two (`redis key`, `nats stream`).
        cleanup: `cleanup(keep)` deletes what the run created (unless `keep`) and returns one
            line saying what it did. Does I/O; called once, also after Ctrl-C. If it raises
            (the backend stopped answering), the run's report says the namespace was not
            deleted, and why; the run's outcome stays what its deliveries make it.
    """

    env: Mapping[str, str]
    where: str
    kind: str = "namespace"
    cleanup: Callable[[bool], str] = field(default=lambda keep: "nothing to clean up")

    def __repr__(self) -> str:
        # `env` carries what the demo's processes need to connect, a password in a URL among
        # it: shown masked, whatever type the backend gave it (trial 139).
        from eventbus_core.redact._redact import MASK, redact_text

        env = {
            name: MASK if _CREDENTIAL_VARIABLE.search(name) else redact_text(str(value))
            for name, value in self.env.items()
        }
        return f"Isolation(env={env!r}, where={self.where!r}, kind={self.kind!r})"


# Variables whose value is a credential whatever it looks like (`NATS_PASSWORD`, `..._TOKEN`).
_CREDENTIAL_VARIABLE: Final = re.compile(
    r"PASS|PWD|TOKEN|SECRET|CRED|AUTH|COOKIE|SESSION|BEARER|JWT|NKEY|SEED|HMAC"
    r"|(?:API|ACCESS|PRIVATE|CLIENT|SIGNING)_?KEY",
    re.I,
)


@runtime_checkable
class Isolatable(Protocol):
    """A shared backend that can give a throwaway run (the demo) a namespace of its own, so
    repeated runs count exactly and leave the user's data and consumer groups alone."""

    def isolate(self, run: str, events: int) -> Isolation:
        """Prepare a namespace for run id `run` (letters and digits), which will hold
        `events` events; a namespace the user configured explicitly is used as it is (but
        with a consumer group of the run's own, starting at its end). May do I/O.

        Raises:
            BackendUnavailableError: the backend does not answer.
        """


@runtime_checkable
class KeepAlive(Protocol):
    """A source that must be told that what it handed over is still being processed."""

    def keep_alive(self) -> None:
        """Refresh every delivery held and not yet acknowledged, so that it is not redelivered
        while a slow sink still works on it. Cheap when not due; never raises."""


@runtime_checkable
class Releasable(Protocol):
    """A source that can take deliveries back unprocessed without counting them as attempts."""

    def release(self, tokens: Sequence[Any]) -> None:
        """Take back the deliveries of `tokens`, which nobody processed to the end (the
        dispatcher's shutdown deadline cut them off), for the next reader: this delivery is not
        counted toward the source's limit on deliveries (its poison-entry rule, meant for
        readers that die on an entry, not for restarts). Does I/O; never raises: a release
        that fails leaves the deliveries pending, counted as before."""


@runtime_checkable
class SourceFigures(Protocol):
    """A source with counters of its own (delivered, claimed, dead-lettered, ...)."""

    def figures(self) -> Mapping[str, Any]:
        """Plain-data counters; no I/O."""


@runtime_checkable
class Backlog(Protocol):
    """A source that can ask its backend how far behind its consumer group is."""

    def backlog(self) -> Mapping[str, int | None]:
        """`{"lag": ..., "pending": ...}` for the source's group, read from the backend: `lag`
        counts entries not yet delivered to the group (None when the backend cannot tell),
        `pending` entries delivered and not yet acknowledged. Does I/O; safe to call from
        another thread than the one reading (metrics scrapes do).

        Raises:
            Exception: whatever the client raises when the backend does not answer; callers
                leave the figures out then.
        """


@runtime_checkable
class ReadAhead(Protocol):
    """A source that can be asked for its next deliveries before the caller is done with the
    ones it has, so that its server prepares them meanwhile."""

    def read_ahead(self, max_items: int) -> None:
        """Ask the backend now for up to `max_items` deliveries for the next `read()` to return
        at once. What it asks for counts as handed over from then on (pending in a consumer
        group, kept alive with the rest); `close()` gives back what was never returned. May do
        nothing (when the source has other work first); never raises: a request that failed
        leaves the next `read()` to read as usual."""


@runtime_checkable
class Exhaustible(Protocol):
    """A source that can end (a stopped in-memory bus), as opposed to a durable log."""

    @property
    def exhausted(self) -> bool:
        """True once nothing more will ever be delivered."""


@runtime_checkable
class BlockingSend(Protocol):
    """A sink that can also store a batch with a plain, blocking call from any thread.

    A lane of the dispatcher that feeds only such a sink hands it each full batch from the
    lane's own thread, right after reading and preparing it, and acknowledges the batch there:
    no trip through the event loop, the sink's queue and back (about a fifth of a chat event's
    CPU time, measured by `benchmarks/bench_dispatch.py`). A batch that fails this way goes
    to the sink's worker, which retries it with `send()` as any other.
    """

    def send_blocking(self, batch: Sequence[dict[str, Any]]) -> None:
        """Store the whole batch, or raise, as `send()` does. Called from a thread that is not
        the event loop's, never at the same time as `send()` or itself."""


@runtime_checkable
class SinkFigures(Protocol):
    """A sink with counters of its own, shown in its `SinkStats.figures`."""

    def figures(self) -> Mapping[str, int]:
        """Plain counters; no I/O. `rejected` (the one exported as a metric,
        `eventbus.sink.rejected`): events whose request the destination accepted but which it
        refused to store (an OTLP partial success). The dispatcher counts them sent: retrying
        a partial success is what OTLP forbids."""


def split_tokens(
    tokens: Sequence[Any], is_token: Callable[[str], bool], as_text: Callable[[Any], str] = str
) -> tuple[list[str], list[str]]:
    """For a source's `ack(tokens)`: the tokens as text, split into the source's own
    (`is_token`) and the others, which it acknowledges first and then refuses with
    `foreign_tokens(...)`: one bad token made Redis refuse a whole XACK, and NATS counted
    `'bogus'` as acknowledged (trials 147, 150).

    Raises:
        TypeError: one token given alone (a str or bytes), which iterating would take for one
            token per character (trial 150).
    """
    if isinstance(tokens, str | bytes):
        raise TypeError(
            f"ack() takes a sequence of tokens, got one {type(tokens).__name__}: ack([token])"
        )
    texts = [as_text(token) for token in tokens]
    own = [text for text in texts if is_token(text)]
    others = [text for text in texts if not is_token(text)] if len(own) < len(texts) else []
    return own, others


class ParentsDeliveries:
    """The tokens of deliveries a consumer had out when its process forked: the parent's to
    acknowledge, not the child's. A child given them (a list of deliveries inherited across
    the fork) skips them, with one WARNING, instead of acknowledging the parent's work and
    counting it as its own (trial 230: 16 acknowledgements counted for 10 entries).

    A token the child is handed itself later (a delivery it claimed) is its own again: call
    `discard()` for it.
    """

    def __init__(self) -> None:
        self._tokens: set[str] = set()
        self._said = False

    def add(self, tokens: Iterable[str]) -> None:
        """Record the tokens out at the fork (call in the child)."""
        self._tokens.update(tokens)

    def discard(self, token: str) -> None:
        """`token` was handed to this process itself: its own to acknowledge."""
        self._tokens.discard(token)

    def mine(self, tokens: list[str], consumer: str) -> list[str]:
        """`tokens` without the parent's (said once per consumer, at WARNING)."""
        if not self._tokens:
            return tokens
        own = [token for token in tokens if token not in self._tokens]
        if len(own) < len(tokens) and not self._said:
            self._said = True
            _log.warning(
                "eventbus consumer %s: ignored %d acknowledgement(s) of deliveries the parent "
                "process had read before the fork; they are the parent's to acknowledge (a "
                "child acknowledging them counted the parent's work as its own)",
                consumer,
                len(tokens) - len(own),
            )
        return own


def foreign_tokens(others: Sequence[str], looks_like: str) -> ValueError:
    """The error for tokens `split_tokens` found not to be the source's own, raised after the
    others were acknowledged; `looks_like` says what a token is."""
    more = " ..." if len(others) > 3 else ""
    return ValueError(
        f"ack() takes the tokens of this source's deliveries ({looks_like}); got "
        f"{list(others[:3])!r}{more} (the other tokens were acknowledged)"
    )


def capability(bus: object, kind: Callable[..., T]) -> T | None:
    """Return `bus` (or the bus a wrapper wraps) if it offers capability `kind`, else None.

    Example:
        flushable = capability(bus, Flushable)
        if flushable is not None:
            flushable.flush(5.0)

    (`kind` is typed as a callable returning T, not `type[T]`, so that mypy takes a Protocol
    class such as `Flushable` and infers T from it: with `type[T]`, the documented call above
    failed `mypy --strict` with "Only concrete class can be given", trial 130.)
    """
    current: object | None = bus
    for _ in range(_MAX_WRAPPERS):
        if current is None:
            return None
        if isinstance(current, cast(type, kind)):
            return cast(T, current)
        current = getattr(current, "__wrapped__", None)
    return None


def is_cross_process(bus: object) -> bool:
    """True if `bus` declares that other processes see its events (`CrossProcess`)."""
    shared = capability(bus, CrossProcess)
    return shared is not None and bool(shared.cross_process)
