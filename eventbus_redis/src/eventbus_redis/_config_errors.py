"""Redis replies that mean a setting is wrong, not that Redis is down: turned into `SettingsError`
naming the setting (exit code 2 in the CLI), instead of being retried as outages or reported
with a hint to check whether Redis runs.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from typing import Any

import redis

from eventbus_core import SettingsError
from eventbus_redis._client import safe_error

__all__ = [
    "counter_error",
    "counter_value",
    "credentials_error",
    "database_error",
    "is_not_a_counter",
    "is_refused_outright",
    "is_wrong_type",
    "permission_error",
    "reporting_wrong_type",
    "wrong_type_error",
    "wrong_type_hint",
]


def counter_value(raw: Any, key: str, setting: str) -> int:
    """The LogID counter `key` (`KEY:seq`) as read, 0 when missing.

    Raises:
        SettingsError: it holds something other than an integer: the key is not this
            backend's (`eventbus stats` said "internal error: ValueError", helper-111).
    """
    try:
        return int(raw or 0)
    except ValueError:
        raise counter_error(key, setting, raw) from None


def counter_error(key: str, setting: str, raw: Any = None) -> SettingsError:
    """The `SettingsError` of a LogID counter `key` that holds `raw` (None: not read), not an
    integer."""
    held = "is not an integer" if raw is None else f"holds {_text(raw)[:40]!r}, not an integer"
    return SettingsError(
        f"the LogID counter {key} {held}: {setting} (set, or its default) names a key that "
        f"something else uses; set {setting} to a key of its own"
    )


def is_not_a_counter(exc: BaseException) -> bool:
    """True for the append script's INCRBY refusing a counter that is not an integer (the
    script's first write: nothing of the batch was applied)."""
    return isinstance(exc, redis.ResponseError) and "not an integer" in str(exc)


def is_refused_outright(exc: BaseException) -> bool:
    """True for an ACL refusal of the command the writer sent (EVALSHA, EVAL, MULTI) or of its
    keys: Redis checks those before running anything, so none of the batch was applied (it was
    counted in doubt at stop, trial 204). A refusal from inside the script is another error
    ("The user executing the script can't run...", naming the script): the script may have
    applied part of the batch then, so it stays in doubt."""
    # Matched on the script's own mark, not on "script": Redis 7.2 names the user in its
    # refusal, and a user may be called "noscript" (review 210).
    return isinstance(exc, redis.exceptions.NoPermissionError) and "@user_script" not in str(exc)


def permission_error(exc: BaseException, keys: Sequence[str], setting: str) -> str | None:
    """What to do when the ACL user may not use the bus's keys (Redis names none of them), or
    None for another error."""
    # "one of the keys used as arguments" (Redis 6, 7.0), "a key" (7.2 and later)
    if not (is_refused_outright(exc) and "key" in str(exc).lower()):
        return None
    named = " and ".join(keys)
    grant = " ".join(f"~{key}" for key in keys)
    return (
        f"{safe_error(exc)}: the ACL user may not use {named}; grant it those keys "
        f"(ACL SETUSER <user> {grant}) or set {setting} to a key it may use"
    )


def is_wrong_type(exc: BaseException) -> bool:
    """True for Redis's WRONGTYPE reply: a key holds another type of value than the command's."""
    return isinstance(exc, redis.ResponseError) and "WRONGTYPE" in str(exc)


def wrong_type_hint(key: str, setting: str) -> str:
    """What to tell the user about a WRONGTYPE reply on the bus's keys.

    Not "delete that key": it is often the Go proxy's log, read as the other kind (helper-108).
    """
    return (
        f"the Redis key {key!r} (or its counter {key}:seq) holds another type of value than "
        f"this backend stores there: {setting} (set, or its default) names a key that something "
        "else uses. If it is "
        "the Go llm-proxy's or another eventbus's log, choose the backend that matches it "
        "(LLM_PROXY_EVENT_BUS or --backend: 'redis' for a list, 'redis-streams' for a "
        f"stream); else set {setting} to a key of its own"
    )


