"""
Smoke test of the real ``twistd -n apimgw-config`` process: start it on a
temporary database and free loopback ports, create an API through the
management API, fetch the snapshot with a generated token, stop it with
SIGTERM.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from .harness import request_sync

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ADMIN_KEY = "process-admin-key-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ConfigServiceProcess:
    """The service as a child process, run from the checkout (PYTHONPATH = the repository)."""

    def __init__(self, directory: str) -> None:
        self.db = os.path.join(directory, "config.db")
        self.logfile = os.path.join(directory, "twistd.log")
        self.port = free_port()
        self.management_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> None:
        env = dict(os.environ, APIMGW_CONFIG_ADMIN_KEY=ADMIN_KEY)
        env["PYTHONPATH"] = _REPO + os.pathsep + env.get("PYTHONPATH", "")
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
             "-n", "--pidfile=", "--logfile", self.logfile, "apimgw-config",
             "--db", self.db,
             "--listen", f"tcp:{self.port}:interface=127.0.0.1",
             "--management", f"tcp:{self.management_port}:interface=127.0.0.1"],
            cwd=_REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"apimgw-config exited with {self.process.returncode}")
            try:
                request_sync(self.management_port, "GET", "/", timeout=1)
                request_sync(self.port, "GET", "/", timeout=1)
                return
            except OSError:
                time.sleep(0.05)
        self.kill()
        raise RuntimeError("apimgw-config did not start listening in time")

    def manage(self, method: str, path: str, body: Any = None) -> Any:
        return request_sync(self.management_port, method, path, body,
                            {"Authorization": f"Bearer {ADMIN_KEY}"})

    def stop(self, timeout: float = 20.0) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class ProcessTests(TestCase):
    timeout = 120

    @inlineCallbacks
    def test_smoke(self) -> Any:
        """twistd -n apimgw-config serves the management API and a token-authenticated snapshot, and stops cleanly on SIGTERM."""
        directory = tempfile.mkdtemp()
        service = ConfigServiceProcess(directory)
        self.addCleanup(service.kill)
        yield deferToThread(service.start)
        created = yield deferToThread(service.manage, "PUT", "/gateways/edge", {})
        self.assertEqual(created.status, 201)
        api = yield deferToThread(service.manage, "PUT", "/apis/echo",
                                  {"path": "echo", "serviceUrl": "http://127.0.0.1:9000/api"})
        self.assertEqual(api.status, 201)
        yield deferToThread(service.manage, "PUT", "/gateways/edge/apis/echo")
        token = yield deferToThread(service.manage, "POST", "/gateways/edge/generateToken",
                                    {"keyType": "primary", "expiry": "P30D"})
        snapshot = yield deferToThread(
            request_sync, service.port, "GET", "/gateways/edge/configuration", None,
            {"Authorization": token.json()["value"]},
        )
        self.assertEqual(snapshot.status, 200)
        self.assertEqual([a["id"] for a in snapshot.json()["apis"]], ["echo"])
        status = yield deferToThread(service.stop)
        self.assertEqual(status, -signal.SIGTERM)  # twistd re-raises the signal it stopped for
        with open(service.logfile) as f:
            log = f.read()
        self.assertIn("Server Shut Down", log)
        self.assertIn("management API listening", log)
        self.assertNotIn(ADMIN_KEY, log)
        self.assertNotIn(token.json()["value"].split("&")[2], log)

    @inlineCallbacks
    def test_bad_database_exits(self) -> Any:
        """A --db that cannot be opened makes the command exit non-zero with a message."""
        env = dict(os.environ, APIMGW_CONFIG_ADMIN_KEY=ADMIN_KEY)
        env["PYTHONPATH"] = _REPO + os.pathsep + env.get("PYTHONPATH", "")
        result = yield deferToThread(
            subprocess.run,
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
             "--pidfile=", "apimgw-config", "--db", "/nonexistent-dir/config.db"],
            cwd=_REPO, env=env, capture_output=True, timeout=60,
        )
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(b"cannot open the database", result.stderr + result.stdout)
