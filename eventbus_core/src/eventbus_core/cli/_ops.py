"""Shared plumbing of the commands that talk to a backend (`tail`, `publish`, `stats`, ...).

Exit codes, the same for every command:
    0  done;
    1  the command ran but something was lost or failed on the way (a rejected input line,
       a dropped event), or the backend did not answer;
    2  usage or configuration error (the message says what to change);
    130  interrupted (Ctrl-C);
    143  terminated (SIGTERM), which every command takes as it takes Ctrl-C.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import math
import re
import select
import sys
import threading
import typing
from collections.abc import Callable, Mapping
from typing import Final

from eventbus_core._bus import EventBus
from eventbus_core._control_chars import escape_control
from eventbus_core._errors import BackendUnavailableError, EventBusError, SettingsError
from eventbus_core._event import Event
from eventbus_core._factory import backend_given_as, create_bus
from eventbus_core._install import (
    SIBLINGS,
    Sibling,
    install_command,
    is_installed,
    wanted_siblings,
)
from eventbus_core._log import scrub
from eventbus_core._plugin_extras import lacking_extras
from eventbus_core._plugins import PluginInfo, Registration, get_registry
from eventbus_core._settings import ENV_VARS, EventBusSettings, all_env_vars
from eventbus_core.capabilities import Describable, capability, is_cross_process
from eventbus_core.cli._backend_flags import (
    OPTION,
    add_plugin_options,
    flag_value,
    installed_backends,
    plugin_flags,
    plugin_overrides,
)
from eventbus_core.cli._reach import ensure_reachable
from eventbus_core.redact._secrets import redact_url

__all__ = [
    "BACKEND_FLAGS",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_TERMINATED",
    "EXIT_USAGE",
    "UsageError",
    "add_backend_options",
    "exit_codes_help",
    "format_event",
    "in_command_line_terms",
    "open_bus",
    "require_shared",
    "settings_from_args",
    "shared_backend_example",
    "shown_location",
    "stdout_gone",
    "with_backend_errors",
]

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130  # Ctrl-C (SIGINT), as shells report it
EXIT_TERMINATED: Final = 143  # SIGTERM, as shells report a process it ended


def exit_codes_help(
    failure: str,
    *,
    delivers: bool = False,
    done: str = "done",
    usage: str = "usage or configuration error",
    interrupted: str = "130 interrupted (Ctrl-C), 143 terminated (SIGTERM)",
) -> str:
    """The `--help` epilog's exit codes, with what 1 means for the command (`failure`); a
    command that publishes (`delivers`) says that an interrupted run still writes what it
    accepted. One text for every command did not fit `stats`, which delivers nothing, nor
    `dispatch`, for which a signal is the normal end (`interrupted`)."""
    after = (
        ", each after writing what was accepted (within EVENTBUS_STOP_TIMEOUT)" if delivers else ""
    )
    return f"exit codes: 0 {done}; 1 {failure}; 2 {usage}; {interrupted}{after}."


BACKEND_FLAGS: Final = {"backend": "--backend"}
"""Core settings field to the flag of `add_backend_options()` that overrides it (the flags of
backend plugins, such as `--redis-url`, and `--backend-option` come with their plugin)."""


EMPTY_IS_A_VALUE: Final = frozenset({"dead_letter_path"})
"""Settings whose empty value means something (no dead-letter file), given so by a flag too."""


class UsageError(EventBusError, ValueError):
    """A mistake on the command line (a flag's value, a combination of flags): exit code 2."""


def add_backend_options(parser: argparse.ArgumentParser) -> None:
    """Add `--backend`, the installed backend plugins' flags (such as `--redis-url`) and
    `--backend-option KEY=VALUE` (overriding the environment for one run), and
    `--wait-for-backend`."""
    group = parser.add_argument_group("backend (default: from the environment)")
    group.add_argument(
        "--backend",
        metavar="NAME",
        help="backend name, overriding LLM_PROXY_EVENT_BUS (installed: "
        f"{', '.join(installed_backends()) or 'none'})",
    )
    add_plugin_options(group)
    group.add_argument(
        "--wait-for-backend",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="at start-up, wait up to SECONDS for the backend to answer (default 0: fail at "
        "once, exit 1, if it does not)",
    )


def settings_from_args(
    args: argparse.Namespace, flags: Mapping[str, str] = BACKEND_FLAGS
) -> EventBusSettings:
    """Settings from the environment, with the values of `flags` (field to flag) given on the
    command line applied; an invalid one is reported under its flag's name, and so is a
    backend name no installed plugin provides.

    Raises:
        UsageError: a flag's value is invalid (the message names the flag).
        SettingsError: an environment variable's value is invalid (the message names it).
        UnknownBackendError, BackendLoadError: the backend is not installed, or broken.
    """
    backend = getattr(args, "backend", None) if "backend" in flags else None
    if isinstance(backend, str) and not backend.strip():
        # Not "unset": an empty LLM_PROXY_EVENT_BUS= is refused too.
        raise UsageError(
            f"{flags['backend']} is empty: give a backend name ('eventbus plugins' lists "
            "them), or leave the flag out to use LLM_PROXY_EVENT_BUS"
        )
    overrides, given_as_flag = plugin_overrides(args)
    plugin_given = dict(given_as_flag)
    for field in flags:
        value = getattr(args, field, None)
        if value is not None:
            overrides[field] = flag_value(
                value,
                flags[field],
                ENV_VARS.get(field, "the setting"),
                empty_is_a_value=field in EMPTY_IS_A_VALUE,
            )
            given_as_flag[field] = flags[field]
    try:
        settings = EventBusSettings(**overrides)
    except SettingsError as exc:
        raise _in_flag_terms(exc, given_as_flag) from None
    given_as = flags["backend"] if "backend" in overrides else backend_given_as(settings)
    registration = get_registry().backend(settings.backend, given_as=given_as)
    _refuse_other_backends_settings(settings.backend, given_as, registration, plugin_given)
    return settings


def _refuse_other_backends_settings(
    backend: str, given_as: str, registration: Registration, given: Mapping[str, str]
) -> None:
    """Refuse a plugin setting given on the command line (`--redis-url`, `--backend-option`)
    that only other backends read: it would change nothing, silently (`eventbus demo
    --redis-url ...` ran the memory demo). A setting some sink reads is left alone.

    Raises:
        UsageError: naming the flag, the backends that read it and the one selected.
    """
    for field, readers in get_registry().read_only_by_others(registration, given).items():
        which = " and ".join(readers) + (" backend" if len(readers) == 1 else " backends")
        raise UsageError(
            f"{given[field]} is a setting of the {which}, not of {backend!r} (from {given_as}), "
            f"which would ignore it: pass --backend {readers[0]} to use it, or leave it out"
        )


def _in_flag_terms(exc: SettingsError, flags: Mapping[str, str]) -> EventBusError:
    """The error with each value a flag supplied named by that flag, not by its variable."""
    if not exc.problems or not any(field in flags for field, _, _ in exc.problems):
        return exc
    parts = []
    for field, shown, reason in exc.problems:
        name = flags.get(field)
        if not field:  # a check across settings: its reason names them
            parts.append(reason)
        elif name is not None:
            parts.append(f"{name} {shown}: {reason}" if shown else f"{name}: {reason}")
        else:
            var = all_env_vars().get(field, field)
            parts.append(f"{var}={shown}: {reason}" if shown else f"{var}: {reason}")
    return UsageError("; ".join(parts))


def open_bus(args: argparse.Namespace, settings: EventBusSettings, command: str) -> EventBus:
    """The bus of `settings`, once its backend answers (see `eventbus_core.cli._reach`).

    Raises:
        BackendUnavailableError: the backend did not answer (within `--wait-for-backend`).
        SettingsError, UsageError: the backend refused a setting (`UsageError`, naming the
            flag, when a flag gave it).
    """
    wait = getattr(args, "wait_for_backend", 0.0) or 0.0
    if not math.isfinite(wait) or wait < 0 or wait > threading.TIMEOUT_MAX:
        raise UsageError(
            f"--wait-for-backend {wait:g}: give the seconds to wait, a number from 0 to "
            f"{threading.TIMEOUT_MAX:.0f}"
        )
    # Each plugin setting the command line gave (`--redis-url`, `--backend-option KEY=...`), by
    # the flag as typed: a value the backend refuses is named by it, not by its variable.
    _, given = plugin_overrides(args)
    try:
        bus = create_bus(settings)
    except SettingsError as exc:  # a value the backend refused: name the flag that gave it
        raise _in_flag_terms(exc, given) from None
    say = flag_terms(args)
    try:
        ensure_reachable(bus, wait=wait, command=command, say=say)
    except BackendUnavailableError as exc:
        bus.stop(timeout=0)
        address_flags = list(_flags_named(str(exc), args).values())
        if address_flags:  # the address came from the command line, not the environment
            shown = " / ".join(address_flags)
            raise BackendUnavailableError(f"{say(str(exc))} (settings given by {shown})") from None
        raise
    except BaseException:
        # A SettingsError too (the server refused the address's database or credentials):
        # the command runner names the flag that gave a value (`in_command_line_terms`), as
        # for every configuration error.
        bus.stop(timeout=0)
        raise
    return bus


def flag_terms(args: argparse.Namespace) -> Callable[[str], str]:
    """What turns a message about the backend into the command line's terms: each setting the
    command line gave that it names by its variable ("check that REDIS_URL is right") named by
    the flag instead ("--redis-url"). For every such line: the final error, the line of
    `--wait-for-backend` and the outage warnings of a running command (which named REDIS_URL
    beside an error naming --redis-url, trial 184)."""

    def say(text: str) -> str:
        flags = _flags_named(text, args)
        return _address_flag_terms(text, flags) if flags else text

    return say


def _flags_named(text: str, args: argparse.Namespace) -> dict[str, str]:
    """The address flags the command line gave (`--redis-url`), and any other setting it gave
    whose variable `text` names (`--backend-option NATS_URL=...`): field to flag."""
    _, given = plugin_overrides(args)
    flags = {field: flag for field, flag in plugin_flags().items() if getattr(args, field, None)}
    return flags | _named_in(text, given)


def _named_in(text: str, given: Mapping[str, str]) -> dict[str, str]:
    """The settings of `given` (field to the flag or option that gave it) whose variable
    `text` names."""
    variables = all_env_vars()
    return {field: flag for field, flag in given.items() if variables.get(field, "\0") in text}


def _address_flag_terms(text: str, flags: dict[str, str]) -> str:
    """`text` with the variables of the address settings the command line gave named by their
    flags: "check that REDIS_URL is right" -> "check that --redis-url is right"; "REDIS_URL (or
    --redis-url)" -> the flag that gave it; "or set NATS_URL" -> "or correct" it."""
    variables = all_env_vars()
    for field, flag in flags.items():
        variable = variables.get(field, flag)
        # One pass, and not where a flag already names it: the flag may hold the variable's
        # name (`--backend-option NATS_URL`).
        pattern = (
            rf"(set )?(?<![\w-])(?<!{OPTION} ){re.escape(variable)}(?![\w-])"
            r"(=| \(or --[\w-]+\))?"
        )
        text = re.sub(pattern, functools.partial(_flag_for, flag), text)
    return text


def _flag_for(flag: str, match: re.Match[str]) -> str:
    """What replaces a variable's name matched by `_address_flag_terms`: the flag that gave it
    ("set NATS_URL" -> "correct --backend-option NATS_URL", "set X=1" -> "pass FLAG=1")."""
    if match.group(2) == "=":
        return f"pass {flag}=" if match.group(1) else f"{flag}="
    return f"correct {flag}" if match.group(1) else flag


def require_shared(bus: EventBus, settings: EventBusSettings, command: str) -> None:
    """Stop `bus` and raise a usage error unless it is shared between processes
    (`capabilities.CrossProcess`): an in-process bus cannot be watched from another one.

    Raises:
        UsageError: the bus lives inside each process.
    """
    if is_cross_process(bus):
        return
    bus.stop(timeout=0)
    raise UsageError(
        f"'eventbus {command}' needs a backend shared between processes, but the backend "
        f"is {settings.backend!r}, which lives inside each process. Set LLM_PROXY_EVENT_BUS "
        f"(or pass --backend) to a shared backend; {shared_backend_example(settings.backend)}"
    )


def shown_location(bus: object) -> str | None:
    """Where the bus keeps its events (`Describable.location`), masked: a plugin's location
    should carry no credential (`DescribableContract` checks it), yet `tail` printed one as
    it was (helper-112). None for a bus that does not say."""
    described = capability(bus, Describable)
    return None if described is None else scrub(described.location)


def shared_backend_example(current: str | None = None) -> str:
    """Where to find a shared backend, for the hints that ask for one: the other backends
    installed (which of them are shared is each backend's to say, once built: `eventbus
    plugins` shows their settings), and how to install the Redis backends while they are not.
    One text for every command (`dispatch` named `redis-streams` where it was not installed,
    with no pip hint, helper-112); no backend is told apart by its name (helper-117: a shared
    third-party backend went unmentioned while Redis, not installed, was suggested)."""
    registry = get_registry()
    shared = {
        name: _buildable(registry.plugins.get(reg.plugin))
        for name, reg in registry.backends.items()
        if name != current and _maybe_shared(reg)
    }
    others = sorted(name for name, buildable in shared.items() if buildable)
    # Installed but lacking a package of their extra: named apart, not left out without a word.
    lacking = sorted(name for name, buildable in shared.items() if not buildable)
    unbuilt = (
        f" ({', '.join(lacking)}: installed, but lacking a package, which 'eventbus plugins' names)"
        if lacking
        else ""
    )
    besides = f" besides {current!r}" if current else ""
    sibling = _wanted_sibling()
    pip = f"the backends of {sibling.distribution}: {install_command(sibling)}"
    if not others:
        ready = " ready to use" if lacking else ""
        return f"none{ready} is installed{besides}{unbuilt}; e.g. {pip}"
    found = (
        f"installed{besides}: {', '.join(others)} ('eventbus plugins' shows their settings)"
        f"{unbuilt}"
    )
    return found if is_installed(sibling.distribution) else f"{found}; or e.g. {pip}"


def _wanted_sibling() -> Sibling:
    """The distribution to suggest installing: one whose address variable is set while it is
    missing (`NATS_URL` without eventbus-nats was answered with Redis's pip command), else the
    Redis backends, the Go proxy's."""
    for sibling, _ in wanted_siblings():
        if not is_installed(sibling.distribution):
            return sibling
    return SIBLINGS["redis"]


def _maybe_shared(registration: Registration) -> bool:
    """False where a backend's factory says, by the bus class it returns, that its buses live
    inside the process (the class declares no `cross_process`, or False: the memory bus);
    True where it cannot tell (no annotation, an abstract one, or a property the bus decides),
    since a hint that leaves out a shared backend is worse than one that names an extra (trial
    119). `-> EventBus`, as hooks.md writes a factory, is abstract: a shared third-party
    backend so annotated was left out, and "none is installed" said (trial 208)."""
    try:
        returned = typing.get_type_hints(registration.factory).get("return")
    except Exception:  # an annotation that does not resolve here: cannot tell
        return True
    if not isinstance(returned, type) or _abstract(returned):
        return True
    declared = inspect.getattr_static(returned, "cross_process", False)
    return declared if isinstance(declared, bool) else True


def _buildable(info: PluginInfo | None) -> bool:
    """False for a backend whose plugin lacks a package of its extra (`eventbus plugins` says
    "needs ... to build"): offered as a shared backend, it only failed next (trial 268)."""
    return info is None or not lacking_extras(info.distribution, info.extras)


def _abstract(cls: type) -> bool:
    """A class no bus is only an instance of: `object`, `Any` (a class since Python 3.11:
    trial 209), a protocol (`EventBus`), an abstract base (`BaseEventBus`)."""
    return (
        cls is object
        or cls is typing.Any
        or bool(getattr(cls, "_is_protocol", False))
        or inspect.isabstract(cls)
    )


def stdout_gone() -> bool:
    """True if standard output's reader has left (a closed pipe: `eventbus ... | head`), which
    tells a broken pipe there, a normal end, from one of a backend's or a sink's sockets. (A
    pipe's write end polls as an error once its reader is gone; flushing again cannot tell,
    since a failed write may have dropped what was buffered.)"""
    try:
        fd = sys.stdout.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        ready = poller.poll(0)
    except (AttributeError, OSError, ValueError):
        return False
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in ready)


