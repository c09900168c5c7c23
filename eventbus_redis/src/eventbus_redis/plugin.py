"""Registers the Redis backends `redis` and `redis-streams` (entry points of group `eventbus`).

Registration does no I/O; a bus connects to Redis only when it first writes or reads.
"""

from __future__ import annotations

from eventbus_core import EventBusSettings, RegisterFn, hookimpl
from eventbus_redis._log import RedisEventBus
from eventbus_redis._settings import RedisSettings
from eventbus_redis._streams import RedisStreamsEventBus

__all__ = ["build_log_bus", "build_streams_bus", "eventbus_register_backends"]


def build_log_bus(settings: EventBusSettings) -> RedisEventBus:
    """Build backend `redis` (the LIST log) from the Redis and `EVENTBUS_REDIS_*` settings."""
    return RedisEventBus.from_settings(settings)


def build_streams_bus(settings: EventBusSettings) -> RedisStreamsEventBus:
    """Build backend `redis-streams` from the Redis and `EVENTBUS_REDIS_*` settings."""
    return RedisStreamsEventBus.from_settings(settings)


@hookimpl
def eventbus_register_backends(register: RegisterFn) -> None:
    """Register backends `redis` (LIST log) and `redis-streams` (consumer groups), with their
    settings (`REDIS_URL`, `EVENTBUS_REDIS_*`: `RedisSettings`)."""
    register("redis", build_log_bus, settings=RedisSettings)
    register("redis-streams", build_streams_bus, settings=RedisSettings)
