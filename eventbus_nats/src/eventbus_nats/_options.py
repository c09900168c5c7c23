"""What a connection needs: nats-py options from settings, safe text for logs.

`ConnectOptions` holds credentials; its repr shows only where it connects. Nothing here opens a
connection.
"""

from __future__ import annotations

import difflib
import importlib.util
import inspect
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import nats.aio.client
import nats.errors

from eventbus_core import MaskedMapping, RedactedURL, SettingsError, redact_url
from eventbus_nats._settings import NatsSettings, shown_server

__all__ = [
    "ConnectOptions",
    "TlsNotOffered",
    "check_connect_options",
    "refusal",
    "safe_error",
    "tls_wanted_by",
]


# nats-py's connect() options that sign in: given any, credentials in the URLs stay as written.
_CREDENTIAL_OPTIONS = frozenset(
    {"user", "password", "token", "user_credentials", "nkeys_seed", "nkeys_seed_str",
     "signature_cb", "user_jwt_cb"}
)  # fmt: skip


# nats-py's connect() options the bus sets itself (where, reconnecting, timeouts, callbacks).
_SET_BY_THE_BUS: Final = frozenset(
    {"servers", "name", "allow_reconnect", "max_reconnect_attempts", "connect_timeout",
     "reconnect_time_wait", "ping_interval", "max_outstanding_pings", "pending_size",
     "flush_timeout", "error_cb", "disconnected_cb", "reconnected_cb"}
)  # fmt: skip


def check_connect_options(
    options: Mapping[str, Any] | None, servers: Sequence[str] = ()
) -> dict[str, Any]:
    """`options` as further keywords of nats-py's `connect()`, checked where they are given:
    an unknown key had failed only in the connection's thread (a TypeError in the log, every
    event lost, `last_error` None), a str with "dictionary update sequence element" (trial 167).

    Raises:
        TypeError: `options` is not a mapping of str keys.
        ValueError: a key nats-py does not take, or one the bus sets itself; credentials
            given in the `servers`' URLs too, an empty token, a password without a user, a
            `user_credentials` file that is none (as the settings refuse them, trial 168).
    """
    if options is None:
        return {}
    if not isinstance(options, Mapping) or not all(isinstance(k, str) for k in options):
        raise TypeError(
            "connect_options must be a dict of nats-py connect() keywords (such as "
            f"{{'user': ..., 'password': ...}}), not {type(options).__name__}"
        )
    taken = set(inspect.signature(nats.aio.client.Client.connect).parameters) - {"self"}
    for key in options:
        if key in _SET_BY_THE_BUS:
            raise ValueError(
                f"connect_options[{key!r}]: the bus sets it itself (servers come from the url "
                "argument); leave it out"
            )
        if key not in taken:
            close = difflib.get_close_matches(key, sorted(taken), n=1)
            guess = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(
                f"connect_options[{key!r}]: not a keyword of nats-py's connect(){guess}"
            )
    given = sorted(_CREDENTIAL_OPTIONS & options.keys())
    in_url = any(urlsplit(server).username is not None for server in servers)
    # The URL's own, as `from_settings` passes them on to every server, are no second source.
    if given and in_url and {k: options[k] for k in given} != url_credentials(servers):
        raise ValueError(
            f"connect_options[{given[0]!r}] gives credentials, and the url holds some too "
            "(user:password@ or token@): give them in one place"
        )
    ways = [
        way
        for way, keys in (
            ("user/password", ("user", "password")),
            ("token", ("token",)),
            ("user_credentials", ("user_credentials",)),
            ("nkeys_seed", ("nkeys_seed", "nkeys_seed_str")),
        )
        if any(key in options for key in keys)
    ]
    if len(ways) > 1:
        raise ValueError(
            f"connect_options signs in {' and '.join(ways)} together: a server takes one way; "
            "keep the one it expects"
        )
    if "token" in options and not options["token"]:
        raise ValueError("connect_options['token'] is empty: give the token, or leave it out")
    if "password" in options and not options.get("user"):
        raise ValueError("connect_options['password'] is given without 'user': give both")
    creds = options.get("user_credentials")
    if creds == "":
        raise ValueError("connect_options['user_credentials'] is empty: give the file's path")
    if isinstance(creds, str):
        try:
            _need_credentials_file(creds)
        except SettingsError as exc:
            raise ValueError(
                str(exc).replace("NATS_CREDS", "connect_options['user_credentials']")
            ) from None
    signing = [
        key
        for key in ("user_credentials", "nkeys_seed", "nkeys_seed_str")
        if options.get(key) not in (None, "")  # None is nats-py's own default: not signing
    ]
    if signing and importlib.util.find_spec("nkeys") is None:
        # nats-py imports it only while connecting: a bare ModuleNotFoundError from inside its
        # connect(), said once here with what to install instead.
        raise ValueError(
            f"connect_options[{signing[0]!r}] needs the nkeys package to sign in: pip install "
            "'eventbus-nats[nkeys]' (or pip install nkeys)"
        )
    return dict(options)


