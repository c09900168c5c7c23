"""`Link`: one background thread running an asyncio loop that owns one NATS connection.

nats-py is asyncio only, while the bus contract is thread-based: every bus keeps one daemon
thread with its own loop, where the writer, the subscription readers and the consumers' requests
run as coroutines. Other threads hand work over with `submit()` / `call()` (blocking, bounded)
or `call_soon()` (a wake-up, no waiting).

The connection is made in the background, retried for ever (an application starts while NATS
is down), and nats-py reconnects by itself afterwards, trying every server of `NATS_URL` and
those the cluster announces. Credentials never leave `ConnectOptions`: logs and errors name the
servers through `where`, which masks them.

After `fork()` the child must not touch the parent's loop or sockets (the epoll instance and the
sockets are shared with the parent): `after_fork_in_child()` abandons them, unclosed and
referenced for ever, and starts a fresh thread, loop and connection.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import logging
import threading
import time
from collections.abc import Coroutine, Generator
from typing import Any, Final, TypeVar

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext, api

from eventbus_core import BackendUnavailableError, SettingsError, get_logger
from eventbus_core.batching import warn_of_thread_before_c_fork
from eventbus_nats._layout import StreamLayout
from eventbus_nats._options import ConnectOptions, TlsNotOffered, refusal, safe_error

__all__ = ["Link", "LinkClosed"]

log = get_logger("eventbus.nats")

T = TypeVar("T")

_CONNECT_TIMEOUT: Final = 2
_RECONNECT_WAIT: Final = 1
# A server that stops answering (SIGSTOP, a dead peer behind a live socket) is noticed after
# PING_INTERVAL * (MAX_PINGS + 1) seconds, then nats-py reconnects (to another server if any).
_PING_INTERVAL: Final = 5
# While NATS is down, one WARNING per this many seconds at most: nats-py reports each server of
# the cluster at each attempt (the addresses the cluster announced too), 66 lines in 20 s.
_WARN_EVERY: Final = 30.0
_MAX_PINGS: Final = 2
_FLUSH_TIMEOUT: Final = 2.0
_PENDING_SIZE: Final = 8 * 1024 * 1024  # bytes nats-py buffers while reconnecting
_API_TIMEOUT: Final = 5.0
_STREAM_IN_USE: Final = 10058  # JetStream error code: stream name already in use

# Loops, clients, threads and tasks a forked child inherited: never closed nor collected there,
# since closing them would unregister the parent's sockets from the epoll instance both share.
_ABANDONED: list[object] = []


class _Client(Client):
    """nats-py's client, with TLS required when the settings ask for it.

    nats-py upgrades a `nats://` or `tls://` connection to TLS only when the server's INFO says
    `tls_required`: a server without TLS (or anyone on the path who strips the flag) would get
    the credentials in clear text. As Go's client with `Secure`: when TLS is wanted, a server
    that offers it (`tls_required` or `tls_available`) is always upgraded, and one that offers
    none is refused before CONNECT is written.
    """

    def __init__(self, tls_wanted: bool) -> None:
        super().__init__()
        self._tls_wanted = tls_wanted
        # Whether the server connected to is part of a cluster (its INFO names one): a single
        # server refuses a stream of more than one replica, which `check()` tells at once.
        self.clustered: bool | None = None

    async def _process_info(self, info: dict[str, Any], initial_connection: bool = False) -> None:
        # Called with initial_connection=True right after each (re)connection's INFO, before
        # nats-py decides on TLS from the same dict (its _server_info) and sends CONNECT.
        server = self._current_server
        if (
            initial_connection
            and self._tls_wanted
            and not self.options.get("tls_handshake_first")  # TLS already, before the INFO
            and server is not None
            and server.uri.scheme in ("nats", "tls")  # ws(s):// is TLS by the websocket's URL
        ):
            if not (info.get("tls_required") or info.get("tls_available")):
                raise TlsNotOffered()
            info["tls_required"] = True
        if initial_connection:
            # A server without JetStream of its own (a leaf node of a cluster) says no cluster
            # either, while the cluster behind it keeps the stream: not known, then.
            self.clustered = bool(info.get("cluster")) if info.get("jetstream") else None
        await super()._process_info(info, initial_connection)


# nats-py's protocol returns True from `eof_received()` (keep the connection half-open), which
# asyncio's TLS transport ignores with a warning at every close of a TLS connection: a line at
# normal verbosity that says nothing to the user. Only that message of asyncio's is dropped.
_SSL_EOF_NOTE: Final = "returning true from eof_received() has no effect when using ssl"


def _not_the_ssl_eof_note(record: logging.LogRecord) -> bool:
    return record.msg != _SSL_EOF_NOTE


logging.getLogger("asyncio").addFilter(_not_the_ssl_eof_note)


def _create_hint(description: str) -> str:
    """The settings that shape a stream the server refused to create, the likely one first."""
    if "overlap" in description:
        # Another stream already captures the subject: the stream was renamed, not the subject.
        return (
            "another stream already captures this subject: give this stream a subject of its "
            "own with EVENTBUS_NATS_SUBJECT, or use that stream's name in EVENTBUS_NATS_STREAM"
        )
    if "insufficient resources" in description or "no suitable peers" in description:
        # More replicas than the cluster has JetStream servers (or room on them): the hint
        # "a single server takes 1" misled on a three-node cluster (helper-109).
        return (
            "check EVENTBUS_NATS_REPLICAS: at most the number of JetStream servers in the "
            "cluster (1 for a single server), each with room for EVENTBUS_NATS_MAX_BYTES"
        )
    return (
        "check EVENTBUS_NATS_REPLICAS: at most the number of JetStream servers in the cluster "
        "(1 for a single server); and EVENTBUS_NATS_MAX_MSGS, _MAX_BYTES, _MAX_AGE"
    )


class LinkClosed(BackendUnavailableError, RuntimeError):
    """The link was closed (the bus stopped and every consumer closed): a capability method
    called then fails with it, a `BackendUnavailableError` as nats.md says."""


class Link:
    """A NATS connection on a loop of its own, shared by a bus and its consumers.

    Args:
        options: Servers and credentials.
        layout: The stream layout (`ensure_stream()` creates the streams it names).
        name: Connection and thread name.
    """

    def __init__(self, options: ConnectOptions, layout: StreamLayout, *, name: str) -> None:
        self.options = options
        self.layout = layout
        self.name = name
        self._users = 1
        self._users_lock = threading.Lock()
        # Bumped when the event stream is found to be a new one (deleted and created again):
        # its sequences start over, so whoever keeps the newest one must forget it.
        self.stream_epoch = 0
        self._stream_created: Any = None  # the stream's creation time, as the server says
        # Whether the event stream holds the bus's subject alone: then a jump in sequences is
        # messages removed (limits, purge); in a stream shared with other subjects it is theirs.
        self.subject_alone = True
        self._start()

    def _start(self) -> None:
        self.state = "connecting"
        self.last_error: str | None = None
        # Why the servers refuse this connection since the last successful one, when no wait
        # would help (credentials, no TLS, an untrusted certificate); None otherwise.
        self.refused: SettingsError | None = None
        self.reconnects = 0
        self._warned_at: float | None = None  # the last connection WARNING, while down
        self._quiet = 0  # connection errors since, logged at DEBUG only
        self.closed = False
        self.nc: Client | None = None
        self.js: JetStreamContext | None = None
        self._ready = asyncio.Event()
        self._stream_lock = asyncio.Lock()
        self._stream_ready = False
        self._dead_ready = False
        self.loop = asyncio.new_event_loop()
        # Every task of the loop is held here while it runs, and this link by its thread: a
        # loop keeps only weak references to its tasks, so a bus dropped without stop() (or
        # cleared with its module at interpreter exit, as a gunicorn --preload master's is)
        # had its writer's task collected while pending, which asyncio logs at ERROR ("Task
        # was destroyed but it is pending!"), and what it had not sent yet went with it.
        self._tasks: set[asyncio.Task[Any]] = set()
        self.loop.set_task_factory(self._held_task)
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        warn_of_thread_before_c_fork(self.name)
        self._thread.start()
        self.call_soon(self._begin)

    def _held_task(
        self,
        loop: asyncio.AbstractEventLoop,
        coro: Generator[Any, None, T] | Coroutine[Any, Any, T],
        /,
        context: contextvars.Context | None = None,
    ) -> asyncio.Task[T]:
        task = asyncio.Task(coro, loop=loop, context=context)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _begin(self) -> None:
        self._connect_task = self.loop.create_task(self._connect())

    def _run(self) -> None:
        loop = self.loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            if tasks:
                with contextlib.suppress(Exception):
                    loop.run_until_complete(asyncio.wait(tasks, timeout=1.0))
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    # ------------------------------------------------------------------------- connection

    async def _connect(self) -> None:
        try:
            await self._connect_once()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # nats-py retries by itself; this is a bug or bad options
            self.state = "failing"
            self.last_error = safe_error(exc)
            log.error("eventbus nats cannot connect to %s: %s", self.where, self.last_error)

    async def _connect_once(self) -> None:
        nc = _Client(tls_wanted=bool(self.options.tls_wanted_by))
        self.nc = nc
        # With max_reconnect_attempts=-1 nats-py tries the servers until one answers.
        await nc.connect(
            servers=list(self.options.servers),
            name=self.name,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            connect_timeout=_CONNECT_TIMEOUT,
            reconnect_time_wait=_RECONNECT_WAIT,
            ping_interval=_PING_INTERVAL,
            max_outstanding_pings=_MAX_PINGS,
            pending_size=_PENDING_SIZE,
            flush_timeout=_FLUSH_TIMEOUT,
            error_cb=self._on_error,
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
            **self.options.auth,
        )
        self.js = nc.jetstream(timeout=_API_TIMEOUT, publish_async_max_pending=100_000)
        if self.state != "connected":
            log.info("eventbus nats connected to %s", self.options.where)
        self.state = "connected"
        self.last_error = None
        self.refused = None
        self._warned_at, self._quiet = None, 0
        self._ready.set()

    async def _on_error(self, exc: Exception) -> None:
        # Kept until a connection succeeds: the server closes the socket after its refusal,
        # and nats-py reports the reset of its next attempt, which says nothing about why.
        refused = refusal(exc, self.options)
        if refused is not None:
            self.refused = refused
        message = safe_error(exc)
        if message != self.last_error:
            now = time.monotonic()
            if self._warned_at is None or now - self._warned_at >= _WARN_EVERY:
                more = f" ({self._quiet} other error(s) since the last line)" if self._quiet else ""
                log.warning(
                    "eventbus nats connection to %s: %s%s", self.options.where, message, more
                )
                self._warned_at, self._quiet = now, 0
            else:
                self._quiet += 1
                log.debug("eventbus nats connection to %s: %s", self.options.where, message)
        self.last_error = message
        # Never after closing: nats-py may still report its last attempt's failure once
        # release() said "closed", which must stay what stats() shows.
        if not self.closed and (self.nc is None or not self.nc.is_connected):
            self.state = "reconnecting"

    async def _on_disconnected(self) -> None:
        if not self.closed:
            self.state = "reconnecting"

    async def _on_reconnected(self) -> None:
        self.reconnects += 1
        if not self.closed:
            self.state = "connected"
        self.last_error = None
        self.refused = None
        # At the level of the trouble said before it: a log read at WARNING ended on the
        # error (trial 215, on Redis).
        level = logging.INFO if self._warned_at is None else logging.WARNING
        self._warned_at, self._quiet = None, 0
        log.log(level, "eventbus nats reconnected to %s", self._server_reached())

    def _server_reached(self) -> str:
        """The server the client is on now, as `scheme://host:port` (no credentials), else
        the servers configured: the line named the whole list, dead servers included, where
        failover had moved to one of them (trial 148)."""
        reached = getattr(self.nc, "connected_url", None)
        host = getattr(reached, "hostname", None)
        if reached is None or not host:
            return self.options.where
        port = getattr(reached, "port", None)
        where = f"{reached.scheme}://{host}{f':{port}' if port else ''}"
        return f"{where} (of {self.options.where})"

    @property
    def connected(self) -> bool:
        """True while the connection is up (never once the link is closed: closing a client
        whose server is frozen gives up before nats-py marks it closed)."""
        nc = self.nc
        return not self.closed and nc is not None and nc.is_connected

    @property
    def where(self) -> str:
        """The servers, credentials masked."""
        return self.options.where

    def server_is_single(self) -> bool:
        """True when the server connected to said it is part of no cluster (False when not
        known: not connected yet)."""
        nc = self.nc
        return isinstance(nc, _Client) and nc.clustered is False

    async def jetstream(self) -> JetStreamContext:
        """The JetStream context, once the first connection succeeded (waits until then)."""
        await self._ready.wait()
        assert self.js is not None
        return self.js

    async def answering(self, patience: float = 0.0) -> JetStreamContext:
        """The JetStream context while connected. While the connection is down, wait up to
        `patience` seconds for it, then raise: requests made on a caller's behalf fail fast
        rather than wait for an outage to end (the first connection is always waited for)."""
        give_up = time.monotonic() + patience
        while not self.connected:
            failed = self.last_error is not None and time.monotonic() >= give_up
            if failed or self.closed or self.refused is not None:  # no wait cures a refusal
                raise ConnectionError(self.last_error or "connection closed")
            await asyncio.sleep(0.01)
        assert self.js is not None
        return self.js

    async def client(self) -> Client:
        """The NATS client, once the first connection succeeded (waits until then)."""
        await self._ready.wait()
        assert self.nc is not None
        return self.nc

    # ---------------------------------------------------------------------------- streams

    async def ensure_stream(self, *, dead: bool = False) -> None:
        """Create the event stream (or the dead-letter one) if it is missing.

        An existing stream is used as it is: its limits are the operator's to change.

        Raises:
            SettingsError: the server refused to create it, or the existing stream does not
                take the bus's subject.
        """
        if (self._dead_ready if dead else self._stream_ready) and self.connected:
            return
        async with self._stream_lock:
            js = await self.jetstream()
            config = self.layout.dead_config() if dead else self.layout.stream_config()
            assert config.name is not None
            info: api.StreamInfo | None = None
            try:
                info = await js.stream_info(config.name)
            except nats.js.errors.NotFoundError:
                try:
                    info = await js.add_stream(config)
                    log.info("eventbus nats created stream %s (%s)", config.name, config.subjects)
                except nats.js.errors.APIError as exc:
                    if exc.err_code != _STREAM_IN_USE:  # another process created it first
                        # The server answered, and said no (10074: replicas > 1 on a single
                        # server, a 500): say which settings shape the request. The writer
                        # still retries (an operator may fix the server side).
                        raise SettingsError(
                            f"NATS refused to create stream {config.name}: {exc.description} "
                            f"({_create_hint(exc.description or '')})"
                        ) from exc
                if not dead:
                    self.stream_epoch += 1  # it was missing: what is there now is new
            mismatch = None if info is None else self.layout.mismatch(info, dead=dead)
            if mismatch is not None:
                raise SettingsError(mismatch)
            if not dead:
                self.subject_alone = info is None or self.layout.alone_in(info)
                created = getattr(info, "created", None)
                if created is not None:
                    # Found after a loss (a restarted server, or a stream created again):
                    # the same stream only if it was created at the same time.
                    if self._stream_created is not None and created != self._stream_created:
                        self.stream_epoch += 1
                    self._stream_created = created
            if dead:
                self._dead_ready = True
            else:
                self._stream_ready = True

    def stream_lost(self) -> None:
        """Note that the stream may be gone: the next `ensure_stream()` looks again."""
        self._stream_ready = False
        self._dead_ready = False

    async def stream_info(self, name: str | None = None) -> api.StreamInfo:
        """`STREAM.INFO` of the event stream (or `name`); fails at once while disconnected."""
        js = await self.answering()
        return await js.stream_info(name or self.layout.stream)

    # ------------------------------------------------------------------- handing work over

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run `coro` on the link's loop; return a future of its result.

        Raises:
            LinkClosed: the link was closed.
        """
        if self.closed:
            coro.close()
            raise LinkClosed(f"the NATS connection {self.name} is closed (the bus was stopped)")
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        """Run `coro` on the link's loop and wait up to `timeout` seconds for its result.

        Raises:
            TimeoutError: it did not finish in time (it is cancelled).
            LinkClosed: the link was closed.
            Exception: whatever `coro` raised.
        """
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("Link.call() from the link's own thread would deadlock")
        started = time.monotonic()
        try:
            future = self.submit(asyncio.wait_for(coro, timeout))
        except LinkClosed:  # submit() closed the wrapper; `coro` too: no "never awaited"
            coro.close()
            raise
        try:
            return future.result(timeout + 0.5)
        except concurrent.futures.TimeoutError:
            # This wait's own, or the request's (a JetStream call's shorter timeout, raised as
            # the same TimeoutError): say how long it really was.
            future.cancel()
            waited = time.monotonic() - started
            if waited < min(0.05, timeout / 2):
                # Ended at once (a request made while disconnected): "within 0.0 s" said
                # nothing of why (trial 246).
                raise TimeoutError(
                    f"no answer from NATS at {self.where}: the request ended at once "
                    f"({'not connected' if not self.connected else 'timed out'})"
                ) from None
            raise TimeoutError(
                f"no answer from NATS at {self.where} within {waited:.1f} s"
            ) from None
        except concurrent.futures.CancelledError:
            raise LinkClosed(f"the NATS connection {self.name} was closed meanwhile") from None

    def call_soon(self, callback: Any, *args: Any) -> None:
        """Schedule `callback(*args)` on the loop from any thread; a no-op once closed."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody left to wake
            self.loop.call_soon_threadsafe(callback, *args)

    @property
    def on_loop_thread(self) -> bool:
        """True when called from the link's own thread."""
        return threading.current_thread() is self._thread

    # ---------------------------------------------------------------------------- lifecycle

    def acquire(self) -> None:
        """Count one more user (a consumer); the link closes when the last one releases it.

        Raises:
            LinkClosed: the link is closed already.
        """
        with self._users_lock:
            if self.closed:
                raise LinkClosed(f"the NATS connection {self.name} is closed")
            self._users += 1

    def release(self, deadline: float) -> None:
        """Drop one user; the last one closes the connection and ends the thread, waiting for
        that until `deadline` (a `time.monotonic()` value) at most."""
        with self._users_lock:
            self._users -= 1
            if self._users > 0 or self.closed:
                return
            self.closed = True
        self.state = "closed"
        with contextlib.suppress(RuntimeError):
            asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop)
        if threading.current_thread() is not self._thread:
            self._thread.join(max(0.0, deadline - time.monotonic()))

    async def _shutdown(self) -> None:
        task = getattr(self, "_connect_task", None)
        if task is not None and not task.done():
            task.cancel()
        nc = self.nc
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), 1.0)
        self.loop.stop()

    def after_fork_in_child(self) -> None:
        """Give a forked child a connection of its own (the parent's stays the parent's)."""
        # The parent's tasks too (its writer's, its subscriptions' readers), which the link
        # held (see `_start`): the child's objects stop referring to them, and a pending task
        # that is collected logs "Task was destroyed but it is pending!" at ERROR.
        _ABANDONED.append((self.loop, self.nc, self.js, self._thread, self._tasks))
        self._users_lock = threading.Lock()
        if self.closed:
            return
        self._start()

    def __repr__(self) -> str:
        return f"<Link {self.name} {self.state} {self.where}>"
