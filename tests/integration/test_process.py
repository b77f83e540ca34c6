"""
Tests of the real ``twistd apimgw`` process: the default configuration a
new user gets, SIGTERM draining, SIGHUP reloads, and bounded memory while a
large response streams through.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import tempfile
import threading
import time
import urllib.request
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from gateway.testing.backends import scenario_site
from gateway.testing.process import GatewayProcess

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _get(url: str, timeout: float = 10.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class ProcessTestCase(TestCase):
    timeout = 120

    def start_gateway(self, args: list[str] = (), env: dict[str, str] | None = None) -> Any:
        log = tempfile.mktemp(suffix=".log")
        environ = dict(os.environ, TELEMETRY_LOGS_STD="text")
        environ.update(env or {})
        gw = GatewayProcess(list(args), env=environ, cwd=_REPO, logfile=log)
        self.addCleanup(gw.kill)
        self.log_path = log
        return deferToThread(gw.start).addCallback(lambda _: gw)

    def log_text(self) -> str:
        with open(self.log_path) as f:
            return f.read()

    @inlineCallbacks
    def backend(self) -> Any:
        site = scenario_site(reactor)
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site)
        self.addCleanup(port.stopListening)
        return f"http://127.0.0.1:{port.getHost().port}"

    def config(self, text: str) -> str:
        fd, path = tempfile.mkstemp(suffix=".yaml")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        self.addCleanup(os.unlink, path)
        return path


class DefaultConfigurationTests(ProcessTestCase):
    @inlineCallbacks
    def test_echo_api_out_of_the_box(self) -> Any:
        """With nothing configured, GET /echo/resource?param1=sample returns the echo of the request."""
        gw = yield self.start_gateway()
        status, body = yield deferToThread(_get, gw.url + "/echo/resource?param1=sample")
        self.assertEqual(status, 200)
        echo = json.loads(body)
        self.assertEqual(echo["method"], "GET")
        self.assertEqual(echo["path"], "/api/resource")
        self.assertEqual(echo["args"], {"param1": ["sample"]})
        self.assertIn("x-request-id", {k.lower() for k, _ in echo["headers"]})
        status, _ = yield deferToThread(_get, gw.url + "/status-0123456789abcdef")
        self.assertEqual(status, 200)
        code = yield deferToThread(gw.stop)
        self.assertEqual(code, -signal.SIGTERM)  # twistd re-raises the signal it stopped for
        self.assertIn('"GET /echo/resource?param1=sample HTTP/1.1" 200', self.log_text())
        self.assertIn("http listener drained", self.log_text())


class ShutdownTests(ProcessTestCase):
    @inlineCallbacks
    def test_sigterm_drains_in_flight_requests(self) -> Any:
        """On SIGTERM readiness turns 503 at once, the in-flight request still completes 200, then the process exits."""
        backend = yield self.backend()
        path = self.config(f"routes:\n  - path: /\n    backend: {backend}\n")
        gw = yield self.start_gateway(["--config", path, "--drain-delay", "1", "--grace", "10"])
        result: dict[str, Any] = {}

        def slow() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", gw.http_port, timeout=30)
            conn.request("GET", "/slow?sleep=2500")
            response = conn.getresponse()
            result["status"] = response.status
            result["body"] = response.read()
            result["connection"] = response.getheader("connection")

        worker = threading.Thread(target=slow)
        worker.start()
        yield deferToThread(time.sleep, 0.5)
        started = time.monotonic()
        gw.signal(signal.SIGTERM)
        yield deferToThread(time.sleep, 0.3)
        status, _ = yield deferToThread(_get, gw.url + "/status-0123456789abcdef")
        self.assertEqual(status, 503)
        status, _ = yield deferToThread(_get, gw.admin_url + "/readyz")
        self.assertEqual(status, 503)
        code = yield deferToThread(gw.process.wait, 30)
        yield deferToThread(worker.join, 30)
        self.assertEqual(code, -signal.SIGTERM)  # twistd re-raises the signal it stopped for
        self.assertIn("http listener drained", self.log_text())
        self.assertEqual(result["status"], 200)
        self.assertEqual(json.loads(result["body"])["path"], "/slow")
        self.assertEqual(result["connection"], "close")
        self.assertGreater(time.monotonic() - started, 1.5)


class SighupTests(ProcessTestCase):
    @inlineCallbacks
    def test_sighup_reloads_configuration(self) -> Any:
        """SIGHUP re-reads the configuration file at once (the mtime poll is made slow here)."""
        backend = yield self.backend()
        path = self.config(f"routes:\n  - path: /one\n    backend: {backend}\n")
        gw = yield self.start_gateway(["--config", path, "--poll-interval", "3600"])
        status, _ = yield deferToThread(_get, gw.url + "/two")
        self.assertEqual(status, 404)
        with open(path, "w") as f:
            f.write(f"routes:\n  - path: /two\n    backend: {backend}\n")
        gw.signal(signal.SIGHUP)
        for _ in range(50):
            status, _ = yield deferToThread(_get, gw.url + "/two")
            if status == 200:
                break
            yield deferToThread(time.sleep, 0.1)
        self.assertEqual(status, 200)
        yield deferToThread(gw.stop)


class StreamingMemoryTests(ProcessTestCase):
    @inlineCallbacks
    def test_200mb_response_through_a_slow_client_stays_bounded(self) -> Any:
        """200 MB stream to a client that stalls: the gateway's peak RSS grows by far less than the body."""
        backend = yield self.backend()
        path = self.config(f"routes:\n  - path: /\n    backend: {backend}\n")
        gw = yield self.start_gateway(["--config", path])
        yield deferToThread(_get, gw.url + "/warm")
        baseline = gw.peak_rss_kib()
        size = 200 * 1024 * 1024

        def slow_reader() -> int:
            s = socket.create_connection(("127.0.0.1", gw.http_port), timeout=60)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            s.sendall(f"GET /big?size={size} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            total = len(s.recv(65536))
            time.sleep(2.0)  # stall: without backpressure the gateway would buffer the body
            while chunk := s.recv(1 << 20):
                total += len(chunk)
            s.close()
            return total

        total = yield deferToThread(slow_reader)
        peak = gw.peak_rss_kib()
        self.assertGreater(total, size)
        self.assertLess(peak - baseline, 50 * 1024, f"peak RSS grew by {peak - baseline} KiB")
        yield deferToThread(gw.stop)
