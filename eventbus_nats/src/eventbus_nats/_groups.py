"""What a consumer group does on the server: its durable consumer, and its dead letters.

A group is a durable pull consumer of the stream, named after the group, created if missing:
delivering from the oldest message the stream holds, explicit acknowledgements, AckWait, and
MaxDeliver unlimited (members count deliveries and dead-letter entries themselves).

The dead-letter stream `<STREAM>_DEAD` (subject `dead.<SUBJECT>`, created when first needed,
with the event stream's limits) holds each given-up entry's original bytes; its headers say why
and where it came from. The entry is then terminated (`+TERM`) in its group, so it is never
delivered again. A `Nats-Msg-Id` per stored entry (stream, sequence, the time the entry was
stored) and group keeps a retried dead-lettering from adding the same entry twice.
"""

from __future__ import annotations

from typing import Final

import nats.js.errors
from nats.js import api

from eventbus_core import LineBudget, SettingsError, get_logger
from eventbus_nats._layout import subject_matches
from eventbus_nats._link import Link

__all__ = ["DeliveryCounter", "UnfitGroup", "dead_letter", "open_group"]

log = get_logger("eventbus.nats")

_REASON_MAX: Final = 500
_MAX_TRACKED: Final = 100_000  # entries whose deliveries a member counts itself
_DEAD_LINES: Final = LineBudget()  # a poison batch or a crashing dispatcher: examples, not all


class DeliveryCounter:
    """How often a member received each entry, to complete the server's count.

    nats-server 2.9 does not count a delivery it makes to a pull request that is just
    expiring, although the member receives it: `count()` takes the larger of the two. The
    newest `_MAX_TRACKED` entries are remembered; `forget()` an entry once it is settled.
    """

    def __init__(self) -> None:
        self._received: dict[int, int] = {}

    def count(self, seq: int, server_count: int) -> int:
        """Record one more receipt of entry `seq`; return its deliveries so far."""
        received = self._received.pop(seq, 0) + 1
        self._received[seq] = received  # re-inserted: the dict stays oldest first
        if len(self._received) > _MAX_TRACKED:
            del self._received[next(iter(self._received))]
        return max(server_count, received)

    def forget(self, seq: int) -> None:
        """Stop counting entry `seq` (acknowledged, dead-lettered)."""
        self._received.pop(seq, None)

    def clear(self) -> None:
        """Forget every entry (the group was re-created)."""
        self._received.clear()


DEFAULT_MAX_ACK_PENDING: Final = 10_000
"""A consumer group's MaxAckPending where none is given: `consumer()`'s default, and the demo's
own group (one default, so a group made either way is the same)."""


class UnfitGroup(SettingsError):
    """A durable consumer of the group's name exists, set up so that it cannot serve as one:
    waiting cannot help (`eventbus dispatch` exits 2)."""


def _unfit(config: api.ConsumerConfig, subject: str, max_deliveries: int | None) -> str | None:
    """Why an existing consumer cannot serve as a group reading `subject`, or None.

    Found as it is, such a consumer was used (trial 246): a push consumer gave no member
    anything, for ever, with `/readyz` saying "reading"; one that needs no acknowledgements
    lost the batch of a dispatcher that died.
    """
    if config.deliver_subject:
        return (
            f"it is a push consumer (deliver subject {config.deliver_subject}), and eventbus's "
            "members pull"
        )
    if config.ack_policy not in (None, api.AckPolicy.EXPLICIT):
        policy = getattr(config.ack_policy, "value", config.ack_policy)
        return (
            f"its ack policy is {policy!r}, not 'explicit': the batch of a member that dies "
            "would be lost instead of delivered again"
        )
    filters = [config.filter_subject] if config.filter_subject else []
    filters += list(getattr(config, "filter_subjects", None) or ())  # NATS 2.10's several
    if filters and not any(subject_matches(pattern, subject) for pattern in filters):
        return f"it takes subject {', '.join(filters)}, not the bus's {subject}"
    limit = config.max_deliver
    if limit is not None and max_deliveries is not None and 0 < limit <= max_deliveries:
        return (
            f"its MaxDeliver is {limit}: the server stops delivering an entry after {limit} "
            f"deliveries, before eventbus dead-letters it after {max_deliveries} "
            "(max_deliveries), and the entry would stay pending, read by no one"
        )
    return None


