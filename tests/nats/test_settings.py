"""`NatsSettings`, the options handed to nats-py, the factory, and what may be imported.

No server is needed here.
"""

from __future__ import annotations

import ast
import re
import shutil
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from eventbus_core import (
    BackendUnavailableError,
    EventBusSettings,
    SettingsError,
    create_bus,
    get_registry,
)
from eventbus_core.testing import make_event
from eventbus_nats import NATS_ENV_VARS, NatsEventBus, NatsSettings
from eventbus_nats._layout import StreamLayout, subject_matches
from eventbus_nats._options import ConnectOptions, safe_error
from eventbus_nats._settings import check_servers

ROOT = Path(__file__).resolve().parent.parent.parent
PACKAGE = ROOT / "eventbus_nats" / "src" / "eventbus_nats"


def test_the_nats_tools_names_are_not_read_as_eventbus_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # NATS_STREAM, NATS_SUBJECT, NATS_GROUP, NATS_REPLICAS (the fields' names) moved where
    # eventbus wrote and which group it read, without a word (trial 125).
    for name, value in {
        "NATS_STREAM": "OTHER",
        "NATS_SUBJECT": "other.subject",
        "NATS_GROUP": "someone-elses",
        "nats_replicas": "0",
    }.items():
        monkeypatch.setenv(name, value)
    s = EventBusSettings(backend="nats").plugin_settings(NatsSettings)
    assert (s.nats_stream, s.nats_subject, s.nats_group, s.nats_replicas) == (
        "LLM_PROXY_EVENTS",
        "llm-proxy.events",
        "llm-proxy-dispatchers",
        1,
    )
    monkeypatch.setenv("NATS_USER", "who")  # the nats tool's own names stay this backend's
    monkeypatch.setenv("EVENTBUS_NATS_STREAM", "MINE")
    assert (NatsSettings().nats_user, NatsSettings().nats_stream) == ("who", "MINE")


def test_defaults_mirror_the_redis_log() -> None:
    s = NatsSettings()
    assert str(s.nats_url) == "nats://127.0.0.1:4222"
    assert (s.nats_stream, s.nats_subject, s.nats_group) == (
        "LLM_PROXY_EVENTS",
        "llm-proxy.events",
        "llm-proxy-dispatchers",
    )
    assert (s.nats_max_msgs, s.nats_max_bytes, s.nats_max_age) == (10_000, 0, 86_400.0)
    assert (s.nats_replicas, s.nats_ack_wait, s.nats_max_deliveries) == (1, 30.0, 5)
    config = StreamLayout.from_settings(s).stream_config()
    assert (config.max_msgs, config.max_bytes, config.max_age) == (10_000, -1, 86_400.0)
    assert config.subjects == ["llm-proxy.events"]
    assert StreamLayout.from_settings(s).dead_config().subjects == ["dead.llm-proxy.events"]


