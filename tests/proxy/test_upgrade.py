"""
WebSocket pass-through (issue 11): a real WebSocket backend (the
``websockets`` library's protocol, driven by Twisted), real clients (the
``websockets`` blocking client, and its protocol over a plain socket) and
the whole gateway on loopback, served by the strict HTTP/1.1 server.
"""

from __future__ import annotations

import socket
import threading
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.server import ServerProtocol
from websockets.sync.client import connect
from websockets.uri import parse_uri

from gateway.model import ObjectRef
from gateway.translate import (
    KIND_ROUTE,
    PREFIX,
    HeaderEdits,
    PathChange,
    Rewrite,
    RouteEntry,
    Variant,
    WeightedBackend,
    parse_backend,
)
from tests.integration.harness import GatewayTestCase, request_sync
from tests.integration.tlsclient import client_context

from .test_h1_tls import StrictHTTPSTestCase

CONFIG = """\
routes:
  - path: /ws
    pathType: Prefix
    backend: {backend}
apis:
  - name: guarded
    path: guarded
    serviceUrl: {backend}/ws
  - name: open
    path: open
    serviceUrl: {backend}/ws
policies:
  - scope: api
    apiId: guarded
    xml: |
      <policies>
        <inbound><set-header name="X-Added" exists-action="override"><value>one</value></set-header></inbound>
        <backend><forward-request /></backend>
        <outbound />
      </policies>
"""

FIVE_MB = 5 * 1024 * 1024
FLOOD_FRAMES = 512
FLOOD_FRAME = 64 * 1024


class WsEcho(Protocol):
    """
    A WebSocket server (``websockets``' sans-I/O protocol on a Twisted
    connection): echoes text and binary messages; refuses the handshake
    for a path holding ``refuse`` (403); closes the TCP connection without
    a close frame on the text message ``drop``.
    """

    factory: WsEchoFactory

    def connectionMade(self) -> None:
        self.ws = ServerProtocol(max_size=None)
        self.factory.connections.append(self)
        self.lost: Deferred[None] = Deferred()
        self.request: Request | None = None

    def dataReceived(self, data: bytes) -> None:
        ws = self.ws
        ws.receive_data(data)
        for event in ws.events_received():
            if isinstance(event, Request):
                self.request = event
                if "refuse" in event.path:
                    response = ws.reject(403, "refused\n")
                else:
                    response = ws.accept(event)
                ws.send_response(response)
            elif isinstance(event, Frame):
                if event.opcode == Opcode.TEXT:
                    if event.data == b"drop":
                        self.transport.loseConnection()
                        return
                    if event.data == b"flood":
                        # Written at once, whatever the gateway takes.
                        for index in range(FLOOD_FRAMES):
                            ws.send_binary(bytes([index % 256]) * FLOOD_FRAME)
                        continue
                    ws.send_text(event.data)
                elif event.opcode == Opcode.BINARY:
                    ws.send_binary(event.data)
        for out in ws.data_to_send():
            if out:
                self.transport.write(out)
            else:
                self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost.callback(None)


class WsEchoFactory(Factory):
    protocol = WsEcho

    def __init__(self) -> None:
        self.connections: list[WsEcho] = []


