"""`NatsSettings`: the `nats` backend's own settings, read from the environment.

`NATS_URL` and the credential and TLS variables (`NATS_CREDS`, `NATS_USER`, `NATS_PASSWORD`,
`NATS_TOKEN`, `NATS_CA`, `NATS_CERT`, `NATS_KEY`) have the names the `nats` command line tool
reads, so one environment serves both; the stream layout and limits are `EVENTBUS_NATS_*`.
Every field has one variable (`NATS_ENV_VARS`, documented in docs/backends/nats.md); an invalid
value raises `eventbus_core.SettingsError` naming it. Passwords and tokens are `SecretStr` and
the URL a `RedactedURL`, so printing the settings shows no credential.
"""

from __future__ import annotations

import math
import re
import urllib.parse
from typing import Any, ClassVar, Final

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from eventbus_core import ReadsVariablesOnly, RedactedURL, SettingsError, redact_url, server_list

__all__ = [
    "DEAD_SUFFIX",
    "MAX_STREAM_NAME",
    "NATS_ENV_VARS",
    "NatsSettings",
    "check_name",
    "check_servers",
    "check_subject",
    "shown_server",
]

_URL_SCHEMES: Final = ("nats://", "tls://", "ws://", "wss://")
_BAD_NAME = re.compile(r"[\s.*>/\\]")
_BAD_TOKEN = re.compile(r"[\s*>]")
_MAX_NAME: Final = 255  # the server's limit on stream and consumer names
DEAD_SUFFIX: Final = "_DEAD"  # the dead-letter stream is the event stream's name with this
MAX_STREAM_NAME: Final = _MAX_NAME - len(DEAD_SUFFIX)
# JetStream's limits are int64 (durations in nanoseconds): larger values pass here and fail on
# the server, at run time, with an error that names no variable.
_SMALLEST_STREAM: Final = 65_536  # EVENTBUS_NATS_MAX_BYTES below this (0 aside) is refused
_SHORTEST_DURATION: Final = 0.001  # seconds, as the Redis backend's TTL


def check_nats_duration(value: float, label: str = "") -> float:
    """`value` seconds, refused (`ValueError`, prefixed with `label`) when it is above 0 yet too
    short a duration for NATS to keep, or not a finite number of seconds NATS can keep (the
    constructor took nan and inf, and its writer failed for ever naming nothing, trial 167)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{label}{': ' if label else ''}give a number of seconds, not {value!r}")
    if not math.isfinite(value) or value > _SECONDS64:
        raise ValueError(
            f"{label}{': ' if label else ''}{value!r} s: give a finite number of seconds up to "
            f"{_SECONDS64} (JetStream keeps durations as 64-bit nanoseconds)"
        )
    # NATS keeps durations in whole nanoseconds: a sliver of a second became 0, which the
    # server reads as no limit (max age) or its own default (ack wait: 30 s).
    if 0 < value < _SHORTEST_DURATION:
        raise ValueError(
            f"{label}{': ' if label else ''}{value!r} s is too short to mean anything to NATS "
            f"(it keeps whole nanoseconds, and 0 means no limit or the server's default): give "
            f"at least {_SHORTEST_DURATION} s"
        )
    return value


_INT64: Final = 2**63 - 1
_SECONDS64: Final = _INT64 // 1_000_000_000


INT64: Final = _INT64
"""The largest count or size JetStream stores (a signed 64-bit number)."""


def check_max_bytes(value: int, label: str = "") -> int:
    """A stream's byte limit: 0 (none) or enough for events."""
    # A stream smaller than one event keeps nothing: the server acknowledges each event and
    # removes it at once, and a consumer group reads nothing, counting nothing.
    if 0 < value < _SMALLEST_STREAM:
        raise ValueError(
            f"{label}{': ' if label else ''}{value} bytes cannot hold the events (one takes "
            f"hundreds of bytes, a chat completion with its bodies tens of KB): give at least "
            f"{_SMALLEST_STREAM}, or 0 for no limit"
        )
    return value


