"""
Request bodies streamed to the backend as they arrive
(:mod:`gateway.upstream._upload`), with a real
:class:`~gateway.proxy._body.StreamedBody` as the source and loopback
backends: framing (``Content-Length`` or chunked), the backend's socket
pausing the source, the response timeout of a backend that stops reading,
a failed body aborting the backend request, and retries within the replay
buffer only.
"""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.task import deferLater

from gateway.proxy._body import HIGH_WATER, REPLAY_LIMIT, BodyError, StreamedBody
from gateway.upstream import (
    BackendConnectionLost,
    BackendPool,
    BackendResponseTimeout,
    Balancer,
    RequestBodyError,
)

from ._loopback import ClientTestCase, RawRequest, RecordingSink, answer, ok, wait_until


class Control:
    """Stands in for the client connection: records backlog and the 100-continue moment."""

    def __init__(self) -> None:
        self.full = False
        self.wanted = 0

    def body_backlog(self, source: StreamedBody, full: bool) -> None:
        self.full = full

    def body_wanted(self, source: StreamedBody) -> None:
        self.wanted += 1


def _header(request: RawRequest, name: bytes) -> bytes | None:
    for key, value in request.headers:
        if key.lower() == name:
            return value
    return None


class StreamedUploadTests(ClientTestCase):
    def put(
        self, pool: BackendPool, backend: object, source: StreamedBody, length: int
    ) -> RecordingSink:
        sink = RecordingSink()
        pool.request(backend, b"PUT", b"/up", [(b"Host", b"x")], None, length, sink, source=source)  # type: ignore[arg-type]
        return sink

    async def test_content_length(self) -> None:
        """A body with a known length goes out with it, as it arrives; the connection is pooled after."""
        server, backend = self.start_backend(answer(ok(b"stored")))
        pool = self.make_pool()
        control = Control()
        source = StreamedBody(10**9, 300_000, control)
        source.write(b"a" * 1000)  # before the connection: held
        sink = self.put(pool, backend, source, 300_000)
        await wait_until(lambda: control.wanted == 1)
        source.write(b"b" * 199_000)
        source.write(b"c" * 100_000)
        source.finish()
        await sink.done
        [request] = server.requests
        self.assertEqual(request.body, b"a" * 1000 + b"b" * 199_000 + b"c" * 100_000)
        self.assertEqual(_header(request, b"content-length"), b"300000")
        self.assertIsNone(_header(request, b"transfer-encoding"))
        self.assertEqual((sink.calls[-1], sink.body), ("finished", b"stored"))
        self.assertEqual(pool.idle_count(), 1)

    async def test_chunked(self) -> None:
        """A body of unknown length goes out chunked."""
        server, backend = self.start_backend(answer(ok(b"stored")))
        pool = self.make_pool()
        source = StreamedBody(10**9, None)
        sink = self.put(pool, backend, source, -1)
        for piece in (b"one", b"two" * 10_000, b"three"):
            source.write(piece)
        source.finish()
        await sink.done
        [request] = server.requests
        self.assertEqual(request.body, b"one" + b"two" * 10_000 + b"three")
        self.assertEqual(_header(request, b"transfer-encoding"), b"chunked")

    async def test_backend_not_reading(self) -> None:
        """A backend that reads nothing pauses the source (so the client), then its response timeout ends it."""
        server, backend = self.start_backend(answer(ok()), receive_buffer=4096)
        server.pause_on_connect = True
        pool = self.make_pool(response_timeout=0.5)
        control = Control()
        source = StreamedBody(10**10, None, control)
        sink = RecordingSink()
        exchange = pool.request(backend, b"PUT", b"/up", [(b"Host", b"x")], None, -1, sink, source=source)  # type: ignore[arg-type]
        await wait_until(lambda: control.wanted == 1)
        transport = exchange._conn.transport  # type: ignore[union-attr]
        fed = 0
        while not control.full and fed < 256 * HIGH_WATER:
            source.write(b"x" * 16384)
            fed += 16384
        self.assertTrue(control.full)
        # Writes go straight to the socket (gateway.netio) until the kernel's
        # socket buffer is full; then the transport's buffer (64 KiB) pauses
        # the sender, and the source holds its high-water mark: what this
        # process holds is a few hundred KiB, not the body.
        in_process = len(transport.dataBuffer) + transport._tempDataLen + source._buffered
        self.assertLessEqual(in_process, 4 * HIGH_WATER)
        self.assertLess(fed, 256 * HIGH_WATER)
        # The client goes on sending (its connection would stop reading at
        # the high-water mark; here the source just holds it): the backend,
        # not the client, is what waits, once the kernel's socket buffers
        # (a few MB on loopback) are full too.
        while not sink.done.called:
            source.write(b"y" * 65536)
            await deferLater(reactor, 0.01, lambda: None)
        self.assertFailedWith(sink, BackendResponseTimeout)

    async def test_waiting_for_the_client_is_not_a_backend_timeout(self) -> None:
        """A body starved by a slow client does not time the backend out (the client's body timeout does)."""
        server, backend = self.start_backend(answer(ok(b"stored")))
        pool = self.make_pool(response_timeout=0.3)
        source = StreamedBody(10**9, None)
        sink = self.put(pool, backend, source, -1)
        await wait_until(lambda: server.accepted == 1)
        source.write(b"a" * 1000)
        await deferLater(reactor, 0.8, lambda: None)
        self.assertEqual(sink.calls, [])
        source.finish()
        await sink.done
        self.assertEqual((sink.calls[-1], server.requests[-1].body), ("finished", b"a" * 1000))

    async def test_body_failure_aborts_the_backend_request(self) -> None:
        """The client's body failing mid-stream (over the limit) aborts the backend connection."""
        server, backend = self.start_backend(answer(ok()))
        pool = self.make_pool()
        source = StreamedBody(100_000, None)
        sink = self.put(pool, backend, source, -1)
        await wait_until(lambda: server.accepted == 1)
        source.write(b"x" * 60_000)
        source.write(b"x" * 60_000)
        await sink.done
        error = self.assertFailedWith(sink, RequestBodyError)
        self.assertIsInstance(error.__cause__, BodyError)
        await wait_until(lambda: server.lost == 1)
        self.assertEqual(server.requests, [])

    def stale_then(self, pool: BackendPool, source: StreamedBody) -> tuple[object, RecordingSink]:
        """A first request answered on a connection the backend then closes; the PUT follows on it."""

        def handler(request: RawRequest) -> None:
            if request.conn is server.connections[0]:
                request.write(ok(b"first"))
                request.close()
            else:
                request.write(ok(b"stored"))

        server, backend = self.start_backend(handler)
        second = RecordingSink()
        first = RecordingSink(
            on_finished=lambda _: pool.request(
                backend, b"PUT", b"/2", [(b"Host", b"x")], None, -1, second, source=source
            )
        )
        pool.request(backend, b"GET", b"/1", [(b"Host", b"x")], None, 0, first)
        return server, second

    async def test_stale_connection_retried_within_the_replay_buffer(self) -> None:
        """What was sent on a stale pooled connection (within the replay buffer) is sent again, then the rest."""
        pool = self.make_pool()
        source = StreamedBody(10**9, None)
        source.write(b"a" * 10_000)
        server, second = self.stale_then(pool, source)
        await wait_until(lambda: pool.retries == 1)
        source.write(b"b" * 10_000)
        source.finish()
        await second.done
        self.assertEqual(second.body, b"stored")
        self.assertEqual(server.requests[-1].body, b"a" * 10_000 + b"b" * 10_000)  # type: ignore[attr-defined]

    async def test_stale_connection_not_retried_past_the_replay_buffer(self) -> None:
        """More sent than the replay buffer holds: the failure is the answer."""
        pool = self.make_pool()
        source = StreamedBody(10**9, None)
        source.write(b"a" * (REPLAY_LIMIT + 1))
        _, second = self.stale_then(pool, source)
        await second.done
        self.assertFailedWith(second, BackendConnectionLost)
        self.assertEqual(pool.retries, 0)

    async def test_refused_endpoint_moves_with_the_whole_body(self) -> None:
        """Nothing went to a refused endpoint: a streamed POST goes to the next one, whole."""
        dead = await self.dead_backend()
        server, live = self.start_backend(answer(ok(b"created")))
        pool = self.make_pool()
        source = StreamedBody(10**9, None)
        source.write(b"a" * 100_000)
        sink = RecordingSink()
        pool.request(
            dead, b"POST", b"/", [(b"Host", b"x")], None, -1, sink, Balancer((dead, live)), source=source
        )
        source.write(b"b" * 100_000)
        source.finish()
        await sink.done
        self.assertEqual((sink.calls[0], sink.calls[-1], sink.body), ("moved", "finished", b"created"))
        self.assertEqual(server.requests[-1].body, b"a" * 100_000 + b"b" * 100_000)
