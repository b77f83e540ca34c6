"""
A real ``redis-server`` for tests, on a loopback port in a temporary
directory, with persistence off.

Tests of shared counters must run against the real thing (DESIGN.md:
"Redis is a real redis-server started by the tests, not a dict"): Lua
semantics, ``TIME``, pipelining and connection loss are what is tested.
``redis-server`` cannot listen on port 0, so a free port is picked first;
the same port is kept across :meth:`RedisServer.restart`, as a real
restarted Redis would. The server is stopped by its PID, never by name.

When ``redis-server`` is missing, :func:`redis_server_binary` raises with
the command that installs it: such tests fail, they do not skip (the CI
installs it in ``.ci/run``).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass

from .process import free_port

__all__ = ["RedisServer", "RedisTLS", "redis_server_binary", "redis_supports_tls"]


def redis_server_binary() -> str:
    """The path of ``redis-server``; raises ``RuntimeError`` saying how to install it."""
    path = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
    )
    if path is None:
        raise RuntimeError(
            "redis-server is not installed: these tests need a real Redis. "
            "Install it with `apt-get install -y redis-server` (the CI does, in .ci/run)."
        )
    return path


def redis_supports_tls(binary: str | None = None) -> bool:
    """Whether this ``redis-server`` was built with TLS (Debian's is)."""
    binary = binary or redis_server_binary()
    try:
        out = subprocess.run(
            ["ldd", binary], capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return "libssl" in out


@dataclass(frozen=True)
class RedisTLS:
    """Files for ``--tls-port``: the server's chain and key, and its CA."""

    cert_file: str
    key_file: str
    ca_file: str


class RedisServer:
    """
    ``redis-server`` on 127.0.0.1.

    :param password: ``requirepass``.
    :param tls: serve TLS only (``--tls-port``, plain port off).
    """

    def __init__(self, *, password: str | None = None, tls: RedisTLS | None = None) -> None:
        self.binary = redis_server_binary()
        self.port = free_port()
        self.password = password
        self.tls = tls
        self.directory = tempfile.mkdtemp(prefix="apimgw-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        scheme = "rediss" if self.tls else "redis"
        host = "localhost" if self.tls else "127.0.0.1"
        return f"{scheme}://{host}:{self.port}/0"

    def command(self) -> list[str]:
        args = [
            self.binary,
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", self.directory,
            "--daemonize", "no",
            "--loglevel", "warning",
            "--logfile", os.path.join(self.directory, "redis.log"),
        ]
        if self.tls is None:
            args += ["--port", str(self.port)]
        else:
            args += [
                "--port", "0",
                "--tls-port", str(self.port),
                "--tls-cert-file", self.tls.cert_file,
                "--tls-key-file", self.tls.key_file,
                "--tls-ca-cert-file", self.tls.ca_file,
                "--tls-auth-clients", "no",
            ]
        if self.password is not None:
            args += ["--requirepass", self.password]
        return args

    def start(self, timeout: float = 10.0) -> None:
        """Start it and return once its port accepts connections."""
        self.process = subprocess.Popen(
            self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"redis-server exited with {self.process.returncode}: {err}{self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"redis-server did not listen on {self.port}: {self.log()}")
                time.sleep(0.01)

    def log(self) -> str:
        try:
            with open(os.path.join(self.directory, "redis.log")) as f:
                return f.read()
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL it (a crash: connections reset, data gone) and wait."""
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM it and wait."""
        self._signal(signal.SIGTERM)

    def restart(self) -> None:
        """Kill it and start a new, empty one on the same port."""
        self.kill()
        self.start()

    def cleanup(self) -> None:
        """Stop it and remove its directory."""
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def _signal(self, sig: int) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            os.kill(process.pid, sig)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
        if process.stderr is not None:
            process.stderr.close()
