"""`EventBusSettings`: configuration from the environment, read with pydantic-settings.

Every field has exactly one environment variable (listed in `ENV_VARS` and in
`docs/configuration.md`); an invalid value raises `SettingsError` naming that variable.

Core names no backend's setting: a backend plugin registers its own settings model with its
factory, and `EventBusSettings` reads every installed plugin's model alongside its own fields,
takes their fields as keywords and answers them as attributes (`settings.redis_url` with the
Redis plugin installed), so what users wrote before the settings moved keeps working.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Mapping
from typing import Any, Final, Literal, Self, TypeVar

from pydantic import Field, PrivateAttr, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from eventbus_core._backend_choice import chosen_backend
from eventbus_core._bus import SECONDS_MAX
from eventbus_core._env_typos import warn_misspelt_settings
from eventbus_core._errors import SettingsError
from eventbus_core._log import get_logger
from eventbus_core._plugin_settings import (
    Problem,
    build_model,
    env_vars_of,
    explain,
    installed_models,
    is_public_property,
    model_failure,
    problems_of,
    route,
)
from eventbus_core._variable_source import ReadsVariablesOnly

__all__ = ["BACKEND_ALIASES", "ENV_VARS", "EventBusSettings", "all_env_vars"]

log = get_logger("eventbus.plugins")

_M = TypeVar("_M", bound=BaseSettings)

BACKEND_ALIASES: Final = {"in-memory": "memory", "inmemory": "memory"}
"""Alternative spellings accepted for backend names, mapped to the entry-point name."""


def _env(name: str, **kwargs: Any) -> Any:
    return Field(validation_alias=name, **kwargs)


def _model_name(model: type[BaseSettings]) -> str:
    return f"{model.__module__}.{model.__qualname__}"


class EventBusSettings(ReadsVariablesOnly, BaseSettings):
    """Settings of eventbus, read from the environment (and optionally a `.env` file).

    Build with keyword arguments named after the fields to override the environment, e.g.
    `EventBusSettings(backend="redis", redis_url="redis://localhost:6379/0")`.

    Raises:
        SettingsError: (a `ValueError`) a value is invalid; the message names its variable.
    """

    model_config = SettingsConfigDict(
        populate_by_name=True,
        extra="ignore",
        case_sensitive=False,
        env_nested_delimiter=None,
        # `inf` and `nan` parse as floats, and no setting has a use for them: an infinite
        # EVENTBUS_STOP_TIMEOUT would make stop() unbounded (and its waits overflow).
        allow_inf_nan=False,
    )

    backend: str = _env(
        "LLM_PROXY_EVENT_BUS",
        default="memory",
        description="Backend name: memory (alias in-memory), or an installed plugin's "
        "(`eventbus plugins` lists them).",
    )
    buffer_size: int = _env(
        "OBSERVABILITY_BUFFER_SIZE",
        default=1000,
        ge=1,
        le=10_000_000,
        description="Events held by publish()'s buffer (and by each in-memory subscriber).",
    )
    stop_timeout: float = _env(
        "EVENTBUS_STOP_TIMEOUT",
        default=5.0,
        ge=0,
        description="Seconds stop() waits at most to deliver what was accepted.",
    )
    publish_path: Literal["auto", "thread", "asyncio"] = _env(
        "EVENTBUS_PUBLISH_PATH",
        default="auto",
        description="Who drains publish()'s buffer: auto (the event loop publish() runs on, "
        "else a thread), thread, or asyncio (as auto; warns when a thread must drain).",
    )

    # --- dispatcher and sinks (docs/configuration.md, "Dispatcher and sinks") ---
    sinks: str = _env(
        "EVENTBUS_SINKS",
        default="console",
        description="Comma-separated sink names the dispatcher sends to, e.g. jsonl,webhook.",
    )
    batch_size: int = _env(
        "EVENTBUS_BATCH_SIZE",
        default=100,
        ge=1,
        le=100_000,
        description="Most events per batch handed to a sink.",
    )
    flush_interval: float = _env(
        "EVENTBUS_FLUSH_INTERVAL",
        default=5.0,
        gt=0,
        description="Seconds a partial batch waits at most before it is sent.",
    )
    sink_queue_size: int = _env(
        "EVENTBUS_SINK_QUEUE_SIZE",
        default=1000,
        ge=1,
        description="Events each sink's queue holds before reading pauses (back-pressure).",
    )
    stall_timeout: float = _env(
        "EVENTBUS_STALL_TIMEOUT",
        default=5.0,
        ge=0,
        description="Shared consumer mode: seconds a sink's full queue may hold reading back "
        "before its share is dead-lettered (0: wait as long as it takes).",
    )
    dispatch_buffer: int = _env(
        "EVENTBUS_DISPATCH_BUFFER",
        default=10_000,
        ge=1,
        le=10_000_000,
        description="Events each subscription the dispatcher reads from a bus holds (bursts).",
    )
    retries: int = _env(
        "EVENTBUS_RETRIES",
        default=3,
        ge=0,
        le=100,
        description="Resends of a failed batch before it is dead-lettered.",
    )
    retry_base: float = _env(
        "EVENTBUS_RETRY_BASE",
        default=1.0,
        ge=0,
        description="Seconds before the first retry; doubles each retry, with jitter.",
    )
    retry_cap: float = _env(
        "EVENTBUS_RETRY_CAP",
        default=30.0,
        ge=0,
        description="Longest backoff delay in seconds.",
    )
    retry_after_max: float = _env(
        "EVENTBUS_RETRY_AFTER_MAX",
        default=300.0,
        ge=0,
        description="Longest wait a sink's Retry-After may impose, in seconds.",
    )
    dead_letter_path: str = _env(
        "EVENTBUS_DEAD_LETTER_PATH",
        default="eventbus-dead-letter.jsonl",
        description="JSONL file of dead-lettered events (empty: none; failures are dropped).",
    )
    shutdown_timeout: float = _env(
        "EVENTBUS_SHUTDOWN_TIMEOUT",
        default=10.0,
        ge=0,
        description="Seconds the dispatcher takes at most to send what it holds when stopped.",
    )
    stats_interval: float = _env(
        "EVENTBUS_STATS_INTERVAL",
        default=60.0,
        ge=0,
        description="Seconds between DEBUG log lines of the dispatcher's figures (0: never).",
    )
    consumer_groups: Literal["per-sink", "shared"] = _env(
        "EVENTBUS_CONSUMER_GROUPS",
        default="per-sink",
        description="per-sink: a subscription/consumer group per sink; shared: one for all.",
    )
    consumer_name: str | None = _env(
        "EVENTBUS_CONSUMER_NAME",
        default=None,
        description="This dispatcher's name within its consumer group (default: host and pid).",
    )
    transformer: str = _env(
        "EVENTBUS_TRANSFORMER",
        default="",
        description="Custom transformer as package.module:function (empty: the LLM one).",
    )
    body_binary: Literal["base64", "placeholder"] = _env(
        "EVENTBUS_BODY_BINARY",
        default="base64",
        description="How the transformer keeps binary bodies: base64 or placeholder.",
    )
    body_max_bytes: int = _env(
        "EVENTBUS_BODY_MAX_BYTES",
        default=1_048_576,
        ge=0,
        description="Decoded bodies larger than this become a placeholder in payloads.",
    )
    redact: bool = _env(
        "EVENTBUS_REDACT",
        default=True,
        description="Redact payloads before sinks see them (headers always, bodies too).",
    )
    redact_on_publish: bool = _env(
        "EVENTBUS_REDACT_ON_PUBLISH",
        default=False,
        description="Also redact each event in publish(), before any backend stores it.",
    )
    redact_headers: str = _env(
        "EVENTBUS_REDACT_HEADERS",
        default="",
        description="Further comma-separated header names to mask.",
    )
    redact_patterns: str = _env(
        "EVENTBUS_REDACT_PATTERNS",
        default="",
        description="Further regular expressions to mask in bodies, separated by newlines.",
    )

    # --- metrics and health (docs/operations.md) ---
    metrics_port: int = _env(
        "EVENTBUS_METRICS_PORT",
        default=0,
        ge=0,
        le=65_535,
        description="Port where eventbus dispatch serves /metrics, /healthz, /readyz (0: off).",
    )
    metrics_host: str = _env(
        "EVENTBUS_METRICS_HOST",
        default="0.0.0.0",
        min_length=1,
        description="Address the metrics and health endpoint listens on.",
    )
    ready_max_lag: float = _env(
        "EVENTBUS_READY_MAX_LAG",
        default=300.0,
        ge=0,
        description="Seconds a sink's oldest unsent event may wait before /readyz fails (0: off).",
    )

    # --- sinks of observability products (docs/sinks/) ---
    otlp_capture_content: bool = _env(
        "EVENTBUS_OTLP_CAPTURE_CONTENT",
        default=False,
        description="The otlp sink adds prompts and completions (redacted) as span events.",
    )
    proxy_api_key: SecretStr | None = _env(
        "LLM_PROXY_API_KEY",
        default=None,
        description="The Go dispatcher's --api-key: the helicone or lunary sink's key when "
        "its api_key option (EVENTBUS_SINK_<NAME>_API_KEY) is not set.",
    )

    _plugins: dict[type[BaseSettings], BaseSettings] = PrivateAttr(default_factory=dict)
    _broken: dict[type[BaseSettings], str] = PrivateAttr(default_factory=dict)
    _backend_chosen_by: tuple[str, ...] = PrivateAttr(default=())

    def __init__(self, **values: Any) -> None:
        models = installed_models()
        core, routed = route(values, models, ENV_VARS)
        problems: list[Problem] = []
        variables = dict(ENV_VARS)
        others: list[str] = []  # errors of a model that does not list its problems
        try:
            super().__init__(**core)
        except ValidationError as exc:
            problems = problems_of(exc, EventBusSettings)
        core_wrong = bool(problems)
        # Every installed plugin's settings are read (and checked) now, as core's are, so a
        # wrong value fails at start-up whichever backend is selected.
        built: dict[type[BaseSettings], BaseSettings] = {}
        broken: dict[type[BaseSettings], str] = {}
        labels: set[str] = set()  # whose problems these are, for the message's wording
        for model in models:
            try:
                built[model] = build_model(model, routed.get(model, {}))
            except SettingsError as exc:
                if exc.problems:
                    problems.extend(exc.problems)
                    variables |= env_vars_of(model)
                    labels.add(getattr(model, "settings_label", "eventbus"))
                else:
                    others.append(str(exc))
            except Exception as exc:
                # Not a wrong value but a broken plugin (its model raised): like a plugin that
                # fails to import, it must not take the other backends down with it. Asking
                # for its settings (its backend selected) raises then, naming it.
                broken[model] = model_failure(exc)
                log.warning(
                    "eventbus: the settings of an installed plugin (%s) could not be read "
                    "(%s); its backend cannot be used, the others can",
                    _model_name(model),
                    broken[model],
                )
        if core_wrong:
            labels.add("eventbus")
        # Before any error: a variable in another case than the setting's is said either way.
        warn_misspelt_settings(all_env_vars().values())
        if problems or others:
            what = labels.pop() if len(labels) == 1 else "eventbus"
            text = "; ".join(([explain(problems, variables, what)] if problems else []) + others)
            raise SettingsError(text, problems=problems)
        self._plugins = built
        self._broken = broken
        if "backend" not in self.__pydantic_fields_set__:
            keywords = {model: set(values) for model, values in routed.items()}
            from eventbus_core._plugins import get_registry  # as installed_models(): lazily

            registered = get_registry().backend_models()
            chosen = chosen_backend(built, keywords, registered, BACKEND_ALIASES)
            if chosen is not None:
                self._choose_backend(chosen)

    def _choose_backend(self, chosen: tuple[str, tuple[str, ...]] | None) -> None:
        """Take the backend a plugin's setting selected (`_backend_choice`), if any, as the
        default's: `backend` stays out of the fields set (the user did not choose it)."""
        backend, variables = chosen if chosen is not None else (self._core_default(), ())
        self.__dict__["backend"] = backend  # not setattr: that would mark it as set
        self._backend_chosen_by = variables

    @staticmethod
    def _core_default() -> str:
        return str(EventBusSettings.model_fields["backend"].default)

    @property
    def backend_chosen_by(self) -> tuple[str, ...]:
        """The variables that chose `backend` with `LLM_PROXY_EVENT_BUS` unset (a plugin's
        `default_backend_when_set`: `("REDIS_ADDR",)`), or () when it is set or core's
        default holds."""
        if "backend" in self.model_fields_set:
            return ()
        return self._backend_chosen_by

    def __getattr__(self, name: str) -> Any:
        # A plugin's setting read as an attribute of the core settings (`settings.redis_url`):
        # only names its model declares, so a typo still raises AttributeError.
        if not name.startswith("_"):
            try:
                plugins = object.__getattribute__(self, "__pydantic_private__") or {}
            except AttributeError:
                plugins = {}
            for instance in plugins.get("_plugins", {}).values():
                if name in type(instance).model_fields or is_public_property(instance, name):
                    return getattr(instance, name)
        return super().__getattr__(name)  # type: ignore[misc]

    def __setattr__(self, name: str, value: Any) -> None:
        # Assigning a plugin's field (`settings.redis_key = ...`) sets it on the plugin's model.
        if name not in type(self).model_fields and not name.startswith("_"):
            for instance in self._plugins.values():
                if name in type(instance).model_fields:
                    setattr(instance, name, value)
                    return
        super().__setattr__(name, value)

    def __repr_args__(self) -> Any:
        yield from super().__repr_args__()
        for instance in self._plugins.values():
            yield from instance.__repr_args__()

    @property
    def model_fields_set(self) -> set[str]:
        """The fields set explicitly (keyword or environment), plugins' fields included."""
        found = set(self.__pydantic_fields_set__)
        for instance in self._plugins.values():
            found |= instance.model_fields_set
        return found

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy with `update` applied; a plugin's field in `update` goes to its model."""
        core, routed = route(dict(update or {}), list(self._plugins), ENV_VARS)
        copied = super().model_copy(update=core, deep=deep)
        copied._plugins = {
            model: instance.model_copy(update=routed.get(model), deep=deep)
            for model, instance in self._plugins.items()
        }
        if copied._backend_chosen_by and "backend" not in copied.model_fields_set:
            # A field that chose the backend, given anew, is a keyword's now, and keywords do
            # not choose (`_backend_choice`): core's default again (review 187).
            touched = {copied.env_var(field) for values in routed.values() for field in values}
            if touched & set(copied._backend_chosen_by):
                copied._choose_backend(None)
        return copied

    @classmethod
    def expect(cls, settings: object, where: str) -> EventBusSettings:
        """`settings` if it is an `EventBusSettings` (a backend's `from_settings()` checks what
        it was given with this).

        Raises:
            TypeError: it is not; the message names `where` and shows what to pass instead (a
                plugin's own settings class, such as `RedisSettings`, lacks core's fields).
        """
        if isinstance(settings, EventBusSettings):
            return settings
        raise TypeError(
            f"{where} takes an eventbus_core.EventBusSettings, which carries every installed "
            "plugin's settings too (EventBusSettings(backend=..., redis_url=...), or "
            f"EventBusSettings() to read the environment), got {type(settings).__name__}"
        )

    def plugin_settings(self, model: type[_M]) -> _M:
        """The values of a plugin's settings `model`, as read with these settings.

        A model no installed plugin registered (e.g. a plugin registered only in a test's
        own registry) is read from the environment now.
        """
        instance = self._plugins.get(model)
        if instance is None:
            why = self._broken.get(model)
            if why is not None:
                raise SettingsError(
                    f"the settings of the selected backend's plugin ({_model_name(model)}) "
                    f"could not be read: {why}; fix or reinstall that plugin"
                )
            instance = build_model(model, {})
        return typing.cast("_M", instance)

    @field_validator(
        "stop_timeout",
        "flush_interval",
        "stall_timeout",
        "retry_base",
        "retry_cap",
        "retry_after_max",
        "shutdown_timeout",
        "stats_interval",
        "ready_max_lag",
        mode="after",
    )
    @classmethod
    def _waitable(cls, value: float) -> float:
        # Finite is not enough: a wait past what a thread can wait overflowed at stop() (1e10
        # s: OverflowError, and the stop watchdog's thread died, trial 118).
        if value > SECONDS_MAX:
            raise ValueError(f"must be at most {SECONDS_MAX:,} seconds")
        return value

    @field_validator("backend", mode="before")
    @classmethod
    def _normalise_backend(cls, value: Any) -> Any:
        if isinstance(value, str):
            name = value.strip().lower()
            if not name:
                raise ValueError("must not be empty (use 'memory' for the in-process default)")
            return BACKEND_ALIASES.get(name, name)
        return value

    @field_validator("sinks", mode="before")
    @classmethod
    def _normalise_sinks(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            value = ",".join(str(v) for v in value)
        if isinstance(value, str):
            return ",".join(n.strip().lower() for n in value.split(",") if n.strip())
        return value

    @field_validator("dead_letter_path", mode="after")
    @classmethod
    def _check_dead_letter_path(cls, value: str) -> str:
        # Blank meant three things: a file named " " here, none for --dead-letter, refused
        # by demo and publish (trial 169). Empty is none; blank is a mistake.
        if value and not value.strip():
            raise ValueError(
                "is blank: give the dead-letter file's path, or leave it empty for none"
            )
        return value

    @field_validator("redact_patterns", mode="after")
    @classmethod
    def _check_patterns(cls, value: str) -> str:
        for pattern in value.splitlines():
            if pattern.strip():
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from None
        return value

    @property
    def sink_names(self) -> list[str]:
        """`EVENTBUS_SINKS` as a list of names."""
        return [n for n in self.sinks.split(",") if n]

    @property
    def redact_header_names(self) -> list[str]:
        """`EVENTBUS_REDACT_HEADERS` as a list."""
        return header_names(self.redact_headers)

    @property
    def redact_pattern_list(self) -> list[str]:
        """`EVENTBUS_REDACT_PATTERNS` as a list (one regular expression per line)."""
        return pattern_lines(self.redact_patterns)

    def env_var(self, field: str) -> str:
        """Return the environment variable that sets `field` (a core or a plugin's field)."""
        if field in ENV_VARS:
            return ENV_VARS[field]
        for model in self._plugins:
            variables = env_vars_of(model)
            if field in variables:
                return variables[field]
        raise KeyError(field)


ENV_VARS: Final[dict[str, str]] = {
    name: str(info.validation_alias) for name, info in EventBusSettings.model_fields.items()
}
"""Field name to environment variable, for every setting of core (plugins' settings:
`all_env_vars()`)."""


def all_env_vars() -> dict[str, str]:
    """Field name to environment variable, for core's settings and every installed plugin's."""
    found = dict(ENV_VARS)
    for model in installed_models():
        for field, variable in env_vars_of(model).items():
            found.setdefault(field, variable)
    return found


def header_names(text: str) -> list[str]:
    """Comma-separated header names (`EVENTBUS_REDACT_HEADERS`) as a list."""
    return [h.strip() for h in text.split(",") if h.strip()]


def pattern_lines(text: str) -> list[str]:
    """Regular expressions one per line (`EVENTBUS_REDACT_PATTERNS`) as a list."""
    return [p for p in text.splitlines() if p.strip()]
