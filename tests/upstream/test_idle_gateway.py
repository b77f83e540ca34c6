"""
The backend idle timeout seen from the client, through a real gateway on
loopback sockets: a backend that sends the response headers and one piece
of the body, then nothing (and keeps its connection open), has the
client's response cut (closed without the body's end) instead of holding
both connections forever.
"""

from __future__ import annotations

from typing import Any, ClassVar

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread

from gateway.model import Route, RouteSet
from tests.integration.harness import GatewayTestCase, raw_exchange

from ._loopback import RawBackend, RawRequest, ok

STALL = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n"


class StalledBackendTests(GatewayTestCase):
    extra_args: ClassVar[list[str]] = ["--backend-timeout", "0.3"]

    @inlineCallbacks
    def test_response_cut_when_the_backend_stalls_mid_body(self) -> Any:
        """The client gets the headers and the first piece, then a close without the last chunk."""
        stalled = RawBackend(_handler)
        port = reactor.listenTCP(0, stalled, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.addCleanup(self._abort_all, stalled)
        url = f"http://127.0.0.1:{port.getHost().port}"
        self.memory.put("stall", RouteSet((Route("/stall", url),)), 1.0)
        yield self.wait_for(lambda: self.get("/stall/ready").addCallback(lambda r: r.status == 200))
        # raw_exchange reads until the gateway closes; its socket timeout
        # (10 s) fails the test if the gateway holds the connection.
        data = yield deferToThread(
            raw_exchange, self.port, b"GET /stall/x HTTP/1.1\r\nHost: a\r\n\r\n", 10.0
        )
        self.assertTrue(data.startswith(b"HTTP/1.1 200 "), data)
        self.assertIn(b"first", data)
        self.assertFalse(data.endswith(b"0\r\n\r\n"), data)
        # The backend connection is closed too.
        yield stalled.requests[-1].conn.lost

    def _abort_all(self, backend: RawBackend) -> None:
        for conn in backend.connections:
            conn.transport.abortConnection()


def _handler(request: RawRequest) -> None:
    if request.target == b"/stall/ready":
        request.write(ok())
    else:
        request.write(STALL)