def _env(name: str, **kwargs: Any) -> Any:
    return Field(validation_alias=name, **kwargs)


def check_name(value: str, what: str, *, longest: int = _MAX_NAME) -> str:
    """Return `value` if it is a valid JetStream stream or consumer name.

    Raises:
        ValueError: it is empty, holds whitespace, `.`, `*`, `>`, `/` or `\\`, or is longer
            than `longest` (the server takes 255 characters; an event stream's name takes
            `MAX_STREAM_NAME`, for its `<STREAM>_DEAD`).
    """
    if not value or _BAD_NAME.search(value):
        raise ValueError(
            f"{what} {value!r} is not a valid JetStream name: use letters, digits, '-', '_' "
            "(no whitespace, '.', '*', '>', '/' or '\\')"
        )
    if len(value) > longest:
        why = f" (its dead letters go to <STREAM>{DEAD_SUFFIX})" if longest < _MAX_NAME else ""
        raise ValueError(
            f"{what} name is {len(value)} characters long: NATS takes at most {longest}{why}"
        )
    return value


def check_subject(value: str, what: str = "subject") -> str:
    """Return `value` if it is a literal NATS subject (dot-separated tokens, no wildcards).

    Raises:
        ValueError: an empty token, whitespace or a wildcard (`*`, `>`), or a first token
            `dead` (the dead letters' subjects).
    """
    tokens = value.split(".")
    if not value or any(not t or _BAD_TOKEN.search(t) for t in tokens):
        raise ValueError(
            f"{what} {value!r} is not a literal NATS subject: use dot-separated tokens without "
            "whitespace or wildcards, e.g. llm-proxy.events"
        )
    if len(tokens) > 1 and tokens[0] == "dead":
        # The dead letters of a bus on `rest` go to `dead.rest`: two streams would claim the
        # subject, and the other bus's dead letters failed with a hint to the wrong setting
        # (trial 192).
        raise ValueError(
            f"{what} {value!r} starts with 'dead.', which eventbus keeps for dead letters (a "
            f"bus on {'.'.join(tokens[1:])!r} sends its dead letters there): choose another "
            "first token, e.g. llm-proxy.events"
        )
    return value


def shown_server(server: str) -> str:
    """`server` as a message may show it: its credentials (a user and password, or a token,
    however mistyped: a space, a scheme without `//`) masked as core masks any URL's, and
    what was typed kept (`nats//u:***@host`: showing `***@host` hid the typo, trial 121).
    A query is masked whole: a token there was shown as given (trial 160)."""
    shown = RedactedURL(server).redacted
    cut = min((i for i in (shown.find("?"), shown.find("#")) if i >= 0), default=-1)
    return f"{shown[:cut]}{shown[cut]}***" if cut >= 0 else shown


def check_servers(url: str) -> list[str]:
    """The servers of `url` (comma-separated), each one nats-py can connect to.

    Raises:
        ValueError: no server, an empty entry, a scheme other than NATS's, credentials without
            `scheme://` (nats-py would take the text as it is, and it would be shown as it is),
            credentials holding '/', '?' or '#', no host, whitespace inside, or a port that is
            not a number from 1 to 65535. The message masks any credential.
    """
    servers = [s.strip() for s in str(url).split(",")]
    if not any(servers) or not all(servers):
        raise ValueError(
            "must name at least one server, and no empty entry in a comma-separated list "
            "(e.g. nats://127.0.0.1:4222 or nats://a:4222,nats://b:4222)"
        )
    # nats-py reads the scheme case-sensitively: NATS:// would fail at every attempt.
    servers = [_lower_scheme(server) for server in servers]
    # Credentials without a scheme first: a password holding ',' is cut there into two
    # "servers", and the first part's own error quoted the password up to the comma, as no
    # '@' marked it a credential (helper-111).
    for server in servers:
        if "://" not in server and "@" in server:
            raise ValueError(
                f"{shown_server(server)!r} holds credentials but no scheme: put nats:// (or "
                "tls://, ws://, wss://) in front, or set NATS_USER and NATS_PASSWORD instead "
                "(a password holding ',' must go there: commas separate servers)"
            )
    for server in servers:
        shown = shown_server(server)
        if "://" in server and not server.lower().startswith(_URL_SCHEMES):
            raise ValueError(
                f"{shown!r} is not a NATS URL; use nats://host:4222, "
                "tls://host:4222 (TLS), ws:// or wss://"
            )
        _check_server(server, shown)
    return servers


