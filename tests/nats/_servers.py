"""Throwaway `nats-server` processes for tests that kill, pause or restart a server.

The shared server on 4222 is never touched: each `ThrowawayNats` listens on a free loopback
port with a JetStream store of its own under the test's tmp_path, and `ThrowawayCluster` joins
three of them into a JetStream cluster. Only these processes are ever signalled, by their pid.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import nats
import pytest

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _jetstream_answers(url: str, timeout: float) -> bool:
    async def noop(*_: object) -> None:
        return None

    try:
        # nats-py keeps trying a refused first connection: bound it from outside.
        nc = await asyncio.wait_for(
            nats.connect(
                url,
                connect_timeout=max(1, int(timeout)),
                allow_reconnect=False,
                max_reconnect_attempts=0,
                error_cb=noop,
            ),
            timeout,
        )
    except Exception:
        return False
    try:
        await nc.jetstream(timeout=timeout).account_info()
        return True
    except Exception:
        return False
    finally:
        await nc.close()


def jetstream_answers(url: str, timeout: float = 2.0) -> bool:
    """True if a NATS server with JetStream answers at `url` within about `timeout` seconds."""
    return asyncio.run(_jetstream_answers(url, timeout))


class ThrowawayNats:
    """A private nats-server with JetStream: `start()`, `kill()`, `pause()`, `resume()`, and
    `start()` again on the same port and store.

    Args:
        workdir: Where its store and log go.
        name: Server name (cluster members need distinct ones).
        extra: Further command-line arguments (cluster, authentication, TLS).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        name: str = "n1",
        extra: list[str] | None = None,
        userinfo: str = "",
    ) -> None:
        if not Path(NATS_SERVER).exists():
            pytest.fail("nats-server is not installed (apt-get install nats-server; .ci/run does)")
        self.workdir = workdir
        self.name = name
        self.port = free_port()
        self.store = workdir / f"store-{name}"
        self.extra = list(extra or [])
        self.userinfo = userinfo  # "user:password@" in url, for a server started with them
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.userinfo}127.0.0.1:{self.port}"

    def launch(self) -> None:
        """Start the process without waiting for it to answer."""
        args = [NATS_SERVER, "-a", "127.0.0.1", "-p", str(self.port), "-n", self.name]
        args += ["-js", "-sd", str(self.store), *self.extra]
        with self.log_path.open("ab") as log_file:
            self.proc = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT)

    def start(self, timeout: float = 20.0) -> None:
        """Start the server and wait until JetStream answers."""
        self.launch()
        self.wait_ready(timeout)

    def wait_port(self, timeout: float = 20.0) -> None:
        """Wait until the server accepts connections."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.5).close()
                return
            except OSError:
                assert self.proc is not None
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    log = self.log_path.read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"nats-server {self.name} does not listen:\n{log}") from None
                time.sleep(0.01)  # polling a starting process: there is no event to wait for

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Wait until JetStream answers (a cluster needs its meta leader first)."""
        deadline = time.monotonic() + timeout
        self.wait_port(timeout)
        while not jetstream_answers(self.url, 1.0):
            assert self.proc is not None
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = self.log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"throwaway nats-server {self.name} did not start:\n{log}")
            time.sleep(0.1)  # polling a starting process: there is no event to wait for

    def kill(self) -> None:
        """Kill the server at once (SIGKILL, like a crash)."""
        if self.proc is not None:
            if self.proc.poll() is None:
                os.kill(self.proc.pid, signal.SIGCONT)  # a stopped process dies only when run
                self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open and nothing answers. Returns once
        the kernel says it is stopped: a busy machine let a request sent right after the kill
        still be answered (CI, stop 53)."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                with open(f"/proc/{self.proc.pid}/stat") as stat:
                    if stat.read().rpartition(")")[2].split()[0] in ("T", "t"):
                        return
            except OSError:
                return  # no /proc here: the signal alone
            time.sleep(0.001)

    def resume(self) -> None:
        """Let a paused server run again (SIGCONT)."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)


class ThrowawayCluster:
    """Three throwaway servers joined into one JetStream cluster on loopback ports; with
    `user` and `password`, clients must give them (each node's `url` holds them)."""

    def __init__(self, workdir: Path, size: int = 3, *, user: str = "", password: str = "") -> None:
        self._workdir = workdir
        self._size = size
        self._auth = ["--user", user, "--pass", password] if user else []
        self._userinfo = f"{user}:{password}@" if user else ""
        self._attempt = 0
        self._assign(workdir)

    def _assign(self, workdir: Path) -> None:
        """Free ports for every node, and the nodes that use them."""
        workdir.mkdir(parents=True, exist_ok=True)
        size = self._size
        cluster_ports = [free_port() for _ in range(size)]
        routes = ",".join(f"nats://127.0.0.1:{p}" for p in cluster_ports)
        self.nodes = [
            ThrowawayNats(
                workdir,
                name=f"node-{i}",
                extra=[
                    "--cluster_name",
                    "eventbus-test",
                    "--cluster",
                    f"nats://127.0.0.1:{cluster_ports[i]}",
                    "--routes",
                    routes,
                    *self._auth,
                ],
                userinfo=self._userinfo,
            )
            for i in range(size)
        ]

    @property
    def url(self) -> str:
        """Every node, comma-separated (what NATS_URL takes for a cluster)."""
        return ",".join(n.url for n in self.nodes)

    def start(self, timeout: float = 30.0) -> None:
        # A port found free can be taken before a node binds it (another test's server, an
        # outgoing connection's ephemeral port: "bind: address already in use", seen in CI):
        # then the whole cluster starts again on new ports, in a store of its own.
        for attempt in range(3):
            for node in self.nodes:
                node.launch()
            try:
                for node in self.nodes:
                    node.wait_ready(timeout)
                return
            except RuntimeError as exc:
                for node in self.nodes:  # none left running: the fixture's teardown never runs
                    node.kill()
                if "address already in use" not in str(exc) or attempt == 2:
                    raise
                self._attempt += 1
                self._assign(self._workdir / f"again-{self._attempt}")

    def node(self, name: str) -> ThrowawayNats:
        return next(n for n in self.nodes if n.name == name)

    def kill(self) -> None:
        for node in self.nodes:
            node.kill()