def with_backend_errors(
    func: Callable[[argparse.Namespace], int],
) -> Callable[[argparse.Namespace], int]:
    """Wrap a command so that the backend failing after the start-up check with an `OSError`
    is reported as `BackendUnavailableError` (one line, exit code 1), any password masked.

    Capability methods raise `BackendUnavailableError` themselves (see
    `eventbus_core.capabilities`); this catches what a plugin let through."""

    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except BackendUnavailableError:
            raise  # already says where and why (it is an OSError too)
        except OSError as exc:
            if isinstance(exc, BrokenPipeError) and stdout_gone():
                raise  # stdout's reader left (`eventbus replay | head`): not the backend's fault
            raise BackendUnavailableError(
                f"the backend failed: {redact_url(f'{type(exc).__name__}: {exc}')} (is it "
                "running, and are its settings right?)"
            ) from None

    run.__doc__ = func.__doc__
    run.__name__ = func.__name__
    return run


def in_command_line_terms(exc: SettingsError, args: argparse.Namespace) -> SettingsError:
    """`exc` with each variable it names whose value the command line gave named by the flag
    or `--backend-option` that gave it; `exc` itself when none did. For the errors found after
    the start (a consumer group's name the server refuses, a key of another type), named as
    typed, as the start-up's errors name them (trial 127)."""
    if isinstance(exc, UsageError):
        return exc  # the command line's own: named as typed already
    try:
        _, given = plugin_overrides(args)
    except UsageError:
        return exc
    named = _named_in(str(exc), given)
    if not named:
        return exc
    return SettingsError(_address_flag_terms(str(exc), named))


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    if n < 1024:
        return f"{n}B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f}KiB"
    return f"{n / (1024 * 1024):.1f}MiB"


