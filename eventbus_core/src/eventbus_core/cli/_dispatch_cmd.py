"""`eventbus dispatch`: run the dispatcher as a long-running service until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from collections.abc import Sequence
from typing import Any

from eventbus_core._jsonl import file_problem
from eventbus_core._log import get_logger
from eventbus_core._overrun import run_bounded
from eventbus_core._plugins import get_registry
from eventbus_core._settings import EventBusSettings
from eventbus_core.capabilities import ConsumerGroups, capability, is_cross_process
from eventbus_core.cli._ops import (
    BACKEND_FLAGS,
    EXIT_FAILED,
    UsageError,
    add_backend_options,
    exit_codes_help,
    flag_terms,
    open_bus,
    settings_from_args,
    shared_backend_example,
)
from eventbus_core.cli._reach import LONG_RUNNING_HELP, BackendWatch
from eventbus_core.cli._sink_options import SinkOptions
from eventbus_core.dispatch._dispatcher import Dispatcher
from eventbus_core.dispatch._heap import prepare_dispatch_heap
from eventbus_core.dispatch._setup import transform_from_settings

__all__ = ["add_parser", "run"]

log = get_logger("eventbus.dispatch")


class _SinkAction(argparse.Action):
    """`--sink NAME`: start a new sink entry that later `--sink-opt`s attach to."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        sinks: list[tuple[str, dict[str, str]]] = getattr(namespace, "sinks", None) or []
        given: list[SinkOptions] = getattr(namespace, "sink_options", None) or []
        entry = SinkOptions(str(values).strip())
        given.append(entry)
        sinks.append((str(values).strip().lower(), entry.options))
        namespace.sinks, namespace.sink_options = sinks, given


class _SinkOptAction(argparse.Action):
    """`--sink-opt KEY=VALUE`: an option of the sink named by the closest `--sink` before it."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        given: list[SinkOptions] = getattr(namespace, "sink_options", None) or []
        if not given:
            parser.error(
                "--sink-opt must follow the --sink it belongs to, e.g. "
                "--sink jsonl --sink-opt path=events.jsonl"
            )
        try:
            given[-1].add(str(values))
        except ValueError as exc:
            parser.error(str(exc))


def add_parser(sub: Any) -> None:
    """Register the `dispatch` command."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "dispatch",
        help="deliver events from the bus to sinks until SIGTERM",
        description="Read events from the configured bus (LLM_PROXY_EVENT_BUS), transform and "
        "redact them, and deliver them in batches to sinks, with retries and a dead-letter "
        "file. Flags override settings; unset ones come from EVENTBUS_* variables. Stops "
        "cleanly on SIGTERM or SIGINT (Ctrl-C), its normal way to end, with exit 0: what "
        "was not sent is never acknowledged. A second Ctrl-C "
        "stops it at once, without the shutdown's wait (exit 130).",
        epilog=f"{LONG_RUNNING_HELP} "
        + exit_codes_help(
            "events were dropped, or lost by the backend before they were read (trimmed by "
            "its limits, where the backend can count that, or lost by its server, as by a "
            "restart without persistence), or "
            "the backend did not answer at the start",
            done="done, or stopped by SIGTERM or a first Ctrl-C",
            interrupted="130 a second Ctrl-C, which stops it at once",
        )
        + " Not dropped: entries that cannot be decoded are kept in the backend's dead-letter "
        "stream (where it has one), and events no sink took in "
        "EVENTBUS_DEAD_LETTER_PATH (when set).",
    )
    parser.add_argument(
        "--sink",
        action=_SinkAction,
        metavar="NAME",
        dest="sinks",
        help="a sink to deliver to (repeatable; default EVENTBUS_SINKS)",
    )
    parser.add_argument(
        "--sink-opt",
        action=_SinkOptAction,
        metavar="KEY=VALUE",
        dest="sink_opts",
        help="an option of the preceding --sink "
        "(repeatable), e.g. --sink jsonl --sink-opt path=events.jsonl",
    )
    add_backend_options(parser)
    parser.add_argument("--batch-size", type=int, help="events per batch (EVENTBUS_BATCH_SIZE)")
    parser.add_argument(
        "--flush-interval",
        type=float,
        help="seconds before a partial batch is sent (EVENTBUS_FLUSH_INTERVAL)",
    )
    parser.add_argument(
        "--dead-letter",
        dest="dead_letter_path",
        metavar="PATH",
        help="dead-letter JSONL file (EVENTBUS_DEAD_LETTER_PATH)",
    )
    parser.add_argument(
        "--consumer-groups",
        choices=("per-sink", "shared"),
        help="one consumer group per sink, or one for all (EVENTBUS_CONSUMER_GROUPS)",
    )
    parser.add_argument(
        "--stall-timeout",
        type=float,
        metavar="SECONDS",
        help="shared groups: seconds a stuck sink may hold the others back before its share "
        "is dead-lettered; 0: wait (EVENTBUS_STALL_TIMEOUT)",
    )
    parser.add_argument(
        "--consumer-name",
        help="this dispatcher's name in its consumer group (EVENTBUS_CONSUMER_NAME)",
    )
    parser.add_argument("--retries", type=int, help="retries per batch (EVENTBUS_RETRIES)")
    parser.add_argument(
        "--retry-base", type=float, help="first retry delay in seconds (EVENTBUS_RETRY_BASE)"
    )
    parser.add_argument(
        "--shutdown-timeout",
        type=float,
        help="seconds to finish sending on stop (EVENTBUS_SHUTDOWN_TIMEOUT)",
    )
    parser.add_argument(
        "--stats-interval",
        type=float,
        help="seconds between DEBUG stats lines (EVENTBUS_STATS_INTERVAL)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve /metrics (Prometheus), /healthz and /readyz on this port, e.g. 9464 "
        "(EVENTBUS_METRICS_PORT; needs eventbus-core[prometheus])",
    )
    parser.add_argument(
        "--metrics-host",
        metavar="ADDRESS",
        help="address of the metrics endpoint (EVENTBUS_METRICS_HOST, default 0.0.0.0)",
    )
    # SIGTERM is its normal way to end: exit 0, also before the dispatcher runs (while
    # --wait-for-backend waits, say), where the command line's SIGTERM would give 143.
    parser.set_defaults(func=run, sinks=None, sigterm_exit=0)


