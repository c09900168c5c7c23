"""Types and helpers that keep credentials out of logs, reprs and error messages."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Iterator
from typing import Any, Final

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

from eventbus_core.redact._substitute import sub_at

__all__ = [
    "BASIC_CREDENTIALS",
    "ENCODED_URL_CREDENTIALS",
    "MASKED_URL",
    "OPENAI_KEY",
    "URL_CREDENTIALS",
    "URL_IN_TEXT",
    "MaskedMapping",
    "RedactedURL",
    "is_basic_credentials",
    "mask_url_credentials",
    "redact_one_url",
    "redact_url",
    "server_list",
    "shown_url",
]

_MASK = "***"
OPENAI_KEY: Final = (
    # OpenAI, Anthropic; not right after a letter or digit (`task-management-dashboard` is a
    # word, not a key), unless they end an escape of JSON text (`\n`, `\u00a0`) or a
    # percent-encoded character, up to three times (`q=my%20sk-...`: trial 212; `%2520sk-`,
    # `%252520sk-`: trials 216 and 219). The redactor's key patterns and the gate's
    # confirming search both use it.
    r"(?:(?<![A-Za-z0-9])|(?<=\\[nrtbf])|(?<=\\u[0-9A-Fa-f]{4})|(?<=%[0-9A-Fa-f]{2})"
    r"|(?<=%25[0-9A-Fa-f]{2})|(?<=%2525[0-9A-Fa-f]{2}))"
    r"sk-(?:ant-|proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{16,}"
)
MASKED_URL: Final = _MASK
"""What `shown_url()` gives for a value it masks whole."""
BASIC_CREDENTIALS: Final = (
    r"(?=[A-Za-z0-9+/=]{8})(?=[A-Za-z0-9+/]*(?:[0-9+/]|[a-z][A-Z]))"
    r"(?:[A-Za-z0-9+/]{4})+(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?(?![A-Za-z0-9+/=])"
)
"""What follows `Basic ` in HTTP Basic credentials (RFC 7617): base64 with its padding, so a
multiple of four characters, at least eight; and, unlike a word of prose after "basic", a digit,
`+` or `/`, or a capital after a small letter (`dXNlcjpwYXNz`): "basic understanding" and
"Basic Authentication" stay as they are. (The length is looked at first: most words after
"basic" are shorter, and fail there.)"""


def is_basic_credentials(token: str | bytes) -> bool:
    """Whether `token`, a match of `BASIC_CREDENTIALS`, decodes to `user:password`: a word of
    prose shaped like base64 ("Basic LinkedIn", "Basic iPhone12") decodes to bytes without a
    colon, almost always."""
    try:
        decoded = base64.b64decode(token, validate=True)
    except (binascii.Error, ValueError):
        return False
    return b":" in decoded


_PASSWORD_PARAM = re.compile(r"((?:^|[?&;\s])password=)(?:[^&\s]*[^&\s:])?", re.IGNORECASE)
URL_CREDENTIALS = r"([^/\s:]*)(?::([^/\s]*))?@"
"""What follows `scheme://` in a URL that holds credentials: the user, `:password`, `@`.

