"""HTTP plumbing shared by the sinks of observability products (otlp, helicone, lunary).

One place maps what can go wrong on the wire to the dispatcher's error classes, with a
low-cardinality `error_type` for metrics: timeouts and connection failures are transient;
an HTTP status goes through `classify_status` (408, 429, 5xx transient, with `Retry-After`;
other non-2xx permanent). Messages carry the (password-masked) URL and the start of the
response body, never a request header: API keys travel only in headers.
"""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import json
import re
import ssl
import urllib.parse
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Final

from eventbus_core._control_chars import escape_control
from eventbus_core._errors import (
    MissingDependencyError,
    SettingsError,
    SinkError,
    TransientSinkError,
)
from eventbus_core._log import add_patterns, get_logger, scrub
from eventbus_core.dispatch._retry import classify_status, parse_retry_after
from eventbus_core.redact._redact import MASK, redact_text
from eventbus_core.redact._secrets import (
    MASKED_URL,
    MaskedMapping,
    redact_one_url,
    redact_url,
    shown_url,
)
from eventbus_core.transform._llm import _decompress

if TYPE_CHECKING:
    import httpx

__all__ = ["HttpTarget", "check_headers", "check_url"]

_DETAIL_CHARS = 200
# What is read of a response body at most: all a sink uses is the status, the start of an error
# message or a partial-success reply. A collector answering with megabytes (50 MB of a 200 once
# raised the dispatcher's memory by 150 MB, for good) costs no more than this.
_RESPONSE_KEPT: Final = 64 * 1024
_CUT: Final = "eventbus_cut"  # the response's extension saying its body was cut at the bound


def check_url(url: str, where: str) -> str:
    """Return `url` if it is an http(s) URL with a host and a usable port; else raise
    `SettingsError` naming `where` (the URL shown without its password). Checked at start:
    otherwise every batch would fail, be retried as if the server were down, and be
    dead-lettered."""
    if not isinstance(url, str):  # `url=123` raised AttributeError from deep inside
        raise TypeError(
            f"{where} must be a str (an http:// or https:// URL), not {type(url).__name__}"
        )
    # A password with a space or a '/' masked too, a token pasted without a scheme whole, and
    # a path token or credential query value (a Slack webhook's) even without a valid scheme.
    shown = shown_sink_url(url)
    if not url.startswith(("http://", "https://")):
        # A value masked whole (it could be a key pasted in the wrong place) said only "got
        # '***'", with nothing to check a typo against (trial 133).
        got = (
            f"got {shown!r}"
            if shown != MASKED_URL
            else "got a value that is not shown (it could be a credential)"
        )
        raise SettingsError(f"{where} must be an http:// or https:// URL, {got}")
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - read for its check: a port out of range raises
    except ValueError:
        raise SettingsError(
            f"{where} {shown!r} is not a valid URL: its host or its port (1-65535) cannot be "
            "read; e.g. https://collector.example:4318/path, IPv6 hosts in brackets"
        ) from None
    if not parts.hostname:
        raise SettingsError(f"{where} {shown!r} names no host")
    if parts.port == 0:
        raise SettingsError(f"{where} {shown!r}: port 0 cannot be connected to; give 1-65535")
    return url


# RFC 9110 field names are tokens; values are visible ASCII with inner spaces or tabs. httpx
# refuses anything else only when it sends, quoting the value in its error: a key read from a
# file with its trailing newline would reach the log and every dead letter.
_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VALUE = re.compile(r"(?:[\x21-\x7e](?:[ \t]*[\x21-\x7e])*)?")


def check_headers(headers: object, where: str) -> None:
    """Raise `SettingsError` naming `where` and the header, never its value, if a header
    cannot be sent: a name that is not a token, or a value with a control character (a
    trailing newline from a secrets file), a space at either end, or a non-ASCII character;
    `TypeError` if `headers` is no mapping of str to str (given in code: a str, or a None
    value, raised from inside httpx at the first send, naming nothing: trial 234)."""
    if not isinstance(headers, Mapping):
        raise TypeError(
            f"{where}: headers must be a mapping of names to values, not {type(headers).__name__}"
        )
    for name, value in headers.items():
        if not isinstance(name, str) or not isinstance(value, str):
            shown = repr(name) if isinstance(name, str) else f"of type {type(name).__name__}"
            raise TypeError(
                f"{where}: header names and values must be str; header {shown} has a "
                f"{type(value).__name__} value"
            )
        if not _NAME.fullmatch(name):
            raise SettingsError(f"{where}: header name {name!r} is not a valid HTTP field name")
        if not _VALUE.fullmatch(value):
            raise SettingsError(
                f"{where}: the value of header {name!r} cannot be sent: it has a control "
                "character (a newline read from a file?), a space at either end, or a non-ASCII "
                "character; fix it where it is set (the value is not shown)"
            )


