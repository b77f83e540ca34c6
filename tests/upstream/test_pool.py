"""
Tests for :mod:`gateway.upstream._pool`: the request as written on the wire,
keep-alive reuse, the idle limit and idle expiry.
"""

from __future__ import annotations

import hashlib
import io

from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase

from gateway.upstream import BackendPool

from ._loopback import (
    ClientTestCase,
    RawRequest,
    answer,
    ok,
    wait_until,
)

# -- the request --------------------------------------------------------------------


class RequestTests(ClientTestCase):
    """What goes on the wire."""

    async def test_request_head(self) -> None:
        """The request line and headers go out as given, repeated headers in order."""
        server, backend = self.start_backend(answer(ok()))
        pool = self.make_pool()
        headers = [
            (b"Host", b"svc.ns:8080"),
            (b"Accept", b"a/b"),
            (b"X-Forwarded-For", b"10.0.0.1"),
            (b"Accept", b"c/d"),
        ]
        await self.send(pool, backend, target=b"/p/q?x=1&y", headers=headers).done
        [request] = server.requests
        self.assertEqual((request.method, request.target), (b"GET", b"/p/q?x=1&y"))
        self.assertEqual(request.headers, headers)

    async def test_bytes_body(self) -> None:
        """A bytes body is sent with its Content-Length."""
        server, backend = self.start_backend(answer(ok()))
        pool = self.make_pool()
        await self.send(pool, backend, method=b"POST", body=b"payload", body_length=7).done
        [request] = server.requests
        self.assertEqual(request.body, b"payload")
        self.assertIn((b"Content-Length", b"7"), request.headers)

    async def test_large_bytes_body(self) -> None:
        """A bytes body larger than one chunk is sent whole."""
        server, backend = self.start_backend(answer(ok()))
        pool = self.make_pool()
        body = bytes(range(256)) * 1000
        await self.send(pool, backend, method=b"PUT", body=body, body_length=len(body)).done
        self.assertEqual(server.requests[0].body, body)

    async def test_file_body(self) -> None:
        """A small file body is sent from its start with its Content-Length."""
        server, backend = self.start_backend(answer(ok()))
        pool = self.make_pool()
        body = io.BytesIO(b"from a file")
        await self.send(pool, backend, method=b"POST", body=body, body_length=11).done
        [request] = server.requests
        self.assertEqual(request.body, b"from a file")
        self.assertIn((b"Content-Length", b"11"), request.headers)

    async def test_large_file_body(self) -> None:
        """A 3 MB file body is streamed in chunks and arrives whole."""
        server, backend = self.start_backend(answer(ok()))
        pool = self.make_pool()
        data = hashlib.sha256(b"seed").digest() * (3 * 1024 * 1024 // 32 + 7)
        sink = await self.send(
            pool, backend, method=b"PUT", body=io.BytesIO(data), body_length=len(data)
        ).done
        self.assertEqual(sink.calls[-1], "finished")
        [request] = server.requests
        self.assertEqual(len(request.body), len(data))
        self.assertEqual(request.body, data)
        self.assertIn((b"Content-Length", b"%d" % len(data)), request.headers)
        self.assertEqual(pool.idle_count(), 1)

    async def test_post_without_body(self) -> None:
        """A bodiless POST carries Content-Length: 0."""
        server, backend = self.start_backend(answer(ok()))
        pool = self.make_pool()
        await self.send(pool, backend, method=b"POST").done
        self.assertIn((b"Content-Length", b"0"), server.requests[0].headers)

    async def test_get_without_body(self) -> None:
        """A GET without a body carries no Content-Length."""
        server, backend = self.start_backend(answer(ok()))
        pool = self.make_pool()
        await self.send(pool, backend).done
        names = [name.lower() for name, _ in server.requests[0].headers]
        self.assertNotIn(b"content-length", names)

    async def test_early_response_not_pooled(self) -> None:
        """A response that ends before the request body was sent closes the connection."""
        server, backend = self.start_backend(lambda request: None, receive_buffer=4096)
        pool = self.make_pool()
        # More than the client's socket buffer (at most 4 MB) can absorb.
        data = b"z" * (16 * 1024 * 1024)
        sink = self.send(
            pool, backend, method=b"POST", body=io.BytesIO(data), body_length=len(data)
        )
        await wait_until(lambda: server.accepted == 1)
        # Answer at once and stop reading: the client is still sending.
        conn = server.connections[0]
        conn.transport.pauseProducing()
        conn.transport.write(b"HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n\r\n")
        await sink.done
        self.assertEqual((sink.status, sink.calls[-1]), (413, "finished"))
        self.assertEqual(pool.idle_count(), 0)
        conn.transport.resumeProducing()
        await conn.lost


# -- pooling ------------------------------------------------------------------------


class PoolTests(ClientTestCase):
    """Keep-alive reuse, idle limits and idle expiry."""

    async def test_keep_alive_reuse(self) -> None:
        """Two sequential requests use one backend connection."""
        server, backend = self.start_backend(answer(ok()))
        pool = self.make_pool()
        await self.send(pool, backend).done
        await self.send(pool, backend).done
        self.assertEqual(server.accepted, 1)
        self.assertEqual(len(server.requests), 2)
        self.assertEqual((pool.connections_opened, pool.connections_reused), (1, 1))

    async def test_lifo(self) -> None:
        """The connection released last is the one reused first."""
        pending: list[RawRequest] = []
        server, backend = self.start_backend(pending.append)
        pool = self.make_pool()
        first, second = self.send(pool, backend), self.send(pool, backend)
        await wait_until(lambda: len(pending) == 2)
        early, late = pending
        early.write(ok())
        await (first if early.conn is server.connections[0] else second).done
        late.write(ok())
        await gatherResults([first.done, second.done])
        server.handler = answer(ok())
        await self.send(pool, backend).done
        self.assertIs(server.requests[-1].conn, late.conn)

    async def test_idle_limit(self) -> None:
        """Of four connections released together, only max_idle_per_backend stay idle."""
        pending: list[RawRequest] = []

        def handler(request: RawRequest) -> None:
            pending.append(request)
            if len(pending) == 4:
                for each in pending:
                    each.write(ok())

        server, backend = self.start_backend(handler)
        pool = self.make_pool(max_idle_per_backend=2)
        sinks = [self.send(pool, backend) for _ in range(4)]
        await gatherResults([sink.done for sink in sinks])
        self.assertEqual(server.accepted, 4)
        self.assertEqual(pool.idle_count(), 2)
        await wait_until(lambda: server.lost == 2)

    async def test_idle_timeout(self) -> None:
        """An idle connection is closed after idle_timeout."""
        server, backend = self.start_backend(answer(ok()))
        pool = self.make_pool(idle_timeout=0.1)
        await self.send(pool, backend).done
        self.assertEqual(pool.idle_count(), 1)
        await server.connections[0].lost
        self.assertEqual(pool.idle_count(), 0)

    async def test_idle_timeout_keeps_recent(self) -> None:
        """The idle sweep closes only connections idle for idle_timeout."""
        pending: list[RawRequest] = []
        server, backend = self.start_backend(pending.append)
        pool = self.make_pool(idle_timeout=0.3)
        first, second = self.send(pool, backend), self.send(pool, backend)
        await wait_until(lambda: len(pending) == 2)
        pending[0].write(ok())
        await deferLater(reactor, 0.2, lambda: None)
        pending[1].write(ok())
        await gatherResults([first.done, second.done])
        await pending[0].conn.lost
        self.assertFalse(pending[1].conn.lost.called)
        self.assertEqual(pool.idle_count(), 1)
        await pending[1].conn.lost
        self.assertEqual(pool.idle_count(), 0)

    async def test_backend_closes_idle_connection(self) -> None:
        """An idle connection the backend closes leaves the pool."""

        def handler(request: RawRequest) -> None:
            request.write(ok())
            reactor.callLater(0.05, request.close)

        server, backend = self.start_backend(handler)
        pool = self.make_pool()
        await self.send(pool, backend).done
        self.assertEqual(pool.idle_count(), 1)
        await wait_until(lambda: pool.idle_count() == 0)
        server.handler = answer(ok())
        sink = await self.send(pool, backend).done
        self.assertEqual(sink.calls[-1], "finished")
        self.assertEqual(pool.retries, 0)

    async def test_bytes_on_idle_connection(self) -> None:
        """Bytes arriving on an idle connection close it and drop it from the pool."""

        def handler(request: RawRequest) -> None:
            request.write(ok())
            reactor.callLater(0.05, request.write, b"unsolicited")

        server, backend = self.start_backend(handler)
        pool = self.make_pool()
        await self.send(pool, backend).done
        await server.connections[0].lost
        self.assertEqual(pool.idle_count(), 0)

    async def test_close(self) -> None:
        """close() closes idle connections; a request finishing afterwards is not pooled."""
        pending: list[RawRequest] = []

        def handler(request: RawRequest) -> None:
            if request.target == b"/slow":
                pending.append(request)
            else:
                request.write(ok())

        server, backend = self.start_backend(handler)
        pool = self.make_pool()
        slow = self.send(pool, backend, target=b"/slow")
        await wait_until(lambda: len(pending) == 1)
        await self.send(pool, backend).done
        busy, idle = pending[0].conn, server.connections[1]
        self.assertEqual(pool.idle_count(), 1)
        await pool.close()
        self.assertEqual(pool.idle_count(), 0)
        await idle.lost
        self.assertFalse(busy.lost.called)
        pending[0].write(ok(b"late"))
        self.assertEqual((await slow.done).body, b"late")
        await busy.lost
        self.assertEqual(pool.idle_count(), 0)


class TlsContextCacheTests(SynchronousTestCase):
    def test_bounded(self) -> None:
        """One TLS context per host name, at most _TLS_CREATORS of them (host names may come from requests)."""
        from twisted.internet.task import Clock

        from gateway.upstream import _pool

        pool = BackendPool(Clock())
        self.patch(_pool, "_TLS_CREATORS", 3)
        first = pool._tls_creator("a.example")
        self.assertIs(pool._tls_creator("a.example"), first)
        for host in ("b.example", "c.example", "d.example"):
            pool._tls_creator(host)
        self.assertEqual(list(pool._tls_creators), ["b.example", "c.example", "d.example"])
