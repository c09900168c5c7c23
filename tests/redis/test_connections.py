"""Connection URLs (`redis://` with a password, `rediss://`, `unix://`) and secrecy of passwords."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest
import redis

from eventbus_core import EventBusSettings, create_bus
from eventbus_core.cli import main
from eventbus_core.testing import make_event
from eventbus_redis import RedisEventBus, RedisStreamsEventBus
from tests.redis._servers import ThrowawayRedis, failed_tls_handshakes, make_tls_cert

pytestmark = pytest.mark.redis

SECRET = "s3cret-Pa55word"


def wait_for_error(bus: RedisEventBus) -> str:
    """Wait (bounded) until the writer reports an error, and return it."""
    pause = threading.Event()
    for _ in range(500):
        error = bus.stats().extra["last_error"]
        if error:
            return str(error)
        pause.wait(0.02)  # polling another thread's figure: nothing to await
    raise AssertionError("the writer never reported an error")


def test_password_works_and_never_shows_in_reprs_stats_or_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = ThrowawayRedis(tmp_path, password=SECRET)
    server.start()
    try:
        good = create_bus(EventBusSettings(backend="redis", redis_url=server.url))
        assert isinstance(good, RedisEventBus)
        good.publish(make_event(1))
        assert good.flush(10)
        assert good.event_count() == 1
        wrong_url = server.url.replace(SECRET, SECRET + "-wrong")
        caplog.set_level(logging.DEBUG, logger="eventbus")
        bad = create_bus(EventBusSettings(backend="redis", redis_url=wrong_url))
        assert isinstance(bad, RedisEventBus)
        bad.publish(make_event(2))
        error = wait_for_error(bad)
        streams = create_bus(EventBusSettings(backend="redis-streams", redis_url=wrong_url))
        texts = [
            repr(good),
            repr(bad),
            repr(streams),
            repr(good.stats()),
            repr(bad.stats()),
            str(bad.stats().as_dict()),
            error,
            caplog.text,
            repr(EventBusSettings(backend="redis", redis_url=wrong_url)),
        ]
        assert "invalid" in error.lower() or "auth" in error.lower() or "WRONGPASS" in error
        assert bad.stats().extra["state"] == "failing"  # a wrong password is no outage
        for text in texts:
            assert SECRET not in text
        good.stop()
        bad.stop(0.2)
        streams.stop(0)
    finally:
        server.kill()


def test_tls_with_rediss_url(tmp_path: Path) -> None:
    cert, key = make_tls_cert(tmp_path)
    server = ThrowawayRedis(tmp_path, tls=(cert, key))
    server.start()
    try:
        url = f"rediss://127.0.0.1:{server.tls_port}/0?ssl_ca_certs={cert}"
        bus = create_bus(EventBusSettings(backend="redis-streams", redis_url=url))
        assert isinstance(bus, RedisStreamsEventBus)
        assert repr(bus).startswith("<RedisStreamsEventBus") and "rediss://" in repr(bus)
        bus.publish(make_event(1))
        assert bus.flush(10)
        assert bus.stream_info()["length"] == 1
        bus.stop()
    finally:
        server.kill()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_tls_server_frozen_after_writes_is_not_said_to_be_plain(tmp_path: Path) -> None:
    # A writer that had written over TLS, then met the server frozen, was told "if that server
    # does not use TLS, use redis://" (trial 211).
    import os
    import signal

    cert, key = make_tls_cert(tmp_path)
    server = ThrowawayRedis(tmp_path, tls=(cert, key))
    server.start()
    assert server.proc is not None
    url = f"rediss://127.0.0.1:{server.tls_port}/0?ssl_ca_certs={cert}"
    client = redis.Redis.from_url(url, socket_timeout=0.3, socket_connect_timeout=0.3)
    bus = RedisEventBus.publisher(client, "t211:tls")
    try:
        with failed_tls_handshakes():
            bus.publish(make_event(1))
            assert bus.flush(5)
            os.kill(server.proc.pid, signal.SIGSTOP)
            try:
                bus.publish(make_event(2))
                deadline = time.monotonic() + 10
                while bus.stats().extra["write_failures"] < 2:
                    assert time.monotonic() < deadline, bus.stats().extra
                    time.sleep(0.05)
                error = bus.stats().extra["last_error"]
                assert "instead of rediss://" not in error, error
            finally:
                os.kill(server.proc.pid, signal.SIGCONT)
    finally:
        bus.stop(0)
        client.close()  # the bus does not own it
        server.kill()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_certificate_not_verified_says_to_give_the_ca(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # It said "did not answer ... check that Redis is running", which it was (an outside trial).
    cert, key = make_tls_cert(tmp_path)
    server = ThrowawayRedis(tmp_path, tls=(cert, key), password="s3cret-pw")
    server.start()
    try:
        url = f"rediss://:s3cret-pw@127.0.0.1:{server.tls_port}/0"
        code = main(["stats", "--backend", "redis", "--redis-url", url])
        err = capsys.readouterr().err
        assert code == 1, err
        assert "certificate could not be verified" in err and "ssl_ca_certs" in err, err
        assert "--redis-url" in err and "s3cret-pw" not in err
        # An application's writer says it too, not "use redis:// instead" (review 210).
        with failed_tls_handshakes():
            bus = create_bus(EventBusSettings(backend="redis", redis_url=url))
            bus.publish(make_event(1))
            assert not bus.flush(1.5)  # type: ignore[attr-defined]
            error = bus.stats().extra["last_error"]
            bus.stop(0)
        assert "certificate could not be verified" in error and "ssl_ca_certs" in error, error
        assert "instead of rediss://" not in error and "s3cret-pw" not in error, error
    finally:
        server.kill()


def test_tls_on_one_side_only_is_hinted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # rediss:// to a plain server timed out, redis:// to a TLS port was reset: both said only
    # "did not answer; check that Redis is running" (helper-90).
    cert, key = make_tls_cert(tmp_path)
    server = ThrowawayRedis(tmp_path, tls=(cert, key))
    server.start()
    try:
        plain_to_tls = f"redis://127.0.0.1:{server.tls_port}/0"
        tls_to_plain = f"rediss://127.0.0.1:{server.port}/0?ssl_ca_certs={cert}"
        for url, hint in (
            (plain_to_tls, "if it does, use rediss://"),
            (tls_to_plain, "use redis:// instead of rediss://"),
        ):
            code = main(["stats", "--backend", "redis", "--redis-url", url])
            err = capsys.readouterr().err
            assert code == 1, err
            assert "did not answer" in err and hint in err, err
    finally:
        server.kill()


@pytest.mark.parametrize("ca", ["missing.pem", "."])
def test_a_ca_file_that_cannot_be_used_is_a_settings_error_naming_it(
    ca: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A missing CA file, or a directory, was reported as "did not answer; check that Redis is
    # running" (an outside trial).
    cert, key = make_tls_cert(tmp_path)
    server = ThrowawayRedis(tmp_path, tls=(cert, key))
    server.start()
    try:
        path = tmp_path / ca
        url = f"rediss://127.0.0.1:{server.tls_port}/0?ssl_ca_certs={path}"
        code = main(["stats", "--backend", "redis", "--redis-url", url])
        err = capsys.readouterr().err
        assert code == 2, err
        assert f"ssl_ca_certs={path}" in err and "cannot be used" in err, err
    finally:
        server.kill()


def test_unix_socket_url(throwaway: ThrowawayRedis) -> None:
    url = f"unix://{throwaway.socket_path}?db=2"
    bus = create_bus(EventBusSettings(backend="redis", redis_url=url))
    assert isinstance(bus, RedisEventBus)
    assert "unix://" in repr(bus)
    bus.publish(make_event(1))
    assert bus.flush(10)
    assert bus.read_events()[0].log_id == 1
    bus.stop()
