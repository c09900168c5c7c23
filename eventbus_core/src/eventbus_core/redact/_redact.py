"""Redaction of secrets before anything leaves the process.

Header values of credentials (Authorization, cookies, API keys) are replaced by a mask, and so
are API-key-looking strings in bodies: provider key formats (OpenAI `sk-...`, Anthropic
`sk-ant-...`, Google `AIza...`, AWS `AKIA...`, GitHub, Slack, Hugging Face), `Bearer` tokens,
and the values of JSON fields or `key=value` pairs named like credentials (`api_key`,
`password`, `access_token`, ...). `Redactor` bundles a configuration of these rules.
"""

from __future__ import annotations

import base64
import binascii
import functools
import itertools
import json
import os
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final

import ahocorasick_rs

from eventbus_core._errors import SettingsError
from eventbus_core._event import Event
from eventbus_core.redact._encoded_names import mask_encoded_names
from eventbus_core.redact._gate import SPECIAL_CASE_CHARS, needs_no_redaction
from eventbus_core.redact._loose_names import names_a_credential_loosely, pairs_into_a_credential
from eventbus_core.redact._multipart import mask_multipart_fields, may_hold_multipart
from eventbus_core.redact._query import QUERY_NAMES_PATTERN, QUERY_PAIR, has_query_pair
from eventbus_core.redact._secrets import (
    BASIC_CREDENTIALS,
    OPENAI_KEY,
    is_basic_credentials,
    mask_url_credentials,
    may_hold_encoded_url,
)
from eventbus_core.redact._substitute import sub_at
from eventbus_core.transform._binary import is_binary_body

if TYPE_CHECKING:
    from eventbus_core._settings import EventBusSettings

__all__ = [
    "MASK",
    "NO_REDACTION",
    "SENSITIVE_HEADERS",
    "Redactor",
    "is_sensitive_header",
    "redact_headers",
    "redact_text",
]

MASK: Final = "[REDACTED]"

SENSITIVE_HEADERS: Final[frozenset[str]] = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "x-api-key",
        "api-key",
        "x-auth-token",
        "x-access-token",
        "x-amz-security-token",
        "openai-api-key",
        "anthropic-api-key",
        "x-goog-api-key",
        "ocp-apim-subscription-key",  # Azure API Management, in front of Azure OpenAI
        "x-csrf-token",
        "x-xsrf-token",
        "authentication",
        "client-secret",
        "x-client-secret",
        "x-secret",
        "x-password",
        "x-refresh-token",
        "x-vault-token",  # HashiCorp Vault
        "private-token",  # GitLab
        "x-session-token",
        "x-id-token",
        "x-gitlab-token",
        "x-access-key",
        "x-auth",
    }
)
"""Header names (lower case) whose values are masked by default."""

_KEY_PATTERNS: Final = (
    OPENAI_KEY,  # OpenAI, Anthropic
    # Google API keys are 39 characters: a longer run is masked whole (one of 40 left its
    # last character, trial 234). The gate's `AIza...{35}` finds both alike.
    r"AIza[0-9A-Za-z_\-]{35,}",
    r"(?:AKIA|ASIA)[0-9A-Z]{16}",  # AWS access key ids
    r"gh[pousr]_[A-Za-z0-9]{30,}",  # GitHub tokens
    r"github_pat_[A-Za-z0-9_]{30,}",
    r"xox[abposr]-[A-Za-z0-9\-]{10,}",  # Slack
    r"hf_[A-Za-z0-9]{30,}",  # Hugging Face
    r"gsk_[A-Za-z0-9]{20,}",  # Groq
    r"xai-[A-Za-z0-9]{20,}",  # xAI
    r"glpat-[A-Za-z0-9_\-]{20,}",  # GitLab personal access tokens
    r"sk_live_[A-Za-z0-9]{16,}",  # Stripe secret keys
    r"rk_live_[A-Za-z0-9]{16,}",  # Stripe restricted keys
    r"r8_[A-Za-z0-9]{20,}",  # Replicate
    r"ya29\.[A-Za-z0-9_\-]{20,}",  # Google OAuth access tokens
    # Bearer tokens in free text, the scheme in any letter case (RFC 9110: it is
    # case-insensitive; "BEARER" went unmasked before).
    r"(?<=(?i:bearer) )[A-Za-z0-9_\-.=+/]{8,}",
    # The same in a query string or form field, where the space is `+` or `%20`
    # (`?q=Bearer+abc...`) and the token's own `/`, `+` and `=` may be percent-encoded; an
    # encoded space ends it (`q=the+bearer+of+bad+news` is prose, not a token).
    r"(?<=(?i:bearer)\+)(?:[A-Za-z0-9_\-.=/]|%(?!20)[0-9A-Fa-f]{2}){8,}",
    r"(?<=(?i:bearer)%20)(?:[A-Za-z0-9_\-.=/]|%(?!20)[0-9A-Fa-f]{2}){8,}",
    # HTTP Basic credentials without their header name (a library's error quoting a header
    # value: "Illegal header value b'Basic dXNlcjpw...'"), the scheme in any letter case.
    # Masked only if it decodes to `user:password` (`_key_mask`).
    r"(?<=(?i:basic) )(?P<eventbus_basic>" + BASIC_CREDENTIALS + ")",
)
"""Regular expressions of API-key-looking strings, masked wherever they appear."""
# The dispatcher's fast path (`_gate.py`) searches for each of these, and for each name of
# `_SECRET_NAME`, by hand: change them together (tests/core/test_redact_fast.py pins both).

