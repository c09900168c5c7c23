"""What settings make of a dispatcher: sinks from plugins, policy, dead letters, transformer and
redaction. `Dispatcher.from_settings` builds itself from `dispatcher_arguments()`; this module
never imports the dispatcher."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from eventbus_core._env_typos import warn_misspelt_sink_options
from eventbus_core._errors import PluginError, SettingsError
from eventbus_core._factory import create_bus
from eventbus_core._plugins import PluginRegistry, get_registry
from eventbus_core._settings import EventBusSettings, all_env_vars
from eventbus_core._sink import Sink, sink_options_from_env, sink_problem
from eventbus_core.dispatch._deadletter import JsonlDeadLetter
from eventbus_core.dispatch._retry import RetryPolicy
from eventbus_core.redact._redact import NO_REDACTION, Redactor
from eventbus_core.transform._llm import LLMTransformer, Transform, load_transform

__all__ = [
    "build_sinks",
    "dispatcher_arguments",
    "redactor_from_settings",
    "retry_policy_from_settings",
    "transform_from_settings",
]


def build_sinks(
    settings: EventBusSettings,
    sinks: Sequence[tuple[str, Mapping[str, str]]] | None = None,
    *,
    registry: PluginRegistry | None = None,
    environ: Mapping[str, str] | None = None,
    given_as: str = "EVENTBUS_SINKS / --sink",
) -> list[Sink]:
    """Build sinks through their plugins' factories.

    Args:
        settings: Passed to each factory.
        sinks: `(name, options)` pairs; `EVENTBUS_SINKS` when omitted. Options given here win
            over `EVENTBUS_SINK_<NAME>_<KEY>` variables.
        registry: Where to look the names up; the installed plugins by default.
        environ: Environment for sink options (default `os.environ`).
        given_as: Where the names came from, for the error about an unknown one.

    Raises:
        UnknownSinkError: a name no installed plugin registers (the message lists them).
        SettingsError: a sink option is invalid, or two sinks built name themselves alike.
        PluginError: a sink's factory failed, or returned something that is not a sink.
    """
    reg = registry or get_registry()
    chosen = list(sinks) if sinks is not None else [(n, {}) for n in settings.sink_names]
    # First: a variable for a sink name misspelt is read by no sink, and one in another case
    # is read, while the errors below name it in upper case; said either way, not silently.
    warn_misspelt_sink_options(reg.sinks, all_env_vars().values(), environ)
    built: list[Sink] = []
    by_name: dict[str, str] = {}  # a built sink's name -> the sink chosen that built it
    for name, options in chosen:
        registration = reg.sink(name, given_as=given_as)
        merged = {**sink_options_from_env(registration.name, environ), **options}
        sink = reg.build(registration, "sink", settings, merged)
        problem = sink_problem(sink)
        if problem is not None:
            raise PluginError(
                f"sink {registration.name!r} of {reg.owner(registration)}: its factory returned "
                f"something that is not a sink: {problem} (docs/plugins/writing-a-sink.md)"
            )
        # Figures, dead letters and consumer groups are per sink name: two sinks of one name
        # ended `eventbus dispatch` with "internal error" and a traceback (trial 260).
        first = by_name.setdefault(sink.name, name)
        if first != name:
            raise SettingsError(
                f"sinks {first!r} and {name!r} ({given_as}) both name themselves "
                f"{sink.name!r}: the dispatcher keeps figures, dead letters and consumer groups "
                "per sink name; give one of them another name (an option of its plugin, if it "
                "has one) or leave one out"
            )
        built.append(sink)
    return built


def transform_from_settings(settings: EventBusSettings) -> Transform:
    """`EVENTBUS_TRANSFORMER`, or the `LLMTransformer` with the `EVENTBUS_BODY_*` settings."""
    if settings.transformer:
        return load_transform(settings.transformer)
    return LLMTransformer(binary=settings.body_binary, max_body_bytes=settings.body_max_bytes)


def redactor_from_settings(settings: EventBusSettings) -> Redactor:
    """The `EVENTBUS_REDACT*` rules, or `NO_REDACTION` when `EVENTBUS_REDACT=false`."""
    if not settings.redact:
        return NO_REDACTION
    return Redactor.from_settings(settings)


def dispatcher_arguments(
    settings: EventBusSettings,
    *,
    bus: Any = None,
    sinks: Sequence[tuple[str, Mapping[str, str]]] | None = None,
    registry: PluginRegistry | None = None,
) -> tuple[dict[str, Any], Any]:
    """The `Dispatcher(...)` keyword arguments `settings` call for, and the bus built for it
    (None when `bus` was given; the dispatcher then owns and stops the one built here).

    See `Dispatcher.from_settings` for the arguments and what it raises.
    """
    built = build_sinks(settings, sinks, registry=registry)
    owned = None
    if bus is None:
        bus = owned = create_bus(settings, registry=registry)
    arguments: dict[str, Any] = {
        "source": bus,
        "sinks": built,
        "batch_size": settings.batch_size,
        "flush_interval": settings.flush_interval,
        "queue_size": max(settings.sink_queue_size, settings.batch_size),
        "stall_timeout": settings.stall_timeout,
        "subscription_buffer": settings.dispatch_buffer,
        "retry": retry_policy_from_settings(settings),
        "dead_letter": (
            JsonlDeadLetter(settings.dead_letter_path) if settings.dead_letter_path else None
        ),
        "transform": transform_from_settings(settings),
        "redactor": redactor_from_settings(settings),
        "group_mode": settings.consumer_groups,
        # The bus's own default group (ConsumerGroups.default_group), which its backend reads
        # from its own settings: core names no backend's setting.
        "group": None,
        "consumer_name": settings.consumer_name,
        "shutdown_timeout": settings.shutdown_timeout,
        "stats_interval": settings.stats_interval,
    }
    return arguments, owned


def retry_policy_from_settings(settings: EventBusSettings) -> RetryPolicy:
    """The retries of `EVENTBUS_RETRIES`, `EVENTBUS_RETRY_BASE`, `EVENTBUS_RETRY_CAP` and
    `EVENTBUS_RETRY_AFTER_MAX` (the dispatcher's, and `eventbus replay --sink`'s)."""
    return RetryPolicy(
        retries=settings.retries,
        base=settings.retry_base,
        cap=settings.retry_cap,
        retry_after_max=settings.retry_after_max,
    )