def test_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "NATS_URL": "nats://a:4222, nats://b:4222",
        "EVENTBUS_NATS_STREAM": "S1",
        "EVENTBUS_NATS_SUBJECT": "a.b",
        "EVENTBUS_NATS_MAX_MSGS": "0",
        "EVENTBUS_NATS_MAX_BYTES": "1048576",
        "EVENTBUS_NATS_MAX_AGE": "60",
        "EVENTBUS_NATS_REPLICAS": "3",
        "EVENTBUS_NATS_GROUP": "g1",
        "EVENTBUS_NATS_ACK_WAIT": "5",
        "EVENTBUS_NATS_MAX_DELIVERIES": "2",
        "EVENTBUS_NATS_DUPLICATE_WINDOW": "300",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    s = NatsSettings()
    assert s.servers == ["nats://a:4222", "nats://b:4222"]
    layout = StreamLayout.from_settings(s)
    assert (layout.stream, layout.subject, layout.replicas) == ("S1", "a.b", 3)
    config = layout.stream_config()
    assert (config.max_msgs, config.max_bytes, config.num_replicas) == (-1, 1_048_576, 3)
    # The server refuses a duplicate window longer than max_age: it is capped there.
    assert config.duplicate_window == 60
    assert (s.nats_group, s.nats_ack_wait, s.nats_max_deliveries) == ("g1", 5.0, 2)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("EVENTBUS_NATS_MAX_MSGS", "many", "valid integer"),
        ("EVENTBUS_NATS_MAX_AGE", "-1", "greater than or equal to 0"),
        ("EVENTBUS_NATS_REPLICAS", "7", "less than or equal to 5"),
        ("EVENTBUS_NATS_STREAM", "a.b", "not a valid JetStream name"),
        ("EVENTBUS_NATS_GROUP", "my group", "not a valid JetStream name"),
        ("EVENTBUS_NATS_SUBJECT", "llm.>", "not a literal NATS subject"),
        ("EVENTBUS_NATS_SUBJECT", "a..b", "not a literal NATS subject"),
        # Another bus's dead-letter subject: its dead letters then failed (trial 192).
        ("EVENTBUS_NATS_SUBJECT", "dead.llm.events", "which eventbus keeps for dead letters"),
        ("NATS_URL", "redis://u:hunter2@host:6379", "is not a NATS URL"),
        ("NATS_URL", "nats://a:4222,,nats://b:4222", "no empty entry"),
        ("EVENTBUS_NATS_ACK_WAIT", "0", "greater than 0"),
        # nats-py would retry these for ever, saying only that it cannot connect.
        ("NATS_URL", "nats://127.0.0.1:notaport", "has no valid port"),
        ("NATS_URL", "nats://127.0.0.1:99999", "has no valid port"),
        ("NATS_URL", "nats://a:4222,b:0", "has no valid port"),
        ("NATS_URL", "nats://:4222", "names no host"),
        ("NATS_URL", "nats://u:hunter2@[::1:4222", "Invalid IPv6 URL; write an IPv6 address in"),
        ("NATS_URL", "nats://", "names no host"),
        ("NATS_URL", "nats://u:hunter2@", "names no host"),
        ("NATS_URL", "nats://127.0.0.1 :4222", "holds whitespace"),
        # A password without a user: a fault of the plugin at start, exit 1 (trial 192).
        ("NATS_URL", "nats://:hunter2@127.0.0.1:4222", "name no user"),
        ("NATS_URL", "nats://@127.0.0.1:4222", "name no user"),
        ("NATS_URL", "nats://a:4222,tls://:hunter2@b:4222", "name no user"),
        # Ignored by nats-py, and printed as given, a token in the query too (trial 160).
        ("NATS_URL", "nats://127.0.0.1:4222/path", "has a path, query or fragment"),
        ("NATS_URL", "tls://127.0.0.1:4222?token=t160tok", "has a path, query or fragment"),
        ("NATS_URL", "nats://127.0.0.1:4222#t160tok", "has a path, query or fragment"),
        # JetStream takes int64 (durations in nanoseconds) and names of 255 characters: more
        # failed on the server, at run time, naming no variable.
        ("EVENTBUS_NATS_MAX_MSGS", str(2**63), "less than or equal to"),
        ("EVENTBUS_NATS_MAX_BYTES", str(2**63), "less than or equal to"),
        ("EVENTBUS_NATS_MAX_AGE", "1e10", "less than or equal to"),
        ("EVENTBUS_NATS_ACK_WAIT", "1e10", "less than or equal to"),
        ("EVENTBUS_NATS_DUPLICATE_WINDOW", "1e10", "less than or equal to"),
        ("EVENTBUS_NATS_STREAM", "S" * 251, "at most 250"),
        ("EVENTBUS_NATS_GROUP", "G" * 256, "at most 255"),
    ],
)
def test_invalid_values_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as info:
        NatsSettings()
    text = str(info.value)
    assert variable in text and message in text
    assert "t160tok" not in text
    assert "hunter2" not in text


def test_the_longest_names_and_limits_are_taken() -> None:
    NatsSettings(
        nats_stream="S" * 250,
        nats_group="G" * 255,
        nats_max_msgs=2**63 - 1,
        nats_max_age=9_223_372_036,
        nats_url="127.0.0.1:4222,nats://[::1]:4222,nats://host",
    )