_SECRET_NAME: Final = (
    r"(?:api[_-]?key|apikey|x[_-]?api[_-]?key|authorization|password|passwd|secret"
    r"|client[_-]?secret|access[_-]?token|refresh[_-]?token|id[_-]?token|auth[_-]?token"
    r"|private[_-]?key|cookie|api[_-]?token|access[_-]?key|passphrase|session[_-]?token|security[_-]?token)"
)
# Further words after a credential name (`secret_key`, `password_hash`, and in camelCase,
# `secretKey`, `passwordHash`: a capital letter starts the word, matched with case): part of
# the name. Words before it need no pattern in text, where a match can begin at the credential
# name itself (`clientSecret`).
_NAME_SUFFIX: Final = r"(?:[_-][a-z0-9]+|(?-i:[A-Z][a-z0-9]*))*"
# Three shapes of "name, then its value" in text; the structured path (`Redactor.json`)
# handles parsed JSON by key instead:
# - quoted, as in JSON text (`"password": "a b"`): everything up to the closing quote of the
#   kind that opened it, past escaped ones (`"a\"b"`, `"c:\\"`); where the quotes are
#   themselves escaped (`{\"password\": \"a b\"}`, JSON quoted in a string), up to the next
#   escaped quote of that kind;
# - a header line (`Authorization: Basic dXNl...`, `Cookie: a=1; b=2`): the rest of the line,
#   so a credential after its scheme word is masked too (JSON literals and numbers are left
#   alone, so raw JSON stays valid);
# - a query string or form field (`api_key=value`): up to the next separator, less a colon
#   that ends it (a URL quoted before ": the reason");
# - a list or tuple of quoted strings, as Python's repr or JSON writes a header's values
#   (`'Cookie': ['a=1', 'b=2']`, `"Authorization": ("Basic x",)`): every string in it.
# A quoted value may be Python's repr of bytes (`'api_key': b'...'`, as httpx logs headers).
_PAIR: Final = re.compile(
    rf"""(?ix)
    (?P<head>["']?{_SECRET_NAME}{_NAME_SUFFIX}\\?["']?\s*
      (?: [:=]\s*(?P<seq>[\[(])(?=\s*b?["'])
        | [:=]\s*(?P<esc>\\)?b?(?P<quote>(?P<dq>")|')
        | (?P<colon>:)[\ \t]*+(?!(?:null|true|false)\b|[-\d\[{{])
        | =\s*
      ))
    (?P<value>(?(seq)(?:\s*b?(?:"(?:[^"\\\r\n]|\\.)*"|'(?:[^'\\\r\n]|\\.)*')\s*,?)+
      |(?(quote)(?(esc)(?(dq)(?:[^"\\\r\n]|\\\\\\"|\\\\|\\(?!"))+|(?:[^'\\\r\n]|\\\\\\'|\\\\|\\(?!'))+)
                     |(?(dq)(?:[^"\\\r\n]|\\.)+|(?:[^'\\\r\n]|\\.)+))
      |(?(colon)[^"'\r\n]+|[^"'\s,&;}}]*[^"'\s,&;}}:]))))
    """
)
# A query string inside a percent-encoded URL (`?next=https%3A%2F%2Fapp%2Fcb%3Ftoken%3D...`, what
# `urlencode()` writes for a redirect URI): an encoded `?`, `&`, `#` (a fragment's parameters,
# where OAuth's implicit flow puts tokens) or `;`, a short query credential name or a credential
# name (with words before it: `db.password`), an encoded `=`, then the value up to the next
# separator, encoded or not.
# Each encoded separator may be encoded twice (`%253F`, `%253D`: the redirect URI of a URL that
# is itself a query value).
_ENCODED_QUERY_PAIR: Final = re.compile(
    rf"(?i)(?P<head>%(?:25)?(?:3f|26|23|3b)(?:{QUERY_NAMES_PATTERN}"
    rf"|(?:[a-z0-9_.-]*[._-])?{_SECRET_NAME}{_NAME_SUFFIX})%(?:25)?3d)"
    r"""(?P<value>(?:[^&#\s"'<>%]|%(?!(?:25)?(?:26|23))[0-9a-f]{2})+)"""
)
# A credential name anywhere in a text, in any letter case: a field name that is not ASCII
# (whose `lower()` may shift positions) is judged by it alone, which can only mask more.
_ANY_SECRET_NAME: Final = re.compile(rf"(?i){_SECRET_NAME}")
# Every spelling of a credential name, lower case (`api_key`, `api-key`, `apikey`, ...): a match
# of `_PAIR` starts at one of them (or at a quote right before it). Found in one pass by an
# automaton, so `_PAIR` (case-insensitive, ~200 ns a character when it tries every position)
# is tried only there.
_NAME_SPELLINGS: Final = tuple(
    sorted(
        {
            re.sub(r"\[_-\]\?", separator, name)
            for name in re.findall(r"[a-z][a-z\[\]_\-?]*", _SECRET_NAME.replace("(?:", ""))
            for separator in ("", "_", "-")
        }
    )
)
_NAME_FINDER: Final = ahocorasick_rs.AhoCorasick(list(_NAME_SPELLINGS))


