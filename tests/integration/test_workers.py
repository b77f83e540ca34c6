"""
Tests of ``twistd apimgw --workers 2``: real supervisor and worker
processes on loopback ports.

Which worker answered a connection is read from the kernel, not from the
gateway: the server side of a loopback connection is a socket whose inode
``/proc/net/tcp`` lists, and ``/proc/<pid>/fd`` says which worker holds
it. So the tests know, without any debug header, that each worker served,
saw a configuration change, or drained.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import ssl
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from gateway.testing.process import GatewayProcess

from .test_process import ProcessTestCase
from .h2client import h2_streams
from .tlsclient import client_context, h2_exchange, tls_connect

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _get(url: str, timeout: float = 10.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _hex_address(port: int) -> str:
    """127.0.0.1:port as /proc/net/tcp writes it."""
    return f"0100007F:{port:04X}"


def server_socket_inode(server_port: int, client_port: int) -> int | None:
    """The inode of the accepted socket of a loopback connection (``None``: not accepted)."""
    local, remote = _hex_address(server_port), _hex_address(client_port)
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if fields[1] == local and fields[2] == remote and fields[9] != "0":
                return int(fields[9])
    return None


def owner(server_port: int, client_port: int, pids: list[int]) -> int | None:
    """Which of ``pids`` holds the server side of the connection from ``client_port``."""
    inode = server_socket_inode(server_port, client_port)
    if inode is None:
        return None
    wanted = f"socket:[{inode}]"
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == wanted:
                        return pid
                except OSError:
                    continue
        except OSError:
            continue
    return None


class WorkersTestCase(ProcessTestCase):
    """Gateways with two worker processes (the backend and config helpers are ProcessTestCase's)."""

    timeout = 180

    def start_gateway(
        self,
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        workers: str | None = "2",
    ) -> Any:
        """
        A gateway with ``--workers workers``, returned once its workers
        serve; ``None``: nothing set, neither the option nor the
        environment (the gateway's default, ``auto``).
        """
        log = tempfile.mktemp(suffix=".log")
        environ = dict(os.environ, TELEMETRY_LOGS_STD="text", **(env or {}))
        for name in ("gateway.workers", "GATEWAY_WORKERS"):
            environ.pop(name, None)
        option = ["--workers", workers] if workers is not None else []
        gw = GatewayProcess([*option, *args], env=environ, cwd=_REPO, logfile=log, workers=None)
        self.addCleanup(self._kill_all, gw)
        self.log_path = log
        return deferToThread(gw.start).addCallback(lambda _: deferToThread(self.live, gw))

    def _kill_all(self, gw: GatewayProcess) -> None:
        pids = []
        if gw.process is not None and gw.process.poll() is None:
            try:
                pids = [w["pid"] for w in self.workers(gw) if w["pid"]]
            except Exception:  # noqa: BLE001 (best effort in a cleanup)
                pids = []
        gw.kill()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    def workers(self, gw: GatewayProcess) -> list[dict[str, Any]]:
        status, body = _get(gw.admin_url + "/config")
        assert status == 200, body
        return json.loads(body)["workers"]  # type: ignore[no-any-return]

    def live(self, gw: GatewayProcess, snapshot: int = 1, deadline: float = 30.0) -> GatewayProcess:
        """
        Wait until every worker runs and serves snapshot ``snapshot`` (or
        later); a gateway of one process (no ``workers`` in ``/config``)
        is live once started.
        """
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            status, body = _get(gw.admin_url + "/config")
            assert status == 200, body
            if "workers" not in json.loads(body):
                return gw
            workers = self.workers(gw)
            if all(w["pid"] and w["applied"] >= snapshot and w["generation"] for w in workers):
                return gw
            time.sleep(0.05)
        raise AssertionError(f"workers not live: {self.workers(gw)}")

    def requests_served(self, gw: GatewayProcess) -> float:
        """``apimgw_requests_total`` summed over its label sets, from the merged ``/metrics``."""
        status, body = _get(gw.admin_url + "/metrics")
        assert status == 200, body
        return sum(
            float(m.group(1))
            for m in re.finditer(r"^apimgw_requests_total\{[^}]*\} (\S+)$", body.decode(), re.MULTILINE)
        )


    def connection_per_worker(self, gw: GatewayProcess, path: str = "/a") -> dict[int, Any]:
        """
        A keep-alive connection to each worker (pid → connection), found by
        opening connections until the kernel has given one to each; every
        request on the way must answer 200.
        """
        pids = [w["pid"] for w in self.workers(gw)]
        found: dict[int, Any] = {}
        for _ in range(200):
            conn = http.client.HTTPConnection("127.0.0.1", gw.http_port, timeout=10)
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            assert response.status == 200, response.status
            pid = owner(gw.http_port, conn.sock.getsockname()[1], pids)
            if pid is not None and pid not in found:
                found[pid] = conn
            else:
                conn.close()
            if len(found) == len(pids):
                return found
        raise AssertionError(f"connections reached only {sorted(found)} of {pids}")


class WorkersServeTests(WorkersTestCase):
    @inlineCallbacks
    def test_both_workers_serve_and_metrics_add_up(self) -> Any:
        """Two worker processes (not the supervisor) answer on the one port; /metrics counts every worker's requests."""
        backend = yield self.backend()
        path = self.config(f"routes:\n  - path: /a\n    backend: {backend}\n")
        gw = yield self.start_gateway(["--config", path])
        workers = yield deferToThread(self.workers, gw)
        pids = [w["pid"] for w in workers]
        self.assertEqual(len(set(pids)), 2)
        self.assertNotIn(gw.process.pid, pids)
        connections = yield deferToThread(self.connection_per_worker, gw)
        self.assertEqual(sorted(connections), sorted(pids))

        def more() -> int:
            # Five more requests on each worker's connection.
            for conn in connections.values():
                for _ in range(5):
                    conn.request("GET", "/a")
                    response = conn.getresponse()
                    response.read()
                    assert response.status == 200
                conn.close()
            return 10

        yield deferToThread(more)
        status, body = yield deferToThread(_get, gw.admin_url + "/metrics")
        self.assertEqual(status, 200)
        text = body.decode()
        # Every request reached /a: the merged total is all of them, from both workers.
        served = sum(
            float(m.group(1))
            for m in re.finditer(r'^apimgw_requests_total\{[^}]*route="[^"]*"[^}]*\} (\S+)$', text, re.MULTILINE)
        )
        # connection_per_worker's probes plus the ten above, each answered once.
        probes = served - 10
        self.assertGreaterEqual(probes, 2)

        def access_lines() -> int:
            # The workers' lines reach the log file through the supervisor:
            # wait (bounded) for the last ones.
            count = 0
            for _ in range(100):
                count = sum('"GET /a HTTP/1.1" 200' in line for line in self.log_text().splitlines())
                if count >= served:
                    break
                time.sleep(0.05)
            return count

        access = yield deferToThread(access_lines)
        self.assertEqual(access, served)
        self.assertIn("apimgw_workers 2.0", text)
        yield deferToThread(gw.stop)


class WorkersDefaultTests(WorkersTestCase):
    @inlineCallbacks
    def test_default_is_one_worker_per_available_cpu(self) -> Any:
        """
        ``twistd apimgw`` with no workers setting runs as many worker
        processes as ``available_cpus()`` counts for this machine (its
        cgroup CPU limit and scheduler affinity, which the child inherits),
        or one process when that is 1; it says so in its log, and serves.
        """
        from gateway.workers import available_cpus

        expected = available_cpus()
        backend = yield self.backend()
        path = self.config(f"routes:\n  - path: /a\n    backend: {backend}\n")
        gw = yield self.start_gateway(["--config", path], workers=None)
        status, body = yield deferToThread(_get, gw.url + "/a")
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body)["path"], "/a")
        status, body = yield deferToThread(_get, gw.admin_url + "/config")
        self.assertEqual(status, 200)
        described = json.loads(body)
        status, metrics = yield deferToThread(_get, gw.admin_url + "/metrics")
        self.assertEqual(status, 200)
        log = self.log_text()
        self.assertIn(f"gateway.workers auto: {expected} CPU(s) available", log)
        if expected == 1:
            # One CPU: exactly today's single process, no supervisor.
            self.assertNotIn("workers", described)
            self.assertNotIn(b"apimgw_workers ", metrics)
            self.assertIn("one process", log)
        else:
            pids = {w["pid"] for w in described["workers"]}
            self.assertEqual(len(pids), expected)
            self.assertNotIn(gw.process.pid, pids)
            self.assertIn(f"apimgw_workers {float(expected)}".encode(), metrics)
            self.assertIn(f"{expected} worker processes serve", log)
        yield deferToThread(gw.stop)