def test_pairs_that_belong_together(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NATS_CERT", "/tmp/cert.pem")
    with pytest.raises(SettingsError, match="NATS_CERT and NATS_KEY go together"):
        NatsSettings()
    monkeypatch.delenv("NATS_CERT")
    monkeypatch.setenv("NATS_PASSWORD", "hunter2")
    with pytest.raises(SettingsError, match="without NATS_USER") as info:
        NatsSettings()
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    ("url", "given", "expected"),
    [
        ("nats://u:pw@h:1", {}, {"user": "u", "password": "pw"}),
        ("nats://u:pw@h:1,nats://u:pw@h:2,nats://h:3", {}, {"user": "u", "password": "pw"}),
        ("nats://tok@h:1", {}, {"token": "tok"}),
        ("nats://a:pw@h:1,nats://b:pw@h:2", {}, {}),  # each server keeps its own
        ("nats://h:1", {}, {}),
        ("nats://u:pw@h:1", {"user": "x", "password": "y"}, {"user": "x", "password": "y"}),
        ("nats://u:pw@h:1", {"token": "t"}, {"token": "t"}),
    ],
)
def test_credentials_in_the_url_go_to_every_server(
    url: str, given: dict[str, str], expected: dict[str, str]
) -> None:
    """nats-py sends a URL's credentials to that server only: those the cluster announces
    got none, so failover to them failed (trial 144; tests/nats/test_failover.py runs it)."""
    options = ConnectOptions(tuple(check_servers(url)), given)
    assert dict(options.auth) == expected
    assert "pw" not in repr(options) + repr(options.auth)


@pytest.mark.parametrize(
    ("env", "auth"),
    [
        ({"NATS_URL": "nats://alice:hunter2@127.0.0.1:4222"}, {"user": "alice"}),
        ({"NATS_USER": "bob", "NATS_PASSWORD": "s3cr3t-pass"}, {"user": "bob"}),
        ({"NATS_TOKEN": "t0ken-value"}, {"token": "t0ken-value"}),
    ],
)
def test_secrets_never_show(
    env: dict[str, str], auth: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # One way of signing in at a time: given twice, they are refused (trial 167).
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    s = NatsSettings()
    options = ConnectOptions.from_settings(s)
    assert auth.items() <= dict(options.auth).items()
    shown = " ".join([repr(s), str(s), repr(options), options.where, repr(vars(options))])
    for secret in ("hunter2", "s3cr3t-pass", "t0ken-value"):
        assert secret not in shown
    bus = NatsEventBus.from_settings(EventBusSettings(), s)
    try:
        assert "hunter2" not in repr(bus) and "hunter2" not in str(bus.stats())
        # What a debugger or an error reporter's dump of the object shows (trial 139), and of
        # a consumer's connection (trial 142).
        consumer = bus.consumer()
        dumped = repr(vars(bus)) + repr(vars(consumer._link.options))
        consumer.close()
        for secret in ("hunter2", "s3cr3t-pass", "t0ken-value"):
            assert secret not in dumped, dumped
    finally:
        bus.stop(0)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        # nats-py would connect to these as they are, and log and show them as they are.
        ("alice:hunter2@127.0.0.1:4222", "holds credentials but no scheme"),
        ("nats:/alice:hunter2@127.0.0.1:4222", "holds credentials but no scheme"),
        ("nats:alice:hunter2@127.0.0.1:4222", "holds credentials but no scheme"),
        ("nats://a:4222,hunter2@b:4222", "holds credentials but no scheme"),
        # What the usual masking cannot read as a password: a space, a '/' in it.
        ("nats://alice:hunter 2@127.0.0.1:4222", "holds whitespace"),
        ("nats://alice:hun/ter2@127.0.0.1:4222", "hold '/', '?' or '#'"),
        ("nats://alice:hun?ter2@127.0.0.1:4222", "hold '/', '?' or '#'"),
        ("nats://hun#ter2@127.0.0.1:4222", "hold '/', '?' or '#'"),
        ("nats://alice:hunter2@127.0.0.1:99999", "has no valid port"),
        ("redis://alice:hunter2@127.0.0.1:4222", "is not a NATS URL"),
        # A password holding ',' (commas separate servers): its part before the comma was
        # quoted as a server with no valid port (helper-111).
        ("nats://alice:hunter2,x@127.0.0.1:4222", "holds credentials but no scheme"),
        ("nats://a:4222,nats://alice:hunter,2@b:4222", "holds credentials but no scheme"),
    ],
)
def test_a_refused_url_never_shows_its_credentials(
    monkeypatch: pytest.MonkeyPatch, url: str, message: str
) -> None:
    monkeypatch.setenv("NATS_URL", url)
    with pytest.raises(SettingsError) as info:
        NatsSettings()
    assert "NATS_URL=" in str(info.value) and message in str(info.value)
    assert "hunter" not in str(info.value)
    # The constructor checks its url the same way (it would otherwise connect and show it).
    with pytest.raises(ValueError, match=r"^url ") as built:
        NatsEventBus(url)
    assert message in str(built.value)
    assert "hunter" not in str(built.value)


