"""Where and how the `otlp` sink exports: the sink's options first, then the standard
OpenTelemetry exporter variables (`OTEL_EXPORTER_OTLP_TRACES_*` before
`OTEL_EXPORTER_OTLP_*`), then the OTLP/HTTP defaults.

Header values (collector credentials) are kept out of every message and repr.
"""

from __future__ import annotations

import json
import math
import os
import re
import ssl
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from eventbus_core._errors import SettingsError
from eventbus_core._log import get_logger
from eventbus_core._sink import check_options, option_bool, option_float, option_int, option_where
from eventbus_core.redact._secrets import MaskedMapping
from eventbus_core.sinks._http import check_headers, check_url

__all__ = ["OPTIONS", "OtlpConfig", "otlp_config", "parse_headers"]

DEFAULT_ENDPOINT = "http://localhost:4318/v1/traces"
DEFAULT_SERVICE = "llm-proxy"
OPTIONS = (
    "endpoint",
    "headers",
    "timeout",
    "compression",
    "service_name",
    "capture_content",
    "provider",
    "certificate",
    "client_certificate",
    "client_key",
    "max_value_chars",
)
_SINK = "otlp"
log = get_logger("eventbus.sinks.otlp")


@dataclass
class OtlpConfig:
    """The resolved settings of one `otlp` sink."""

    endpoint: str = DEFAULT_ENDPOINT
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    timeout: float = 10.0
    compression: str = "none"
    resource: dict[str, str] = field(default_factory=lambda: {"service.name": DEFAULT_SERVICE})
    capture_content: bool = False
    provider: str | None = None
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False)
    max_value_chars: int = 0


def parse_headers(raw: str, where: str) -> dict[str, str]:
    """`k1=v1,k2=v2` (values percent-decoded, as OTEL_EXPORTER_OTLP_HEADERS), or a JSON
    object. Raises `SettingsError` naming `where`, never showing a value."""
    raw = raw.strip()
    if not raw:
        return {}
    if raw.startswith("{"):
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            raise SettingsError(f"{where} is not a JSON object (its value is not shown)")
        return {str(k).strip().lower(): str(v) for k, v in parsed.items()}
    headers = {}
    for n, item in enumerate(raw.split(","), start=1):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SettingsError(
                f"{where}: entry {n} is not key=value (values are not shown); "
                "write it as key1=value1,key2=value2"
            )
        # Decoded first, then stripped, as OpenTelemetry's SDK does: "%20x" is "x".
        headers[urllib.parse.unquote(key).strip().lower()] = urllib.parse.unquote(value).strip()
    return headers


def _resource_attributes(raw: str) -> dict[str, str]:
    out = {}
    skipped = []
    for n, item in enumerate(raw.split(","), start=1):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            out[urllib.parse.unquote(key.strip())] = urllib.parse.unquote(value.strip())
        elif item.strip():
            skipped.append(n)
    if skipped:
        # Kept going, as OpenTelemetry's SDKs do, but not in silence (trial 133).
        log.warning(
            "OTEL_RESOURCE_ATTRIBUTES: entry %s is not key=value and is left out; write it as "
            "key1=value1,key2=value2",
            ", ".join(map(str, skipped)),
        )
    return out


def _endpoint(options: Mapping[str, str], env: Mapping[str, str]) -> str:
    if options.get("endpoint"):
        return check_url(options["endpoint"], option_where("otlp", "endpoint"))
    if env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return check_url(
            env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"], "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
        )
    if env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        base = check_url(env["OTEL_EXPORTER_OTLP_ENDPOINT"], "OTEL_EXPORTER_OTLP_ENDPOINT")
        return base.rstrip("/") + "/v1/traces"  # the base form gets the signal's path
    return DEFAULT_ENDPOINT


def _signal(env: Mapping[str, str], name: str) -> tuple[str, str] | None:
    """`(variable, value)` of OTEL_EXPORTER_OTLP_TRACES_<name>, else of the general one."""
    for var in (f"OTEL_EXPORTER_OTLP_TRACES_{name}", f"OTEL_EXPORTER_OTLP_{name}"):
        if env.get(var):
            return var, env[var]
    return None


def _timeout(options: Mapping[str, str], env: Mapping[str, str]) -> float:
    if options.get("timeout"):
        return option_float(options, _SINK, "timeout", 10.0, positive=True)
    found = _signal(env, "TIMEOUT")
    if found is None:
        return 10.0
    try:
        millis = float(found[1])  # the specification's unit is milliseconds
    except ValueError:
        raise SettingsError(f"{found[0]} must be milliseconds, got {found[1]!r}") from None
    if not math.isfinite(millis) or millis <= 0:
        # 0 or less would time out every request, and dead-letter every batch.
        raise SettingsError(
            f"{found[0]} must be a number of milliseconds > 0 (finite), got {found[1]!r}"
        )
    return millis / 1000.0