def _duration(ns: int) -> str:
    if ns < 1_000_000:
        return f"{ns / 1000:.0f}µs"
    if ns < 10_000_000_000:
        return f"{ns / 1_000_000:.1f}ms"
    return f"{ns / 1_000_000_000:.1f}s"


def format_event(event: Event, stored: Event | None = None) -> str:
    """One readable line per event: LogID, request id, method, path, status, duration, sizes.

    `stored`: the event as the backend holds it, when `event` is its redacted copy: the sizes
    are the bodies' own, not those of their masks (a binary body's marker is 60 bytes)."""
    log_id = f"#{event.log_id}" if event.log_id else "#-"
    sized = event if stored is None else stored
    request_body = len(sized.request_body) if sized.request_body is not None else None
    response_body = len(sized.response_body) if sized.response_body is not None else None
    # A client's text (Go percent-decodes the path): ESC, CR or LF printed raw would clear the
    # screen, retitle the terminal or forge a line (trial 259), as the console sink knew.
    method, path = escape_control(event.method), escape_control(event.path)
    request_id = escape_control(event.request_id) or "-"
    return (
        f"{log_id:<8} {event.status:>3} {method:<6} {path}  "
        f"{_duration(event.duration_ns)}  req={_size(request_body)} "
        f"resp={_size(response_body)}  id={request_id}"
    )