# Where a match of a key pattern can start: at one of these (the literal starts of every pattern
# but the Bearer and Basic ones), or right after one of `_SCHEMES` in any letter case (the Bearer
# and Basic patterns' lookbehinds).
_KEY_STARTS: Final = (
    "sk-", "AIza", "AKIA", "ASIA", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_",
    "xox", "hf_", "gsk_", "xai-", "glpat-", "sk_live_", "rk_live_", "r8_", "ya29.",
)  # fmt: skip
# "bearer" then a space, plain or as a query string or form field encodes it; "basic" then a
# space.
_SCHEMES: Final = ("bearer ", "bearer+", "bearer%20", "basic ")


# One pass over a string finds every occurrence of every literal start (overlapping: "xoxoxb-"
# holds "xox" twice): 3 µs over a kilobyte, against 8 µs for twelve substring tests.
_KEY_START_FINDER: Final = ahocorasick_rs.AhoCorasick(list(_KEY_STARTS))
_KEY_START_FINDER_BYTES: Final = ahocorasick_rs.BytesAhoCorasick(
    [start.encode("ascii") for start in _KEY_STARTS]
)


def _key_starts(text: str, lowered: str) -> list[int]:
    """Every position of `text` where a key pattern can match, in order; positions after a
    "bearer " (or "bearer+", "bearer%20") or "basic " are read in `lowered` (`text.lower()`:
    the same positions unless `text` holds U+0130, see `Redactor._masked_keys`)."""
    matches = _KEY_START_FINDER.find_matches_as_indexes(text, overlapping=True)
    has_scheme = _may_hold_scheme(lowered)
    if not matches and not has_scheme:
        return []  # the usual case, without building a set
    found = {start for _, start, _ in matches}
    for scheme in _SCHEMES if has_scheme else ():
        at = lowered.find(scheme)
        while at != -1:
            found.add(at + len(scheme))
            at = lowered.find(scheme, at + 1)
    return sorted(found)


def _key_mask(match: re.Match[str]) -> str:
    """The mask for a key pattern's match; a `Basic` one that does not decode to
    `user:password` (a word of prose) stays as it is."""
    basic = match.group("eventbus_basic")
    if basic is not None and not is_basic_credentials(basic):
        return match.group()
    return MASK


def _may_hold_scheme(lowered: str) -> bool:
    """False when no Bearer or Basic pattern can match in the string `lowered` is of."""
    return "bearer" in lowered or "basic " in lowered


# Cheap substring tests that must hold for a credential name to appear: most strings in a
# payload (messages, ids, model names) contain none of them, and `in` is far cheaper than a
# regex scan.
def _may_hold_pair(lowered: str) -> bool:
    return (
        "key" in lowered
        or "auth" in lowered
        or "pass" in lowered
        or "secret" in lowered
        or "token" in lowered
        or "cookie" in lowered
    )


def _may_hold_key_bytes(data: bytes) -> bool:
    """Whether a literal start of a key pattern (`_KEY_STARTS`) is anywhere in `data`: one
    pass of an automaton (about 0.4 µs a kilobyte, where 19 substring tests took 11)."""
    return bool(_KEY_START_FINDER_BYTES.find_matches_as_indexes(data))


def _may_hold_pair_bytes(data: bytes) -> bool:
    lowered = data.lower()  # ASCII-only, which is all the hints need
    return (
        b"key" in lowered
        or b"auth" in lowered
        or b"pass" in lowered
        or b"secret" in lowered
        or b"token" in lowered
        or b"cookie" in lowered
        or b"bearer" in lowered  # key patterns, but their scheme word is in any case
        or b"basic " in lowered
    )


_SHORTEST_SECRET: Final = 8  # "secret=x": nothing shorter holds a value the built-in rules mask


_HEADER_FIELDS: Final = frozenset({"headers", "response_headers", "request_headers"})
_HEADER_NAMES_KEPT: Final = 4096  # header names whose verdict `payload()` remembers
_FIELD_NAMES_KEPT: Final = 4096  # names of a payload's plain fields `payload()` remembers
# What `payload()` remembers of header names as spelled: the extra names the verdicts were made
# for, every name judged (masked or not), and the names masked among them.
_HeaderVerdicts = tuple[frozenset[str], dict[str, bool], set[str]]


_WORD_SEPARATORS: Final = "_-. "


def _word_starts(name: str, at: int) -> bool:
    """Whether a word of `name` begins at `at`: at its start, after a separator, or where camel
    case begins one (`dbPassword`, `HTTPPassword`)."""
    if at == 0 or name[at - 1] in _WORD_SEPARATORS:
        return True
    if not name[at].isupper():
        return False
    before = name[at - 1]
    if before.islower() or before.isdigit():
        return True
    return before.isupper() and at + 1 < len(name) and name[at + 1].islower()


def _word_ends(name: str, at: int) -> bool:
    """Whether a word of `name` ends right before `at`: at its end, before a separator, where
    camel case begins the next word (`secretKey`), or before digits (`password2`)."""
    if at == len(name) or name[at] in _WORD_SEPARATORS:
        return True
    after, last = name[at], name[at - 1]
    if after.isupper():
        return last.islower() or last.isdigit()
    return after.isdigit() and last.isalpha()


@functools.lru_cache(maxsize=4096)
def _is_secret_name(name: str) -> bool:
    """Whether a field's name holds a credential name as one of its words, in any letter case:
    `password`, `PaSsWoRd`, `secret_key`, `db.password`, `aws_secret_access_key`, `dbPassword`,
    `xApiKey`, `password2`; not `secretary`, `passwordless` or `cookies`, where the name runs on
    into a word of its own."""
    if not name.isascii():
        return _ANY_SECRET_NAME.search(name) is not None
    for _, start, end in _NAME_FINDER.find_matches_as_indexes(name.lower(), overlapping=True):
        if _word_starts(name, start) and _word_ends(name, end):
            return True
    return False