Up to the last `@` before the host, as URL parsers read it (`urllib`, redis-py): a password
with a raw `@` (`redis://u:p@ss@host`) is masked whole, not cut at its `@` with the rest
shown."""
URL_IN_TEXT = re.compile(r"([a-z][a-z0-9+.-]*://)" + URL_CREDENTIALS, re.IGNORECASE)
"""`scheme://user[:password]@`: what `mask_url_credentials` masks (the gate searches it too)."""


# A percent sign, or one encoded once more (`%25`): a URL inside a query value of a URL that
# is itself inside a query value (`%253A`, `%2540`) is encoded twice.
_PCT = r"%(?:25)?"
ENCODED_URL_CREDENTIALS = (
    rf"((?:[^\s%&?#/:@]|%(?!(?:25)?(?:3a|40|2f))[0-9a-f]{{2}})*)"
    rf"(?:({_PCT}3a|:)((?:[^\s%&?#/]|%(?!(?:25)?2f)[0-9a-f]{{2}})*))?({_PCT}40|@)"
)
"""`URL_CREDENTIALS` with any of its separators percent-encoded, as a URL is inside a query value
or a form field (`?next=https%3A%2F%2Fuser%3Apw%40host`, what `urlencode` writes; `quote()`
keeps the `/`): user, `:` or `%3A` and password up to the last `@` or `%40` (as `URL_CREDENTIALS`),
neither holding a `/` or `%2F` (past it, an `@` is in the path); compiled ignoring case. Each
encoded separator may be encoded twice (`%253A`, `%2540`, `%252F`)."""
# `://` with any of its characters percent-encoded, or none (the plain form then matches too,
# as `URL_IN_TEXT` masks it: the same result).
_SEPARATOR = rf"(?:{_PCT}3a|:)(?:{_PCT}2f|/)(?:{_PCT}2f|/)"
ENCODED_URL_IN_TEXT = re.compile(
    r"([a-z][a-z0-9+.-]*" + _SEPARATOR + ")" + ENCODED_URL_CREDENTIALS, re.I
)


def may_hold_encoded_url(text: str) -> bool:
    """False when `text` cannot hold an encoded match of `ENCODED_URL_IN_TEXT` (substring
    tests: an encoded `@`, once or twice, or an encoded `:` and a plain `@`)."""
    return (
        "%40" in text
        or "%2540" in text
        or (("%3A" in text or "%3a" in text or "%253A" in text or "%253a" in text) and "@" in text)
    )


def mask_url_credentials(text: str, mask: str) -> str:
    """`text` with the password of every `scheme://user:password@` in it (and a lone token in
    the user part: `redis://token@host`) replaced by `mask`; the same in percent-encoded URLs
    (`https%3A%2F%2Fuser%3Apassword%40host`)."""

    def masked(match: re.Match[str]) -> str:
        scheme, user, password = match.group(1), match.group(2), match.group(3)
        if _masked_already(password if password is not None else user, mask):
            return match.group(0)  # scrub() masks URLs first (***): keep the log's spelling
        if password is None:
            # redis://token@host: a single credential in the user position is a password.
            return f"{scheme}{mask}@" if user else match.group(0)
        return f"{scheme}{user}:{mask}@"

    text = _sub_at_schemes(masked, text)
    if may_hold_encoded_url(text):
        # After the plain ones, which it then finds masked already.
        separators = (m.start() for m in _ENCODED_SEPARATOR.finditer(text))
        starts = _scheme_starts(text, separators)
        text = sub_at(ENCODED_URL_IN_TEXT, text, starts, lambda m: _masked_encoded(m, mask))
    return text


def _masked_encoded(match: re.Match[str], mask: str) -> str:
    scheme, user, colon, password, at = match.group(1, 2, 3, 4, 5)
    if _masked_already(password if colon is not None else user, mask):
        return match.group(0)
    if colon is None:
        return f"{scheme}{mask}{at}" if user else match.group(0)
    return f"{scheme}{user}{colon}{mask}{at}"


# The characters of a scheme, and of its first letter, as URL_IN_TEXT reads them (ignoring case).
_SCHEME_CHAR = re.compile(r"[a-z0-9+.-]", re.IGNORECASE)
_SCHEME_START = re.compile(r"[a-z]", re.IGNORECASE)


def _sub_at_schemes(replace: Callable[[re.Match[str]], str], text: str) -> str:
    """`URL_IN_TEXT.sub(replace, text)`, trying the pattern only where a match can start.

    Its `sub()` tries every position, and at each letter reads the whole word before failing
    for want of `://`: about 0.3 µs a character, 3 ms for a 12,000-character prompt that
    holds a URL and an `@` anywhere.
    """
    return sub_at(URL_IN_TEXT, text, _scheme_starts(text, _separators(text)), replace)


def _separators(text: str) -> Iterator[int]:
    at = text.find("://")
    while at != -1:
        yield at
        at = text.find("://", at + 1)


_ENCODED_SEPARATOR = re.compile(_SEPARATOR, re.I)


def _scheme_starts(text: str, separators: Iterator[int]) -> Iterator[int]:
    """Where a match of `URL_IN_TEXT` (or `ENCODED_URL_IN_TEXT`) can begin, in order, given where
    its `://` (`%3A%2F%2F`) stands. Every match begins at the first letter of the run of
    scheme characters right before it: a run holds no `:` or `%`, so every letter of it leads
    to that same separator, and the first is the leftmost match. (A run never reaches back into
    an earlier match, which ends with `@` or `%40`.)"""
    for at in separators:
        start = at
        while start > 0 and _SCHEME_CHAR.match(text, start - 1):
            start -= 1
        while start < at and not _SCHEME_START.match(text, start):
            start += 1
        if start < at:
            yield start


def _masked_already(credential: str, mask: str) -> bool:
    return credential == mask or (bool(credential) and credential.strip("*") == "")


def redact_url(url: str) -> str:
    """Return `url` with any password (and a lone token in the user part) replaced by ***.

    Works on free text too: every `scheme://user:password@` in it is masked.
    """
    masked = mask_url_credentials(url, _MASK)
    if "password=" in masked.lower():
        masked = _PASSWORD_PARAM.sub(rf"\g<1>{_MASK}", masked)
    return masked


def redact_one_url(url: str) -> str:
    """`url`, one URL and nothing else, with its credentials masked whatever they hold.

    `redact_url` reads free text, where a space ends a URL: a password with a space or a `/`
    in it (which redis-py accepts) would be shown from there on. Here everything between
    `scheme://` and the URL's last `@` is the user part: its password (or a lone token) is
    masked whole, and so is a `password=` parameter.

    Without `scheme://` (a URL whose scheme was forgotten, `user:pw@host`, or mistyped,
    `https//user:pw@host`: the very URLs an error message quotes back), what precedes the last
    `@` is taken for the user part all the same: past its first `:` it is masked, or whole.
    """
    scheme, sep, rest = url.partition("://")
    if not sep and (slashed := _SLASHED_SCHEME.match(url)) is not None and "@" in url:
        # A scheme with one slash too few or too many (`rediss:/:pw@host`): keep it as typed,
        # so that the error quoting it shows the typo (trial 204: "rediss:***@host"), and mask
        # all up to the last '@' (no telling a user name from a password starting with '/':
        # `admin:/Pa:ss@host` showed "Pa", review 210).
        at = url.rfind("@")
        return redact_url(f"{slashed.group()}{_MASK}{url[at:]}")
    if not sep:
        rest = url
    at = rest.rfind("@")
    if at < 0:
        return redact_url(url)
    user, colon, _ = rest[:at].partition(":")
    if not sep:
        # No telling where such a URL's user name begins: keep up to the first ':' only.
        shown = f"{user}:{_MASK}" if colon and not _blank_in(user) else _MASK
        return redact_url(f"{shown}{rest[at:]}")
    if not colon or any(c.isspace() or c in "/?#" for c in user):
        user, colon = "", ""  # a lone token, or no telling where the user name ends
    shown_user = f"{user}:{_MASK}" if colon else _MASK
    return redact_url(f"{scheme}://{shown_user}{rest[at:]}")


_SLASHED_SCHEME: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:/+")


def _blank_in(text: str) -> bool:
    return any(c.isspace() for c in text)


class MaskedMapping(dict[str, Any]):
    """A dict holding credentials (a sink's headers, a client's keyword arguments) whose repr
    shows the names only: an object dump (`vars(sink)`, an error reporter's) showed the values
    (trials 139, 141). Otherwise a plain dict."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "{" + ", ".join(f"{name!r}: '***'" for name in self) + "}"


class RedactedURL(str):
    """A connection URL whose `repr()` hides the password; `str()` is the full URL.

    Settings keep `REDIS_URL` in this type so that printing the settings object, or a bus that
    holds them, never shows a credential.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return repr(_redacted_text(self))

    @property
    def redacted(self) -> str:
        """The URL with its password masked, safe to log (each server of a list masked on
        its own, none of them lost)."""
        return _redacted_text(self)

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        # Dumped as JSON (`model_dump_json()`, `model_dump(mode="json")`, what structured
        # loggers write), the password is masked as in the repr; `model_dump()` keeps the
        # object itself, whose repr masks it and whose str() connects.
        return core_schema.no_info_after_validator_function(
            cls,
            core_schema.str_schema(strip_whitespace=True),
            serialization=core_schema.plain_serializer_function_ser_schema(
                _redacted_text, when_used="json"
            ),
        )


# What a URL setting's value without a scheme may show: an address, a common mistake worth
# seeing in the error (`localhost:6379`, `10.0.0.1`, `redis.internal:6380/0`, `[::1]:6379`,
# `redis:6379`), or a server NATS takes as it is. Written in lower case, as host names are: a
# name with a dot ends in a label of letters; one without a dot has a port. Anything else there
# (`Hunter2Secret`, `hunter2`, a UUID, a hex or JWT-like token pasted on its own) is masked, and
# so is a value with an '@' whose part after it is no address (`p@ssw0rd`), trials 123 and 127.
_ADDRESS: Final = re.compile(
    r"(?:localhost|(?:[a-z0-9-]+\.)+[a-z]{2,63}|\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-f:.]+\])"
    r"(?::\d+)?(?:/\S*)?"
    r"|[a-z0-9-]+:\d+(?:/\S*)?"
)


def _redacted_text(url: RedactedURL) -> str:
    text = str(url)
    servers = server_list(text)
    if len(servers) > 1 and all("://" in server for server in servers):
        # A list of servers (NATS_URL): each one masked, none of them lost.
        return ",".join(redact_one_url(server) for server in servers)
    return shown_url(text)


def shown_url(text: str) -> str:
    """`text`, one URL a setting gave, as a message may show it: `redact_one_url()`, and masked
    whole when it has no `scheme://` and does not end in an address (`_ADDRESS`: a password or
    token pasted on its own)."""
    stripped = text.strip()
    if stripped and "://" not in text and not _shows_an_address(stripped):
        return _MASK
    return redact_one_url(text)


def _shows_an_address(text: str) -> bool:
    """Whether `text`, a server written without `scheme://`, ends in an address that may be
    shown (`_ADDRESS`): the part after its last '@', or, with none, what follows a mistyped
    scheme (`redis//host:6379`, `http:/host`)."""
    if "@" in text:
        return _ADDRESS.fullmatch(text.rsplit("@", 1)[-1]) is not None
    bare = re.sub(r"^[A-Za-z][A-Za-z0-9+.-]*(?::/+|//+)", "", text)
    return _ADDRESS.fullmatch(bare) is not None


def server_list(text: str) -> list[str]:
    """The servers of a comma-separated list (`NATS_URL`), as masking must read them: a part
    with an `@` but no `scheme://` is the rest of the server before it, whose credentials held
    a ',' (split there, the first part's password would show up to the comma)."""
    servers: list[str] = []
    for part in text.split(","):
        # Before it, a server with a scheme, or one with no '@' of its own (a mistyped scheme,
        # `nats//u:hun,ter2@host`: its part before the comma was shown, trial 122).
        previous = servers[-1] if servers else None
        if (
            previous is not None
            and "@" in part
            and "://" not in part
            and ("://" in previous or "@" not in previous)
        ):
            servers[-1] += "," + part
        else:
            servers.append(part)
    return servers