@contextlib.contextmanager
def reporting_wrong_type(client: Any, keys: Sequence[str], setting: str) -> Iterator[None]:
    """Turn a WRONGTYPE reply inside the block into a `SettingsError` naming `setting` and the
    types `keys` hold (one TYPE per key, only on that error path); and an ACL refusal into one
    naming the keys and `setting` (`eventbus tail` and `dispatch` said "internal error" for a
    subscription refused so: trial 211)."""
    try:
        yield
    except redis.ResponseError as exc:
        if isinstance(exc, redis.exceptions.NoPermissionError):
            raise SettingsError(
                permission_error(exc, keys, setting)
                or f"{safe_error(exc)}: the ACL user may not run a command the backend needs; "
                "grant it what docs/backends/redis.md lists ('A Redis user restricted by ACLs')"
            ) from None
        if is_not_a_counter(exc) and len(keys) > 1:  # keys[1] is the counter
            raw = None
            with contextlib.suppress(redis.RedisError, OSError):
                raw = client.get(keys[1])
            raise counter_error(keys[1], setting, raw) from None
        if not is_wrong_type(exc):
            raise
        raise wrong_type_error(client, keys, setting) from None


def wrong_type_error(
    client: Any, keys: Sequence[str], setting: str, *, running: str | None = None
) -> SettingsError:
    """The `SettingsError` of a WRONGTYPE reply on `keys` (the first is the one `setting`
    names), saying what each holds (one TYPE per key, only on this error path). `running`:
    the backend already selected, where a reader of the other kind of log met this error."""
    held = ""
    lead = ""
    with contextlib.suppress(redis.RedisError, OSError):
        types = [(k, client.type(k)) for k in keys]
        held = ", ".join(f"{k!r} is a {_text(t)}" for k, t in types if _text(t) != "none")
        first = _text(types[0][1])
        matching = {"list": "redis", "stream": "redis-streams"}.get(first)
        keeps = {"EVENTBUS_REDIS_KEY": "list", "EVENTBUS_REDIS_STREAM": "stream"}.get(setting)
        if matching and first != keeps and matching == running:
            # The other log of the backend already selected (`replay --source stream` on the
            # list log: both keys are llm-proxy-events by default), so not "select it".
            lead = (
                f"{keys[0]!r} is a {first}, the log of the {matching!r} backend selected: to "
                f"read a {keeps} beside it, set {setting} to that {keeps}'s key. In full: "
            )
        elif matching and first != keeps:
            # Said plainly first: the reader had to combine two parts (trial 229). Not when the
            # key is of this backend's kind (its counter is then what holds another type).
            lead = (
                f"{keys[0]!r} is a {first}, which the {matching!r} backend keeps: if it is the "
                f"Go llm-proxy's or another eventbus's log, set LLM_PROXY_EVENT_BUS={matching} "
                f"(or --backend {matching}). In full: "
            )
    return SettingsError(f"{lead}{wrong_type_hint(keys[0], setting)}{f' ({held})' if held else ''}")


def database_error(exc: BaseException, db: Any, source: str | None) -> SettingsError | None:
    """A `SettingsError` if `exc` is Redis refusing to SELECT database `db` (it has fewer)."""
    text = str(exc)
    if not (isinstance(exc, redis.ResponseError) and ("DB index" in text or "invalid DB" in text)):
        return None
    if source == "REDIS_ADDR/REDIS_DB":
        where = f"REDIS_DB={db}"
    elif source:
        where = f"the database in {source} (or --redis-url), {db},"
    else:
        where = f"database {db} (the client's)"
    return SettingsError(
        f"{where} is not a database this Redis server has (its 'databases' setting, 16 by "
        "default: 0 to 15); choose one it has"
    )


def credentials_error(exc: BaseException, where: str, source: str | None) -> SettingsError | None:
    """A `SettingsError` if `exc` is Redis refusing the connection's credentials (a wrong user or
    password, or none where the server wants one): Redis answered, so retrying cannot help.
    `where` is the address with its password masked."""
    if not isinstance(exc, redis.AuthenticationError | redis.AuthenticationWrongNumberOfArgsError):
        return None
    # The form in words: written as a URL, the log's scrubbing masked its placeholder
    # ("redis://user:***@host:port/db", helper-111).
    form = "redis:// then user:password@ before the host (redis://host:port/db otherwise)"
    if source == "REDIS_ADDR/REDIS_DB":
        fix = f"REDIS_ADDR cannot carry a password, so set REDIS_URL instead, as {form}"
    else:
        setting = f"{source} (or --redis-url)" if source else "the client's URL"
        fix = f"set the user and password in {setting}, as {form}"
    if any(name.upper() == "REDIS_PASSWORD" for name in os.environ):
        # The Go proxy's Helm chart sets it, and a user may think it read (trial 123).
        fix += " (REDIS_PASSWORD is not read, by eventbus or by the Go llm-proxy)"
    return SettingsError(f"Redis at {where} refused the credentials ({safe_error(exc)}); {fix}")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