def _lower_scheme(server: str) -> str:
    scheme, sep, rest = server.partition("://")
    return scheme.lower() + sep + rest if sep else server


def _check_server(server: str, shown: str) -> None:
    """Refuse a server URL nats-py could never connect to (it would retry it for ever):
    no host, whitespace inside, or a port that is not a number from 1 to 65535."""
    if any(c.isspace() for c in server):
        raise ValueError(
            f"{shown!r} holds whitespace; write each server as nats://host:4222, "
            "servers separated by commas"
        )
    at = server.rfind("@")
    # Only nats:// and tls:// (and host:port) servers never have a path: a ws:// one may hold
    # an '@' in its path or query, which is no credential.
    pathless = not server.lower().startswith(("ws://", "wss://"))
    if pathless and at > 0 and any(c in server[server.find("://") + 3 : at] for c in "/?#"):
        # These end a URL's address part, so the host and port read from it would be a piece
        # of the password; nats-py does not decode percent-escapes, so %2F would not help.
        raise ValueError(
            f"{shown!r}: the credentials before '@' hold '/', '?' or '#', which a URL cannot "
            "carry there; leave them out of the URL and set NATS_USER and NATS_PASSWORD (or "
            "NATS_TOKEN) instead"
        )
    # nats-py reads "host:port" without a scheme as nats://host:port.
    try:
        parts = urllib.parse.urlsplit(server if "://" in server else f"nats://{server}")
    except ValueError as exc:  # "Invalid IPv6 URL", alone (trial 256)
        raise ValueError(
            f"{shown!r}: {exc}; write an IPv6 address in brackets with its port after them, "
            "as nats://[::1]:4222"
        ) from None
    try:
        port = parts.port
    except ValueError:
        port = 0
    if not parts.hostname:
        raise ValueError(f"{shown!r} names no host; use nats://host:4222")
    if parts.username == "":
        # nats://:password@host or nats://@host: no server takes a password without a user,
        # and it failed only at start, as a fault of the plugin (trial 192).
        raise ValueError(
            f"{shown!r}: the credentials before '@' name no user; put the user before the ':' "
            "(or, for a token, the token alone before the '@'), or leave them out of the URL "
            "and set NATS_USER and NATS_PASSWORD (or NATS_TOKEN)"
        )
    if port == 0:
        raise ValueError(
            f"{shown!r} has no valid port: give a number from 1 to 65535 "
            "(4222 is NATS's), or none for 4222"
        )
    if pathless and (parts.path not in ("", "/") or parts.query or parts.fragment):
        # nats-py ignores them, and the URL was printed as given, a token in its query too
        # (trial 160).
        scheme = parts.scheme or "nats"
        raise ValueError(
            f"{shown!r} has a path, query or fragment, which a NATS server address cannot use: "
            f"write {scheme}://host:4222 (credentials in NATS_USER and NATS_PASSWORD, or "
            "NATS_TOKEN)"
        )