class HttpTarget:
    """An endpoint and the client that posts to it (built on first use, closed by `close`).

    Args:
        url: Where to POST.
        headers: Sent with every request (credentials among them: never logged).
        timeout: Seconds for a whole request.
        connect_timeout: Seconds to connect.
        client: A ready `httpx.AsyncClient` (not closed here), e.g. for tests.
        ssl_context: TLS settings (custom CA, client certificate), or None for the defaults.
        where: What set the headers, for the error if one cannot be sent.
        url_where: What set the URL (the option and its variable), for the error about it.

    Raises:
        SettingsError: a header cannot be sent (see `check_headers`).
    """

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        connect_timeout: float = 5.0,
        client: httpx.AsyncClient | None = None,
        ssl_context: ssl.SSLContext | None = None,
        where: str = "the sink's headers",
        url_where: str = "",
    ) -> None:
        check_headers(headers or {}, where)
        if client is None:
            require_httpx()

        self.url = url
        self.headers = MaskedMapping(headers or {})
        basic, url_secrets = _url_authorization(url), _url_secrets(url)
        if basic and any(k.lower() == "authorization" for k in self.headers):
            # httpx sends the URL's credentials in place of the header: the sink's key (a
            # Bearer token) would never be sent, and every request be refused (trial 115).
            raise SettingsError(
                f"the URL {shown_sink_url(url)!r}{f' ({url_where})' if url_where else ''} holds "
                f"a user:password@, which would be sent as HTTP Basic credentials in place of "
                f"the Authorization header set by {where}: take the credentials out of the URL"
            )
        # httpx sends the URL's `user:password@` as `Authorization: Basic ...`: a receiver
        # quoting that header back is masked like one of the sink's own headers.
        own = {**self.headers, **basic, **url_secrets}
        self._own_secrets = _secrets_pattern(own)
        self._own_starts = _starts_pattern(own)
        self._own_phrases = _phrases_pattern(own)
        # httpx logs the URL at -vv: what is secret in it is masked in every log line too.
        add_patterns(re.escape(value) for value in url_secrets.values())
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.ssl_context = ssl_context
        self._client = client
        self._owns_client = client is None

    def _get_client(self) -> httpx.AsyncClient:
        if self._client is None:
            import httpx

            # httpx logs each request's URL (at INFO): scrub it like eventbus's own lines.
            get_logger("httpx")

            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout, connect=self.connect_timeout),
                follow_redirects=False,
                verify=self.ssl_context if self.ssl_context is not None else True,
            )
        return self._client

    async def post(
        self, body: bytes, headers: Mapping[str, str] | None = None, *, delivered: int = 0
    ) -> httpx.Response:
        """POST `body`; return the response whatever its status, with at most the first
        `_RESPONSE_KEPT` bytes of its body (decoded).

        Raises:
            TransientSinkError: timeout (`error_type` "timeout") or no connection
                ("connection"); `delivered` is passed on (see `SinkError`).
        """
        import httpx

        where = redact_one_url(self.url)
        try:
            # httpx's timeout bounds each read and write; a receiver trickling its answer a
            # byte at a time would hold the sink for as long as it liked. This bounds it whole.
            async with (
                asyncio.timeout(self.timeout),
                self._get_client().stream(
                    "POST",
                    self.url,
                    content=body,
                    # Compressed, a few KB could inflate to gigabytes as httpx decodes each
                    # chunk whole; the body is undone here instead, within the bound (below).
                    headers={"Accept-Encoding": "identity", **self.headers, **(headers or {})},
                ) as response,
            ):
                kept = bytearray()
                cut = False
                async for chunk in response.aiter_raw():
                    kept += chunk
                    if len(kept) > _RESPONSE_KEPT:
                        cut = True
                        del kept[_RESPONSE_KEPT:]
                        break  # the rest is never read: the connection is closed, not reused
            content = bytes(kept)
            encoding = response.headers.get("content-encoding")
            if encoding and encoding.strip().lower() != "identity":
                # Sent compressed all the same: undone within the bound, or left out.
                content, error, too_large = _decompress(content, encoding, _RESPONSE_KEPT)
                if error or too_large:
                    content, cut = b"", True
            # The body is decoded: headers that describe the encoded one are dropped.
            described = ("content-encoding", "content-length", "transfer-encoding")
            return httpx.Response(
                response.status_code,
                headers=[(k, v) for k, v in response.headers.multi_items() if k not in described],
                content=content,
                request=response.request,
                extensions={_CUT: cut},
            )
        except httpx.TimeoutException as exc:
            raise TransientSinkError(
                f"timeout posting to {where}: {type(exc).__name__}",
                error_type="timeout",
                delivered=delivered,
            ) from None
        except TimeoutError:
            raise TransientSinkError(
                f"timeout posting to {where}: no complete answer within {self.timeout:g} s "
                f"(the sink's timeout, for the whole request)",
                error_type="timeout",
                delivered=delivered,
            ) from None
        except httpx.TransportError as exc:
            raise TransientSinkError(
                f"cannot reach {where}: {type(exc).__name__}: "
                f"{self.mask_own(redact_url(str(exc).replace(self.url, where)))}",
                error_type="connection",
                delivered=delivered,
            ) from None

    def error_for(self, response: httpx.Response, *, delivered: int = 0) -> SinkError | None:
        """The error a non-2xx response means (None for 2xx), with `Retry-After` and the
        status as `error_type`; `delivered` is passed on (see `SinkError`). This target's own
        header values are masked in its message: a collector may quote the key it refused
        ("Invalid API key provided: ..."), which would otherwise reach the log and every dead
        letter."""
        error = classify_status(
            response.status_code,
            _detail(response, self.mask_own),
            retry_after=parse_retry_after(response.headers.get("retry-after")),
        )
        if error is not None:
            error.delivered = delivered
        return error

    def mask_own(self, text: str) -> str:
        """`text` with every value of this target's headers (and each long word of one: the
        token after `Bearer`) replaced by the mask, in any case, JSON-escaped or
        percent-encoded as a receiver may quote it back.

        A text that quotes one in an escaping of its own (every character `\\u`-escaped, a
        percent-encoding that leaves other characters) is unescaped first, and masked so. A
        long word quoted by its start only ("sk-abcd1234...") is masked too."""
        pattern = self._own_secrets
        if pattern is None:
            return text
        if self._own_phrases is not None:
            text = self._own_phrases.sub(_mask_keeping_trailing_space, text)
        text = pattern.sub(MASK, text)
        plain = _unescaped(text)
        if plain != text and pattern.search(plain):
            text = pattern.sub(MASK, plain)
        # Last: a start masked first would hide the whole key from the passes above, leaving
        # the escaped rest of it in clear.
        starts = self._own_starts
        return text if starts is None else starts.sub(MASK, text)

    async def close(self) -> None:
        """Close the client, if this object built it."""
        if self._client is not None and self._owns_client:
            await self._client.aclose()
            self._client = None


