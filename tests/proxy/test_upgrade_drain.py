"""
Tunnels (WebSocket pass-through) and the drain at shutdown, and the
tunnel's idle timeout as a setting: the whole in-process gateway on
loopback (stopped as SIGTERM stops it, ``Gateway.stopService``), the
``websockets`` protocol as backend and as client, real sockets.

No durations are asserted: a short grace makes the tests quick, and what
is checked is what happened (echoed, closed by a FIN, refused, logged,
counted).
"""

from __future__ import annotations

import socket
from typing import Any, ClassVar, cast

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import connectionDone
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure

from tests.integration.harness import GatewayTestCase

from .test_upgrade import CONFIG, SocketClient, WsEcho, WsEchoFactory

UPGRADE = (
    b"GET /ws/late HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
)


class _RecordingEcho(WsEcho):
    """The echo backend, keeping why its connection ended."""

    reason: Failure | None = None

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.reason = reason
        super().connectionLost(reason)


class _RecordingFactory(WsEchoFactory):
    protocol = _RecordingEcho


class _TunnelCase(GatewayTestCase):
    """The gateway with a WebSocket echo backend under ``/ws``."""

    @inlineCallbacks
    def setUp(self) -> Any:
        yield super().setUp()
        self.ws_backend = _RecordingFactory()
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(self.ws_backend)
        self.addCleanup(port.stopListening)
        self.write_config(CONFIG.format(backend=f"http://127.0.0.1:{port.getHost().port}"))

        @inlineCallbacks
        def routed() -> Any:
            r = yield self.get("/ws/refuse-probe")
            return r.status == 403

        yield self.wait_for(routed)
        self.ws_backend.connections.clear()
        self.registry = self.gateway.metrics.registry

    def closed_by(self, reason: str) -> float:
        value = self.registry.get_sample_value(
            "apimgw_upgraded_connections_closed_total", {"reason": reason}
        )
        return value or 0.0

    def open_tunnel(self) -> Deferred[SocketClient]:
        """A WebSocket through the gateway, one message echoed."""

        def run() -> SocketClient:
            client = SocketClient(self.port)
            response = client.handshake("/ws/echo")
            assert response.status_code == 101, response
            client.send_text(b"before")
            assert client.receive().data == b"before"
            return client

        return deferToThread(run)

    def drain(self) -> Deferred[Any]:
        """Stop the gateway as SIGTERM does."""
        return self.gateway.stopService()  # type: ignore[no-any-return]


class DrainCutsTunnelsTests(_TunnelCase):
    """A short grace: the tunnel outlives it."""

    extra_args = ["--grace", "3"]  # noqa: RUF012 (as the harness declares it)

    @inlineCallbacks
    def test_tunnel_runs_during_the_grace_then_is_closed(self) -> Any:
        """
        An open tunnel still echoes once the drain started; when the grace
        ends the gateway closes both sides with a FIN (the client reads
        EOF, not a reset; the backend sees a clean close), logs and counts
        the cut.
        """
        client = yield self.open_tunnel()
        self.addCleanup(client.close)
        [backend] = cast(list[_RecordingEcho], self.ws_backend.connections)
        stopped = self.drain()
        self.assertTrue(self.gateway.health.draining)

        def during_then_eof() -> tuple[bytes, bytes]:
            client.send_text(b"during")
            echoed = client.receive().data
            # Blocks until the gateway closes; a reset would raise here.
            return echoed, client.read_eof()

        echoed, rest = yield deferToThread(during_then_eof)
        self.assertEqual((echoed, rest), (b"during", b""))
        yield backend.lost
        assert backend.reason is not None
        self.assertIsInstance(backend.reason.value, ConnectionDone)
        yield stopped
        self.assertTrue(self.logged("closed 1 tunnels"), self.events[-8:])
        self.assertTrue(self.logged("and 1 tunnels open"))
        self.assertEqual(self.closed_by("shutdown"), 1)
        self.assertEqual(self.registry.get_sample_value("apimgw_upgraded_connections_open"), 0)