_FLAGS = {
    **BACKEND_FLAGS,
    "batch_size": "--batch-size",
    "flush_interval": "--flush-interval",
    "dead_letter_path": "--dead-letter",
    "consumer_groups": "--consumer-groups",
    "consumer_name": "--consumer-name",
    "stall_timeout": "--stall-timeout",
    "retries": "--retries",
    "retry_base": "--retry-base",
    "shutdown_timeout": "--shutdown-timeout",
    "stats_interval": "--stats-interval",
    "metrics_port": "--metrics-port",
    "metrics_host": "--metrics-host",
}
"""Settings field to the flag that overrides it (errors name the flag the user typed)."""


def _check_sinks(names: list[str], given_as: str) -> None:
    """Refuse no sink, a sink named twice, or one no installed plugin provides."""
    if not names:
        raise UsageError(
            f"no sink to deliver to ({given_as} is empty): name one, e.g. --sink console or "
            "--sink jsonl --sink-opt path=events.jsonl"
        )
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UsageError(f"sink {', '.join(twice)} named more than once ({given_as})")
    registry = get_registry()
    for name in names:
        registry.sink(name, given_as=given_as)


def _check_dead_letter_path(path: str, args: argparse.Namespace) -> None:
    """A dead-letter file that cannot be written is said at start, not at the first failure
    (when the events it should hold stay pending instead)."""
    if not path:
        return
    problem = file_problem(path, pipes=True)
    if problem is not None:
        given_as = "--dead-letter" if args.dead_letter_path else "EVENTBUS_DEAD_LETTER_PATH"
        raise UsageError(f"{given_as} {path!r} {problem}")