class WorkersHttpsTests(WorkersTestCase):
    @inlineCallbacks
    def test_both_workers_serve_https_with_the_supervisors_default_certificate(self) -> Any:
        """HTTPS connections reach both workers, and both present the one self-signed default certificate."""
        backend = yield self.backend()
        path = self.config(f"routes:\n  - path: /a\n    backend: {backend}\n")
        gw = yield self.start_gateway(["--config", path])
        workers = yield deferToThread(self.workers, gw)
        pids = [w["pid"] for w in workers]

        def handshakes() -> dict[int, set[bytes]]:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            seen: dict[int, set[bytes]] = {}
            for _ in range(200):
                conn = http.client.HTTPSConnection(
                    "127.0.0.1", gw.https_port, timeout=10, context=context
                )
                conn.request("GET", "/a")
                response = conn.getresponse()
                response.read()
                assert response.status == 200, response.status
                assert conn.sock is not None
                der = conn.sock.getpeercert(binary_form=True)
                pid = owner(gw.https_port, conn.sock.getsockname()[1], pids)
                conn.close()
                if pid is not None and der is not None:
                    seen.setdefault(pid, set()).add(der)
                if len(seen) == 2:
                    break
            return seen

        seen = yield deferToThread(handshakes)
        self.assertEqual(sorted(seen), sorted(pids))
        self.assertEqual(len(set.union(*seen.values())), 1)
        yield deferToThread(gw.stop)