def _holds_secret(value: Any) -> bool:
    """Whether the value of a credential-named field is masked: anything but null, a boolean
    and an empty string, list or object (a number or an object can be the credential too:
    `"password": 1234`, `"api_key": {"value": "..."}`)."""
    if value is None or value is True or value is False:
        return False
    if isinstance(value, str | list | dict | tuple):
        return len(value) > 0
    return True


@functools.lru_cache(maxsize=4096)
def is_credential_header(name: str) -> bool:
    """True if header `name` is one of `SENSITIVE_HEADERS`, or holds a credential name as one
    of its words (`X-Api-Secret`, `X-Db-Password`), as a JSON field's name would be judged:
    the text rules mask such a header where a log line or an error quotes it, so its value is
    masked wherever else it goes too. Or a word that names a credential in a header, as in a
    configuration figure (`X-Custom-Token`, `Helicone-Auth`, `Jwt`, `X-Hub-Signature`, trial
    165), but not `Access-Control-Allow-Credentials` (CORS: `true`, never a secret), the rate
    limits' `...-Tokens` (counts of the model's tokens), nor a header whose other words say it
    describes one (`X-Amzn-Bedrock-Input-Token-Count`, `X-Token-Limit`, `X-Auth-Method`,
    `X-Signature-Algorithm`: review 170, trial 169)."""
    lowered = name.lower()
    if lowered in SENSITIVE_HEADERS or _is_secret_name(lowered):
        return True
    if lowered.startswith("access-control-") or not names_a_credential_loosely(lowered):
        return False
    return not _describes_one(re.split(r"[-_.]", lowered))


def _describes_one(words: list[str]) -> bool:
    """Whether a header name's words (lower case) are about a credential, not one: a describing
    word after its last credential word (`Token-Count`, `Auth-Method`; but `Reset-Token` is a
    token, trial 172), or a rate limit's (`X-Ratelimit-Remaining-Token`)."""
    if "ratelimit" in words or ("rate", "limit") in itertools.pairwise(words):
        return True
    # Where the credential's words end: a word alone (`token`) or the second of a pair
    # (`openai-key`; without pairs, `X-Used-Openai-Key` counted `used` as after it: review 271).
    last = max(
        (
            i
            for i, w in enumerate(words)
            if names_a_credential_loosely(w) or (i and pairs_into_a_credential(words[i - 1], w))
        ),
        default=-1,
    )
    return any(w in _DESCRIBING_WORDS for w in words[last + 1 :])


# Words beside a loose credential word in a header's name that make it about the credential,
# not the credential itself: counts, limits, kinds and times.
_DESCRIBING_WORDS: Final = frozenset(
    {"count", "counts", "limit", "limits", "remaining", "reset", "used", "usage", "algorithm",
     "method", "type", "version", "expires", "expiry", "ttl", "length", "size"}
)  # fmt: skip


def is_credential_name(name: str) -> bool:
    """True if a field named `name` holds a credential as a header or a JSON field of that
    name would (`is_credential_header`, with camelCase words too: `dbPassword`, `secretKey`)."""
    return is_credential_header(name) or _is_secret_name(name)


def is_sensitive_header(name: str, extra: Iterable[str] = ()) -> bool:
    """True if header `name` carries a credential (`is_credential_header`, or one of `extra`)."""
    return is_credential_header(name) or name.lower() in {e.lower() for e in extra}


def _masked_pairs(text: str, lowered: str) -> str:
    """`text` with the value of every `_PAIR` match masked, as `_PAIR.sub` masks them where
    `lowered` (`text.lower()`) holds a credential name, and `text` itself where it holds none.

    `_PAIR` is tried only where a name starts in `lowered`. A text holding one of the
    characters that case-insensitive matching takes for ASCII letters (`SPECIAL_CASE_CHARS`;
    the only one `lower()` lengthens is among them) gets `_PAIR.sub` itself: its positions or
    its matches could differ from what `lowered` shows.
    """
    found = _NAME_FINDER.find_matches_as_indexes(lowered, overlapping=True)
    if not found:
        return text
    if not text.isascii() and any(c in text for c in SPECIAL_CASE_CHARS):
        return _PAIR.sub(_masked_value, text)
    # A match may begin at a quote before the name; begun at the name, it ends at the same
    # place and the quote is kept either way, so the names' starts are enough.
    starts = sorted({at for _, at, _ in found})
    return sub_at(_PAIR, text, starts, _masked_value)


def _masked_value(match: re.Match[str]) -> str:
    """A `_PAIR` match with its value masked. A list's strings become one quoted mask, so that
    JSON (or a Python repr) stays valid: `["a", "b"]` -> `["[REDACTED]"]`, not `[[REDACTED]]`."""
    if match.group("seq"):
        value = match.group("value").lstrip()
        opening = value[:2] if value[0] in "bB" else value[0]  # `b'...'`: bytes stay bytes
        comma = "," if value.rstrip().endswith(",") else ""  # a tuple of one: `("x",)`
        return f"{match.group('head')}{opening}{MASK}{opening[-1]}{comma}"
    return match.group("head") + MASK