async def open_group(
    link: Link,
    group: str,
    *,
    ack_wait: float,
    max_ack_pending: int,
    max_deliveries: int | None = None,
    from_end: bool = False,
) -> tuple[api.ConsumerInfo, bool]:
    """The durable consumer of `group`, created if missing (reading the stream from its start,
    or from what comes next if `from_end`); and whether it was created. `max_deliveries`: the
    members' own limit, which an existing group's MaxDeliver must not undercut.

    Raises:
        UnfitGroup: a consumer of that name exists but cannot serve as the group.
    """
    js = await link.jetstream()
    await link.ensure_stream()
    stream = link.layout.stream
    try:
        info = await js.consumer_info(stream, group)
    except nats.js.errors.NotFoundError:
        pass
    else:
        why = _unfit(info.config, link.layout.subject, max_deliveries)
        if why is not None:
            raise UnfitGroup(
                f"consumer group {group} of stream {stream} exists but cannot serve as one: "
                f"{why}; delete it (nats consumer rm {stream} {group}) for eventbus to make "
                "it anew, or choose another group (EVENTBUS_NATS_GROUP)"
            )
        return info, False
    config = api.ConsumerConfig(
        durable_name=group,
        deliver_policy=api.DeliverPolicy.NEW if from_end else api.DeliverPolicy.ALL,
        ack_policy=api.AckPolicy.EXPLICIT,
        ack_wait=ack_wait,
        max_deliver=-1,
        max_ack_pending=max_ack_pending,
        filter_subject=link.layout.subject,
    )
    info = await js.add_consumer(stream, config)
    log.info("eventbus nats: created consumer group %s on %s", group, stream)
    return info, True


async def dead_letter(
    link: Link,
    *,
    token: str,
    data: bytes,
    seq: int,
    deliveries: int,
    group: str,
    consumer: str,
    reason: str,
) -> None:
    """Publish the entry to the dead-letter stream, then terminate it (reply subject `token`).

    Raises:
        Exception: the publish (or the termination) failed; the entry stays pending, is
            redelivered after AckWait and dead-lettered then.
    """
    stream = link.layout.stream
    await link.ensure_stream(dead=True)
    js = await link.jetstream()
    headers = {
        "Nats-Msg-Id": f"dead-{stream}-{seq}-{_stored_at(token)}-{group}",
        "Eventbus-Reason": _header_text(reason),
        "Eventbus-Stream": stream,
        "Eventbus-Sequence": str(seq),
        "Eventbus-Group": group,
        "Eventbus-Consumer": _header_text(consumer),
        "Eventbus-Deliveries": str(deliveries),
    }
    await js.publish(link.layout.dead_subject, data, headers=headers)
    nc = await link.client()
    await nc.publish(token, b"+TERM")
    _DEAD_LINES.warning(
        log,
        "the consumer's dead_lettered (eventbus_consumer_dead_lettered_total)",
        "eventbus nats: dead-lettered LogID %d of %s (group %s): %s",
        seq,
        stream,
        group,
        reason,
    )


def _stored_at(token: str) -> str:
    """When the delivered entry was stored, in ns, from its reply subject (`$JS.ACK.<stream>.
    <consumer>.<delivered>.<stream seq>.<consumer seq>.<stored ns>.<pending>`, or the longer
    form with a domain and an account hash before the stream); "" if it is neither.

    A stream deleted and made again numbers its entries from 1 anew: with the sequence alone in
    the id, the dead letter of its entry 1 was dropped as a duplicate of the old stream's within
    the dead-letter stream's window, and lost (trial 246). Every delivery of one entry carries
    the same time, so a retried dead-lettering still finds its first.
    """
    parts = token.split(".")
    if len(parts) == 9:
        return parts[7]
    if len(parts) >= 11:
        return parts[9]
    return ""


def _header_text(text: str) -> str:
    """`text` fit for a NATS header value: one line, bounded."""
    return " ".join(text.split())[:_REASON_MAX]