class WorkersHttp2Tests(WorkersTestCase):
    @inlineCallbacks
    def test_http2_through_both_workers(self) -> Any:
        """
        HTTP/2 (ALPN h2 on the HTTPS listener) through two workers: h2
        connections with three concurrent GET streams each (and a second
        connection with a POST and its body) are opened until each worker
        has accepted at least one; every stream is answered 200 by the
        backend with its own method, path and body, and the merged
        /metrics counts each stream once.
        """
        backend = yield self.backend()
        path = self.config(f"routes:\n  - path: /a\n    backend: {backend}\n")
        gw = yield self.start_gateway(["--config", path])
        pids = [w["pid"] for w in (yield deferToThread(self.workers, gw))]

        def connections() -> tuple[dict[int, int], int]:
            served: dict[int, int] = {}
            opened = 0
            # At least 6 connections; more until each worker took one
            # (the kernel picks the worker by a hash of the addresses).
            while opened < 6 or len(served) < len(pids):
                if opened == 200:
                    break
                opened += 1
                session = tls_connect(gw.https_port, "localhost", client_context(alpn=("h2",)))
                pid = owner(gw.https_port, session.sock.getsockname()[1], pids)
                assert pid is not None, "the connection is held by no worker"
                got = h2_exchange(session, "localhost", "GET", f"/a/get/{opened}", streams=3)
                assert [r.status for r in got] == [200] * 3, [r.status for r in got]
                for response in got:
                    echo = json.loads(response.body)
                    assert (echo["method"], echo["path"]) == ("GET", f"/a/get/{opened}"), echo
                session = tls_connect(gw.https_port, "localhost", client_context(alpn=("h2",)))
                body = f"body {opened}".encode()
                (posted,) = h2_exchange(session, "localhost", "POST", f"/a/post/{opened}", body=body)
                assert posted.status == 200, posted.status
                echo = json.loads(posted.body)
                assert (echo["method"], echo["body"]) == ("POST", body.decode()), echo
                served[pid] = served.get(pid, 0) + 1
            return served, opened

        served, opened = yield deferToThread(connections)
        self.assertEqual(sorted(served), sorted(pids), f"{opened} connections reached only {served}")
        # Every one of those streams went through a worker's proxy, once
        # (polled: a worker may count a stream just after its last frame).
        expected = opened * 4

        def counted() -> float:
            total = self.requests_served(gw)
            for _ in range(100):
                if total >= expected:
                    break
                time.sleep(0.05)
                total = self.requests_served(gw)
            return total

        total = yield deferToThread(counted)
        self.assertEqual(total, expected)
        yield deferToThread(gw.stop)

    @inlineCallbacks
    def test_h2c_through_both_workers(self) -> Any:
        """
        HTTP/2 with prior knowledge (h2c) on the plain port of two workers:
        connections are opened until each worker has accepted one, and
        each one's two concurrent streams are answered by the backend.
        """
        backend = yield self.backend()
        path = self.config(f"routes:\n  - path: /a\n    backend: {backend}\n")
        gw = yield self.start_gateway(["--config", path])
        pids = [w["pid"] for w in (yield deferToThread(self.workers, gw))]

        def connections() -> dict[int, int]:
            served: dict[int, int] = {}
            for opened in range(1, 201):
                if len(served) == len(pids):
                    break
                with socket.create_connection(("127.0.0.1", gw.http_port), timeout=10) as sock:
                    # Nothing is sent before the accept (unlike a TLS
                    # handshake): wait for a worker to hold it (at most 10 s).
                    pid = None
                    for _ in range(200):
                        pid = owner(gw.http_port, sock.getsockname()[1], pids)
                        if pid is not None:
                            break
                        time.sleep(0.05)
                    assert pid is not None, "the connection is held by no worker"
                    got = h2_streams(sock, "http", "localhost", "GET", f"/a/{opened}", streams=2)
                assert [r.status for r in got] == [200, 200], [r.status for r in got]
                for response in got:
                    assert json.loads(response.body)["path"] == f"/a/{opened}", response.body
                served[pid] = served.get(pid, 0) + 1
            return served

        served = yield deferToThread(connections)
        self.assertEqual(sorted(served), sorted(pids))
        yield deferToThread(gw.stop)


