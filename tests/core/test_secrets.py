"""Credential masking for URLs and free text."""

from __future__ import annotations

import pydantic
import pytest

from eventbus_core import RedactedURL, redact_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://user:pw@host:6379/0", "redis://user:***@host:6379/0"),
        ("redis://:pw@host", "redis://:***@host"),
        ("redis://tokenonly@host", "redis://***@host"),
        ("redis://host:6379/0", "redis://host:6379/0"),
        ("unix:///tmp/r.sock?password=pw&db=1", "unix:///tmp/r.sock?password=***&db=1"),
        (
            "error connecting to rediss://a:b@h:1 refused",
            "error connecting to rediss://a:***@h:1 refused",
        ),
        # A raw `@` in the password (or the user): the whole password goes, up to the last
        # `@` before the host, as URL parsers read it (it showed "ss" here).
        ("redis://u:p@ss@host:6379/0", "redis://u:***@host:6379/0"),
        ("nats://user@corp:pa@ss@h:4222 x", "nats://user@corp:***@h:4222 x"),
        ("git+ssh://git@github.com:org/repo", "git+ssh://***@github.com:org/repo"),
        ("see https://a.com and bob@x.org", "see https://a.com and bob@x.org"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_redacted_url_is_a_usable_str_with_a_safe_repr() -> None:
    url = RedactedURL("redis://u:topsecret@h:6379/0")
    assert url == "redis://u:topsecret@h:6379/0"
    assert "topsecret" not in repr(url) and "topsecret" not in url.redacted


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        # Free-text masking stops at a space or a '/': redis-py takes such passwords as they are.
        ("redis://:top secret@h:6379/0", "redis://:***@h:6379/0"),
        ("redis://u:top/secret@h:6379/0", "redis://u:***@h:6379/0"),
        ("redis://u:top@secret@h/0", "redis://u:***@h/0"),
        ("redis://top secret@h", "redis://***@h"),
        ("redis://u:pw@h/0?password=topsecret", "redis://u:***@h/0?password=***"),
        ("redis://h:6379/0", "redis://h:6379/0"),
        # No scheme, or a mistyped one: the URLs an error message quotes back (helper-115).
        ("admin:PW20@collector:4318", "admin:***@collector:4318"),
        ("https//user:PW25@api.example/v1/log", "https//user:***@api.example/v1/log"),
        ("redis//default:PW31@127.0.0.1:6379/11", "redis//default:***@127.0.0.1:6379/11"),
        # A scheme with a slash too few is kept as typed, the typo shown (trial 204).
        ("http:/u:PW@h.example/x", "http:/***@h.example/x"),
        ("http:/u:PW@h/x", "***"),  # no telling the host from the password: all masked
        ("rediss:/:PW@127.0.0.1:26204/0", "rediss:/***@127.0.0.1:26204/0"),
        ("redis:/PWTOKEN@h:6379", "redis:/***@h:6379"),
        ("admin:/Pa:ss@collector:4318", "admin:/***@collector:4318"),  # review 210
        ("redis:///u:p:w@h.example:1/0", "redis://***@h.example:1/0"),
        ("PWTOKEN@host:4318", "***@host:4318"),
        ("u:PW@x@host.local", "u:***@host.local"),
        ("u:PW@x@host", "***"),
        ("collector:4318/v1/traces", "collector:4318/v1/traces"),
        # Neither scheme nor '@': an address is shown (a mistake worth seeing), anything else
        # may be a password or token pasted on its own (trial 123).
        ("Hunter2Secret", "***"),
        ("sk-AbCdEf123", "***"),
        ("pa!ss", "***"),
        ("localhost:6379", "localhost:6379"),
        ("redis-primary:6379", "redis-primary:6379"),
        ("10.0.0.1:6379/0", "10.0.0.1:6379/0"),
        ("[::1]:6379", "[::1]:6379"),
        ("redis.example.com:6380", "redis.example.com:6380"),
        ("redis:6379", "redis:6379"),
        ("hunter2", "***"),  # a name without a dot or a port: no telling it from a password
        ("sk-proj-abc123", "***"),
        ("9f1c2a4e-1b2c-4d5e-8f90-123456789abc", "***"),
        ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abcDEF123", "***"),
        ("p@ssw0rd", "***"),
        ("redis//host:6379", "redis//host:6379"),
    ],
)
def test_a_redacted_url_masks_any_password_it_holds(url: str, shown: str) -> None:
    assert RedactedURL(url).redacted == shown and repr(RedactedURL(url)) == repr(shown)


