"""eventbus-redis: Redis backends of eventbus (backend names `redis` and `redis-streams`).

`RedisEventBus` keeps the Go llm-proxy's LIST log layout, written in batches with LogIDs stamped
atomically with the append; `RedisStreamsEventBus` uses a stream with consumer groups and
at-least-once delivery.
"""

from eventbus_redis._consumer import StreamConsumer
from eventbus_redis._log import RedisEventBus
from eventbus_redis._redis_subscription import Gap, RedisSubscription
from eventbus_redis._settings import REDIS_ENV_VARS, RedisSettings
from eventbus_redis._stream_entry import (
    STREAM_LOG_ID_BASE,
    entry_id_from_log_id,
    event_from_stream_entry,
    log_id_from_entry_id,
)
from eventbus_redis._streams import RedisStreamsEventBus

__all__ = [
    "REDIS_ENV_VARS",
    "STREAM_LOG_ID_BASE",
    "Gap",
    "RedisEventBus",
    "RedisSettings",
    "RedisStreamsEventBus",
    "RedisSubscription",
    "StreamConsumer",
    "entry_id_from_log_id",
    "event_from_stream_entry",
    "log_id_from_entry_id",
]