def safe_error(exc: BaseException) -> str:
    """`exc` as text fit for logs and stats: type and message, any URL credential masked.

    A timeout without a message (asyncio's, when the server is frozen: trial 267 saw
    "TimeoutError: TimeoutError()") says what it means instead."""
    text = str(exc)
    if not text:
        text = (
            "no answer in time (a frozen, overloaded or unreachable server?)"
            if isinstance(exc, TimeoutError)
            else repr(exc)
        )
    return redact_url(f"{type(exc).__name__}: {text}")


def refuses_credentials(exc: BaseException) -> bool:
    """True if `exc` is the server refusing the credentials: nats-py raises a plain `Error`
    with the server's `-ERR 'Authorization Violation'` while connecting, and an
    `AuthorizationError` once connected."""
    return isinstance(exc, nats.errors.AuthorizationError) or (
        "authorization violation" in str(exc).lower()
    )


def credentials_error(where: str) -> SettingsError:
    """The configuration error for credentials the servers at `where` refuse: waiting or
    retrying cannot help, so commands exit 2 with it rather than 1 ("did not answer")."""
    return SettingsError(
        f"NATS at {where} refused the credentials (Authorization Violation): set NATS_USER and "
        "NATS_PASSWORD, NATS_TOKEN or NATS_CREDS (or user:password in NATS_URL) to credentials "
        "the server accepts, or none if it asks for none"
    )


class TlsNotOffered(nats.errors.Error):
    """A server offered no TLS where the settings ask for it (`tls://`, `NATS_CA`, ...): the
    connection is dropped before anything, credentials included, is sent."""

    def __str__(self) -> str:
        return "the server offers no TLS"