def redact_headers(
    headers: Mapping[str, Iterable[str]] | None, extra: Iterable[str] = ()
) -> dict[str, list[str]] | None:
    """Return a copy of `headers` with every sensitive header's values masked."""
    if headers is None:
        return None
    extra_set = {e.lower() for e in extra}
    out: dict[str, list[str]] = {}
    for name, values in headers.items():
        if is_credential_header(name) or name.lower() in extra_set:
            out[name] = [MASK for _ in values]
        else:
            out[name] = list(values)
    return out


_STAMP: Final = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{2}:\d{2})"
)


def _is_stamp(value: Any) -> bool:
    """Whether `value` is an ISO 8601 date and time (what the transformer's `timestamp` is)."""
    return type(value) is str and _STAMP.fullmatch(value) is not None


def _encoded(headers: Mapping[str, tuple[str, ...]] | None) -> bool:
    """Whether response `headers` give the body a `Content-Encoding` other than identity."""
    if not headers:
        return False
    for name, values in headers.items():
        if name.lower() == "content-encoding":
            return any(v.strip().lower() not in ("", "identity") for v in values)
    return False


def is_utf8(data: bytes | None) -> bool:
    """Whether `data` is UTF-8 text (None and empty bodies are)."""
    if not data:
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def stripped(event: Event) -> Event:
    """`event` without headers and bodies, its path cut before the query and scrubbed: what may
    still go out of an event that redaction failed on (JSON nested past the walk's depth)."""
    from eventbus_core._log import scrub  # _log builds on this module: imported when used

    try:
        path = scrub(event.path.partition("?")[0])
    except Exception:
        path = ""
    # Only the changed fields are checked, and None and a str always pass: cannot raise.
    return event.replace(path=path, response_headers=None, request_body=None, response_body=None)


def redact_text(text: str) -> str:
    """Mask API-key-looking strings and credential-named values in `text` (default rules)."""
    return _DEFAULT_REDACTOR.text(text)