class SocketClient:
    """``websockets``' client protocol over a blocking socket (run in a thread)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.buffer = b""

    def handshake(self, path: str) -> Response:
        self.ws = ClientProtocol(parse_uri(f"ws://127.0.0.1:{self.port}{path}"), max_size=None)
        self.ws.send_request(self.ws.connect())
        self._flush()
        while True:
            for event in self._events():
                if isinstance(event, Response):
                    self.pending = []
                    return event

    def send_text(self, text: bytes) -> None:
        self.ws.send_text(text)
        self._flush()

    def receive(self) -> Frame:
        while True:
            events = self._events()
            if events:
                return events[0]  # type: ignore[no-any-return]

    def read_eof(self) -> bytes:
        """What arrives until the gateway closes the connection."""
        data = b""
        while chunk := self.sock.recv(65536):
            data += chunk
        return data

    def http(self, raw: bytes) -> bytes:
        """Send a raw HTTP request, read one answer with a Content-Length."""
        self.sock.sendall(raw)
        data = b""
        while b"\r\n\r\n" not in data:
            data += self.sock.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        while len(body) < length:
            body += self.sock.recv(65536)
        return head + b"\r\n\r\n" + body

    def _events(self) -> list[Any]:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError
        self.ws.receive_data(data)
        return list(self.ws.events_received())

    def _flush(self) -> None:
        for out in self.ws.data_to_send():
            self.sock.sendall(out)

    def close(self) -> None:
        self.sock.close()


class UpgradeTests(GatewayTestCase):
    """The gateway passes WebSocket connections through, both ways, with backpressure."""

    @inlineCallbacks
    def setUp(self) -> Any:
        yield super().setUp()
        self.ws_backend = WsEchoFactory()
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(self.ws_backend)
        self.addCleanup(port.stopListening)
        ws_url = f"http://127.0.0.1:{port.getHost().port}"
        self.ws_url = ws_url
        self.write_config(CONFIG.format(backend=ws_url))

        @inlineCallbacks
        def routed() -> Any:
            r = yield self.get("/ws/refuse-probe")
            return r.status == 403

        yield self.wait_for(routed)
        self.metrics = self.gateway.metrics
        self.ws_backend.connections.clear()

    def _upgraded(self, protocol: str = "websocket") -> float:
        value = self.metrics.registry.get_sample_value(
            "apimgw_upgraded_connections_total", {"protocol": protocol}
        )
        return value or 0.0

    def _open(self) -> float:
        return self.metrics.registry.get_sample_value("apimgw_upgraded_connections_open") or 0.0

    def _bytes(self) -> tuple[float, float]:
        get = self.metrics.registry.get_sample_value
        return (
            get("apimgw_upgraded_bytes_total", {"direction": "to_backend"}) or 0.0,
            get("apimgw_upgraded_bytes_total", {"direction": "to_client"}) or 0.0,
        )

    @inlineCallbacks
    def test_echo(self) -> Any:
        """Text, binary and a 5 MB message echo through the gateway; the connection is counted while open."""
        seen: list[Any] = []
        moved: list[tuple[float, float]] = []

        def run() -> list[Any]:
            big = bytes(range(256)) * (FIVE_MB // 256)
            with connect(f"ws://127.0.0.1:{self.port}/ws/echo", max_size=None) as ws:
                ws.send("hello")
                out = [ws.recv()]
                ws.send(b"\x00\x01\xff")
                out.append(ws.recv())
                seen.append(self._open())
                ws.send(big)
                echoed = ws.recv()
                out.append(echoed == big)
                moved.append(self._bytes())  # counted while the tunnel is open
                ws.send("after")
                out.append(ws.recv())
            return out

        before = self._upgraded()
        out = yield deferToThread(run)
        self.assertEqual(out, ["hello", b"\x00\x01\xff", True, "after"])
        self.assertEqual(seen, [1.0])
        self.assertEqual(self._upgraded() - before, 1)
        [backend] = self.ws_backend.connections
        yield backend.lost
        yield self.wait_for(lambda: self._open() == 0)
        # The 5 MB message each way (plus framing), open and ended alike.
        [(up, down)] = moved
        self.assertGreater(up, FIVE_MB)
        self.assertGreater(down, FIVE_MB)
        self.assertLess(up, FIVE_MB + 64 * 1024)
        ended_up, ended_down = self._bytes()
        self.assertGreater(ended_up, up)  # "after" and the close frames too
        self.assertGreater(ended_down, down)
        # The backend saw the handshake headers and the upgrade asked of it.
        assert backend.request is not None
        self.assertEqual(backend.request.headers["Upgrade"].lower(), "websocket")
        self.assertIn("Sec-WebSocket-Key", backend.request.headers)
        # The access log has the 101.
        self.assertTrue(self.logged('"GET /ws/echo HTTP/1.1" 101'), self.events[-5:])

    @inlineCallbacks
    def test_client_close_closes_the_backend(self) -> Any:
        """A client that closes its TCP connection (no close frame) has the backend's closed."""

        def run() -> Any:
            client = SocketClient(self.port)
            response = client.handshake("/ws/echo")
            client.send_text(b"one")
            frame = client.receive()
            client.close()
            return response.status_code, frame.data

        status, data = yield deferToThread(run)
        self.assertEqual((status, data), (101, b"one"))
        [backend] = self.ws_backend.connections
        yield backend.lost
        yield self.wait_for(lambda: self._open() == 0)

    @inlineCallbacks
    def test_backend_close_closes_the_client(self) -> Any:
        """A backend that closes its TCP connection has the client's closed."""

        def run() -> Any:
            client = SocketClient(self.port)
            client.handshake("/ws/echo")
            client.send_text(b"drop")
            try:
                return client.read_eof()
            finally:
                client.close()

        rest = yield deferToThread(run)
        self.assertEqual(rest, b"")
        yield self.wait_for(lambda: self._open() == 0)

    @inlineCallbacks
    def test_refused_upgrade_continues_as_http(self) -> Any:
        """
        A backend's 403 to the handshake is forwarded and the client's
        connection stays HTTP/1.1: a second upgrade on it switches. Each
        upgrade request had a backend connection of its own.
        """

        def run() -> Any:
            client = SocketClient(self.port)
            try:
                refused = client.http(
                    b"GET /ws/refuse HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n"
                    b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
                )
                response = client.handshake("/ws/echo")
                client.send_text(b"again")
                return refused, response.status_code, client.receive().data
            finally:
                client.close()

        before = self._upgraded()
        refused, status, data = yield deferToThread(run)
        self.assertTrue(refused.startswith(b"HTTP/1.1 403 "), refused)
        self.assertNotIn(b"connection: close", refused.lower())
        self.assertTrue(refused.endswith(b"refused\n"))
        self.assertEqual((status, data), (101, b"again"))
        self.assertEqual(len(self.ws_backend.connections), 2)
        self.assertEqual(self._upgraded() - before, 1)

    @inlineCallbacks
    def test_api_with_policies_refuses_upgrade(self) -> Any:
        """An API with policies answers 501 to an upgrade (the backend is not reached); one without passes it."""

        def run() -> Any:
            client = SocketClient(self.port)
            try:
                refused = client.http(
                    b"GET /guarded/echo HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n"
                    b"Upgrade: websocket\r\n\r\n"
                )
                response = client.handshake("/open/echo")
                client.send_text(b"api")
                return refused, response.status_code, client.receive().data
            finally:
                client.close()

        refused, status, data = yield deferToThread(run)
        self.assertTrue(refused.startswith(b"HTTP/1.1 501 "), refused)
        self.assertEqual((status, data), (101, b"api"))
        [backend] = self.ws_backend.connections
        assert backend.request is not None
        self.assertEqual(backend.request.path, "/ws/echo")

    @inlineCallbacks
    def test_plain_get_still_strips_upgrade(self) -> Any:
        """A request without ``Connection: upgrade`` forwards no ``Upgrade`` header (hop-by-hop)."""
        r = yield deferToThread(
            request_sync, self.port, "GET", "/ws/plain", headers=[("Upgrade", "websocket")]
        )
        # The WebSocket server sees no upgrade request: it refuses the handshake.
        self.assertEqual(r.status, 426)

    @inlineCallbacks
    def test_slow_client_pauses_the_backend(self) -> Any:
        """
        A backend sending 32 MB to a client that reads nothing: the gateway
        stops reading the backend (its buffer for the client stays small),
        and once the client reads, all 32 MB arrive in order.
        """
        flooding = threading.Event()
        read_now = threading.Event()

        def run() -> Any:
            client = SocketClient(self.port)
            try:
                client.handshake("/ws/echo")
                client.send_text(b"flood")
                flooding.set()
                read_now.wait(30)
                frames: list[Frame] = []
                while len(frames) < FLOOD_FRAMES:
                    frames.extend(client._events())
                return [(len(f.data), f.data[0]) for f in frames]
            finally:
                client.close()

        done = deferToThread(run)
        yield deferToThread(flooding.wait, 30)
        h1 = self.gateway.listeners["http"].site.h1
        [channel] = [c for c in h1.channels if c.tunnel is not None]
        splice = channel.tunnel

        def backend_paused() -> bool:
            return splice.backend not in reactor.getReaders() and splice.sent_down > 0

        yield self.wait_for(backend_paused)
        client = splice.client
        held = len(client.dataBuffer) + client._tempDataLen
        passed = splice.sent_down
        read_now.set()
        frames = yield done
        self.assertEqual(frames, [(FLOOD_FRAME, i % 256) for i in range(FLOOD_FRAMES)])
        # Paused with less than 1 MiB of the 32 held for the client, and
        # most of the 32 MB not taken from the backend yet.
        self.assertLess(held, 1024 * 1024)
        self.assertLess(passed, FLOOD_FRAMES * FLOOD_FRAME // 2)

    @inlineCallbacks
    def test_gateway_api_rule(self) -> Any:
        """A Gateway API rule's upgrade: its URL rewrite reaches the backend, its response edits the 101."""
        origin = ObjectRef("gateway-api", "httproutes", "ns/route")
        variant = Variant(
            label="ns/route ws",
            origin=origin,
            schemes=None,
            method=None,
            headers=(),
            query=(),
            backends=(WeightedBackend(parse_backend(self.ws_url), 1),),
            rewrite=Rewrite(None, PathChange("prefix", "/ws/rewritten")),
            response_headers=HeaderEdits(set=((b"X-Edited", b"yes"),)),
        )
        entry = RouteEntry(
            host="",
            path="/gw",
            match=PREFIX,
            kind=KIND_ROUTE,
            backend=parse_backend(self.ws_url),
            origin=origin,
            modified=0.0,
            label="ns/route /gw",
            variants=(variant,),
        )
        self.install_routes(entry)

        def run() -> Any:
            client = SocketClient(self.port)
            try:
                response = client.handshake("/gw/chat")
                client.send_text(b"routed")
                return response, client.receive().data
            finally:
                client.close()

        response, data = yield deferToThread(run)
        self.assertEqual((response.status_code, data), (101, b"routed"))
        self.assertEqual(response.headers["X-Edited"], "yes")
        [backend] = self.ws_backend.connections
        assert backend.request is not None
        self.assertEqual(backend.request.path, "/ws/rewritten/chat")


class TLSUpgradeTests(StrictHTTPSTestCase):
    """WebSocket over TLS (``wss``): the HTTPS listener's strict HTTP/1.1 channel switches too."""

    @inlineCallbacks
    def setUp(self) -> Any:
        yield super().setUp()
        self.ws_backend = WsEchoFactory()
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(self.ws_backend)
        self.addCleanup(port.stopListening)
        backend = parse_backend(f"http://127.0.0.1:{port.getHost().port}")
        entry = RouteEntry(
            host="",
            path="/ws",
            match=PREFIX,
            kind=KIND_ROUTE,
            backend=backend,
            origin=ObjectRef("file", "routes", "ws"),
            modified=0.0,
            label="ws",
        )
        self.install_routes(entry)

    @inlineCallbacks
    def test_wss_echo(self) -> Any:
        """Text and a 5 MB binary message echo over TLS; the client's close closes the backend."""

        def run() -> list[Any]:
            big = b"\x07" * FIVE_MB
            with connect(
                f"wss://127.0.0.1:{self.tls_port}/ws/echo",
                ssl=client_context(alpn=("http/1.1",)),
                server_hostname="www.example.com",
                max_size=None,
            ) as ws:
                ws.send("secure")
                out = [ws.recv()]
                ws.send(big)
                out.append(ws.recv() == big)
            return out

        out = yield deferToThread(run)
        self.assertEqual(out, ["secure", True])
        [backend] = self.ws_backend.connections
        yield backend.lost