class WorkersConfigurationTests(WorkersTestCase):
    @inlineCallbacks
    def test_change_reaches_every_worker_without_a_failed_request(self) -> Any:
        """
        SIGHUP changes the configuration ten times while a steady loop of
        requests runs on both workers: every request answers 200, and each
        worker (on its own connection) serves the last change.
        """
        backend = yield self.backend()
        base = f"routes:\n  - path: /a\n    backend: {backend}\n"
        path = self.config(base)
        gw = yield self.start_gateway(["--config", path, "--poll-interval", "3600"])
        connections = yield deferToThread(self.connection_per_worker, gw)
        failures: list[str] = []
        answered = [0]
        stop = threading.Event()

        def steady(conn: Any) -> None:
            while not stop.is_set():
                try:
                    conn.request("GET", "/a")
                    response = conn.getresponse()
                    response.read()
                    if response.status != 200:
                        failures.append(f"status {response.status}")
                    answered[0] += 1
                except Exception as e:  # noqa: BLE001 (any failure is the finding)
                    failures.append(repr(e))
                    return

        def fresh() -> None:
            # New connections too, spread by the kernel over both workers.
            while not stop.is_set():
                try:
                    status, _ = _get(gw.url + "/a")
                    if status != 200:
                        failures.append(f"fresh status {status}")
                    answered[0] += 1
                except Exception as e:  # noqa: BLE001
                    failures.append(repr(e))

        threads = [threading.Thread(target=steady, args=(c,)) for c in connections.values()]
        threads.append(threading.Thread(target=fresh))
        for t in threads:
            t.start()
        try:
            for n in range(1, 11):
                with open(path, "w") as f:
                    f.write(base + f"  - path: /v{n}\n    backend: {backend}\n")
                gw.signal(signal.SIGHUP)
                # Each change rolled out to both workers before the next.
                yield deferToThread(self.live, gw, n + 1)
        finally:
            stop.set()
            for t in threads:
                yield deferToThread(t.join, 30)
        self.assertEqual(failures, [])
        self.assertGreater(answered[0], 0)

        def last_change_everywhere() -> dict[int, int]:
            seen = {}
            for pid, conn in connections.items():
                conn.request("GET", "/v10")
                response = conn.getresponse()
                response.read()
                seen[pid] = response.status
            return seen

        seen = yield deferToThread(last_change_everywhere)
        self.assertEqual(set(seen.values()), {200})
        self.assertEqual(len(seen), 2)
        yield deferToThread(gw.stop)