def test_settings_dumped_as_json_mask_the_password() -> None:
    # model_dump_json() (what structured loggers write) showed it in clear, while the repr
    # and model_dump() masked it.
    class Settings(pydantic.BaseModel):
        url: RedactedURL

    settings = Settings(url=RedactedURL("nats://alice:S3cr3tPw@h:4222"))
    assert settings.model_dump_json() == '{"url":"nats://alice:***@h:4222"}'
    assert settings.model_dump(mode="json") == {"url": "nats://alice:***@h:4222"}
    assert "S3cr3tPw" not in repr(settings.model_dump())
    assert str(settings.model_dump()["url"]) == "nats://alice:S3cr3tPw@h:4222"  # to connect with
    # A list of servers keeps every server (the whole list read as one URL kept the last).
    servers = Settings(url=RedactedURL("nats://a:pw1@h1:4222,nats://h2:4222,tls://b:pw2@h3:1"))
    assert servers.model_dump(mode="json") == {
        "url": "nats://a:***@h1:4222,nats://h2:4222,tls://b:***@h3:1"
    }


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("nats://a:4222,nats://u:pw@b:4222", "nats://a:4222,nats://u:***@b:4222"),
        ("nats://u:pw@a:4222,nats://u:pw@b:4222", "nats://u:***@a:4222,nats://u:***@b:4222"),
    ],
)
def test_the_repr_of_a_list_of_servers_keeps_every_server(url: str, shown: str) -> None:
    # repr() and .redacted read the list as one URL: 'nats://a:***@b:4222' (helper-109).
    assert RedactedURL(url).redacted == shown and repr(RedactedURL(url)) == repr(shown)


def test_urls_in_text_are_matched_where_the_pattern_would_match_them() -> None:
    # `mask_url_credentials` tries the URL pattern only at the scheme before each `://`: the
    # same matches as the pattern's own sub(), on text built to tell them apart (schemes with
    # digits and signs, runs that start with a digit, the characters that match ASCII letters
    # ignoring case, several URLs, overlaps, colons and slashes out of place).
    import random
    import re

    from eventbus_core.redact._secrets import URL_IN_TEXT, _sub_at_schemes

    rng = random.Random(9)
    parts = ["http", "HTTPS", "a1+b.c-d", "1x", "9", "\u212a", "\u017f", "\u0131", "\u0130",
             "://", "://", ":", "/", "@", "@", " ", "u", "pw", "***", "host", ".", "-", "é",
             "\n", ":///", "a://b@"]  # fmt: skip

    def mark(match: re.Match[str]) -> str:
        return f"<{match.group(1)}|{match.group(2)}|{match.group(3)}>"

    matched = 0
    for _ in range(20000):
        text = "".join(rng.choice(parts) for _ in range(rng.randint(0, 10)))
        expected = URL_IN_TEXT.sub(mark, text)
        assert _sub_at_schemes(mark, text) == expected, text
        matched += expected != text
    assert matched > 2000  # the texts did hold URLs the pattern matches


def test_a_password_holding_a_comma_is_masked_in_a_list_of_servers() -> None:
    # Read as two servers, the part before the comma showed the password up to it (helper-111).
    url = RedactedURL("nats://a:4222,nats://alice:hunter,2@b:4222")
    assert url.redacted == "nats://a:4222,nats://alice:***@b:4222" and "hunter" not in repr(url)
