"""Shared plumbing of the operator commands (`tail`, `publish`, `stats`, `replay`).

Exit codes, the same for every command:
    0  done;
    1  the command ran but something was lost or failed on the way (a rejected input line,
       a dropped event, Redis unreachable);
    2  usage or configuration error (the message says what to change);
    130  interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from eventbus_core._event import Event
from eventbus_core._secrets import redact_url
from eventbus_core._settings import EventBusSettings

if TYPE_CHECKING:
    import redis

__all__ = [
    "EXIT_CODES_HELP",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "add_backend_options",
    "format_event",
    "redis_client",
    "redis_errors",
    "refuse_memory",
    "settings_from_args",
    "with_redis_errors",
]

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2

EXIT_CODES_HELP: Final = (
    "exit codes: 0 done; 1 something was lost or failed (rejected input, dropped events, "
    "Redis unreachable); 2 usage or configuration error; 130 interrupted"
)


def add_backend_options(parser: argparse.ArgumentParser) -> None:
    """Add `--backend` and `--redis-url`, which override the environment for one run."""
    group = parser.add_argument_group("backend (default: from the environment)")
    group.add_argument(
        "--backend",
        metavar="NAME",
        help="backend name, overriding LLM_PROXY_EVENT_BUS (redis, redis-streams, ...)",
    )
    group.add_argument(
        "--redis-url", metavar="URL", help="Redis connection URL, overriding REDIS_URL"
    )


def settings_from_args(args: argparse.Namespace) -> EventBusSettings:
    """Settings from the environment, with the command-line overrides applied."""
    overrides: dict[str, Any] = {}
    if getattr(args, "backend", None):
        overrides["backend"] = args.backend
    if getattr(args, "redis_url", None):
        overrides["redis_url"] = args.redis_url
    return EventBusSettings(**overrides)


def refuse_memory(settings: EventBusSettings, command: str) -> None:
    """Raise a usage error if the backend is the in-process memory bus.

    Raises:
        ValueError: the memory backend cannot be watched from another process.
    """
    if settings.backend == "memory":
        raise ValueError(
            f"'eventbus {command}' needs a backend shared between processes, but the backend "
            "is 'memory', which lives inside each process. Set LLM_PROXY_EVENT_BUS=redis (or "
            "redis-streams) and REDIS_URL=redis://localhost:6379/0, or pass --backend redis "
            "--redis-url redis://localhost:6379/0"
        )


def redis_client(settings: EventBusSettings) -> redis.Redis:
    """A redis-py client for `settings.redis_url`.

    Raises:
        ValueError: `REDIS_URL` is not set.
        ImportError: redis-py is not installed (with the pip command that brings it).
    """
    if not settings.redis_url:
        raise ValueError(
            f"backend {settings.backend!r} needs REDIS_URL (e.g. redis://localhost:6379/0); "
            "set it or pass --redis-url"
        )
    try:
        import redis  # optional: only the Redis backends need it
    except ImportError as exc:
        raise ImportError(
            "the Redis backends need redis-py: pip install 'eventbus-core[redis]'"
        ) from exc
    return redis.Redis.from_url(str(settings.redis_url), socket_connect_timeout=5)


def redis_errors() -> tuple[type[BaseException], ...]:
    """redis-py's base error (and OSError), or just OSError without redis-py."""
    try:
        import redis  # optional dependency
    except ImportError:
        return (OSError,)
    return (redis.RedisError, OSError)


def with_redis_errors(
    func: Callable[[argparse.Namespace], int],
) -> Callable[[argparse.Namespace], int]:
    """Wrap a command so that an unreachable Redis is one clear line and exit code 1."""

    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except redis_errors() as exc:
            print(
                f"eventbus: error: Redis failed: {redact_url(str(exc))} "
                "(is it running, and is REDIS_URL right?)",
                file=sys.stderr,
            )
            return EXIT_FAILED

    run.__doc__ = func.__doc__
    run.__name__ = func.__name__
    return run


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


def format_event(event: Event) -> str:
    """One readable line per event: LogID, request id, method, path, status, duration, sizes."""
    log_id = f"#{event.log_id}" if event.log_id else "#-"
    request_body = len(event.request_body) if event.request_body is not None else None
    response_body = len(event.response_body) if event.response_body is not None else None
    return (
        f"{log_id:<8} {event.status:>3} {event.method:<6} {event.path}  "
        f"{_duration(event.duration_ns)}  req={_size(request_body)} "
        f"resp={_size(response_body)}  id={event.request_id or '-'}"
    )