def test_a_mistyped_scheme_stays_in_sight_while_the_password_is_masked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # `nats//u:hunter2@host` was shown as `***@host`: the user could not see the typo, which
    # the hint then asked to mend (trial 121).
    monkeypatch.setenv("NATS_URL", "nats//u:hunter2@127.0.0.1:4222")
    with pytest.raises(SettingsError) as info:
        NatsSettings()
    assert "'nats//u:***@127.0.0.1:4222' holds credentials but no scheme" in str(info.value)
    assert "hunter2" not in str(info.value)
    # With a ',' in the password too, its part before the comma was shown (trial 122).
    monkeypatch.setenv("NATS_URL", "nats//u:hun,ter2@127.0.0.1:4222")
    with pytest.raises(SettingsError) as info:
        NatsSettings()
    assert "hun" not in str(info.value) and "ter2" not in str(info.value)
    assert "NATS_URL='nats//u:***@127.0.0.1:4222'" in str(info.value)


def test_an_at_sign_in_a_websocket_path_is_no_credential() -> None:
    # Only nats:// and tls:// servers are read as never having a path.
    assert check_servers("wss://host:443/ws@edge?x=1") == ["wss://host:443/ws@edge?x=1"]


def test_tls_files_are_checked_and_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NATS_CA", str(tmp_path / "missing.pem"))
    with pytest.raises(SettingsError, match=r"NATS_CA=.*no such file"):
        ConnectOptions.from_settings(NatsSettings())
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
         "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    monkeypatch.setenv("NATS_CA", str(cert))
    monkeypatch.setenv("NATS_CERT", str(cert))
    monkeypatch.setenv("NATS_KEY", str(key))
    options = ConnectOptions.from_settings(NatsSettings())
    assert options.auth["tls"].verify_mode.name == "CERT_REQUIRED"
    monkeypatch.setenv("NATS_KEY", str(cert))  # not a key
    with pytest.raises(SettingsError, match=r"NATS_CERT=.*NATS_KEY="):
        ConnectOptions.from_settings(NatsSettings())


def test_creds_file_must_exist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NATS_CREDS", str(tmp_path / "user.creds"))
    with pytest.raises(SettingsError, match=r"NATS_CREDS=.*no such file"):
        ConnectOptions.from_settings(NatsSettings())