def require_httpx() -> None:
    """Fail now, with the pip command, if httpx is missing (it is a dependency of eventbus-core,
    so only an install with --no-deps lacks it): later, every batch would be dead-lettered."""
    if importlib.util.find_spec("httpx") is None:
        raise MissingDependencyError(
            "the HTTP sinks (webhook, helicone, lunary, otlp) need httpx, which is not "
            "installed: pip install httpx"
        )


def _detail(response: httpx.Response, scrub: Callable[[str], str]) -> str:
    kind = response.headers.get("content-type", "")
    if kind and not any(t in kind for t in ("text", "json", "xml")):
        size = len(response.content)
        more = "more than " if response.extensions.get(_CUT) else ""
        return f"({more}{size} bytes of {kind.split(';')[0]})"
    return receiver_text(response.text, scrub)


def receiver_text(text: str, scrub: Callable[[str], str]) -> str:
    """What a receiver wrote (an error body, a partial success's message), as a message or
    log line may quote it: `scrub` applied (the target's `mask_own`), then cut short, on one
    line, control characters escaped."""
    # Masked before the cut, or a secret quoted across it would show its first part. (A cut
    # further on leaves room for the longest value a scrub replaces.)
    text = scrub(text[: 4 * _DETAIL_CHARS])
    # Whitespace runs become one space, and other control characters are escaped: a receiver's
    # text must not write to the terminal or the log as it likes (ESC sequences, a forged line).
    text = " ".join(text[:_DETAIL_CHARS].split())
    return escape_control(text)


