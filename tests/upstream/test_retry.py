"""
Tests for the retries of :mod:`gateway.upstream._pool`, the one layer that
sends a request again: a stale pooled connection (idempotent requests only,
once), and a refused endpoint (another endpoint, once, with a hold).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

from twisted.internet import reactor
from twisted.internet.error import UserError
from twisted.internet.task import Clock, deferLater
from twisted.python.failure import Failure

from gateway.translate import Backend
from gateway.upstream import (
    BackendConnectError,
    BackendConnectionLost,
    BackendConnectTimeout,
    BackendPool,
    Balancer,
    Exchange,
)

from ._loopback import (
    ClientTestCase,
    RawBackend,
    RawRequest,
    RecordingSink,
    answer,
    ok,
    wait_until,
)

# -- retries --------------------------------------------------------------------


class RetryTests(ClientTestCase):
    """One retry for an idempotent request on a stale pooled connection."""

    def stale_backend(self, then: Callable[[RawRequest], object]) -> tuple[RawBackend, Backend]:
        """
        A backend that answers the first request on a keep-alive connection
        and closes that connection at once; later connections use ``then``.
        """

        def handler(request: RawRequest) -> None:
            if request.conn is server.connections[0]:
                request.write(ok(b"first"))
                request.close()
            else:
                then(request)

        server, backend = self.start_backend(handler)
        return server, backend

    def follow_up(
        self, pool: BackendPool, backend: Backend, method: bytes
    ) -> tuple[RecordingSink, RecordingSink]:
        """
        Send a first request and, as soon as it finishes (before the client
        can notice the backend's close), a second one with ``method``: it
        goes out on the pooled, already closed connection.
        """
        second = RecordingSink()
        first = RecordingSink(
            on_finished=lambda _: pool.request(
                backend, method, b"/2", [(b"Host", b"x")], None, 0, second
            )
        )
        self.send(pool, backend, sink=first)
        return first, second

    async def test_get_retried(self) -> None:
        """A GET that meets a stale pooled connection succeeds on a fresh one."""
        server, backend = self.stale_backend(answer(ok(b"second")))
        pool = self.make_pool()
        first, second = self.follow_up(pool, backend, b"GET")
        await second.done
        self.assertEqual(first.body, b"first")
        self.assertEqual((second.calls[-1], second.body), ("finished", b"second"))
        self.assertEqual(pool.retries, 1)
        self.assertEqual(pool.connections_reused, 1)
        self.assertEqual(server.accepted, 2)

    async def test_post_not_retried(self) -> None:
        """A POST that meets a stale pooled connection fails and is not retried."""
        server, backend = self.stale_backend(answer(ok(b"second")))
        pool = self.make_pool()
        first, second = self.follow_up(pool, backend, b"POST")
        await second.done
        error = self.assertFailedWith(second, BackendConnectionLost)
        self.assertIn("closed before the response", str(error))
        self.assertEqual(second.calls, ["failed"])
        self.assertEqual(pool.retries, 0)
        self.assertEqual(server.accepted, 1)

    async def test_retried_once(self) -> None:
        """A retried GET whose fresh connection fails too is not retried again."""
        server, backend = self.stale_backend(lambda request: request.close())
        pool = self.make_pool()
        first, second = self.follow_up(pool, backend, b"GET")
        await second.done
        self.assertFailedWith(second, BackendConnectionLost)
        self.assertEqual(pool.retries, 1)
        self.assertEqual(server.accepted, 2)

    async def test_fresh_connection_not_retried(self) -> None:
        """A GET failing on a fresh connection is not retried."""
        server, backend = self.start_backend(lambda request: request.close())
        pool = self.make_pool()
        sink = await self.send(pool, backend).done
        self.assertFailedWith(sink, BackendConnectionLost)
        self.assertEqual(pool.retries, 0)
        self.assertEqual(server.accepted, 1)

    async def test_not_retried_after_response_bytes(self) -> None:
        """A GET is not retried once response bytes came back on the reused connection."""

        def handler(request: RawRequest) -> None:
            if len(server.requests) == 1:
                request.write(ok())
            else:
                request.write(b"HTTP/1.1 200 OK\r\nContent-")
                request.close()

        server, backend = self.start_backend(handler)
        pool = self.make_pool()
        await self.send(pool, backend).done
        sink = await self.send(pool, backend).done
        self.assertFailedWith(sink, BackendConnectionLost)
        self.assertEqual(pool.retries, 0)
        self.assertEqual(server.accepted, 1)

    async def test_large_file_body_retried_from_start(self) -> None:
        """A PUT with a streamed file body is retried with the whole body again."""
        server, backend = self.stale_backend(answer(ok(b"stored")))
        pool = self.make_pool()
        data = b"0123456789abcdef" * 20000
        second = RecordingSink()
        first = RecordingSink(
            on_finished=lambda _: pool.request(
                backend, b"PUT", b"/2", [], io.BytesIO(data), len(data), second
            )
        )
        self.send(pool, backend, sink=first)
        await second.done
        self.assertEqual(second.body, b"stored")
        self.assertEqual(server.requests[-1].body, data)
        self.assertEqual(pool.retries, 1)


# -- another endpoint after a failed connect --------------------------------------


class _Attempt:
    """One connection attempt of :class:`_RecordingReactor`, never completing."""

    def __init__(self, host: str, port: int, factory: Any) -> None:
        self.host, self.port, self.factory = host, port, factory

    def stopConnecting(self) -> None:
        self.factory.clientConnectionFailed(self, Failure(UserError()))


class _RecordingReactor:
    """A reactor whose TCP connections never complete and are recorded; its time is a Clock."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.attempts: list[_Attempt] = []

    def callLater(self, delay: float, f: Callable[..., object], *a: object) -> Any:
        return self.clock.callLater(delay, f, *a)

    def seconds(self) -> float:
        return self.clock.seconds()

    def connectTCP(
        self, host: str, port: int, factory: Any, timeout: Any = 30, bindAddress: Any = None
    ) -> _Attempt:
        attempt = _Attempt(host, port, factory)
        self.attempts.append(attempt)
        return attempt


class EndpointRetryTests(ClientTestCase):
    """
    With a balancer, a request whose connection cannot be made goes, once,
    to another endpoint, and the failed one is put on hold.
    """

    async def test_refused_endpoint_retried_on_another(self) -> None:
        """A refused endpoint is held and the request is answered by the next endpoint."""
        dead = await self.dead_backend()
        server, live = self.start_backend(answer(ok(b"live")))
        balancer = Balancer((dead, live))
        pool = self.make_pool()
        picked = balancer.pick(0.0)
        self.assertEqual(picked, dead)
        sink = await self.send(pool, dead, sink=RecordingSink(), balancer=balancer).done
        self.assertEqual(sink.calls, ["moved", "started", "body", "finished"])
        self.assertEqual(sink.body, b"live")
        [(failed, retry_on, reason)] = sink.moves
        self.assertEqual((failed, retry_on), (dead, live))
        self.assertIsInstance(reason.value, BackendConnectError)
        self.assertEqual(balancer.held(pool._reactor.seconds()), (dead,))
        self.assertEqual(server.accepted, 1)
        # Held: the next requests go to the live endpoint only.
        self.assertEqual({balancer.pick(pool._reactor.seconds()) for _ in range(3)}, {live})

    async def test_post_retried_on_another_endpoint_with_its_body(self) -> None:
        """Nothing was sent to a refused endpoint, so even a POST goes to the next one, whole."""
        dead = await self.dead_backend()
        server, live = self.start_backend(answer(ok(b"created")))
        data = b"0123456789abcdef" * 20000
        pool = self.make_pool()
        sink = await self.send(
            pool,
            dead,
            b"POST",
            body=io.BytesIO(data),
            body_length=len(data),
            balancer=Balancer((dead, live)),
        ).done
        self.assertEqual((sink.calls[-1], sink.body), ("finished", b"created"))
        self.assertEqual(server.requests[-1].body, data)
        self.assertEqual(server.requests[-1].headers[0], (b"Host", dead.authority.encode()))

    async def test_another_endpoint_only_once(self) -> None:
        """When the second endpoint refuses too, the request fails; it is not moved again."""
        first, second, third = [await self.dead_backend() for _ in range(3)]
        balancer = Balancer((first, second, third))
        pool = self.make_pool()
        sink = await self.send(pool, first, balancer=balancer).done
        self.assertEqual(sink.calls, ["moved", "failed"])
        self.assertFailedWith(sink, BackendConnectError)
        self.assertEqual(sink.moves[0][:2], (first, second))
        self.assertEqual(balancer.held(pool._reactor.seconds()), (first,))

    async def test_single_endpoint_held_and_failed(self) -> None:
        """With no other endpoint the request fails, and the endpoint is still put on hold."""
        dead = await self.dead_backend()
        balancer = Balancer((dead,))
        pool = self.make_pool()
        sink = await self.send(pool, dead, balancer=balancer).done
        self.assertEqual(sink.calls, ["failed"])
        self.assertFailedWith(sink, BackendConnectError)
        self.assertEqual(balancer.held(pool._reactor.seconds()), (dead,))

    async def test_without_balancer_not_moved(self) -> None:
        """A request to a plain backend (no balancer) fails where it was sent."""
        dead = await self.dead_backend()
        pool = self.make_pool()
        sink = await self.send(pool, dead).done
        self.assertEqual(sink.calls, ["failed"])

    async def test_moved_onto_a_pooled_connection(self) -> None:
        """The next endpoint's idle pooled connection is reused for the moved request."""
        dead = await self.dead_backend()
        server, live = self.start_backend(answer(ok()))
        pool = self.make_pool()
        await self.send(pool, live).done
        await wait_until(lambda: pool.idle_count(live.key) == 1)
        sink = await self.send(pool, dead, balancer=Balancer((dead, live))).done
        self.assertEqual(sink.calls[-1], "finished")
        self.assertEqual(pool.connections_reused, 1)
        self.assertEqual(server.accepted, 1)

    async def test_cancelled_when_told(self) -> None:
        """A sink that cancels the exchange when told of the move hears nothing more."""
        dead = await self.dead_backend()
        server, live = self.start_backend(answer(ok()))
        pool = self.make_pool()
        exchanges: list[Exchange] = []
        sink = RecordingSink(on_moved=lambda _: exchanges[0].cancel())
        exchanges.append(
            pool.request(dead, b"GET", b"/", [], None, 0, sink, Balancer((dead, live)))
        )
        await wait_until(lambda: sink.calls == ["moved"])
        await deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(sink.calls, ["moved"])
        self.assertEqual(server.accepted, 0)

    def test_connect_timeout_moves_to_another_endpoint(self) -> None:
        """An endpoint that does not connect in time is held and the next one is tried."""
        fake = _RecordingReactor()
        pool = BackendPool(fake, connect_timeout=5.0)
        slow = Backend("http", "10.0.0.1", 80, "", "10.0.0.1")
        other = Backend("http", "10.0.0.2", 80, "", "10.0.0.2")
        balancer = Balancer((slow, other))
        sink = RecordingSink()
        pool.request(slow, b"GET", b"/", [], None, 0, sink, balancer)
        fake.clock.advance(5.0)
        self.assertEqual(
            [(a.host, a.port) for a in fake.attempts], [("10.0.0.1", 80), ("10.0.0.2", 80)]
        )
        self.assertEqual(sink.calls, ["moved"])
        self.assertIsInstance(sink.moves[0][2].value, BackendConnectTimeout)
        self.assertEqual(balancer.held(fake.seconds()), (slow,))
        fake.clock.advance(5.0)
        self.assertEqual(sink.calls, ["moved", "failed"])
        self.assertFailedWith(sink, BackendConnectTimeout)
        self.assertEqual(len(fake.attempts), 2)