def run(args: argparse.Namespace) -> int:
    """Build the dispatcher from settings and flags, and serve until stopped."""
    if not args.verbose:
        # A service says what it does: start, stop, retries and dead letters at INFO.
        logging.getLogger("eventbus").setLevel(logging.INFO)
    if args.verbose < 2:
        # httpx logs every request's URL at INFO; a webhook URL may carry a token.
        logging.getLogger("httpx").setLevel(logging.WARNING)
    ignored = (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    )
    if ignored:
        # Ignored as a script's background job inherits it: the running dispatcher takes
        # SIGINT all the same, and the wait for the backend now does too (trial 175: it waited
        # the whole --wait-for-backend, then exited 1). Put back after, for a caller in process.
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return _serve(args)
    finally:
        if ignored:
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def _serve(args: argparse.Namespace) -> int:
    """`run()`, its signals set up."""
    settings = settings_from_args(args, _FLAGS)
    if args.sinks:
        settings = settings.model_copy(update={"sinks": ",".join(n for n, _ in args.sinks)})
        _check_sinks([n for n, _ in args.sinks], "--sink")
    else:
        _check_sinks(settings.sink_names, "EVENTBUS_SINKS")
    transform_from_settings(settings)  # a broken EVENTBUS_TRANSFORMER is said before anything
    _check_dead_letter_path(settings.dead_letter_path, args)
    endpoint = None
    if settings.metrics_port:
        from eventbus_core.metrics import MetricsEndpoint

        endpoint = MetricsEndpoint(settings.metrics_host, settings.metrics_port)  # binds now
        # Served from now on: while --wait-for-backend waits, /healthz says alive and /readyz
        # "starting" (a bound port that never answered failed the liveness probe).
        endpoint.start()
    try:
        bus = open_bus(args, settings, "eventbus dispatch")
        try:
            dispatcher = Dispatcher.from_settings(settings, bus=bus, sinks=args.sinks)
        except BaseException:
            bus.stop(timeout=1.0)
            raise
    except BaseException as exc:
        if endpoint is not None:
            endpoint.close()
        if isinstance(exc, KeyboardInterrupt):
            # SIGTERM or a first Ctrl-C while it starts (--wait-for-backend waiting, say) is
            # its normal end too, as once it runs: exit 0 (SIGINT gave 130, trial 175).
            log.info("eventbus dispatch stopped before the dispatcher ran")
            return 0
        raise
    dispatcher.owned_bus = bus  # stopped with the dispatcher
    dispatcher.owned_bus_stop_timeout = settings.stop_timeout
    if not is_cross_process(bus):
        log.warning(
            "backend %r carries only events published inside this process, and nothing "
            "publishes here: this dispatcher will receive nothing. To dispatch what proxies "
            "publish, choose a shared backend; %s",
            settings.backend,
            shared_backend_example(settings.backend),
        )
    grouped = warn_without_groups(bus, settings)
    log.info(
        "dispatching from backend %r to sinks %s (batch %d, flush %s s, groups %s, "
        "dead letters %s)",
        settings.backend,
        ",".join(s.name for s in dispatcher.sinks),
        settings.batch_size,
        settings.flush_interval,
        settings.consumer_groups if grouped else _subscriptions(settings.consumer_groups),
        settings.dead_letter_path or "off",
    )
    # This process is the dispatcher's: its start-up objects can leave the GC's passes, and
    # young passes can come less often. (Not done by Dispatcher.run(), which may run inside an
    # application that owns its heap.)
    prepare_dispatch_heap()
    with BackendWatch(bus, command="eventbus dispatch", say=flag_terms(args)):
        # Not asyncio.run(): it would wait without end for a sink's thread or task that never
        # ends, past the bound the stop promises (see run_bounded).
        if endpoint is None:
            stats = run_bounded(dispatcher.serve())
        else:
            endpoint.attach(dispatcher, max_lag=settings.ready_max_lag, say=flag_terms(args))
            try:
                stats = run_bounded(endpoint.run(dispatcher))
            finally:
                endpoint.close()
    dropped = sum(s.dropped for s in stats.sinks.values()) + stats.source_dropped
    if dropped:
        log.error("%d events were dropped (see the log above)", dropped)
    if stats.missed:
        # Logged as a warning when seen, yet the exit said all was well after 58 % of the
        # events were trimmed from the log before they were read (trial 134).
        log.error(
            "%d events were lost by the backend before they were read or acknowledged "
            "(trimmed by its limits, or lost by its server; some may have reached a sink of a "
            "reader that died holding them; summed over the lanes: see the log above)",
            stats.missed,
        )
    if stats.missed_unknown:
        # Its server lost its data (a Redis restarted without persistence): a warning when seen,
        # and the exit said all was well (trial 193).
        log.error(
            "lane(s) %s: the backend lost events before they were read, how many it cannot "
            "tell (its server lost its data: see the log above)",
            ", ".join(stats.missed_unknown),
        )
    if stats.uncounted:
        # The backend did not answer at the close: what it left unread is in no figure, and
        # the exit said all was well (trial 182).
        log.error(
            "lane(s) %s: the backend did not answer how many events were left unread at the "
            "stop: they are counted nowhere (see the log above)",
            ", ".join(stats.uncounted),
        )
    lost = stats.missed or stats.missed_unknown or stats.uncounted
    return EXIT_FAILED if dropped or lost else 0


def warn_without_groups(bus: object, settings: EventBusSettings) -> bool:
    """True if `bus` has consumer groups; else, on a shared backend, say what a subscription
    means for a dispatcher (a plugin without groups took `--consumer-groups shared
    --consumer-name foo` without a word, and the start line said "groups shared": trial 208).
    Said, not refused: the settings may be shared with a grouped backend's dispatchers."""
    if capability(bus, ConsumerGroups) is not None:
        return True
    if is_cross_process(bus):
        # --consumer-groups still counts (one subscription for all sinks, or one each); a
        # consumer's name means nothing without a group (review 210).
        named = "consumer_name" in settings.model_fields_set
        log.warning(
            "backend %r has no consumer groups (the ConsumerGroups capability): this dispatcher "
            "reads a subscription from now on, so events published while no dispatcher runs "
            "are not delivered, and every dispatcher gets every event%s",
            settings.backend,
            "; --consumer-name (EVENTBUS_CONSUMER_NAME) has no effect" if named else "",
        )
    return False


def _subscriptions(mode: str) -> str:
    """The start line's `groups` on a backend without them: what `--consumer-groups` chose."""
    if mode == "shared":
        return "none (one subscription for all sinks)"
    return "none (a subscription per sink)"
