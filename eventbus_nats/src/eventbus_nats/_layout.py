"""`StreamLayout`: the stream, subjects and limits of one bus, and the configs built from them.

One stream (default `LLM_PROXY_EVENTS`) captures one literal subject (default
`llm-proxy.events`); each message body is an event's Go wire JSON and its stream sequence is
the LogID. Dead letters go to a stream of their own, `<STREAM>_DEAD` on subject `dead.<SUBJECT>`,
which no `<SUBJECT>.>` hierarchy added later can overlap.
"""

from __future__ import annotations

from dataclasses import dataclass

from nats.js import api

from eventbus_core import check_count
from eventbus_nats._settings import (
    DEAD_SUFFIX,
    INT64,
    MAX_STREAM_NAME,
    NatsSettings,
    check_max_bytes,
    check_name,
    check_nats_duration,
    check_subject,
)

__all__ = ["StreamLayout", "subject_matches"]


def subject_matches(pattern: str, subject: str) -> bool:
    """Whether a stream subject `pattern` (`*`: one token, a final `>`: one or more) takes the
    literal `subject`."""
    wanted = subject.split(".")
    tokens = pattern.split(".")
    for i, token in enumerate(tokens):
        if token == ">" and i == len(tokens) - 1:
            return len(wanted) > i
        if i >= len(wanted) or (token != "*" and token != wanted[i]):
            return False
    return len(tokens) == len(wanted)


def _copies_others(config: api.StreamConfig) -> bool:
    """Whether a stream is a mirror, or sources other streams."""
    return config.mirror is not None or bool(config.sources)


@dataclass(frozen=True)
class StreamLayout:
    """Where a bus's events live, and the limits of the stream created when it is missing.

    Attributes:
        stream: Stream name.
        subject: The literal subject events are published on.
        max_msgs: Newest messages kept (0: no limit).
        max_bytes: Bytes kept at most (0: no limit).
        max_age: Seconds a message is kept (0: no limit).
        replicas: Copies of the stream in a cluster.
        duplicate_window: Seconds message ids are remembered to drop retried duplicates.
    """

    stream: str = "LLM_PROXY_EVENTS"
    subject: str = "llm-proxy.events"
    max_msgs: int = 10_000
    max_bytes: int = 0
    max_age: float = 86_400.0
    replicas: int = 1
    duplicate_window: float = 120.0

    def __post_init__(self) -> None:
        check_name(self.stream, "stream", longest=MAX_STREAM_NAME)
        check_subject(self.subject)
        check_count("max_msgs", self.max_msgs, 0, "0: no limit", maximum=INT64)
        check_max_bytes(
            check_count("max_bytes", self.max_bytes, 0, "0: no limit", maximum=INT64), "max_bytes"
        )
        check_nats_duration(self.max_age, "max_age")
        if self.max_age < 0:
            raise ValueError(f"max_age must be >= 0 (0: no limit), got {self.max_age!r}")
        # An int: 2.5 or True passed a range check, and the server then refused the stream's
        # JSON, every event lost (trial 183).
        check_count("replicas", self.replicas, 1, "JetStream's limit", maximum=5)
        check_nats_duration(self.duplicate_window, "duplicate_window")
        if self.duplicate_window <= 0:
            raise ValueError(f"duplicate_window must be > 0 seconds, got {self.duplicate_window!r}")

    @classmethod
    def from_settings(cls, settings: NatsSettings) -> StreamLayout:
        """The layout named by the `EVENTBUS_NATS_*` settings."""
        return cls(
            stream=settings.nats_stream,
            subject=settings.nats_subject,
            max_msgs=settings.nats_max_msgs,
            max_bytes=settings.nats_max_bytes,
            max_age=settings.nats_max_age,
            replicas=settings.nats_replicas,
            duplicate_window=settings.nats_duplicate_window,
        )

    @property
    def dead_stream(self) -> str:
        """Name of the dead-letter stream."""
        return f"{self.stream}{DEAD_SUFFIX}"

    @property
    def dead_subject(self) -> str:
        """Subject of dead letters."""
        return f"dead.{self.subject}"

    def mismatch(self, info: api.StreamInfo, *, dead: bool = False) -> str | None:
        """Why the existing stream `info` cannot be this layout's event (or dead-letter) stream,
        or None if it can: it must keep messages by limits, and take the subject the bus
        publishes on. (A work-queue or interest stream deletes a message once consumers have
        acknowledged it, or at once when none is interested: `tail`, `replay` and a second
        consumer group would find nothing, and the server refuses their consumers. A stream not
        taking the subject leaves events to whichever stream takes it, or to none, and LogIDs
        are another stream's.)"""
        retention = info.config.retention  # nats-py leaves it a str: compare as one
        if retention is not None and retention != api.RetentionPolicy.LIMITS.value:
            return (
                f"NATS stream {info.config.name} exists with retention {str(retention)!r}, "
                "which deletes messages once they are consumed; eventbus reads its streams "
                "more than once (consumer groups, tail, replay) and needs retention 'limits': "
                "set EVENTBUS_NATS_STREAM to a stream of this bus's own (created when missing), "
                f"or recreate {info.config.name} with retention 'limits'"
            )
        subject = self.dead_subject if dead else self.subject
        subjects = list(info.config.subjects or [])
        if any(subject_matches(pattern, subject) for pattern in subjects):
            return None
        if _copies_others(info.config):
            # A mirror (or a stream sourcing others) takes no subject of its own, yet holds the
            # messages under theirs: reading it is the operator's design.
            return None
        return (
            f"NATS stream {info.config.name} exists but does not take subject {subject!r} (its "
            f"subjects: {', '.join(subjects) or 'none'}): set EVENTBUS_NATS_SUBJECT to the "
            "subject it takes, or EVENTBUS_NATS_STREAM to a stream of this bus's own (created "
            "when missing)"
        )

    def alone_in(self, info: api.StreamInfo) -> bool:
        """Whether the stream `info` holds this layout's subject and nothing else: then a jump
        in its sequences is messages removed (limits, purge), not another subject's."""
        config = info.config
        return list(config.subjects or []) == [self.subject] and not _copies_others(config)

    def stream_config(self) -> api.StreamConfig:
        """The configuration the event stream is created with."""
        return self._config(self.stream, self.subject, "eventbus events (Go wire JSON)")

    def dead_config(self) -> api.StreamConfig:
        """The configuration the dead-letter stream is created with (the same limits)."""
        return self._config(self.dead_stream, self.dead_subject, "eventbus dead letters")

    def _config(self, name: str, subject: str, description: str) -> api.StreamConfig:
        window = self.duplicate_window
        if self.max_age:
            window = min(window, self.max_age)  # the server refuses a window beyond max_age
        return api.StreamConfig(
            name=name,
            description=description,
            subjects=[subject],
            retention=api.RetentionPolicy.LIMITS,
            storage=api.StorageType.FILE,
            discard=api.DiscardPolicy.OLD,
            max_msgs=self.max_msgs or -1,
            max_bytes=self.max_bytes or -1,
            max_age=self.max_age,
            num_replicas=self.replicas,
            duplicate_window=window,
        )