_JSON_ESCAPE: Final = re.compile(r"\\u([0-9a-fA-F]{4})")


def _unescaped(text: str) -> str:
    """`text` with JSON's `\\uXXXX` and `\\/` escapes and percent-encoding undone."""
    text = _JSON_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text).replace("\\/", "/")
    return urllib.parse.unquote(text)


# Header values shorter than this are not masked in error text: no credential is that short,
# and masking "1" or "json" would garble every message.
_SECRET_MIN: Final = 6
# Words this long are also masked where a message quotes only their start, from _QUOTED_START
# characters on.
_SECRET_LONG: Final = 16
_QUOTED_START: Final = 10
# Headers that describe the request, never a credential.
_NOT_SECRET: Final = frozenset({"content-type", "accept", "content-encoding", "user-agent"})
_SCHEMES: Final = frozenset({"bearer", "basic", "digest", "token", "apikey", "negotiate"})


def _url_authorization(url: str) -> dict[str, str]:
    """The headers that stand for the credentials in `url` (none without `user:password@`):
    the `Authorization: Basic` httpx makes of them, and the password alone."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return {}
    user = urllib.parse.unquote(parts.username or "")
    password = urllib.parse.unquote(parts.password or "")
    basic = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    # A lone user part (`https://TOKEN@host`) is the credential itself, as `redact_url` reads it.
    return {"authorization": f"Basic {basic}", "x-url-secret": password or user}


# A path segment this long, of letters and digits both, is taken for a secret (Slack's and
# Discord's webhook URLs carry their token so: `/services/T0/B0/XXXXXXXXXXXXXXXXXXXXXXXX`, 24
# characters); not a UUID, an id that names a resource.
_PATH_SECRET_MIN: Final = 24
_TOKEN_CHARS: Final = re.compile(r"[A-Za-z0-9_-]+")
_UUID: Final = re.compile(r"[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")
# A query value shorter than this is no token (`?key=events` names a stream, and masking that
# word wherever a receiver's message says it would garble it).
_QUERY_SECRET_MIN: Final = 8


def shown_sink_url(url: str) -> str:
    """`url` as a message about it may show it: as `shown_url()` shows it (a password masked, a
    token pasted on its own masked whole), and without the secrets `_url_secrets` finds in it
    (a `?token=` value, a Slack-style path token), with or without a valid scheme (trial 141)."""
    shown = shown_url(url)
    if shown == MASKED_URL:
        return shown
    try:
        secrets = _url_secrets(url if "://" in url else "//" + url)
    except ValueError:  # not a URL urllib can split (a bracket left open): shown_url's alone
        return shown
    for secret in sorted(secrets.values(), key=len, reverse=True):
        shown = shown.replace(secret, MASK)
    # And what every log line masks (`access_token=`, `client_secret=`): the command line's
    # output did, a sink built in code raised it as it was (trial 159).
    return scrub(shown)


def _url_secrets(url: str) -> dict[str, str]:
    """The secrets of `url` beyond `user:password@`, as pseudo-headers: the values of query
    parameters the text rules mask by name (`?token=...`), and path segments shaped like a
    token. A receiver may quote one alone (an error echoing the token it refused), where no rule
    would know it."""
    parts = urllib.parse.urlsplit(url)
    found: dict[str, str] = {}
    for n, (name, value) in enumerate(urllib.parse.parse_qsl(parts.query)):
        pair = f"{name}={value}"
        if len(value) >= _QUERY_SECRET_MIN and redact_text(f"?{pair}") != f"?{pair}":
            found[f"x-url-query-{n}"] = value
    for n, segment in enumerate(urllib.parse.unquote(parts.path).split("/")):
        if (
            len(segment) >= _PATH_SECRET_MIN
            and _TOKEN_CHARS.fullmatch(segment)
            and not _UUID.fullmatch(segment)
            and any(c.isdigit() for c in segment)
            and any(c.isalpha() for c in segment)
        ):
            found[f"x-url-path-{n}"] = segment
    return found


def _credential_values(headers: Mapping[str, str]) -> list[str]:
    """The values of `headers` that may hold a credential: all but those of `_NOT_SECRET`
    ("application/json" masked in a 415's message would only garble it)."""
    return [value for name, value in headers.items() if name.lower() not in _NOT_SECRET]


def _secret_forms(headers: Mapping[str, str]) -> set[str]:
    """Each value of `headers`, and each word of one that is long enough to be a credential by
    itself (`Bearer <key>`, `Basic <b64>`), as it is, JSON-escaped (`/` as `\\/` too, as PHP
    writes it), percent-encoded and base64-encoded."""
    found: set[str] = set()
    for value in _credential_values(headers):
        for text in (value.strip(), *value.split()):
            # An authentication scheme's name is no secret: masked, "the bearer token" in a
            # receiver's error read "the [REDACTED] token" (trial 141).
            if len(text) >= _SECRET_MIN and text.lower() not in _SCHEMES:
                escaped = json.dumps(text)[1:-1]
                encoded = base64.b64encode(text.encode()).decode("ascii")
                found.update(
                    (
                        text,
                        escaped,
                        escaped.replace("/", "\\/"),
                        urllib.parse.quote(text, safe=""),
                        # As a receiver may echo it back base64-encoded (the padding optional).
                        encoded,
                        encoded.rstrip("="),
                    )
                )
    return found


def _secrets_pattern(headers: Mapping[str, str]) -> re.Pattern[str] | None:
    """What to mask in messages for `headers` (None: nothing): `_secret_forms`, in any case;
    longest first, so that a whole value is masked before a part of it."""
    forms = sorted(_secret_forms(headers), key=len, reverse=True)
    if not forms:
        return None
    return re.compile("|".join(re.escape(form) for form in forms), re.IGNORECASE)


def _starts_pattern(headers: Mapping[str, str]) -> re.Pattern[str] | None:
    """The starts of the long words of `headers` (None: none), for a receiver that quotes only
    the start of a key ("Invalid API key provided: sk-abcd1234..."): from `_QUOTED_START`
    characters on, with whatever follows of a key's alphabet, in any case. (Masking text that
    merely starts like a long header value, such as a service name, only garbles a message.)"""
    starts = {
        word[:_QUOTED_START]
        for value in _credential_values(headers)
        for word in value.split()
        if len(word) >= _SECRET_LONG
    }
    if not starts:
        return None
    alternatives = sorted(starts, key=len, reverse=True)
    return re.compile(
        "|".join(re.escape(start) + _KEY_TAIL for start in alternatives), re.IGNORECASE
    )


def _phrases_pattern(headers: Mapping[str, str]) -> re.Pattern[str] | None:
    """The long values of `headers` made of words (passphrases; None: none), matched from
    their first `_QUOTED_START` characters on through as much of the rest as is quoted, in any
    case. "My Pl4in Secret/Value+42", each word short, went out as quoted (trial 134);
    "correct horse battery staple" as "[REDACTED] horse batter", its words masked one by one
    first (trial 137): `mask_own()` masks these before the words."""
    phrases = set()
    for value in _credential_values(headers):
        words = value.split()
        whole = " ".join(words)
        if len(words) > 1 and len(whole) >= _SECRET_LONG:
            phrases.add(whole)
    if not phrases:
        return None
    alternatives = sorted(phrases, key=len, reverse=True)
    return re.compile(
        "|".join(
            re.escape(p[:_QUOTED_START]) + _quoted_rest(p[_QUOTED_START:]) for p in alternatives
        ),
        re.IGNORECASE,
    )


_KEY_TAIL: Final = r"[A-Za-z0-9_\-+/=]*"
_REST_MAX: Final = 256  # characters of a passphrase's rest matched (the pattern grows with it)


def _mask_keeping_trailing_space(match: re.Match[str]) -> str:
    """The mask, and the space a passphrase's match ended with (the word after it stays
    apart)."""
    quoted = match.group()
    return MASK + quoted[len(quoted.rstrip()) :]


def _quoted_rest(rest: str) -> str:
    """A pattern of any start of `rest` (nothing, its first character, its first two, ...)."""
    pattern = ""
    for char in reversed(rest[:_REST_MAX]):
        pattern = f"(?:{re.escape(char)}{pattern})?"
    return pattern
