"""
Unit tests for small pieces of the proxy resource: helpers used by TLS and
HTTP/2, and how it reports a request moved to another endpoint.
"""

from __future__ import annotations

import re
from typing import Any

from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from gateway.model import ObjectRef
from gateway.proxy import ProxyResource
from gateway.proxy._replies import cut as _cut
from gateway.proxy._resource import RequestIds, _Exchange, _without_port
from gateway.translate import KIND_ROUTE, PREFIX, RouteEntry, parse_backend
from gateway.upstream import FAILURE_HOLD, BackendConnectError, BackendPool


class _Channel:
    def __init__(self, stream_id: int | None) -> None:
        self.streamID = stream_id
        self.aborted = False

    def abortConnection(self) -> None:  # noqa: N802
        self.aborted = True


class _Request:
    def __init__(self, channel: _Channel) -> None:
        self.channel = channel
        self.lost = False

    def loseConnection(self) -> None:  # noqa: N802
        self.lost = True


class HelperTests(SynchronousTestCase):
    def test_without_port(self) -> None:
        """The Host header's port is dropped for the redirect target, IPv6 brackets kept."""
        self.assertEqual(_without_port("example.com:8080"), "example.com")
        self.assertEqual(_without_port("example.com"), "example.com")
        self.assertEqual(_without_port("[::1]:8080"), "[::1]")
        self.assertEqual(_without_port("[::1]"), "[::1]")

    def test_cut_resets_an_http2_stream(self) -> None:
        """A broken response resets its HTTP/2 stream, and closes an HTTP/1.1 connection."""
        h2 = _Request(_Channel(3))
        _cut(h2)
        self.assertEqual((h2.channel.aborted, h2.lost), (True, False))
        h1 = _Request(_Channel(None))
        _cut(h1)
        self.assertEqual((h1.channel.aborted, h1.lost), (False, True))


class RequestIdTests(SynchronousTestCase):
    """Generated request ids: shaped like UUIDs, distinct, the counter wrapping at 48 bits."""

    def test_shape_and_order(self) -> None:
        """Consecutive ids share the process prefix and count up in the last group."""
        ids = RequestIds()
        first, second = ids.next(), ids.next()
        shape = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
        self.assertIsNotNone(shape.fullmatch(first), first)
        self.assertEqual(first[:24], second[:24])
        self.assertEqual((int(first[24:], 16) + 1) & 0xFFFFFFFFFFFF, int(second[24:], 16))
        self.assertNotEqual(RequestIds().next()[:24], first[:24])

    def test_counter_wraps(self) -> None:
        """After ffffffffffff comes 000000000000, still twelve digits."""
        ids = RequestIds()
        ids._counter = 0xFFFFFFFFFFFE
        self.assertEqual(ids.next()[24:], b"ffffffffffff")
        self.assertEqual(ids.next()[24:], b"000000000000")


class _Observer:
    """Records backend errors (the metric the proxy feeds)."""

    def __init__(self) -> None:
        self.errors: list[tuple[str, str]] = []

    def request_done(self, *args: object) -> None:
        pass

    def backend_error(self, backend: str, kind: str) -> None:
        self.errors.append((backend, kind))

    def upgrade_opened(self, protocol: str) -> None:
        pass

    def upgrade_closed(self, reason: str) -> None:
        pass


class _Health:
    draining = False
    ready = True

    def describe(self) -> str:
        return "ready"


class _NoGeneration:
    current = None


class EndpointMoveTests(SynchronousTestCase):
    """What the proxy does when the backend client moves a request to another endpoint."""

    def test_reported_and_credited(self) -> None:
        """
        The move is logged with the route and the hold, counted as an
        ``endpoint`` backend error of the failed endpoint, and the response
        is credited to the new endpoint; the proxy does not resend anything.
        """
        clock = Clock()
        observer = _Observer()
        resource = ProxyResource(_NoGeneration(), BackendPool(clock), clock, observer, _Health())
        failed = parse_backend("http://10.0.0.1:8080")
        retry_on = parse_backend("http://10.0.0.2:8080")
        entry = RouteEntry(
            host="",
            path="/web",
            match=PREFIX,
            kind=KIND_ROUTE,
            backend=parse_backend("http://web.default.svc.cluster.local"),
            origin=ObjectRef("ingress", "routes", "default/web"),
            modified=0.0,
            label="web:*/web",
            endpoints=(failed, retry_on),
        )
        request: Any = _Request(_Channel(None))
        exchange = _Exchange(resource, request, entry, 0.0, b"id", failed)
        with capturedLogs() as events:
            exchange.endpoint_failed(
                failed,
                retry_on,
                Failure(BackendConnectError("connection refused to 10.0.0.1:8080")),
            )
        self.assertIs(exchange.backend, retry_on)
        self.assertEqual(observer.errors, [("http://10.0.0.1:8080", "endpoint")])
        [event] = events
        self.assertEqual(
            formatEvent(event),
            "Endpoint 10.0.0.1:8080 of web:*/web refused the connection "
            f"(connection refused to 10.0.0.1:8080): held for {FAILURE_HOLD:.0f} s, "
            "retrying on 10.0.0.2:8080",
        )