def _ssl(options: Mapping[str, str], env: Mapping[str, str]) -> ssl.SSLContext | None:
    def pick(option: str, var: str) -> tuple[str, str] | None:
        """`(path, where it was set)` of a TLS file, or None."""
        if options.get(option):
            return options[option], option_where(_SINK, option)
        found = _signal(env, var)
        return (found[1], found[0]) if found else None

    ca = pick("certificate", "CERTIFICATE")
    cert = pick("client_certificate", "CLIENT_CERTIFICATE")
    key = pick("client_key", "CLIENT_KEY")
    if key and not cert:
        # Ignored before: a key set without its certificate only failed at the collector's
        # handshake, if at all (trial 133).
        raise SettingsError(
            f"{key[1]} is set, but no client certificate (the client_certificate option or "
            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE): set both for a client certificate, or "
            "neither"
        )
    for picked in (ca, cert, key):
        # Each file named with its setting: the error named all six (trial 133).
        if picked is not None and not os.access(picked[0], os.R_OK):
            if not _looks_like_a_path(picked[0]):
                # A key pasted in place of its path: the error printed it whole (trial 137).
                raise SettingsError(
                    f"{picked[1]} must be the path of a TLS file (PEM); its value is not shown: "
                    "it looks like the key or certificate itself"
                )
            why = "does not exist" if not os.path.exists(picked[0]) else "cannot be read"
            raise SettingsError(f"{picked[1]}: the TLS file {picked[0]!r} {why}")
    if not (ca or cert):
        return None
    try:
        context = ssl.create_default_context(cafile=ca[0] if ca else None)
    except (OSError, ssl.SSLError) as exc:
        what = f"{ca[1]}: cannot load {ca[0]!r}" if ca else "cannot load the system's"
        raise SettingsError(f"{what} as CA certificates (PEM): {exc}") from None
    if cert:
        try:
            context.load_cert_chain(cert[0], key[0] if key else None)
        except (OSError, ssl.SSLError) as exc:
            also = f" with the key of {key[1]} ({key[0]!r})" if key else ""
            raise SettingsError(
                f"{cert[1]}: cannot load the client certificate {cert[0]!r}{also} (PEM; the "
                f"key in the same file, or in client_key / OTEL_EXPORTER_OTLP_CLIENT_KEY): {exc}"
            ) from None
    return context


def otlp_config(
    options: Mapping[str, str], *, capture_content: bool, environ: Mapping[str, str] | None = None
) -> OtlpConfig:
    """Resolve the sink's settings (see the module docstring).

    Raises:
        SettingsError: an invalid option or variable, or a protocol other than
            http/protobuf (the one this sink speaks).
    """
    env = os.environ if environ is None else environ
    check_options(options, _SINK, OPTIONS, prefixes=("header_",))
    found = _signal(env, "PROTOCOL")
    if found is not None and found[1].strip() != "http/protobuf":
        raise SettingsError(
            f"{found[0]}={found[1]!r}: the otlp sink speaks http/protobuf only (port 4318); "
            "unset it or set it to http/protobuf, and point the endpoint at the HTTP receiver"
        )
    headers: dict[str, str] = {}
    # Each source checked where it is read, so that an error names the variable or option that
    # set the header (they were all named OTEL_EXPORTER_OTLP_HEADERS, trial 133).
    for var in ("OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"):
        headers.update(_checked(parse_headers(env.get(var, ""), var), var))
    where = option_where("otlp", "headers")
    headers.update(_checked(parse_headers(options.get("headers", ""), where), where))
    for key, value in options.items():
        if key.startswith("header_") and len(key) > len("header_"):
            name = key[len("header_") :].replace("_", "-")
            headers.update(_checked({name: value}, option_where("otlp", key)))
    if options.get("compression"):
        given_by, compression = option_where("otlp", "compression"), options["compression"]
    else:  # named as set: the general variable was named for the traces one (trial 206)
        given_by, compression = _signal(env, "COMPRESSION") or ("", "")
    compression = compression.strip().lower() or "none"
    if compression not in ("gzip", "none"):
        raise SettingsError(
            f"otlp compression must be gzip or none, got {compression!r} ({given_by})"
        )
    resource = _resource_attributes(env.get("OTEL_RESOURCE_ATTRIBUTES", ""))
    resource["service.name"] = (
        options.get("service_name")
        or env.get("OTEL_SERVICE_NAME")
        or resource.get("service.name")
        or DEFAULT_SERVICE
    )
    return OtlpConfig(
        endpoint=_endpoint(options, env),
        headers=MaskedMapping(headers),
        timeout=_timeout(options, env),
        compression=compression,
        resource=resource,
        capture_content=option_bool(options, _SINK, "capture_content", capture_content),
        provider=options.get("provider") or None,
        ssl_context=_ssl(options, env),
        max_value_chars=_value_limit(options, env),
    )


def _looks_like_a_path(value: str) -> bool:
    """Whether `value` may be shown as a file's path: one line, no PEM armour, not huge, no
    run of 40 base64 characters (a key's body, or the whole PEM base64-encoded, trial 141),
    and not a key's body cut by its own '/' into shorter runs (trial 142): 40 base64
    characters or more in all, upper and lower case and digits mixed, and no '.'. A path,
    even in a folder that does not exist, is shown, to check it for a typo (trial 143)."""
    if len(value) > 1024 or "\n" in value or "-----" in value or _BASE64_RUN.search(value):
        return False
    body = _NOT_BASE64.sub("", value)
    random_looking = (
        len(body) >= 40
        and "." not in value
        and any(c.isupper() for c in body)
        and any(c.islower() for c in body)
        and any(c.isdigit() for c in body)
    )
    return not random_looking


_NOT_BASE64: Final = re.compile(r"[^A-Za-z0-9+=]")
_BASE64_RUN: Final = re.compile(r"[A-Za-z0-9+=]{40}")


def _checked(headers: dict[str, str], where: str) -> dict[str, str]:
    check_headers(headers, where)
    return headers


def _value_limit(options: Mapping[str, str], env: Mapping[str, str]) -> int:
    """The `max_value_chars` option, else OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT, else 0 (none)."""
    if options.get("max_value_chars"):
        return option_int(options, _SINK, "max_value_chars", 0)
    raw = env.get("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "").strip()
    if not raw:
        return 0
    try:
        limit = int(raw.replace("_", ""))
    except ValueError:
        limit = -1
    if limit < 0:
        # Named as set: the error named the sink option only (trial 133).
        raise SettingsError(
            f"OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT must be a whole number of characters >= 0 "
            f"(0: no limit), got {raw!r}"
        )
    return limit