class Redactor:
    """A configured set of redaction rules, applied to headers, text and parsed JSON.

    Args:
        extra_headers: Further header names (any case) whose values are masked.
        extra_patterns: Further regular expressions; every match in a body is masked.
        bodies: Also scrub bodies (key patterns and credential-named fields); headers are
            always redacted.

    Raises:
        SettingsError: (a `ValueError`) an extra pattern is not a valid regular expression.
    """

    def __init__(
        self,
        *,
        extra_headers: Iterable[str] = (),
        extra_patterns: Iterable[str] = (),
        bodies: bool = True,
    ) -> None:
        self.extra_headers = frozenset(h.strip().lower() for h in extra_headers if h.strip())
        patterns = [p for p in extra_patterns if p]
        for p in patterns:
            try:
                re.compile(p)
            except re.error as exc:
                raise SettingsError(
                    f"invalid redaction pattern {p!r} (EVENTBUS_REDACT_PATTERNS): {exc}"
                ) from exc
        self.extra_patterns: tuple[str, ...] = tuple(patterns)
        self._keys = re.compile("|".join([*_KEY_PATTERNS, *patterns]))
        self._has_extra = bool(patterns)
        self.bodies = bodies
        self._header_verdicts: _HeaderVerdicts = (self.extra_headers, {}, set())
        self._plain_fields: set[str] = set()  # see `payload()`

    @classmethod
    def from_settings(cls, settings: EventBusSettings) -> Redactor:
        """The rules `EVENTBUS_REDACT_HEADERS` and `EVENTBUS_REDACT_PATTERNS` add to the
        defaults (whether redaction is on, `EVENTBUS_REDACT`, is for the caller to decide)."""
        return cls(
            extra_headers=settings.redact_header_names,
            extra_patterns=settings.redact_pattern_list,
        )

    @classmethod
    def from_environment(cls) -> Redactor:
        """The default rules plus what `EVENTBUS_REDACT_HEADERS` and `EVENTBUS_REDACT_PATTERNS`
        add, read from the environment alone (no other setting is read, so none can fail
        here): what a dispatcher built in code without a `redactor` uses, so that it masks
        what the same variables mask in a dispatcher built from settings and in log lines.

        Raises:
            SettingsError: a pattern is not a valid regular expression.
        """
        from eventbus_core._settings import header_names, pattern_lines

        # Looked up as the settings look them up: the names in any case.
        env = {name.upper(): value for name, value in os.environ.items()}
        return cls(
            extra_headers=header_names(env.get("EVENTBUS_REDACT_HEADERS", "")),
            extra_patterns=pattern_lines(env.get("EVENTBUS_REDACT_PATTERNS", "")),
        )

    def headers(self, headers: Mapping[str, Iterable[str]] | None) -> dict[str, list[str]] | None:
        """Return a copy of `headers` with sensitive values masked."""
        return redact_headers(headers, self.extra_headers)

    def text(self, text: str) -> str:
        """Return `text` with key-looking strings and credential-named values masked."""
        # No built-in rule matches fewer characters; a user's pattern may ("\b\d{4}\b").
        if not self.bodies or (len(text) < _SHORTEST_SECRET and not self._has_extra):
            return text
        lowered = text.lower()
        # The automaton finds where a key can start (nowhere, usually) in fewer ns than the 19
        # substring tests that once decided whether to ask it, at every length.
        masked = self._masked_keys(text, lowered)
        if masked is not text:
            text, lowered = masked, masked.lower()
        if _may_hold_pair(lowered):
            text = _masked_pairs(text, lowered)
        if may_hold_multipart(lowered):
            text = mask_multipart_fields(text, _is_secret_name, MASK)
        if "=" in text and has_query_pair(text):
            text = QUERY_PAIR.sub(lambda m: m.group("head") + MASK, text)
        # `%3Ftoken%3D...` in an encoded URL (`%253F...%253D` in one encoded twice)
        if "%3D" in text or "%3d" in text or "%253D" in text or "%253d" in text:
            text = _ENCODED_QUERY_PAIR.sub(lambda m: m.group("head") + MASK, text)
        # `?api%5Fkey=`, `api_key[]=`: a name holding `%XX` or ending in `]` (`_encoded_names`)
        if "=" in text and ("%" in text or "]=" in text):
            text = mask_encoded_names(text, _ANY_SECRET_NAME, MASK)
        # postgres://user:password@db, redis://token@host, and the same percent-encoded
        if ("://" in text and "@" in text) or may_hold_encoded_url(text):
            text = mask_url_credentials(text, MASK)
        return text

    def _masked_keys(self, text: str, lowered: str) -> str:
        """`self._keys.sub(MASK, text)` (`text` itself when nothing matched).

        With the default patterns, they are tried only where one can start (`_key_starts`):
        the alternation's own search tries every position, and its lookbehind keeps the regex
        engine from skipping any, about 30 µs a kilobyte. Taken left to right, each match
        where the search would find it, the result is the same. (`lowered` must be as long as
        `text`: `str.lower()` lengthens only U+0130, which goes the search's way.)
        """
        if not self._has_extra:
            starts = _key_starts(text, lowered)
            if not starts:
                return text  # the usual case: no pattern can match anywhere
        if self._has_extra or "\u0130" in text:
            masked = self._keys.sub(_key_mask, text)
            return text if masked == text else masked
        return sub_at(self._keys, text, starts, _key_mask)

    def body(self, data: bytes | None) -> bytes | None:
        """Redact a raw body if it is UTF-8 text; other bytes are returned unchanged."""
        if not self.bodies or not data:
            return data
        if data[:2] == b"\x1f\x8b":
            return data  # gzip: scrubbed after decoding, by the transformer's redaction
        if not (
            self._has_extra
            or _may_hold_key_bytes(data)
            or _may_hold_pair_bytes(data)
            # JSON escapes of ASCII hide the words above (`"\u0070assword"`, `"\u0073k-..."`):
            # parsed, they show (trial 248: kept at publish, in tail and replay, masked by
            # sinks). Only `\u00..`: the escapes of other characters, which every non-ASCII
            # text JSON-encoded holds, hide no credential.
            or b"\\u00" in data
            or b"\\/" in data
            or (b"://" in data and b"@" in data)
            or b"%40" in data  # a percent-encoded URL (`may_hold_encoded_url`)
            or (b"%3" in data and (b"@" in data or b"%3D" in data or b"%3d" in data))
            or b"%25" in data  # encoded twice: `%2540`, `%253D`
        ):
            return data  # the usual case on the publish path: no decoding, no copy
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return self._latin1_bytes(data)
        cleaned = self._json_body(text)
        if cleaned is None:
            cleaned = self.text(text)
        return data if cleaned == text else cleaned.encode("utf-8")

    def _json_body(self, text: str) -> str | None:
        """A JSON body masked as sinks' payloads are, by the walk of the parsed JSON (a number
        or an object under a credential name, camelCase names such as `secretKey`, every
        string by the text rules): `text` itself when nothing is masked, else re-encoded
        compactly. None when `text` is not JSON (the text rules then read it as text).

        `tail` and bodies masked at `publish()` once got the text rules over the raw text
        only, which showed what sinks mask; and those rules read text, not JSON, so an escape
        could end a value too early and break the body."""
        if text.lstrip()[:1] not in ("{", "["):
            return None
        try:
            value = json.loads(text)
        except ValueError:
            return None
        if not self._has_extra and needs_no_redaction(value):
            return text  # the gate: the usual case, one pass over the serialised parts
        walked = self.json(value)
        if walked == value:
            return text
        try:
            # Strict JSON: a number beyond a float (1e400) would come out as `Infinity`, which
            # Go's decoder (and any strict parser) refuses.
            encoded = json.dumps(walked, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        except ValueError:
            return MASK  # the walk masked something the text cannot show masked: all of it
        if not encoded.isascii():
            try:
                encoded.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate the body escaped (`"\udc80"`)
                return json.dumps(walked, separators=(",", ":"))
        return encoded

    def _latin1_bytes(self, data: bytes) -> bytes:
        """`data`, which is not UTF-8 (one stray byte is enough: a Latin-1 `é`), with what the
        text rules find masked: read as Latin-1, one character per byte, every ASCII credential
        is where it was, and the bytes around it come back unchanged."""
        text = data.decode("latin-1")
        cleaned = self.text(text)
        return data if cleaned == text else cleaned.encode("latin-1", errors="replace")

    def _binary_body(self, value: dict[str, Any]) -> dict[str, Any]:
        """A body the transformer kept as base64 (`{"base64": ..., "content_type": ...}`:
        not UTF-8), with its bytes redacted as `body()` does, through Latin-1. Base64 hides a
        credential from every text rule, and a text body with one stray byte is kept so."""
        encoded = value["base64"]
        try:
            raw = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError, TypeError):
            return {k: self.json(v) for k, v in value.items()}  # not such a body after all
        cleaned = self._latin1_bytes(raw) if raw else raw
        if cleaned is not raw:
            encoded = base64.b64encode(cleaned).decode("ascii")
        return {k: encoded if k == "base64" else self.json(v) for k, v in value.items()}

    def event(self, event: Event) -> Event:
        """Return `event` with sensitive headers masked, and its path (a query string may
        carry `api_key=...`) and bodies scrubbed.

        Used at `publish()` when `EVENTBUS_REDACT_ON_PUBLISH` is on, and by `tail` and `replay`
        as they print. Compressed bodies are left as they are here (a response body with a
        `Content-Encoding` other than `identity`, a gzip request body): the dispatcher scrubs
        them after decoding. Masking the bytes of one corrupted it: a short brotli body keeps
        its text as it is, and was masked in place (trial 248).
        """
        headers = event.response_headers
        new_headers = self._event_headers(headers)
        req = self.body(event.request_body)
        resp = event.response_body
        if not (_encoded(headers) and not is_utf8(resp)):
            # A body the header calls compressed but which is UTF-8 text (a proxy that
            # decoded it and kept the header, a short brotli body's plain text, a bogus
            # coding) is text to scrub: left whole, `tail` printed its credentials (review
            # 252). Compressed bytes are not UTF-8 (brotli's and deflate's first byte, gzip's
            # magic), and are not printed as they are either.
            resp = self.body(resp)
        path = self.text(event.path)
        if (
            new_headers is headers
            and req is event.request_body
            and resp is event.response_body
            and path == event.path
        ):
            return event
        return event.replace(
            path=path, response_headers=new_headers, request_body=req, response_body=resp
        )

    def _event_headers(
        self, headers: Mapping[str, tuple[str, ...]] | None
    ) -> Mapping[str, Iterable[str]] | None:
        """`headers` with sensitive ones masked and the text rules applied to the others' values
        (a `Location` with `user:password@` or `?token=`), as sinks' payloads have them;
        `headers` itself when nothing changes."""
        if headers is None:
            return None
        out: dict[str, list[str]] = {}
        changed = False
        for name, values in headers.items():
            if self._masks_header(name):
                out[name] = [MASK for _ in values]
                changed = True
            else:
                out[name] = cleaned = [self.text(v) for v in values]
                changed = changed or cleaned != list(values)
        return out if changed else headers

    def _masks_header(self, name: str) -> bool:
        """Whether header `name`'s values are masked: a credential header, or one of
        `extra_headers`."""
        return is_credential_header(name) or name.lower() in self.extra_headers

    def json(self, value: Any) -> Any:
        """Return a copy of parsed JSON with credential-named fields and key strings masked.

        Header mappings (fields named `headers`, `response_headers`, `request_headers`) are
        redacted as headers, also when body redaction is off.
        """
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            if self.bodies and is_binary_body(value):
                return self._binary_body(value)
            out: dict[str, Any] = {}
            for k, v in value.items():
                if v is None or v is True or v is False:
                    out[k] = v  # nothing to mask, whatever the name
                elif self.bodies and isinstance(k, str) and _is_secret_name(k) and _holds_secret(v):
                    out[k] = MASK  # the whole value, whatever its type
                elif type(v) in (int, float):
                    out[k] = v  # the common case, without a recursive call
                elif type(v) is str:
                    out[k] = self.text(v)
                elif isinstance(k, str) and k.lower() in _HEADER_FIELDS and isinstance(v, dict):
                    out[k] = self._header_dict(v)
                else:
                    out[k] = self.json(v)
            return out
        if isinstance(value, list):
            return [self.json(v) for v in value]
        return value

    def payload(self, value: Any) -> Any:
        """What `json(value)` returns, faster: the dispatcher's redaction of each payload.

        With the default rules (no extra patterns, bodies on), the parts of a payload are tested
        in one pass over their orjson serialisation (see `_gate`); parts no rule would change
        are not copied, so the result may share them with `value` (sinks and the transformer
        must not change payloads in place). Anything else goes the way of `json()`, as does
        every payload of a subclass (which may have rules of its own).
        """
        if self._has_extra and type(value) is dict and _is_stamp(value.get("timestamp")):
            # The dispatch time the transformer wrote holds no secret, and a user's pattern
            # (`\b\d{4}\b` for PINs) made it `[REDACTED]-12-07T...`, no date a sink can read
            # (trial 213): kept as it is, in its place.
            masked = self.json({k: v for k, v in value.items() if k != "timestamp"})
            return {k: value[k] if k == "timestamp" else masked[k] for k in value}
        if (
            type(value) is not dict
            or type(self) is not Redactor
            or not self.bodies
            or self._has_extra
        ):
            return self.json(value)
        # Fields whose name is neither a credential's nor a header mapping's ("plain", as
        # most are: the same dozen names come with every payload) go to the gate as they are,
        # found by set operations; each of the others, and each name not seen before, takes
        # the branch its value's type picks. Numbers, None and booleans go to the gate too:
        # their JSON holds nothing it looks for.
        plain = self._plain_fields
        special = value.keys() - plain
        out: dict[str, Any] = dict(value)
        if special:
            rest = dict(value)
            for k in special:
                del rest[k]
            pending: list[Any] = list(rest.values())
        else:
            pending = list(out.values())
        for k in special:
            v = out[k]
            kind = type(v)
            if isinstance(k, str) and _is_secret_name(k) and _holds_secret(v):
                out[k] = MASK
                continue
            if kind is dict and isinstance(k, str) and k.lower() in _HEADER_FIELDS:
                out[k] = self._header_dict_fast(v, pending)
                continue
            pending.append(v)
            if (
                type(k) is str  # only names that are plain str: a subclass may behave otherwise
                and len(plain) < _FIELD_NAMES_KEPT
                and not _is_secret_name(k)
                and k.lower() not in _HEADER_FIELDS
            ):
                plain.add(k)
        if pending and not needs_no_redaction(pending):
            # Something may need masking: the careful walk, into the parts the gate does not
            # clear only (a credential in the request body leaves the response as it is).
            return self._json_gated(value, {})
        return out

    def _json_gated(self, value: Any, memo: dict[int, tuple[str, str]]) -> Any:
        """`json(value)` for the default rules, where each list or dict inside `value` that
        the gate clears is kept as it is instead of walked (`value` itself is walked).

        The branches are `json()`'s own: a part the gate clears is one `json()` would return
        unchanged (or an equal copy of), so the result is the same.
        """
        if isinstance(value, dict):
            if is_binary_body(value):
                return self._binary_body(value)
            out: dict[str, Any] = {}
            for k, v in value.items():
                kind = type(v)
                if v is None or v is True or v is False:
                    out[k] = v
                elif isinstance(k, str) and _is_secret_name(k) and _holds_secret(v):
                    out[k] = MASK
                elif kind is int or kind is float:
                    out[k] = v
                elif kind is str:
                    # A payload holds its path twice (also in `metadata`), and a path with
                    # `?key=` is the usual reason for the walk: each string object is scrubbed
                    # once per payload (the memo holds it, so no other string takes its id).
                    done = memo.get(id(v))
                    if done is None:
                        done = memo[id(v)] = (v, self.text(v))
                    out[k] = done[1]
                elif isinstance(k, str) and k.lower() in _HEADER_FIELDS and isinstance(v, dict):
                    pending: list[Any] = []
                    headers = self._header_dict_fast(v, pending)
                    cleared = not pending or needs_no_redaction(pending)
                    out[k] = headers if cleared else self._header_dict(v)
                elif (kind is dict or kind is list) and needs_no_redaction(v):
                    out[k] = v
                else:
                    out[k] = self._json_gated(v, memo)
            return out
        if isinstance(value, list):
            return [
                v
                if (type(v) is dict or type(v) is list) and needs_no_redaction(v)
                else self._json_gated(v, memo)
                for v in value
            ]
        if isinstance(value, str):
            return self.text(value)
        return value

    def _header_dict_fast(self, headers: dict[str, Any], pending: list[Any]) -> dict[str, Any]:
        """`_header_dict`, the values of harmless headers left for the gate (in `pending`)."""
        extra = self.extra_headers
        # The verdict per header name as spelled, remembered: the same dozen names come with
        # every event. Kept with the extra names it was made for, so a changed
        # `extra_headers` starts it afresh; bounded, for traffic with ever new names.
        verdicts = self._header_verdicts
        if verdicts[0] is not extra:
            verdicts = self._header_verdicts = (extra, {}, set())
        _, known, masked_names = verdicts
        if headers.keys() <= known.keys():
            # Every name judged before (the usual case): copied, and the few to mask found, by
            # set operations rather than a Python loop over the headers. The masks go to the
            # gate with the other values: "[REDACTED]" holds nothing it looks for.
            out: dict[str, Any] = dict(headers)
            for name in out.keys() & masked_names:
                v = out[name]
                out[name] = [MASK for _ in v] if isinstance(v, list) else MASK
            pending.extend(out.values())
            return out
        out = {}
        for name, v in headers.items():
            masked = known.get(name)
            if masked is None:
                masked = self._masks_header(name)
                if type(name) is str and len(known) < _HEADER_NAMES_KEPT:
                    # Names that are plain str only, as for a payload's fields. The set first:
                    # another thread that finds the name known must find it among the masked.
                    if masked:
                        masked_names.add(name)
                    known[name] = masked
            if masked:
                out[name] = [MASK for _ in v] if isinstance(v, list) else MASK
            else:
                out[name] = v
                pending.append(v)
        return out

    def _header_dict(self, headers: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, v in headers.items():
            if self._masks_header(name):
                out[name] = [MASK for _ in v] if isinstance(v, list) else MASK
            else:
                out[name] = self.json(v)
        return out


class _NoRedaction(Redactor):
    """Rules that mask nothing: what `NO_REDACTION` is."""

    def __init__(self) -> None:
        super().__init__(bodies=False)

    def headers(self, headers: Mapping[str, Iterable[str]] | None) -> dict[str, list[str]] | None:
        """A copy of `headers`, nothing masked."""
        return None if headers is None else {k: list(v) for k, v in headers.items()}

    def text(self, text: str) -> str:
        """`text` unchanged."""
        return text

    def body(self, data: bytes | None) -> bytes | None:
        """`data` unchanged."""
        return data

    def event(self, event: Event) -> Event:
        """`event` unchanged."""
        return event

    def json(self, value: Any) -> Any:
        """`value` unchanged."""
        return value

    def __repr__(self) -> str:
        return "NO_REDACTION"


NO_REDACTION: Final[Redactor] = _NoRedaction()
"""Redaction turned off, said explicitly: `Dispatcher(..., redactor=NO_REDACTION)` hands
payloads to sinks and dead letters as the transformer made them (what `EVENTBUS_REDACT=false`
selects). `redactor=None` means the default rules, never none. Log lines are scrubbed anyway."""

_DEFAULT_REDACTOR: Final = Redactor()