class WorkersLifecycleTests(WorkersTestCase):
    @inlineCallbacks
    def test_killed_worker_is_restarted_and_serves(self) -> Any:
        """
        A worker killed with SIGKILL is replaced by a new process that
        serves the live configuration; connections opened meanwhile are all
        answered.
        """
        backend = yield self.backend()
        path = self.config(f"routes:\n  - path: /a\n    backend: {backend}\n")
        gw = yield self.start_gateway(["--config", path])
        before = yield deferToThread(self.workers, gw)
        victim = before[0]["pid"]
        # Both workers count requests (one connection each) and are scraped.
        first = yield deferToThread(self.connection_per_worker, gw)
        for conn in first.values():
            conn.close()
        served_before = yield deferToThread(self.requests_served, gw)
        os.kill(victim, signal.SIGKILL)
        # New connections while worker 1 is dead: the kernel still routes
        # some to its socket, which the supervisor keeps open; they wait
        # for the restarted worker instead of being refused or reset.
        answers: list[Any] = []

        def fresh() -> None:
            try:
                answers.append(_get(gw.url + "/a", timeout=30)[0])
            except Exception as e:  # noqa: BLE001 (any failure is the finding)
                answers.append(repr(e))

        meanwhile = [threading.Thread(target=fresh) for _ in range(20)]
        for t in meanwhile:
            t.start()

        def replaced() -> list[dict[str, Any]]:
            end = time.monotonic() + 30
            while time.monotonic() < end:
                workers = self.workers(gw)
                if workers[0]["pid"] not in (None, victim) and workers[0]["generation"]:
                    return workers
                time.sleep(0.05)
            raise AssertionError(f"not restarted: {self.workers(gw)}")

        after = yield deferToThread(replaced)
        for t in meanwhile:
            yield deferToThread(t.join, 60)
        self.assertEqual(answers, [200] * 20)
        # The merged counter did not go down with the dead worker's
        # registry: its last scraped counts are kept, and the 20 answered
        # since are added (by the surviving and the new worker).
        served_after = yield deferToThread(self.requests_served, gw)
        self.assertEqual(served_after, served_before + 20)
        self.assertEqual(after[0]["restarts"], 1)
        self.assertEqual(after[1]["pid"], before[1]["pid"])
        connections = yield deferToThread(self.connection_per_worker, gw)
        self.assertIn(after[0]["pid"], connections)
        for conn in connections.values():
            conn.close()
        self.assertIn(f"Worker 1 (pid {victim}) died", self.log_text())
        yield deferToThread(gw.stop)

    @inlineCallbacks
    def test_sigterm_drains_every_worker(self) -> Any:
        """
        SIGTERM to the supervisor: slow requests in flight on both workers
        all complete with 200, new connections are refused once the
        workers stopped listening, and every process exits.
        """
        backend = yield self.backend()
        path = self.config(f"routes:\n  - path: /\n    backend: {backend}\n")
        gw = yield self.start_gateway(["--config", path, "--drain-delay", "0.5", "--grace", "20"])
        connections = yield deferToThread(self.connection_per_worker, gw, "/a")
        pids = sorted(connections)
        results: dict[int, Any] = {}

        def slow(pid: int, conn: Any) -> None:
            try:
                conn.request("GET", "/slow?sleep=2500")
                response = conn.getresponse()
                results[pid] = (response.status, json.loads(response.read())["path"])
            except Exception as e:  # noqa: BLE001
                results[pid] = repr(e)

        threads = [threading.Thread(target=slow, args=item) for item in connections.items()]
        for t in threads:
            t.start()
        yield deferToThread(time.sleep, 0.5)
        gw.signal(signal.SIGTERM)
        code = yield deferToThread(gw.process.wait, 60)
        for t in threads:
            yield deferToThread(t.join, 30)
        self.assertEqual(results, {pid: (200, "/slow") for pid in pids})
        self.assertEqual(code, -signal.SIGTERM)
        for pid in pids:
            self.assertFalse(os.path.exists(f"/proc/{pid}"), f"worker {pid} still running")
        log = self.log_text()
        self.assertEqual(log.count("http listener drained"), 2)
        self.assertNotIn("killed", log)


class PortTakenTests(TestCase):
    def test_a_port_held_by_a_plain_listener_refuses_the_start(self) -> None:
        """
        ``--workers 2`` on a port another process listens on (without
        SO_REUSEPORT, as most servers do): startup fails with a usage error
        naming the address, rather than the group joining that listener.
        """
        from twisted.internet.task import Clock
        from twisted.python import usage

        from gateway.tap import Options, build_gateway

        holder = socket.socket()
        self.addCleanup(holder.close)
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        options = Options(environ={})
        options.parseOptions(
            ["--workers", "2", "--http", f"tcp:{port}:interface=127.0.0.1", "--https", ""]
        )
        e = self.assertRaises(usage.UsageError, build_gateway, options, Clock())
        self.assertIn(f"127.0.0.1:{port} is already in use by another socket", str(e))