def test_the_factory_registered_as_nats_builds_the_bus(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "nats" in get_registry().backends
    monkeypatch.setenv("LLM_PROXY_EVENT_BUS", "nats")
    monkeypatch.setenv("OBSERVABILITY_BUFFER_SIZE", "321")
    monkeypatch.setenv("EVENTBUS_STOP_TIMEOUT", "1.5")
    monkeypatch.setenv("EVENTBUS_NATS_STREAM", "FROM_ENV")
    monkeypatch.setenv("NATS_URL", "nats://127.0.0.1:1")  # nothing there: building must not block
    bus = create_bus()
    try:
        assert isinstance(bus, NatsEventBus)
        assert (bus.buffer_size, bus.stop_timeout, bus.layout.stream) == (321, 1.5, "FROM_ENV")
        bus.publish(make_event(1))
        assert bus.stats().published == 1
    finally:
        bus.stop(0.2)
    assert bus.stats().lost == 1 and bus.stats().published == 1


def test_every_setting_is_documented() -> None:
    text = (ROOT / "docs" / "backends" / "nats.md").read_text()
    rows = {
        m.group(1): m.group(2)
        for m in re.finditer(r"^\| `([A-Z0-9_]+)` \| `(\w+)` \|", text, re.MULTILINE)
    }
    missing = {f: v for f, v in NATS_ENV_VARS.items() if rows.get(v) != f}
    assert not missing, f"add these to docs/backends/nats.md (variable: field): {missing}"


def test_imports_only_the_public_api_of_eventbus_core() -> None:
    private: list[str] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            modules: list[str] = []
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                modules = [node.module]
                if node.module == "eventbus_core":
                    modules += [f"eventbus_core.{a.name}" for a in node.names]
            for name in modules:
                parts = name.split(".")
                if parts[0] == "eventbus_core" and any(p.startswith("_") for p in parts[1:]):
                    private.append(f"{path.name}:{node.lineno}: {name}")
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and isinstance(node.value, ast.Name)
                and node.value.id == "eventbus_core"
            ):
                private.append(f"{path.name}:{node.lineno}: eventbus_core.{node.attr}")
    assert not private, f"eventbus_nats uses private names of eventbus_core: {private}"
    assert any(PACKAGE.rglob("*.py"))


def _without_nkeys(monkeypatch: pytest.MonkeyPatch) -> None:
    """As where the nkeys package is not installed (whether it is here or not)."""
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "nkeys" else find_spec(name, *a),
    )


def test_a_creds_file_without_nkeys_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _without_nkeys(monkeypatch)
    creds = tmp_path / "user.creds"
    creds.write_text("-----BEGIN NATS USER JWT-----\n-----BEGIN USER NKEY SEED-----\n")
    monkeypatch.setenv("NATS_CREDS", str(creds))
    with pytest.raises(SettingsError, match=r"pip install 'eventbus-nats\[nkeys\]'"):
        ConnectOptions.from_settings(NatsSettings())


