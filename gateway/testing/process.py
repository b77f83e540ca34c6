"""
Run ``twistd -n apimgw`` as a child process on loopback ports, for tests
that need the real process: signals (SIGTERM drain, SIGHUP reload), the
default configuration, memory measurements.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Sequence


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GatewayProcess:
    """
    A gateway child process. ``start()`` returns once the admin port
    answers; ``stop()`` sends SIGTERM and waits. The process runs from
    ``cwd`` (the checkout by default) so the working tree is what runs.

    ``workers`` is ``GATEWAY_WORKERS`` when ``env`` sets no
    ``gateway.workers`` of its own: one process by default, as a test
    that is not about workers expects (the gateway's own default, ``auto``,
    would start a supervisor and a worker per CPU: 3 processes on a 2-CPU
    machine). ``None``: the gateway's default; a ``--workers`` in ``args``
    wins over both.
    """

    def __init__(
        self,
        args: Sequence[str] = (),
        *,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        logfile: str | None = None,
        workers: str | None = "1",
    ) -> None:
        self.http_port = free_port()
        self.https_port = free_port()
        self.admin_port = free_port()
        self.args = list(args)
        self.env = dict(os.environ if env is None else env)
        if workers is not None and not {"gateway.workers", "GATEWAY_WORKERS"} & set(self.env):
            self.env["GATEWAY_WORKERS"] = workers
        self.cwd = cwd or os.getcwd()
        self.logfile = logfile
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def command(self) -> list[str]:
        log = ["--logfile", self.logfile] if self.logfile else []
        return [
            sys.executable,
            "-c",
            "from twisted.scripts.twistd import run; run()",
            "-n",
            "--pidfile=",
            *log,
            "apimgw",
            "--http",
            f"tcp:{self.http_port}:interface=127.0.0.1",
            # Never the default 8081, which another gateway may hold; an
            # "--https" in args comes later and wins.
            "--https",
            f"tcp:{self.https_port}:interface=127.0.0.1",
            "--admin",
            f"tcp:{self.admin_port}:interface=127.0.0.1",
            *self.args,
        ]

    def start(self, timeout: float = 20.0) -> None:
        """Start and wait (blocking; call from a thread or before the reactor matters)."""
        pythonpath = self.cwd + os.pathsep + self.env.get("PYTHONPATH", "")
        self.env["PYTHONPATH"] = pythonpath
        out = open(os.devnull, "wb") if self.logfile else None
        self.process = subprocess.Popen(
            self.command(), cwd=self.cwd, env=self.env, stdout=out, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.process.returncode} at start")
            try:
                urllib.request.urlopen(self.admin_url + "/healthz", timeout=1).read()
                return
            except (OSError, urllib.error.URLError):
                time.sleep(0.05)
        self.kill()
        raise RuntimeError("gateway did not start listening in time")

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait up to ``timeout``; returns the exit status."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def peak_rss_kib(self) -> int:
        """The process's peak resident set size (VmHWM), in KiB (Linux)."""
        assert self.process is not None
        with open(f"/proc/{self.process.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        raise RuntimeError("VmHWM not found")
