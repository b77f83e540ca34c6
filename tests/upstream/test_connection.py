"""
Tests for :mod:`gateway.upstream._connection`: responses framed as HTTP/1.1
says, parsed by llhttp, and streamed under backpressure.
"""

from __future__ import annotations

import hashlib
import socket
import struct

from twisted.internet import reactor
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import deferLater
from zope.interface import implementer

from gateway.upstream import (
    BackendConnectionLost,
    BackendError,
    BackendProtocolError,
)

from ._loopback import (
    ClientTestCase,
    RawRequest,
    RecordingSink,
    answer,
    ok,
    wait_until,
)

# -- framing ----------------------------------------------------------------------


class FramingTests(ClientTestCase):
    """Response bodies are delimited as HTTP/1.1 says."""

    async def test_content_length(self) -> None:
        """A Content-Length body arrives whole and the connection is pooled."""
        server, backend = self.start_backend(answer(ok(b"hello")))
        pool = self.make_pool()
        sink = await self.send(pool, backend).done
        self.assertEqual(sink.calls[0], "started")
        self.assertEqual(sink.calls[-1], "finished")
        self.assertEqual((sink.status, sink.reason, sink.body), (200, b"OK", b"hello"))
        self.assertEqual(pool.idle_count(), 1)
        self.assertEqual(pool.idle_count(backend.key), 1)

    async def test_chunked(self) -> None:
        """A chunked body is decoded across several writes and the connection pooled."""

        def handler(request: RawRequest) -> None:
            request.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel")
            reactor.callLater(0.01, request.write, b"lo\r\n6\r\n world\r\n0\r\n\r\n")

        server, backend = self.start_backend(handler)
        pool = self.make_pool()
        sink = await self.send(pool, backend).done
        self.assertEqual(sink.calls[-1], "finished")
        self.assertEqual(sink.body, b"hello world")
        self.assertEqual(pool.idle_count(), 1)

    async def test_close_delimited(self) -> None:
        """A body without framing runs until the backend closes; the connection is not pooled."""

        def handler(request: RawRequest) -> None:
            request.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil ")
            request.write(b"the end")
            request.close()

        server, backend = self.start_backend(handler)
        pool = self.make_pool()
        sink = await self.send(pool, backend).done
        self.assertEqual(sink.calls[-1], "finished")
        self.assertEqual(sink.body, b"until the end")
        self.assertEqual(pool.idle_count(), 0)

    async def test_close_delimited_reset(self) -> None:
        """A close-delimited body cut by a connection reset fails instead of finishing."""

        def reset(request: RawRequest) -> None:
            sock = request.conn.transport.getHandle()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            request.abort()

        def handler(request: RawRequest) -> None:
            request.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\npart")
            reactor.callLater(0.05, reset, request)

        server, backend = self.start_backend(handler)
        pool = self.make_pool()
        sink = await self.send(pool, backend).done
        self.assertEqual(sink.calls[0], "started")
        self.assertFailedWith(sink, BackendConnectionLost)
        self.assertEqual(sink.body, b"part")

    async def test_close_delimited_http10(self) -> None:
        """An HTTP/1.0 response without Content-Length ends at EOF."""

        def handler(request: RawRequest) -> None:
            request.write(b"HTTP/1.0 200 OK\r\n\r\nold style")
            request.close()

        server, backend = self.start_backend(handler)
        pool = self.make_pool()
        sink = await self.send(pool, backend).done
        self.assertEqual((sink.calls[-1], sink.body), ("finished", b"old style"))
        self.assertEqual(pool.idle_count(), 0)

    async def test_truncated_content_length(self) -> None:
        """A body cut short of its Content-Length fails after response_started."""

        def handler(request: RawRequest) -> None:
            request.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
            request.close()

        server, backend = self.start_backend(handler)
        pool = self.make_pool()
        sink = await self.send(pool, backend).done
        self.assertEqual(sink.calls[0], "started")
        error = self.assertFailedWith(sink, BackendConnectionLost)
        self.assertIn("closed before the response was complete", str(error))
        self.assertIn(backend.authority, str(error))

    async def test_head(self) -> None:
        """A HEAD response ends at its headers despite Content-Length; the next response parses."""
        answers = [
            b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n",
            ok(b"after head"),
        ]
        server, backend = self.start_backend(lambda request: request.write(answers.pop(0)))
        pool = self.make_pool()
        head = await self.send(pool, backend, method=b"HEAD").done
        self.assertEqual(head.calls, ["started", "finished"])
        self.assertEqual(head.headers, [(b"Content-Length", b"1000")])
        get = await self.send(pool, backend).done
        self.assertEqual((get.calls[-1], get.body), ("finished", b"after head"))
        self.assertEqual(server.accepted, 1)

    async def test_head_chunked(self) -> None:
        """A HEAD response announcing chunked encoding has no body either."""
        answers = [
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            ok(b"next"),
        ]
        server, backend = self.start_backend(lambda request: request.write(answers.pop(0)))
        pool = self.make_pool()
        head = await self.send(pool, backend, method=b"HEAD").done
        self.assertEqual(head.calls, ["started", "finished"])
        get = await self.send(pool, backend).done
        self.assertEqual(get.body, b"next")
        self.assertEqual(server.accepted, 1)

    async def test_head_without_length_kept_alive(self) -> None:
        """A HEAD response without framing headers still keeps an HTTP/1.1 connection."""
        server, backend = self.start_backend(
            answer(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
        )
        pool = self.make_pool()
        head = await self.send(pool, backend, method=b"HEAD").done
        self.assertEqual(head.calls, ["started", "finished"])
        self.assertEqual(pool.idle_count(), 1)

    async def test_no_content(self) -> None:
        """A 204 response has no body and the connection is reused."""
        server, backend = self.start_backend(answer(b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n"))
        pool = self.make_pool()
        first = await self.send(pool, backend).done
        second = await self.send(pool, backend).done
        self.assertEqual((first.status, first.calls), (204, ["started", "finished"]))
        self.assertEqual((second.status, second.calls), (204, ["started", "finished"]))
        self.assertEqual(server.accepted, 1)

    async def test_not_modified(self) -> None:
        """A 304 response has no body even with Content-Length, and the connection is reused."""
        server, backend = self.start_backend(
            answer(b'HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\nETag: "x"\r\n\r\n')
        )
        pool = self.make_pool()
        first = await self.send(pool, backend).done
        second = await self.send(pool, backend).done
        self.assertEqual((first.status, first.calls), (304, ["started", "finished"]))
        self.assertEqual(second.calls, ["started", "finished"])
        self.assertEqual(server.accepted, 1)

    async def test_continue_skipped(self) -> None:
        """100 Continue and 103 Early Hints are skipped; the sink sees only the final response."""
        server, backend = self.start_backend(
            answer(
                b"HTTP/1.1 100 Continue\r\n\r\n"
                b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
                + ok(b"final", b"X-Final: yes\r\n")
            )
        )
        pool = self.make_pool()
        sink = await self.send(pool, backend, method=b"POST", body=b"x", body_length=1).done
        self.assertEqual(sink.calls.count("started"), 1)
        self.assertEqual((sink.status, sink.body), (200, b"final"))
        self.assertEqual(sink.headers, [(b"Content-Length", b"5"), (b"X-Final", b"yes")])
        self.assertEqual(pool.idle_count(), 1)

    async def test_repeated_headers_kept_in_order(self) -> None:
        """Repeated response headers reach the sink in order, with their original spelling."""
        server, backend = self.start_backend(
            answer(
                b"HTTP/1.1 201 Created\r\nSet-Cookie: a=1\r\nX-One: 1\r\n"
                b"set-cookie: b=2\r\nSET-COOKIE: c=3\r\nContent-Length: 0\r\n\r\n"
            )
        )
        pool = self.make_pool()
        sink = await self.send(pool, backend).done
        self.assertEqual((sink.status, sink.reason), (201, b"Created"))
        self.assertEqual(
            sink.headers,
            [
                (b"Set-Cookie", b"a=1"),
                (b"X-One", b"1"),
                (b"set-cookie", b"b=2"),
                (b"SET-COOKIE", b"c=3"),
                (b"Content-Length", b"0"),
            ],
        )

    async def test_malformed_response(self) -> None:
        """Bytes that are not an HTTP response fail with BackendProtocolError."""
        server, backend = self.start_backend(answer(b"SMTP ready\r\n\r\n"))
        pool = self.make_pool()
        sink = await self.send(pool, backend).done
        self.assertEqual(sink.calls, ["failed"])
        error = self.assertFailedWith(sink, BackendProtocolError)
        self.assertIn("malformed response from " + backend.authority, str(error))
        self.assertEqual(pool.idle_count(), 0)
        await server.connections[0].lost

    async def test_sink_error(self) -> None:
        """A sink that raises gets response_failed with a BackendError, and the error is logged."""
        server, backend = self.start_backend(answer(ok(b"boom")))
        pool = self.make_pool()

        def explode(sink: RecordingSink, data: bytes) -> None:
            raise ValueError("sink bug")

        sink = await self.send(pool, backend, sink=RecordingSink(on_body=explode)).done
        error = self.assertFailedWith(sink, BackendError)
        self.assertNotIsInstance(error, BackendProtocolError)
        self.assertIn("sink bug", str(error))
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.assertEqual(pool.idle_count(), 0)
        await server.connections[0].lost

    async def test_extra_bytes_after_response(self) -> None:
        """Bytes after a complete response finish it but keep the connection out of the pool."""
        server, backend = self.start_backend(answer(ok(b"hi") + b"HTTP/1.1 200 OK\r\n"))
        pool = self.make_pool()
        sink = await self.send(pool, backend).done
        self.assertEqual((sink.calls[-1], sink.body), ("finished", b"hi"))
        self.assertEqual(pool.idle_count(), 0)
        await server.connections[0].lost

    async def test_connection_close_not_reused(self) -> None:
        """A response with Connection: close is not pooled; the next request connects anew."""
        server, backend = self.start_backend(answer(ok(b"bye", b"Connection: close\r\n")))
        pool = self.make_pool()
        first = await self.send(pool, backend).done
        self.assertEqual(first.body, b"bye")
        self.assertEqual(pool.idle_count(), 0)
        await self.send(pool, backend).done
        self.assertEqual(server.accepted, 2)
        self.assertEqual(pool.connections_reused, 0)

    async def test_http10_without_keep_alive_not_reused(self) -> None:
        """An HTTP/1.0 response with Content-Length but no keep-alive is not pooled."""
        server, backend = self.start_backend(
            answer(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
        )
        pool = self.make_pool()
        sink = await self.send(pool, backend).done
        self.assertEqual(sink.body, b"ok")
        self.assertEqual(pool.idle_count(), 0)

    async def test_http10_keep_alive_reused(self) -> None:
        """An HTTP/1.0 response with Connection: keep-alive is pooled."""
        server, backend = self.start_backend(
            answer(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok")
        )
        pool = self.make_pool()
        await self.send(pool, backend).done
        await self.send(pool, backend).done
        self.assertEqual(server.accepted, 1)


class BackpressureTests(ClientTestCase):
    """Pausing the producer stops reading the backend."""

    async def test_pause_and_resume(self) -> None:
        """No body arrives while paused; resuming delivers the rest; the connection is reused."""
        server, backend = self.start_backend(
            lambda request: request.write(
                b"HTTP/1.1 200 OK\r\nContent-Length: 3000\r\n\r\n" + b"a" * 1000
            )
        )
        pool = self.make_pool()
        sink = RecordingSink(on_body=lambda s, data: s.producer.pauseProducing())
        self.send(pool, backend, sink=sink)
        await wait_until(lambda: sink.body == b"a" * 1000)
        server.requests[0].write(b"b" * 1000)
        server.requests[0].write(b"c" * 1000)
        await deferLater(reactor, 0.2, lambda: None)
        self.assertEqual(sink.body, b"a" * 1000)
        sink._on_body = None
        sink.producer.resumeProducing()
        await sink.done
        self.assertEqual(sink.body, b"a" * 1000 + b"b" * 1000 + b"c" * 1000)
        server.handler = answer(ok(b"again"))
        again = await self.send(pool, backend).done
        self.assertEqual(again.body, b"again")
        self.assertEqual(server.accepted, 1)

    async def test_paused_at_end_resumed_before_pooling(self) -> None:
        """A connection whose exchange ended paused is resumed before it is reused."""
        server, backend = self.start_backend(answer(ok(b"whole")))
        pool = self.make_pool(response_timeout=2.0)
        sink = RecordingSink(on_body=lambda s, data: s.producer.pauseProducing())
        await self.send(pool, backend, sink=sink).done
        self.assertEqual(pool.idle_count(), 1)
        again = await self.send(pool, backend).done
        self.assertEqual((again.calls[-1], again.body), ("finished", b"whole"))
        self.assertEqual(server.accepted, 1)

    async def test_stale_producer_harmless(self) -> None:
        """Pausing a finished exchange's producer does not pause its pooled connection."""
        server, backend = self.start_backend(answer(ok(b"x")))
        pool = self.make_pool(response_timeout=2.0)
        first = await self.send(pool, backend).done
        second = self.send(pool, backend)
        first.producer.pauseProducing()
        await second.done
        first.producer.resumeProducing()
        self.assertEqual((second.calls[-1], second.body), ("finished", b"x"))
        self.assertEqual(server.accepted, 1)

    async def test_large_streamed_response(self) -> None:
        """A 20 MB response arrives whole; the sink never holds more than its limit plus a read."""
        total = 20 * 1024 * 1024
        block = bytes(range(256)) * 256
        expected = hashlib.sha256()
        for _ in range(total // len(block)):
            expected.update(block)

        @implementer(IPushProducer)
        class Streamer:
            def __init__(self, request: RawRequest) -> None:
                self.request = request
                self.sent = 0
                self.paused = False
                transport = request.conn.transport
                transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
                transport.registerProducer(self, True)
                self.resumeProducing()

            def resumeProducing(self) -> None:
                self.paused = False
                transport = self.request.conn.transport
                while not self.paused and self.sent < total:
                    self.sent += len(block)
                    transport.write(block)
                if self.sent >= total and transport.producer is self:
                    transport.unregisterProducer()

            def pauseProducing(self) -> None:
                self.paused = True

            def stopProducing(self) -> None:
                self.paused = True

        limit = 256 * 1024
        state = {"held": 0, "max": 0, "received": 0, "paused": False}
        digest = hashlib.sha256()
        held: list[bytes] = []

        def consume(sink: RecordingSink) -> None:
            for data in held:
                digest.update(data)
            held.clear()
            state["held"] = 0
            state["paused"] = False
            sink.producer.resumeProducing()

        class Consumer(RecordingSink):
            def body_received(self, data: bytes) -> None:
                held.append(data)
                state["held"] += len(data)
                state["received"] += len(data)
                state["max"] = max(state["max"], state["held"])
                if state["held"] > limit and not state["paused"]:
                    state["paused"] = True
                    self.producer.pauseProducing()
                    reactor.callLater(0.001, consume, self)

            def response_finished(self) -> None:
                for data in held:
                    digest.update(data)
                held.clear()
                super().response_finished()

        server, backend = self.start_backend(Streamer)
        pool = self.make_pool()
        sink = await self.send(pool, backend, sink=Consumer()).done
        self.assertEqual(sink.calls[-1], "finished")
        self.assertEqual(state["received"], total)
        self.assertEqual(digest.hexdigest(), expected.hexdigest())
        # One transport read is at most 64 KiB (TCP) plus what TLS might add.
        self.assertLessEqual(state["max"], limit + 128 * 1024)
        self.assertEqual(pool.idle_count(), 1)


# -- writing the request --------------------------------------------------------


class DirectWriteTests(ClientTestCase):
    """A request on a plain TCP connection goes to the socket at once."""

    async def test_request_written_without_a_writable_event(self) -> None:
        """
        On a pooled plain-TCP connection, a request and its in-memory body
        go to the socket during ``request()``: nothing waits in Twisted's
        buffer and no writable event is asked of the reactor (two
        ``epoll_ctl`` calls and a loop iteration per request otherwise);
        the backend gets head and body whole.
        """
        from gateway.upstream._connection import Connection

        server, backend = self.start_backend(answer(ok(b"hello")))
        pool = self.make_pool()
        await self.send(pool, backend).done
        self.assertEqual(pool.idle_count(backend.key), 1)

        def backend_writers() -> list[object]:
            return [
                w for w in reactor.getWriters() if isinstance(getattr(w, "protocol", None), Connection)
            ]

        sink = self.send(
            pool,
            backend,
            method=b"POST",
            headers=[(b"Host", b"x")],
            body=b"payload",
            body_length=7,
        )
        self.assertEqual(backend_writers(), [])
        await sink.done
        self.assertEqual((sink.status, sink.body), (200, b"hello"))
        self.assertEqual((server.requests[-1].method, server.requests[-1].body), (b"POST", b"payload"))
        self.assertEqual(server.accepted, 1)
