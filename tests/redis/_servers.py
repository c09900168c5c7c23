"""Throwaway `redis-server` processes for tests that stop, restart or reconfigure a server.

The shared server on 6379 is never touched: each `ThrowawayRedis` listens on a free port (and a
unix socket) of its own, with no persistence, and is killed when the test ends.
"""

from __future__ import annotations

import contextlib
import gc
import shutil
import socket
import subprocess
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests._services import close_client, require_redis_server


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ThrowawayRedis:
    """A private redis-server: `start()`, `kill()`, `start()` again on the same port."""

    def __init__(
        self, workdir: Path, *, password: str | None = None, tls: tuple[Path, Path] | None = None
    ) -> None:
        self.binary = require_redis_server()
        self.workdir = workdir
        self.port = free_port()
        self.socket_path = workdir / "redis.sock"
        self.password = password
        self.tls = tls
        self.tls_port = free_port() if tls else None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server and wait until it answers PING."""
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--unixsocket",
            str(self.socket_path),
            "--unixsocketperm",
            "700",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.workdir),
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
        ]
        if self.password:
            args += ["--requirepass", self.password]
        if self.tls:
            cert, key = self.tls
            args += [
                "--tls-port",
                str(self.tls_port),
                "--tls-cert-file",
                str(cert),
                "--tls-key-file",
                str(key),
                "--tls-auth-clients",
                "no",
            ]
        log_path = self.workdir / "redis-server.log"
        with log_path.open("ab") as log_file:
            self.proc = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT)
        client = redis.Redis(
            host="127.0.0.1", port=self.port, password=self.password, socket_connect_timeout=0.5
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    err = log_path.read_text(errors="replace")
                    raise RuntimeError(f"throwaway redis-server did not start: {err}") from None
                time.sleep(0.02)  # polling a starting process: there is no event to wait for
            finally:
                close_client(client)

    def kill(self) -> None:
        """Kill the server at once (SIGKILL: like a crash, nothing is saved)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


def make_tls_cert(workdir: Path) -> tuple[Path, Path]:
    """A self-signed certificate and key for 127.0.0.1, made with openssl."""
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@contextlib.contextmanager
def failed_tls_handshakes() -> Iterator[None]:
    """redis-py before 5.0.1 (the CI's floor run) leaves the socket of a failed TLS handshake
    open: its ResourceWarning is no failure of ours, in this test or, collected later, in
    another."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            yield
        finally:
            gc.collect()