def refusal(exc: BaseException, options: ConnectOptions) -> SettingsError | None:
    """The configuration error `exc` stands for, when waiting or retrying cannot help (commands
    exit 2 with it rather than 1, "did not answer"); None for any other failure."""
    where = options.where
    if refuses_credentials(exc):
        return credentials_error(where)
    if isinstance(exc, TlsNotOffered):
        return SettingsError(
            f"NATS at {where} offers no TLS, which {options.tls_wanted_by} asks for: nothing "
            "was sent to it (credentials included). Point NATS_URL at a server with TLS "
            "enabled, or use nats:// without NATS_CA, NATS_CERT and NATS_KEY for a plain "
            "connection"
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        return SettingsError(
            f"NATS at {where}: its TLS certificate is not trusted "
            f"({exc.verify_message or exc}): set NATS_CA to the CA certificate (PEM) that signed "
            "it, or check that NATS_URL names the host the certificate is for"
        )
    return None


@dataclass(frozen=True, eq=False)
class ConnectOptions:
    """How to reach NATS: servers and the keyword arguments for `nats.aio.client.Client.connect`.

    Attributes:
        servers: Server URLs (may hold credentials: never log them, use `where`).
        auth: Credential and TLS keyword arguments for nats-py.
        tls_wanted_by: What asks for TLS (`NATS_CA`, `tls:// in NATS_URL`, ...), for messages;
            empty when nothing does. Every connection is then TLS or none is made.
    """

    servers: tuple[str, ...] = ("nats://127.0.0.1:4222",)
    auth: dict[str, Any] = field(default_factory=dict)
    tls_wanted_by: str = ""

    def __post_init__(self) -> None:
        # Held masked in reprs, however built: an object dump (vars(), an error reporter's)
        # showed a password in the servers or the credentials (trials 141, 142).
        servers = tuple(RedactedURL(server) for server in self.servers)
        object.__setattr__(self, "servers", servers)
        auth = dict(self.auth)
        if not _CREDENTIAL_OPTIONS & auth.keys():
            auth.update(url_credentials(servers))
        object.__setattr__(self, "auth", MaskedMapping(auth))

    @property
    def where(self) -> str:
        """The servers as text fit for logs and errors (credentials masked, and a server that
        looks like a token pasted on its own too)."""
        return ",".join(shown_server(server) for server in self.servers)

    def __repr__(self) -> str:
        return f"ConnectOptions({self.where!r})"

    @classmethod
    def from_settings(cls, settings: NatsSettings) -> ConnectOptions:
        """Options from `NATS_URL` and the credential and TLS settings.

        Raises:
            SettingsError: a file named by a setting is missing, a certificate does not load,
                or `NATS_CREDS` is set without the `nkeys` package that reads it.
        """
        auth: dict[str, Any] = {}
        if settings.nats_user:
            auth["user"] = settings.nats_user
        if settings.nats_password is not None:
            auth["password"] = settings.nats_password.get_secret_value()
        if settings.nats_token is not None:
            auth["token"] = settings.nats_token.get_secret_value()
        if settings.nats_creds:
            _need_credentials_file(settings.nats_creds)
            if importlib.util.find_spec("nkeys") is None:
                raise SettingsError(
                    "NATS_CREDS needs the nkeys package to sign in: pip install "
                    "'eventbus-nats[nkeys]' (or pip install nkeys)"
                )
            auth["user_credentials"] = settings.nats_creds
        _refuse_tls_files_over_ws(settings)
        if settings.nats_tls_ca or settings.nats_tls_cert or tls_wanted_by(settings.servers, {}):
            auth["tls"] = _tls_context(settings)
        try:
            wanted_by = tls_wanted_by(settings.servers, auth)
        except ValueError:  # tls:// or wss:// servers beside ws:// ones
            raise SettingsError(
                "NATS_URL mixes servers with TLS (tls://, wss://) and ws:// ones, which would be "
                "reached without it: use wss:// for every websocket server"
            ) from None
        return cls(tuple(settings.servers), auth, wanted_by)


def url_credentials(servers: Sequence[str]) -> dict[str, str]:
    """The credentials written in `NATS_URL` as connection options (`user` and `password`, or
    `token`), so that every server gets them: nats-py sends a URL's credentials to that server
    only, and the servers a cluster announces (those failover moves to) got none, so the
    client could not fail over to them (trial 144). Empty when no server has any, or when the
    servers have different ones (each then keeps its own, as written)."""
    found = set()
    for server in servers:
        parts = urlsplit(server if "://" in server else f"nats://{server}")
        if parts.username is not None:
            found.add((parts.username, parts.password))
    if len(found) != 1:
        return {}
    ((user, password),) = found
    # As nats-py reads a URL: a user without a password is a token.
    return {"token": user} if password is None else {"user": user, "password": password}


def tls_wanted_by(servers: Sequence[str], auth: Mapping[str, Any]) -> str:
    """What asks for TLS, for messages: the `tls://` or `wss://` servers, the `tls` option (an
    SSL context, which NATS_CA, NATS_CERT and NATS_KEY make); "" for nothing.

    Raises:
        ValueError: a `tls` option with a `ws://` server, which nats-py reaches without TLS.
    """
    schemes = {s.lower().partition("://")[0] for s in servers if "://" in s}
    if auth.get("tls") is not None and "ws" in schemes:
        raise ValueError(
            "a TLS context (connect_options['tls']) with a ws:// server, which is reached without "
            "TLS: use wss:// (websocket over TLS)"
        )
    wanted = [f"{scheme}:// in NATS_URL" for scheme in ("tls", "wss") if scheme in schemes]
    if auth.get("tls") is not None and not wanted:
        wanted.append(
            "the TLS settings (NATS_CA, NATS_CERT and NATS_KEY, or connect_options['tls'])"
        )
    return " and ".join(wanted)


def _refuse_tls_files_over_ws(settings: NatsSettings) -> None:
    files = [
        var
        for var, value in (
            ("NATS_CA", settings.nats_tls_ca),
            ("NATS_CERT", settings.nats_tls_cert),
            ("NATS_KEY", settings.nats_tls_key),
        )
        if value
    ]
    if files and any(s.lower().startswith("ws://") for s in settings.servers):
        raise SettingsError(
            f"{' and '.join(files)} {'asks' if len(files) == 1 else 'ask'} for TLS, but NATS_URL "
            "has a ws:// server, which is "
            "reached without it: use wss:// (websocket over TLS)"
        )


def _need_file(path: str, var: str) -> None:
    if Path(path).is_dir():
        raise SettingsError(f"{var}={path!r} is a directory: give the path of the file in it")
    if not Path(path).is_file():
        raise SettingsError(f"{var}={path!r}: no such file (give the path of an existing file)")


def _need_credentials_file(path: str) -> None:
    """`NATS_CREDS` names a credentials file: a user JWT and an NKey seed, as `nsc` writes it.
    An empty or other file had been taken, and a server then "refused the credentials"; one
    asking for none took it silently (trial 167). Its content is never shown."""
    _need_file(path, "NATS_CREDS")
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    except OSError as exc:
        raise SettingsError(
            f"NATS_CREDS={path!r} cannot be read ({exc.strerror or type(exc).__name__})"
        ) from None
    if b"BEGIN NATS USER JWT" not in head or b"BEGIN USER NKEY SEED" not in head:
        raise SettingsError(
            f"NATS_CREDS={path!r} is not a NATS credentials file: it should hold a user JWT and "
            "its NKey seed (-----BEGIN NATS USER JWT----- and -----BEGIN USER NKEY SEED-----, "
            "as `nsc generate creds` writes them)"
        )


def _tls_context(settings: NatsSettings) -> ssl.SSLContext:
    ca, cert, key = settings.nats_tls_ca, settings.nats_tls_cert, settings.nats_tls_key
    if ca:
        _need_file(ca, "NATS_CA")
    try:
        context = ssl.create_default_context(cafile=ca)
    except ssl.SSLError as exc:
        raise SettingsError(f"NATS_CA={ca!r} is not a PEM CA certificate: {exc}") from None
    if cert and key:
        _need_file(cert, "NATS_CERT")
        _need_file(key, "NATS_KEY")
        try:
            context.load_cert_chain(cert, key)
        except ssl.SSLError as exc:
            raise SettingsError(
                f"NATS_CERT={cert!r} and NATS_KEY={key!r} do not load as a certificate and its "
                f"private key: {exc}"
            ) from None
    return context