@pytest.mark.parametrize("content", ["", "garbage\n", "-----BEGIN USER NKEY SEED-----\nSUAx\n"])
def test_a_creds_file_that_holds_no_credentials_is_refused_naming_it(
    content: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Taken as it was; a server asking for none then took it silently, one asking for some
    # "refused the credentials" (trial 167). The content is never shown.
    creds = tmp_path / "user.creds"
    creds.write_text(content)
    monkeypatch.setenv("NATS_CREDS", str(creds))
    with pytest.raises(SettingsError, match=r"NATS_CREDS=.* is not a NATS credentials file") as e:
        ConnectOptions.from_settings(NatsSettings())
    assert "SUAx" not in str(e.value)
    monkeypatch.setenv("NATS_CREDS", str(tmp_path))
    with pytest.raises(SettingsError, match=r"NATS_CREDS=.* is a directory"):
        ConnectOptions.from_settings(NatsSettings())


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"NATS_USER": "u", "NATS_TOKEN": "t"}, "NATS_USER and NATS_TOKEN are set together"),
        (
            {"NATS_URL": "nats://u:pw@127.0.0.1:4222", "NATS_USER": "o", "NATS_PASSWORD": "x"},
            "NATS_URL holds credentials .* and NATS_USER sets them too",
        ),
        (
            {"NATS_URL": "nats://tok@127.0.0.1:4222", "NATS_TOKEN": "t"},
            "NATS_URL holds credentials .* and NATS_TOKEN sets them too",
        ),
    ],
)
def test_credentials_given_twice_are_refused_naming_both(
    env: dict[str, str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The variables had won silently over the URL's, and a refusal then blamed the URL (167).
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=message) as raised:
        NatsSettings()
    assert "pw" not in str(raised.value).replace("NATS_PASSWORD", "")


def test_tls_files_with_a_ws_server_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # nats-py reaches a ws:// server without TLS whatever the TLS settings say.
    ca = tmp_path / "ca.pem"
    ca.write_text("not read: refused first")
    monkeypatch.setenv("NATS_URL", "ws://127.0.0.1:8080")
    monkeypatch.setenv("NATS_CA", str(ca))
    with pytest.raises(SettingsError, match=r"NATS_CA asks for TLS.*ws://.*use wss://"):
        ConnectOptions.from_settings(NatsSettings())
    monkeypatch.delenv("NATS_CA")
    monkeypatch.setenv("NATS_URL", "tls://127.0.0.1:4222,ws://127.0.0.1:8080")
    with pytest.raises(SettingsError, match=r"NATS_URL mixes servers with TLS.*use wss://"):
        ConnectOptions.from_settings(NatsSettings())
    with pytest.raises(ValueError, match=r"connect_options\['tls'\].*ws://.*wss://"):
        NatsEventBus("ws://127.0.0.1:8080", connect_options={"tls": ssl.create_default_context()})


@pytest.mark.parametrize(
    ("pattern", "subject", "taken"),
    [
        ("a.b", "a.b", True),
        ("a.b", "a.b.c", False),
        ("a.*", "a.b", True),
        ("a.*", "a.b.c", False),
        ("a.>", "a.b.c", True),
        ("a.>", "a", False),
        (">", "a", True),
        ("*.b", "a.b", True),
        ("a.*.c", "a.x.d", False),
        ("a.b.c", "a.b", False),
    ],
)
def test_stream_subjects_are_matched_as_nats_matches_them(
    pattern: str, subject: str, taken: bool
) -> None:
    assert subject_matches(pattern, subject) is taken


def test_from_settings_with_the_plugins_own_settings_class_names_eventbus_settings() -> None:
    with pytest.raises(TypeError, match=r"takes an eventbus_core\.EventBusSettings") as info:
        NatsEventBus.from_settings(NatsSettings())  # type: ignore[arg-type]
    assert "NatsEventBus.from_settings()" in str(info.value)


@pytest.mark.parametrize("value", ["1", "10", "65535"])
def test_a_max_bytes_too_small_for_the_events_is_refused(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # EVENTBUS_NATS_MAX_BYTES=10 was accepted: the server acknowledged every event and removed
    # it at once; publish exited 0, a consumer group read nothing and counted nothing.
    monkeypatch.setenv("EVENTBUS_NATS_MAX_BYTES", value)
    with pytest.raises(SettingsError, match="EVENTBUS_NATS_MAX_BYTES") as info:
        NatsSettings()
    assert "at least 65536, or 0 for no limit" in str(info.value)
    monkeypatch.setenv("EVENTBUS_NATS_MAX_BYTES", "65536")
    assert NatsSettings().nats_max_bytes == 65536


@pytest.mark.parametrize(
    "variable",
    ["EVENTBUS_NATS_MAX_AGE", "EVENTBUS_NATS_DUPLICATE_WINDOW", "EVENTBUS_NATS_ACK_WAIT"],
)
def test_a_duration_too_short_for_nats_is_refused(
    variable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 1e-10 s became 0 ns: a stream keeping events for ever, a consumer with the server's 30 s.
    monkeypatch.setenv(variable, "0.0000000001")
    with pytest.raises(SettingsError, match=variable) as info:
        NatsSettings()
    assert "at least 0.001 s" in str(info.value)
    monkeypatch.setenv(variable, "0.001")
    NatsSettings()
    # The same given in code, to the constructor (no server is asked).
    argument = variable.removeprefix("EVENTBUS_NATS_").lower()
    with pytest.raises(ValueError, match=f"{argument}: .*at least 0.001 s"):
        NatsEventBus("nats://127.0.0.1:1", stream="T_SHORT", subject="t.short", **{argument: 1e-10})


def test_a_wait_that_ran_out_never_shows_a_negative_time() -> None:
    # "--wait-for-backend 0.000000001" said "no answer ... within -1.43e-06 s" (an outside trial).
    import socket

    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, and never says INFO
        port = silent.getsockname()[1]
        bus = NatsEventBus(f"nats://127.0.0.1:{port}", stream="T_NEG", subject="t.neg")
        try:
            with pytest.raises(BackendUnavailableError) as info:
                bus.check(-0.001)
            assert "within -" not in str(info.value), info.value
        finally:
            bus.stop(1)


@pytest.mark.parametrize(
    ("keywords", "message"),
    [
        ({"max_age": float("nan")}, "max_age: nan s: give a finite number of seconds"),
        ({"max_age": float("inf")}, "max_age: inf s: give a finite number"),
        ({"max_age": 9223372037.0}, "max_age: 9223372037.0 s: give a finite number"),
        ({"duplicate_window": float("nan")}, "duplicate_window: nan s"),
        ({"max_msgs": 2**63}, "max_msgs must be"),
        ({"max_bytes": 10}, "max_bytes: 10 bytes cannot hold the events"),
        ({"max_deliveries": 2**63}, "max_deliveries must be"),
        # A range check passed 2.5, 3.0 and True; '3' raised a bare TypeError (trial 183).
        ({"replicas": 2.5}, r"replicas must be an int from 1 to 5 \(JetStream's limit\), got 2.5"),
        ({"replicas": 3.0}, "replicas must be an int"),
        ({"replicas": True}, "replicas must be an int"),
        ({"replicas": "3"}, "replicas must be an int"),
        ({"replicas": 0}, "replicas must be an int from 1 to 5"),
        ({"ack_wait": 0}, r"^ack_wait must be a finite number of seconds > 0, got 0$"),
        ({"ack_wait": -1}, r"^ack_wait must be a finite number of seconds > 0, got -1$"),
        ({"connect_options": {"bogus": 1}}, r"connect_options\['bogus'\]: not a keyword"),
        ({"connect_options": {"tokn": "x"}}, r"did you mean 'token'"),
        ({"connect_options": {"servers": ["nats://x"]}}, r"the bus sets it itself"),
        ({"connect_options": "u:pw"}, "connect_options must be a dict"),
        ({"connect_options": {"token": ""}}, r"connect_options\['token'\] is empty"),
        ({"connect_options": {"password": "x"}}, r"'password'\] is given without 'user'"),
        ({"connect_options": {"user_credentials": "/"}}, r"'user_credentials'\]='/' is a dir"),
        ({"connect_options": {"user_credentials": ""}}, r"'user_credentials'\] is empty"),
        (
            {"connect_options": {"user": "u", "password": "p", "token": "t"}},
            "signs in user/password and token together",
        ),
    ],
)
def test_the_constructor_refuses_what_the_settings_refuse_naming_the_keyword(
    keywords: dict[str, Any], message: str
) -> None:
    # It took nan and inf, and its writer failed for ever naming nothing, every event lost;
    # an unknown connect option failed only in the connection's thread (trial 167).
    with pytest.raises((ValueError, TypeError), match=message):
        NatsEventBus("nats://127.0.0.1:4222", stream="T_CTOR", subject="t.ctor", **keywords)


def test_the_constructor_refuses_credentials_in_the_url_and_in_connect_options() -> None:
    # connect_options' won over the URL's, and a refusal then blamed the URL (trial 168).
    with pytest.raises(ValueError, match=r"connect_options\['password'\] gives credentials") as e:
        NatsEventBus(
            "nats://u:hunter2@127.0.0.1:4222",
            stream="T_CTOR",
            subject="t.ctor",
            connect_options={"user": "other", "password": "x"},
        )
    assert "hunter2" not in str(e.value)


@pytest.mark.parametrize("key", ["user_credentials", "nkeys_seed", "nkeys_seed_str"])
def test_the_constructor_says_what_to_install_for_nkeys_sign_in_without_it(
    key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A bare ModuleNotFoundError from inside nats-py's connect(), in the writer's thread, every
    # event waiting on it (trial 167, left then).
    creds = tmp_path / "user.creds"
    creds.write_text("-----BEGIN NATS USER JWT-----\nx\n-----BEGIN USER NKEY SEED-----\ny\n")
    _without_nkeys(monkeypatch)
    with pytest.raises(ValueError, match=rf"connect_options\['{key}'\] needs the nkeys package"):
        NatsEventBus(
            "nats://127.0.0.1:4222",
            stream="T_CTOR",
            subject="t.ctor",
            connect_options={key: str(creds)},
        )


def test_nats_py_s_own_defaults_for_the_nkeys_keywords_need_no_nkeys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # None is connect()'s default: passing it said "needs the nkeys package" (trial 180).
    _without_nkeys(monkeypatch)
    for options in ({"user_credentials": None}, {"nkeys_seed": None}, {"nkeys_seed_str": ""}):
        bus = NatsEventBus(
            "nats://127.0.0.1:1", stream="T_CTOR", subject="t.ctor", connect_options=options
        )
        bus.stop(0)


def test_last_error_says_why_while_the_connection_is_down() -> None:
    # None while every event waited on a server that refused the connection (trial 168).
    bus = NatsEventBus("nats://127.0.0.1:1", stream="T_LE", subject="t.le")
    try:
        bus.publish(make_event(1))
        assert not bus.flush(1)
        assert "ConnectionRefusedError" in (bus.stats().extra["last_error"] or "")
        time.sleep(1.5)  # it became "not sent: no connection to NATS" (trial 171)
        assert "ConnectionRefusedError" in (bus.stats().extra["last_error"] or "")
    finally:
        bus.stop(0.5)


def test_an_empty_token_or_password_is_unset_as_the_other_variables_are(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A template that sets every variable, some empty, beside a URL with credentials.
    monkeypatch.setenv("NATS_URL", "nats://u:pw@127.0.0.1:4222")
    monkeypatch.setenv("NATS_TOKEN", "")
    monkeypatch.setenv("NATS_PASSWORD", "")
    s = NatsSettings()
    assert (s.nats_token, s.nats_password) == (None, None)


def test_the_constructor_refuses_a_password_without_a_user_without_showing_it() -> None:
    # It took nats://:pw@host and started connecting (trial 192).
    with pytest.raises(ValueError, match="the credentials before '@' name no user") as refused:
        NatsEventBus("nats://:t192secret@127.0.0.1:4222", stream="T_CTOR", subject="t.ctor")
    assert "t192secret" not in str(refused.value)


def test_a_subject_in_the_dead_letters_space_is_refused_by_the_constructor_too() -> None:
    with pytest.raises(ValueError, match=r"'dead\.t\.ctor' starts with 'dead\.'"):
        NatsEventBus("nats://127.0.0.1:4222", stream="T_CTOR", subject="dead.t.ctor")
    NatsEventBus("nats://127.0.0.1:4222", stream="T_CTOR", subject="deadline.t").stop(0)


def test_publish_path_asyncio_is_said_to_have_no_effect_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # It was ignored without a word, though configuration.md promises a warning for asyncio
    # when a thread must drain (trial 192): this backend's writer is always a thread.
    from eventbus_nats import _bus

    monkeypatch.setattr(_bus, "_said_publish_path", False)
    caplog.set_level("WARNING", logger="eventbus.nats")
    for path, buses in (("auto", 1), ("thread", 1), ("asyncio", 2)):
        settings = EventBusSettings(publish_path=path, nats_url="nats://127.0.0.1:4222")
        for _ in range(buses):
            NatsEventBus.from_settings(settings).stop(0)
    said = [r.getMessage() for r in caplog.records if "EVENTBUS_PUBLISH_PATH" in r.getMessage()]
    assert said == [
        "EVENTBUS_PUBLISH_PATH=asyncio has no effect on the nats backend: its writer runs on a "
        "thread of its own (with the connection's event loop) whatever the setting; unset it or "
        "set it to auto to end this warning"
    ]


def test_an_error_without_a_message_still_says_what_went_wrong() -> None:
    # "cannot write (TimeoutError: TimeoutError())" named nothing to check (trial 267).
    assert safe_error(TimeoutError()) == (
        "TimeoutError: no answer in time (a frozen, overloaded or unreachable server?)"
    )
    assert safe_error(ValueError("nats://u:hunter2@h:4222 refused")) == (
        "ValueError: nats://u:***@h:4222 refused"
    )
    assert safe_error(KeyError()) == "KeyError: KeyError()"