class DrainWaitsForTunnelsTests(_TunnelCase):
    """A long grace: the drain ends as soon as the tunnels do."""

    extra_args = ["--grace", "30"]  # noqa: RUF012 (as the harness declares it)

    @inlineCallbacks
    def test_tunnel_closed_during_the_drain_ends_it(self) -> Any:
        """
        The drain waits for the open tunnel; its client closing it lets the
        shutdown finish without waiting out the grace, and nothing is cut.
        """
        client = yield self.open_tunnel()
        [backend] = self.ws_backend.connections
        stopped = self.drain()
        yield deferToThread(client.send_text, b"still here")
        frame = yield deferToThread(client.receive)
        self.assertEqual(frame.data, b"still here")
        self.assertNoResult(stopped)
        client.close()
        yield stopped
        yield backend.lost
        self.assertFalse(self.logged("Grace period of"))
        self.assertFalse(self.logged("tunnels (upgraded connections)"))
        self.assertEqual(self.closed_by("client"), 1)
        self.assertEqual(self.closed_by("shutdown"), 0)

    @inlineCallbacks
    def test_new_upgrade_refused_while_draining(self) -> Any:
        """
        While draining (a tunnel holding the drain open), an upgrade request
        on a keep-alive connection is answered 503 with ``Connection:
        close`` and the APIM envelope, and never reaches the backend; a
        plain request on another is still served, with ``Connection: close``.
        """
        tunnel = yield self.open_tunnel()
        self.addCleanup(tunnel.close)
        keep = socket.create_connection(("127.0.0.1", self.port), timeout=20)
        self.addCleanup(keep.close)
        plain = socket.create_connection(("127.0.0.1", self.port), timeout=20)
        self.addCleanup(plain.close)
        probe = b"GET /ws/refuse-probe HTTP/1.1\r\nHost: a\r\n\r\n"
        for sock in (keep, plain):
            answer = yield deferToThread(_exchange, sock, probe)
            self.assertTrue(answer.startswith(b"HTTP/1.1 403 "), answer)
        backends = len(self.ws_backend.connections)
        stopped = self.drain()
        answer = yield deferToThread(_exchange, keep, UPGRADE)
        head, _, body = answer.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 503 "), head)
        self.assertIn(b"connection: close", head.lower())
        self.assertIn(b'"statusCode":503', body.replace(b" ", b""))
        closed = yield deferToThread(keep.recv, 1)
        self.assertEqual(closed, b"")
        answer = yield deferToThread(_exchange, plain, probe)
        self.assertTrue(answer.startswith(b"HTTP/1.1 403 "), answer)
        self.assertIn(b"connection: close", answer.lower())
        # The refused upgrade opened no backend connection (the probe is
        # refused by the WebSocket server: a connection each).
        self.assertEqual(len(self.ws_backend.connections), backends + 1)
        self.assertTrue(self.logged('"GET /ws/late HTTP/1.1" 503'), self.events[-8:])
        tunnel.close()
        yield stopped


class IdleTimeoutSettingTests(_TunnelCase):
    """``net.server.upgrade-idle-timeout`` reaches the tunnels."""

    environ: ClassVar[dict[str, str]] = {"NET_SERVER_UPGRADE_IDLE_TIMEOUT": "0.5"}

    @inlineCallbacks
    def test_idle_tunnel_closed(self) -> Any:
        """A tunnel passing nothing is closed by the gateway (both sides), counted as ``idle``."""
        client = yield self.open_tunnel()
        self.addCleanup(client.close)
        [backend] = self.ws_backend.connections
        rest = yield deferToThread(client.read_eof)
        self.assertEqual(rest, b"")
        yield backend.lost
        self.assertEqual(self.closed_by("idle"), 1)


def _exchange(sock: socket.socket, raw: bytes) -> bytes:
    """Send one request, read one answer with a Content-Length."""
    sock.sendall(raw)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body
