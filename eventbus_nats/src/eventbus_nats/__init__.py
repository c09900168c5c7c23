"""eventbus-nats: the NATS JetStream backend of eventbus (backend name `nats`).

`NatsEventBus` publishes in acknowledged batches to a stream (replicated in a cluster if asked),
stamps each event's LogID from its stream sequence, fans out through ephemeral ordered
consumers and offers consumer groups (durable pull consumers) with at-least-once delivery and
dead letters. `NatsSettings` reads `NATS_URL` and the `EVENTBUS_NATS_*` variables.
"""

from eventbus_nats._bus import NatsEventBus
from eventbus_nats._consumer import GroupConsumer
from eventbus_nats._fanout import NatsSubscription
from eventbus_nats._link import LinkClosed
from eventbus_nats._settings import NATS_ENV_VARS, NatsSettings

__all__ = [
    "NATS_ENV_VARS",
    "GroupConsumer",
    "LinkClosed",
    "NatsEventBus",
    "NatsSettings",
    "NatsSubscription",
]