class NatsSettings(ReadsVariablesOnly, BaseSettings):
    """Settings of the `nats` backend, read from the environment.

    Build with keyword arguments named after the fields to override the environment, e.g.
    `NatsSettings(nats_url="nats://a:4222,nats://b:4222", nats_replicas=3)`.

    Raises:
        SettingsError: (a `ValueError`) a value is invalid; the message names its variable.
    """

    model_config = SettingsConfigDict(
        populate_by_name=True,
        extra="ignore",
        case_sensitive=False,
        allow_inf_nan=False,  # as EventBusSettings: no setting has a use for inf or nan
    )

    settings_label: ClassVar[str] = "nats backend"
    """What `EventBusSettings`' error message calls these settings."""

    nats_url: RedactedURL = _env(
        "NATS_URL",
        default=RedactedURL("nats://127.0.0.1:4222"),
        description="NATS server URL, or a comma-separated list of a cluster's servers.",
    )
    nats_stream: str = _env(
        "EVENTBUS_NATS_STREAM",
        default="LLM_PROXY_EVENTS",
        description="JetStream stream holding the events (created if missing).",
    )
    nats_subject: str = _env(
        "EVENTBUS_NATS_SUBJECT",
        default="llm-proxy.events",
        description="Subject events are published on; dead letters go to dead.SUBJECT.",
    )
    nats_max_msgs: int = _env(
        "EVENTBUS_NATS_MAX_MSGS",
        default=10_000,
        ge=0,
        le=_INT64,
        description="Newest events the stream keeps (0: no limit).",
    )
    nats_max_bytes: int = _env(
        "EVENTBUS_NATS_MAX_BYTES",
        default=0,
        ge=0,
        le=_INT64,
        description="Bytes the stream keeps at most, oldest removed first (0: no limit).",
    )
    nats_max_age: float = _env(
        "EVENTBUS_NATS_MAX_AGE",
        default=86_400.0,
        ge=0,
        le=_SECONDS64,
        description="Seconds an event is kept in the stream (0: no limit).",
    )
    nats_replicas: int = _env(
        "EVENTBUS_NATS_REPLICAS",
        default=1,
        ge=1,
        le=5,
        description=(
            "Copies of the stream in a JetStream cluster, 1 to 5 (a single server takes 1; "
            "clusters use 3 or 5)."
        ),
    )
    nats_duplicate_window: float = _env(
        "EVENTBUS_NATS_DUPLICATE_WINDOW",
        default=120.0,
        gt=0,
        le=_SECONDS64,
        description="Seconds the stream remembers message ids to drop a retried duplicate.",
    )
    nats_group: str = _env(
        "EVENTBUS_NATS_GROUP",
        default="llm-proxy-dispatchers",
        description="Default consumer group (durable consumer) of consumer().",
    )
    nats_ack_wait: float = _env(
        "EVENTBUS_NATS_ACK_WAIT",
        default=30.0,
        gt=0,
        le=_SECONDS64,
        description="Seconds a delivery may stay unacknowledged before it is redelivered.",
    )
    nats_max_deliveries: int = _env(
        "EVENTBUS_NATS_MAX_DELIVERIES",
        default=5,
        ge=1,
        le=_INT64,
        description="Deliveries of one event before it is dead-lettered.",
    )
    nats_creds: str | None = _env(
        "NATS_CREDS",
        default=None,
        description="Path of a NATS credentials file (JWT and NKey seed).",
    )
    nats_user: str | None = _env("NATS_USER", default=None, description="User name.")
    nats_password: SecretStr | None = _env(
        "NATS_PASSWORD", default=None, description="Password of NATS_USER."
    )
    nats_token: SecretStr | None = _env(
        "NATS_TOKEN", default=None, description="Authentication token."
    )
    nats_tls_ca: str | None = _env(
        "NATS_CA", default=None, description="Path of the CA certificate that signed the server's."
    )
    nats_tls_cert: str | None = _env(
        "NATS_CERT", default=None, description="Path of the client certificate (mutual TLS)."
    )
    nats_tls_key: str | None = _env(
        "NATS_KEY", default=None, description="Path of the client certificate's private key."
    )

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise _refusal(exc) from None

    @field_validator("nats_url", mode="after")
    @classmethod
    def _check_url(cls, value: RedactedURL) -> RedactedURL:
        return RedactedURL(",".join(check_servers(value)))

    @field_validator("nats_max_age", "nats_duplicate_window", "nats_ack_wait", mode="after")
    @classmethod
    def _check_duration(cls, value: float) -> float:
        return check_nats_duration(value)

    @field_validator("nats_max_bytes", mode="after")
    @classmethod
    def _check_max_bytes(cls, value: int) -> int:
        return check_max_bytes(value)

    @field_validator("nats_stream", mode="after")
    @classmethod
    def _check_stream(cls, value: str) -> str:
        return check_name(value, "stream", longest=MAX_STREAM_NAME)

    @field_validator("nats_group", mode="after")
    @classmethod
    def _check_group(cls, value: str) -> str:
        return check_name(value, "group")

    @field_validator("nats_subject", mode="after")
    @classmethod
    def _check_subject(cls, value: str) -> str:
        return check_subject(value)

    @field_validator("nats_creds", "nats_user", "nats_tls_ca", "nats_tls_cert", "nats_tls_key")
    @classmethod
    def _empty_is_unset(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("nats_token", "nats_password")
    @classmethod
    def _empty_secret_is_unset(cls, value: SecretStr | None) -> SecretStr | None:
        # As the other variables: a template that sets every one, some empty (review 170).
        return value if value is None or value.get_secret_value() else None

    @model_validator(mode="after")
    def _check_pairs(self) -> NatsSettings:
        if bool(self.nats_tls_cert) != bool(self.nats_tls_key):
            raise ValueError(
                "NATS_CERT and NATS_KEY go together (a client certificate and its key): "
                "set both or neither"
            )
        if self.nats_password is not None and not self.nats_user:
            raise ValueError("NATS_PASSWORD is set without NATS_USER: set the user name too")
        # One way of signing in, given in one place: the variables had silently won over the
        # URL's credentials, and a refusal then blamed the URL (trial 167).
        given = [
            name
            for name, value in (
                ("NATS_USER", self.nats_user),
                ("NATS_TOKEN", self.nats_token),
                ("NATS_CREDS", self.nats_creds),
            )
            if value is not None
        ]
        if len(given) > 1:
            raise ValueError(
                f"{' and '.join(given)} are set together: a server takes one way of signing "
                "in; keep the one it expects"
            )
        if given and any(urllib.parse.urlsplit(s).username is not None for s in self.servers):
            raise ValueError(
                f"NATS_URL holds credentials (user:password@ or token@) and {given[0]} sets "
                "them too: give them in one place"
            )
        return self

    @property
    def servers(self) -> list[str]:
        """`NATS_URL` as a list of server URLs (with credentials, if the URL holds some)."""
        return str(self.nats_url).split(",")

    def env_var(self, field: str) -> str:
        """Return the environment variable that sets `field`."""
        return NATS_ENV_VARS[field]


NATS_ENV_VARS: Final[dict[str, str]] = {
    name: str(info.validation_alias) for name, info in NatsSettings.model_fields.items()
}
"""Field name to environment variable, for every setting of the `nats` backend."""


def _refusal(exc: ValidationError) -> SettingsError:
    """The `SettingsError` for `exc`: each problem named by its variable, with `problems` by
    field, so that a command line that gave the value names its flag instead."""
    lines = []
    problems = []
    fields = {var: field for field, var in NATS_ENV_VARS.items()}
    for err in exc.errors():
        loc = str(err["loc"][0]) if err["loc"] else ""
        field = fields.get(loc.upper(), loc)  # from the environment, pydantic gives the variable
        var = NATS_ENV_VARS.get(field, field)
        given = err.get("input")
        if var in ("NATS_PASSWORD", "NATS_TOKEN"):
            shown = "***"
        elif isinstance(given, dict) or not var:
            shown = ""
        elif var == "NATS_URL":
            # Each server masked up to its host's '@', however the credentials were typed.
            shown = repr(",".join(shown_server(s) for s in server_list(str(given))))
        else:
            shown = repr(redact_url(str(given)))
        msg = str(err["msg"]).removeprefix("Value error, ")
        lines.append(f"{var}{'=' + shown if shown else ''}: {msg}" if var else msg)
        problems.append((field, shown, msg))
    return SettingsError(
        f"invalid nats backend setting: {'; '.join(lines)} "
        "(fix the environment variable or the argument)",
        problems=problems,
    )
