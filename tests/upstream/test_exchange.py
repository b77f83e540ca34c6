"""
Tests for :class:`gateway.upstream.Exchange` as the caller holds it:
cancelling when the client goes away.
"""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.task import deferLater

from gateway.upstream import (
    Exchange,
)

from ._loopback import (
    ClientTestCase,
    RecordingSink,
    wait_until,
)

# -- cancel and backpressure ------------------------------------------------------------


class CancelTests(ClientTestCase):
    """The client went away."""

    async def test_cancel_aborts_connection(self) -> None:
        """cancel() aborts the backend connection and no sink call follows."""
        server, backend = self.start_backend(lambda request: None)
        pool = self.make_pool(response_timeout=0.2)
        sink = RecordingSink()
        exchange = pool.request(backend, b"GET", b"/", [], None, 0, sink)
        await wait_until(lambda: len(server.requests) == 1)
        exchange.cancel()
        await server.connections[0].lost
        await deferLater(reactor, 0.3, lambda: None)  # past the response timeout
        self.assertEqual(sink.calls, [])
        self.assertEqual(pool.idle_count(), 0)

    async def test_cancel_during_body(self) -> None:
        """cancel() from body_received stops the response: no more body, no finish."""
        server, backend = self.start_backend(
            lambda request: request.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nfirst")
        )
        pool = self.make_pool()
        holder: list[Exchange] = []
        sink = RecordingSink(on_body=lambda s, data: holder[0].cancel())
        holder.append(pool.request(backend, b"GET", b"/", [], None, 0, sink))
        await wait_until(lambda: len(server.requests) == 1)
        server.requests[0].write(b"more")
        await server.connections[0].lost
        self.assertEqual(sink.calls, ["started", "body"])
        self.assertEqual(pool.idle_count(), 0)

    async def test_stop_producing_cancels(self) -> None:
        """stopProducing() on the producer is a cancel."""
        server, backend = self.start_backend(
            lambda request: request.write(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\npart")
        )
        pool = self.make_pool()
        sink = RecordingSink(on_started=lambda s: s.producer.stopProducing())
        self.send(pool, backend, sink=sink)
        await wait_until(lambda: len(server.connections) == 1)
        await server.connections[0].lost
        self.assertEqual(sink.calls, ["started"])
