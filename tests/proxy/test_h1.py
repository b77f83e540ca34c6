"""
Our HTTP/1.1 server protocol (:mod:`gateway.proxy._h1`) driven over a
``StringTransport`` with a fake clock: framing, keep-alive, pipelining,
``Expect: 100-continue``, HEAD, backpressure, timeouts, and a table of
malformed requests that are answered 4xx (or closed) without reaching the
resource.
"""

from __future__ import annotations

from typing import Any

from httptools import HttpResponseParser
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from gateway.proxy import ProxyRequest, envelope
from gateway.proxy._h1 import (
    _HOST,
    _VALID_HOST_LENGTH,
    _VALID_HOSTS_SIZE,
    H1Channel,
    H1Server,
    _host_is_valid,
    _valid_hosts,
)
from gateway.proxy._h1limits import H1Limits
from gateway.proxy._h1request import H1Request


class Recorder(Resource):
    """
    A small resource: answers ``<method> <uri> <body>`` at once, or (for
    targets starting with ``/later``) leaves the request open for the test
    to finish; ``/stream`` writes two pieces without a length; ``/boom``
    raises. A body over the limit is answered 413, as the proxy does.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[H1Request] = []
        self.open: list[H1Request] = []

    def render(self, request: Any) -> Any:
        self.seen.append(request)
        if request.content is not None and request.content.exceeded:
            request.setResponseCode(413)
            return b"too large"
        if request.uri.startswith(b"/later"):
            self.open.append(request)
            return NOT_DONE_YET
        if request.uri == b"/stream":
            request.write(b"one")
            request.write(b"two")
            request.finish()
            return NOT_DONE_YET
        if request.uri == b"/boom":
            raise RuntimeError("boom")
        body = request.content.file.read() if request.content is not None else b""
        return request.method + b" " + request.uri + b" " + body


def parse_responses(data: bytes, head: bool = False) -> list[tuple[int, dict[bytes, bytes], bytes]]:
    """The responses in ``data`` (status, lowercased headers, body)."""
    out: list[tuple[int, dict[bytes, bytes], bytes]] = []

    class Sink:
        def on_message_begin(self) -> None:
            self.headers: dict[bytes, bytes] = {}
            self.body = b""

        def on_header(self, name: bytes, value: bytes) -> None:
            self.headers[name.lower()] = value

        def on_body(self, body: bytes) -> None:
            self.body += body

        def on_message_complete(self) -> None:
            out.append((parser.get_status_code(), self.headers, self.body))

    sink = Sink()
    parser = HttpResponseParser(sink)
    parser.feed_data(data)
    return out


class Connected:
    """One channel on a ``StringTransport``, with its clock and resource."""

    def __init__(self, limits: H1Limits | None = None, resource: Any = None) -> None:
        self.clock = Clock()
        self.resource = resource if resource is not None else Recorder()
        self.server = H1Server(self.resource, self.clock, limits)
        self.channel: H1Channel = self.server.buildProtocol(None)
        self.transport = StringTransport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 8080),
            peerAddress=IPv4Address("TCP", "192.0.2.7", 40000),
        )
        self.channel.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.channel.dataReceived(data)

    def take(self) -> bytes:
        data = self.transport.value()
        self.transport.clear()
        return data

    def responses(self) -> list[tuple[int, dict[bytes, bytes], bytes]]:
        return parse_responses(self.take())

    @property
    def closing(self) -> bool:
        return bool(self.transport.disconnecting)

    def lose(self) -> None:
        self.channel.connectionLost(Failure(ConnectionDone()))


GET = b"GET /a HTTP/1.1\r\nHost: example.com\r\n\r\n"


def _conforms(request: H1Request) -> ProxyRequest:
    """For the type checker: ``H1Request`` is a ``ProxyRequest`` (mypy checks this return)."""
    return request


class ServingTests(SynchronousTestCase):
    def test_get(self) -> None:
        """A GET is rendered with its method, target, version and headers, and answered with a length."""
        c = Connected()
        c.send(b"GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\nX-One: 1\r\nX-One: 2\r\n\r\n")
        [request] = c.resource.seen
        self.assertEqual(
            (request.method, request.uri, request.clientproto),
            (b"GET", b"/a?b=1", b"HTTP/1.1"),
        )
        self.assertEqual(request.requestHeaders.getRawHeaders(b"x-one"), [b"1", b"2"])
        self.assertEqual(request.getRequestHostname(), b"example.com")
        self.assertEqual(request.getClientAddress().host, "192.0.2.7")
        [(status, headers, body)] = c.responses()
        self.assertEqual((status, body), (200, b"GET /a?b=1 "))
        self.assertEqual(headers[b"content-length"], b"11")
        self.assertNotIn(b"connection", headers)
        self.assertFalse(c.closing)

    def test_request_implements_the_proxy_contract(self) -> None:
        """The request object is a ProxyRequest (statically; here: every member is present)."""
        c = Connected()
        c.send(b"GET /later HTTP/1.1\r\nHost: a\r\n\r\n")
        request: ProxyRequest = c.resource.open[0]
        for name in ProxyRequest.__annotations__:
            self.assertTrue(hasattr(request, name), name)
        for name in (
            "getClientAddress",
            "getRequestHostname",
            "setResponseCode",
            "setHeader",
            "registerProducer",
            "unregisterProducer",
            "write",
            "finish",
            "loseConnection",
        ):
            self.assertTrue(callable(getattr(request, name)), name)

    def test_trailing_whitespace_is_not_part_of_a_value(self) -> None:
        """Whitespace around a field value is dropped (RFC 9110 §5.5)."""
        c = Connected()
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\nX-V:  v w \t\r\n\r\n")
        self.assertEqual(c.resource.seen[0].requestHeaders.getRawHeaders(b"x-v"), [b"v w"])

    def test_keep_alive(self) -> None:
        """Requests on one connection are each answered; it stays open, then the keep-alive timeout closes it."""
        c = Connected()
        for _ in range(3):
            c.send(GET)
            self.assertEqual(c.responses()[0][0], 200)
        self.assertFalse(c.closing)
        c.clock.advance(74)
        self.assertFalse(c.closing)
        c.clock.advance(1)
        self.assertTrue(c.closing)
        self.assertEqual(c.take(), b"")

    def test_connection_close(self) -> None:
        """``Connection: close`` is answered with it, and the connection closes."""
        c = Connected()
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n" + GET)
        responses = c.responses()
        self.assertEqual(len(responses), 1)
        self.assertEqual(responses[0][1][b"connection"], b"close")
        self.assertTrue(c.closing)
        self.assertEqual(len(c.resource.seen), 1)

    def test_http10(self) -> None:
        """HTTP/1.0 closes after the answer unless it asked for keep-alive."""
        c = Connected()
        c.send(b"GET / HTTP/1.0\r\n\r\n")
        [(status, headers, _)] = c.responses()
        self.assertEqual((status, headers[b"connection"]), (200, b"close"))
        self.assertTrue(c.closing)
        c = Connected()
        c.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        [(status, headers, _)] = c.responses()
        self.assertEqual(headers[b"connection"], b"keep-alive")
        self.assertFalse(c.closing)

    def test_http10_unknown_length_is_close_delimited(self) -> None:
        """To HTTP/1.0, a body of unknown length is never chunked: the close ends it."""
        c = Connected()
        c.send(b"GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        data = c.take()
        self.assertNotIn(b"chunked", data.lower())
        self.assertTrue(data.endswith(b"\r\n\r\nonetwo"))
        self.assertTrue(c.closing)

    def test_chunked_response(self) -> None:
        """A body written without a length goes out chunked to HTTP/1.1, and the connection stays."""
        c = Connected()
        c.send(b"GET /stream HTTP/1.1\r\nHost: a\r\n\r\n")
        data = c.take()
        self.assertIn(b"\r\nTransfer-Encoding: chunked\r\n", data)
        self.assertTrue(data.endswith(b"3\r\none\r\n3\r\ntwo\r\n0\r\n\r\n"))
        [(status, _, body)] = parse_responses(data)
        self.assertEqual((status, body), (200, b"onetwo"))
        self.assertFalse(c.closing)

    def test_head(self) -> None:
        """HEAD is answered with the length the body would have, and no body."""
        c = Connected()
        c.send(b"HEAD /h HTTP/1.1\r\nHost: a\r\n\r\n" + GET)
        data = c.take()
        head, _, rest = data.partition(b"\r\n\r\n")
        self.assertIn(b"Content-Length: 8", head)  # len(b"HEAD /h ")
        self.assertTrue(rest.startswith(b"HTTP/1.1 200 OK\r\n"))

    def test_head_of_unknown_length(self) -> None:
        """A HEAD answered by writes is not chunked and has no body."""
        c = Connected()
        c.send(b"HEAD /stream HTTP/1.1\r\nHost: a\r\n\r\n")
        data = c.take()
        self.assertTrue(data.endswith(b"\r\n\r\n"))
        self.assertNotIn(b"chunked", data.lower())

    def test_empty_finish(self) -> None:
        """A request finished without a write is answered with ``Content-Length: 0``."""
        c = Connected()
        c.send(b"DELETE /later HTTP/1.1\r\nHost: a\r\n\r\n")
        request = c.resource.open[0]
        request.setResponseCode(204)
        request.finish()
        data = c.take()
        self.assertTrue(data.startswith(b"HTTP/1.1 204 No Content\r\n"))
        self.assertNotIn(b"content-length", data.lower())
        c.send(b"GET /later HTTP/1.1\r\nHost: a\r\n\r\n")
        c.resource.open[1].finish()
        self.assertIn(b"Content-Length: 0\r\n", c.take())

    def test_post_body(self) -> None:
        """A body with a length, delivered in pieces, reaches the resource whole."""
        c = Connected()
        c.send(b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nhello")
        self.assertEqual(c.resource.seen, [])
        c.send(b"world")
        [(status, _, body)] = c.responses()
        self.assertEqual((status, body), (200, b"POST /p helloworld"))

    def test_chunked_body(self) -> None:
        """A chunked body (with an extension and a trailer) is decoded; the trailer is dropped."""
        c = Connected()
        c.send(
            b"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5;ext=1\r\nhello\r\n5\r\nworld\r\n0\r\nX-Trailer: t\r\n\r\n"
        )
        [(_, _, body)] = c.responses()
        self.assertEqual(body, b"POST /p helloworld")
        self.assertIsNone(c.resource.seen[0].requestHeaders.getRawHeaders(b"x-trailer"))

    def test_body_over_the_limit(self) -> None:
        """A declared length over the limit is answered at once (413) and the connection closes."""
        c = Connected(H1Limits(max_body=4))
        c.send(b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n")
        [(status, headers, _)] = c.responses()
        self.assertEqual((status, headers[b"connection"]), (413, b"close"))
        self.assertTrue(c.closing)

    def test_chunked_body_over_the_limit(self) -> None:
        """A chunked body growing over the limit is answered 413 as soon as it does."""
        c = Connected(H1Limits(max_body=4))
        c.send(b"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
        self.assertEqual(c.take(), b"")
        c.send(b"3\r\ndef\r\n")
        [(status, _, _)] = c.responses()
        self.assertEqual(status, 413)
        self.assertTrue(c.closing)

    def test_render_failure(self) -> None:
        """A resource that raises is answered 500 and the connection closes."""
        c = Connected()
        c.send(b"GET /boom HTTP/1.1\r\nHost: a\r\n\r\n")
        [(status, headers, body)] = c.responses()
        self.assertEqual(status, 500)
        self.assertEqual(headers[b"connection"], b"close")
        self.assertIn(b'"statusCode":500', body)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_client_gone(self) -> None:
        """A client that disconnects during a response is reported once through ``on_client_gone``."""
        c = Connected()
        c.send(b"GET /later HTTP/1.1\r\nHost: a\r\n\r\n")
        request = c.resource.open[0]
        reasons: list[Failure] = []
        request.on_client_gone = reasons.append
        c.lose()
        self.assertEqual(len(reasons), 1)
        self.assertIsNone(request.channel)
        request.write(b"ignored")
        request.finish()

    def test_cut(self) -> None:
        """``loseConnection`` on a request whose headers went out closes the connection."""
        c = Connected()
        c.send(b"GET /later HTTP/1.1\r\nHost: a\r\n\r\n")
        request = c.resource.open[0]
        request.write(b"partial")
        request.loseConnection()
        self.assertTrue(c.closing)
        self.assertNotIn(b"0\r\n\r\n", c.take())

    def test_target_forms(self) -> None:
        """The absolute form and ``OPTIONS *`` are accepted (RFC 9112 §3.2)."""
        c = Connected()
        c.send(b"GET http://example.com/x HTTP/1.1\r\nHost: other\r\n\r\n")
        c.send(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual([r.uri for r in c.resource.seen], [b"http://example.com/x", b"*"])
        self.assertEqual([s for s, _, _ in c.responses()], [200, 200])

    def test_upgrade_answered_without_switching(self) -> None:
        """
        An Upgrade request a resource answers as a plain one (no 101):
        what the client sent after it is HTTP/1.1 again, so a WebSocket
        frame is a 400 and a request is served (issue 11: tests/proxy/test_upgrade.py
        has the switch).
        """
        upgrade = b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
        c = Connected()
        c.send(upgrade + b"\x81\x85frame")
        self.assertEqual([s for s, _, _ in c.responses()], [200, 400])
        self.assertTrue(c.closing)
        c = Connected()
        c.send(upgrade + b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual([s for s, _, _ in c.responses()], [200, 200])
        self.assertEqual([r.uri for r in c.resource.seen], [b"/ws", b"/next"])
        self.assertFalse(c.closing)

    def test_request_headers_are_twisted_headers(self) -> None:
        """The fields stored in ``Headers``' own form read back through its API, names in any case."""
        c = Connected()
        c.send(b"GET / HTTP/1.1\r\nhost: a\r\nx-REQUEST-id: 1\r\nContent-type: t\r\n\r\n")
        headers = c.resource.seen[0].requestHeaders
        self.assertEqual(headers.getRawHeaders(b"X-Request-Id"), [b"1"])
        self.assertEqual(headers.getRawHeaders("content-type"), ["t"])
        self.assertTrue(headers.hasHeader(b"HOST"))
        self.assertEqual(
            sorted(name for name, _ in headers.getAllRawHeaders()),
            [b"Content-Type", b"Host", b"X-Request-Id"],
        )

    def test_drain_closes_idle_connections(self) -> None:
        """The server closes idle connections on request, not those with a request in progress."""
        idle, busy = Connected(), Connected()
        busy.server = idle.server
        idle.server.channels.add(busy.channel)
        busy.send(b"GET /later HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(idle.server.close_idle_connections(), 1)
        self.assertTrue(idle.closing)
        self.assertFalse(busy.closing)


class _Forwarding(Resource):
    """Answers as the proxy does with a backend's response: ``forward_response``, then the body."""

    isLeaf = True

    def __init__(self, headers: list[tuple[bytes, bytes]]) -> None:
        super().__init__()
        self.headers = headers

    def render(self, request: Any) -> Any:
        request.forward_response(200, b"OK", list(self.headers), b"id-1")
        request.write(b"body")
        request.finish()
        return NOT_DONE_YET


class DateTests(SynchronousTestCase):
    """
    ``Date`` (RFC 9110 §6.6.1): on every answer of the gateway's own, from
    its clock, formatted once per second; a forwarded response keeps the
    backend's, and gets ours when it has none.
    """

    #: timeouts that the clock's jumps to a date do not reach
    LIMITS = H1Limits(header_timeout=1e10, keepalive_timeout=1e10)

    def dates(self, c: Connected) -> list[bytes]:
        raw = c.take()
        return [
            line.split(b":", 1)[1].strip()
            for line in raw.split(b"\r\n")
            if line.lower().startswith(b"date:")
        ]

    def test_own_answers_dated_by_the_clock(self) -> None:
        c = Connected(self.LIMITS)
        c.clock.advance(1_700_000_000.25)
        c.send(GET)
        self.assertEqual(self.dates(c), [b"Tue, 14 Nov 2023 22:13:20 GMT"])
        c.clock.advance(0.5)  # the same second: the same line
        c.send(GET)
        self.assertEqual(self.dates(c), [b"Tue, 14 Nov 2023 22:13:20 GMT"])
        c.clock.advance(0.25)  # the next one
        c.send(GET)
        self.assertEqual(self.dates(c), [b"Tue, 14 Nov 2023 22:13:21 GMT"])

    def test_refusals_dated(self) -> None:
        c = Connected(self.LIMITS)
        c.clock.advance(86400)
        c.send(b"GET / HTTP/1.1\r\n\r\n")  # no Host
        self.assertEqual(self.dates(c), [b"Fri, 02 Jan 1970 00:00:00 GMT"])

    def test_backend_date_kept(self) -> None:
        c = Connected(self.LIMITS, resource=_Forwarding([(b"date", b"Mon, 01 Jan 2024 00:00:00 GMT")]))
        c.clock.advance(86400)
        c.send(GET)
        self.assertEqual(self.dates(c), [b"Mon, 01 Jan 2024 00:00:00 GMT"])

    def test_forwarded_without_date_gets_ours(self) -> None:
        c = Connected(self.LIMITS, resource=_Forwarding([(b"Content-Type", b"text/plain")]))
        c.clock.advance(86400)
        c.send(GET)
        self.assertEqual(self.dates(c), [b"Fri, 02 Jan 1970 00:00:00 GMT"])

    def test_resource_date_kept(self) -> None:
        class Dated(Resource):
            isLeaf = True

            def render(self, request: Any) -> bytes:
                request.setHeader(b"date", b"Sat, 01 Jan 2000 00:00:00 GMT")
                return b"ok"

        c = Connected(self.LIMITS, resource=Dated())
        c.send(GET)
        self.assertEqual(self.dates(c), [b"Sat, 01 Jan 2000 00:00:00 GMT"])


class PipeliningTests(SynchronousTestCase):
    def test_in_order_one_at_a_time(self) -> None:
        """Pipelined requests are rendered one at a time and answered in order."""
        c = Connected()
        c.send(
            b"GET /later/1 HTTP/1.1\r\nHost: a\r\n\r\n"
            b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n"
            b"GET /later/3 HTTP/1.1\r\nHost: a\r\n\r\n"
        )
        self.assertEqual([r.uri for r in c.resource.seen], [b"/later/1"])
        self.assertEqual(c.take(), b"")
        first = c.resource.open[0]
        first.write(b"first")
        first.finish()
        self.assertEqual([r.uri for r in c.resource.seen], [b"/later/1", b"/2", b"/later/3"])
        c.resource.open[1].finish()
        bodies = [body for _, _, body in c.responses()]
        self.assertEqual(bodies, [b"first", b"GET /2 ", b""])
        self.assertFalse(c.closing)

    def test_a_waiting_body_stops_reading(self) -> None:
        """A request with a body waiting behind the one being answered stops reading: one spooled body at most."""
        c = Connected()
        c.send(b"GET /later HTTP/1.1\r\nHost: a\r\n\r\n")
        c.send(b"POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc")
        self.assertEqual(c.transport.producerState, "paused")
        c.resource.open[0].finish()
        self.assertEqual(c.transport.producerState, "producing")

    def test_reading_stops_when_enough_wait(self) -> None:
        """Once ``max_pipelined`` requests wait, the connection stops reading until they are answered."""
        c = Connected(H1Limits(max_pipelined=2))
        c.send(b"GET /later HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(c.transport.producerState, "producing")
        c.send(GET)
        self.assertEqual(c.transport.producerState, "paused")
        c.resource.open[0].finish()
        self.assertEqual(c.transport.producerState, "producing")
        self.assertEqual(len(c.responses()), 2)

    def test_error_after_good_requests(self) -> None:
        """A malformed request after good ones is refused after their answers, in order."""
        c = Connected()
        c.send(b"GET /later HTTP/1.1\r\nHost: a\r\n\r\n" + GET + b"GET / HTTP/1.1\r\n\r\n")
        self.assertEqual(c.take(), b"")
        c.resource.open[0].finish()
        statuses = [status for status, _, _ in c.responses()]
        self.assertEqual(statuses, [200, 200, 400])
        self.assertTrue(c.closing)
        self.assertEqual(len(c.resource.seen), 2)


class ContinueTests(SynchronousTestCase):
    def test_continue(self) -> None:
        """``Expect: 100-continue`` is answered 100 before the body is read, then the final answer."""
        c = Connected()
        c.send(b"POST /p HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
        self.assertEqual(c.take(), b"HTTP/1.1 100 Continue\r\n\r\n")
        c.send(b"ok")
        self.assertTrue(c.take().startswith(b"HTTP/1.1 200 OK\r\n"))

    def test_continue_waits_for_its_turn(self) -> None:
        """The 100 of a pipelined request is sent only once the answers before it are."""
        c = Connected()
        c.send(
            b"GET /later HTTP/1.1\r\nHost: a\r\n\r\n"
            b"POST /p HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"
        )
        self.assertEqual(c.take(), b"")
        c.resource.open[0].finish()
        data = c.take()
        self.assertTrue(data.endswith(b"HTTP/1.1 100 Continue\r\n\r\n"), data)

    def test_no_continue_for_a_refused_size(self) -> None:
        """A body over the limit gets no 100: the 413 comes at once, and the connection closes."""
        c = Connected(H1Limits(max_body=1))
        c.send(b"POST /p HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
        data = c.take()
        self.assertTrue(data.startswith(b"HTTP/1.1 413 "), data)
        self.assertNotIn(b"100 Continue", data)
        self.assertTrue(c.closing)

    def test_unknown_expectation(self) -> None:
        """An expectation other than 100-continue is answered 417 (RFC 9110 §10.1.1)."""
        c = Connected()
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\nExpect: teapot\r\n\r\n")
        self.assertEqual(c.responses()[0][0], 417)
        self.assertEqual(c.resource.seen, [])


#: Malformed requests and how they are refused: (name, bytes, status). Each
#: class of RFC 9110/9112 violation the issue lists, and a few of llhttp's.
MALFORMED: list[tuple[str, bytes, int]] = [
    ("obs-fold", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", 400),
    ("upgrade with a body",
     b"POST / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n"
     b"Content-Length: 5\r\n\r\nhello", 400),
    ("fragment in the target", b"GET /a#f HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("userinfo in the target", b"GET http://u@b.example/x HTTP/1.1\r\nHost: b.example\r\n\r\n", 400),
    ("empty Host on 1.1", b"GET / HTTP/1.1\r\nHost: \r\n\r\n", 400),
    ("no Host on 1.1", b"GET / HTTP/1.1\r\nX: a\r\n\r\n", 400),
    ("two Hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    ("two Hosts on 1.0", b"GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n", 400),
    ("invalid Host", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
    ("Host with a path", b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
    ("space before colon", b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),
    ("invalid name", b"GET / HTTP/1.1\r\nHost: a\r\nX(y): 1\r\n\r\n", 400),
    ("empty name", b"GET / HTTP/1.1\r\n: x\r\nHost: a\r\n\r\n", 400),
    ("control in a value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n", 400),
    ("NUL in a value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", 400),
    ("bare LF", b"GET / HTTP/1.1\nHost: a\n\n", 400),
    ("bare CR", b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", 400),
    (
        "two Content-Length",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        400,
    ),
    ("Content-Length list", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 1\r\n\r\na", 400),
    ("negative Content-Length", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400),
    (
        "huge Content-Length",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        400,
    ),
    (
        "CL with TE",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    (
        "TE with CL",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n0\r\n\r\n",
        400,
    ),
    (
        "chunked not final",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        400,
    ),
    ("unknown coding", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
    (
        "unimplemented coding",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        501,
    ),
    (
        "chunked twice",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    ("TE on 1.0", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    (
        "oversize chunk size",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\n",
        400,
    ),
    (
        "chunk size not hex",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        400,
    ),
    (
        "chunk without CRLF",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n",
        400,
    ),
    ("space in target", b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("control in target", b"GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("relative target", b"GET a/b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("asterisk with GET", b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("CONNECT", b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 501),
    ("HTTP/0.9", b"GET /\r\n\r\n", 400),
    ("HTTP/2.0 request line", b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
    ("HTTP/1.2", b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", 400),
    ("unknown method", b"BREW / HTTP/1.1\r\nHost: a\r\n\r\n", 501),
    ("lowercase method", b"get / HTTP/1.1\r\nHost: a\r\n\r\n", 501),
    ("TLS on the plain port", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03", 400),
    ("binary", b"\x00\xff\xfe\r\n\r\n", 400),
    ("header before the request line", b" Host: a\r\nGET / HTTP/1.1\r\n\r\n", 400),
    ("whitespace after the start line", b"GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400),
    ("target too long", b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414),
    ("too many headers", b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X: 1\r\n" * 101 + b"\r\n", 431),
    (
        "header section too large",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"v" * 40000 + b"\r\n\r\n",
        431,
    ),
]


class MalformedTests(SynchronousTestCase):
    """
    Each malformed request is answered 4xx/5xx with ``Connection: close``
    and the error envelope, never reaches the resource, and closes; sent
    after a good request on the same connection, the good one is answered
    first.
    """

    def _check(self, name: str, data: bytes, status: int) -> None:
        for pieces in ((data,), tuple(data[i : i + 7] for i in range(0, len(data), 7))):
            c = Connected()
            for piece in pieces:
                c.send(piece)
            responses = c.responses()
            self.assertEqual([s for s, _, _ in responses], [status], (name, len(pieces)))
            _, headers, body = responses[0]
            self.assertEqual(headers[b"connection"], b"close", name)
            self.assertIn(b'"statusCode":%d' % status, body, name)
            self.assertEqual(c.resource.seen, [], name)
            self.assertTrue(c.closing, name)
            # Nothing more is read.
            c.send(GET)
            self.assertEqual(c.take(), b"", name)
        c = Connected()
        c.send(GET + data)
        # After another message in the same read, an unknown method cannot
        # be told from garbage (where the message starts is not known).
        after = 400 if name.endswith("method") else status
        self.assertEqual([s for s, _, _ in c.responses()], [200, after], name)
        self.assertEqual(len(c.resource.seen), 1, name)

    def test_table(self) -> None:
        """Every row of the table is refused as it says (``MALFORMED``)."""
        for name, data, status in MALFORMED:
            self._check(name, data, status)

    def test_header_line_llhttp_is_still_collecting(self) -> None:
        """One huge header line that never ends is refused 431 before it is complete."""
        c = Connected()
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\nX: ")
        for _ in range(10):
            c.send(b"v" * 8192)
            if c.closing:
                break
        self.assertEqual(c.responses()[0][0], 431)
        self.assertTrue(c.closing)

    def test_refusals_are_reported(self) -> None:
        """
        The server's ``on_refused`` hears of every answer the channel gives
        itself, with what arrived of the refused request (for its log line).
        """
        c = Connected()
        heard: list[tuple[Any, int, str, int]] = []
        c.server.on_refused = lambda *args: heard.append(args)
        c.send(GET + b"POST /second HTTP/1.1\r\nX-A: 1\r\n\r\n")
        [(request, status, message, sent)] = heard
        self.assertEqual((status, request.getClientAddress().host), (400, "192.0.2.7"))
        self.assertIn("Host", message)
        self.assertEqual((request.method, request.uri), (b"POST", b"/second"))
        self.assertEqual(request.requestHeaders.getRawHeaders(b"x-a"), [b"1"])
        self.assertEqual(sent, len(envelope(400, message)))
        # Input refused before its target: nothing of it is known.
        c = Connected()
        c.server.on_refused = lambda *args: heard.append(args)
        c.send(GET + b"\x16\x03\x01\x00\xa5")
        request, status, _, _ = heard[-1]
        self.assertEqual((status, request.method, request.uri), (400, b"", b""))

    def test_linger(self) -> None:
        """After a refusal the write side closes first, input is drained, and the connection is aborted after ``linger``."""

        class HalfClosable(StringTransport):
            half_closed = False
            aborted = False

            def loseWriteConnection(self) -> None:
                self.half_closed = True

            def abortConnection(self) -> None:
                self.aborted = True

        c = Connected()
        c.transport = HalfClosable()
        c.channel = c.server.buildProtocol(None)
        c.channel.makeConnection(c.transport)
        c.send(b"GET / HTTP/1.1\r\nX: 1\r\n\r\n")
        self.assertEqual(c.responses()[0][0], 400)
        self.assertTrue(c.transport.half_closed)
        self.assertFalse(c.transport.disconnecting)
        c.send(b"more input, discarded")
        c.clock.advance(5)
        self.assertTrue(c.transport.aborted)


class HostCheckTests(SynchronousTestCase):
    """
    ``Host`` values are checked once and remembered (``_valid_hosts``):
    the answer is the pattern's whatever was seen before, and the memory
    stays bounded whatever clients send.
    """

    def setUp(self) -> None:
        _valid_hosts.clear()
        self.addCleanup(_valid_hosts.clear)

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.one_of(
        st.sampled_from([b"example.com", b"a:80", b"[::1]:8080", b"", b"bad host", b"a/b", b"x:y"]),
        st.binary(max_size=12),
    ), max_size=20))
    def test_same_answer_as_the_pattern(self, values: list[bytes]) -> None:
        """Each value, asked twice in any order, is judged as ``_HOST`` alone judges it."""
        # One header value on the wire: no line break, no surrounding OWS.
        values = [v for v in values if v == v.strip(b" \t\r\n") and b"\n" not in v and b"\r" not in v]
        for value in values + values:
            expected = _HOST.match(value) is not None
            c = Connected()
            c.send(b"GET / HTTP/1.0\r\nHost: " + value + b"\r\n\r\n")
            status = c.responses()[0][0]
            self.assertEqual(status == 200, expected, (value, status))

    def test_bounded(self) -> None:
        """Many distinct hosts keep at most ``_VALID_HOSTS_SIZE`` remembered; long ones are not kept."""
        for i in range(3 * _VALID_HOSTS_SIZE):
            self.assertTrue(_host_is_valid(b"h%d.example" % i))
            self.assertLessEqual(len(_valid_hosts), _VALID_HOSTS_SIZE)
        _valid_hosts.clear()
        self.assertTrue(_host_is_valid(b"a" * (_VALID_HOST_LENGTH + 1)))
        self.assertEqual(_valid_hosts, {})


class TimeoutTests(SynchronousTestCase):
    def test_silent_connection(self) -> None:
        """A connection that sends nothing is closed after the header timeout, without an answer."""
        c = Connected()
        c.clock.advance(59.9)
        self.assertFalse(c.closing)
        c.clock.advance(0.1)
        self.assertTrue(c.closing)
        self.assertEqual(c.take(), b"")

    def test_slow_header(self) -> None:
        """A header section trickled in is answered 408 at the header timeout, counted from its start."""
        c = Connected(H1Limits(header_timeout=10))
        c.clock.advance(5)
        c.send(b"GET / HTTP/1.1\r\n")
        for _ in range(4):
            c.clock.advance(1)
            c.send(b"X: 1\r\n")
        c.clock.advance(0.9)
        self.assertEqual(c.take(), b"")
        c.clock.advance(0.1)
        [(status, headers, _)] = c.responses()
        self.assertEqual((status, headers[b"connection"]), (408, b"close"))
        self.assertTrue(c.closing)
        self.assertEqual(c.resource.seen, [])

    def test_slow_header_on_a_kept_alive_connection(self) -> None:
        """On a kept-alive connection, the header timeout runs from the next request's first byte."""
        c = Connected(H1Limits(header_timeout=10, keepalive_timeout=75))
        c.send(GET)
        c.take()
        c.clock.advance(50)
        c.send(b"GET / HTTP/1.1\r\n")
        c.clock.advance(9)
        self.assertFalse(c.closing)
        c.clock.advance(1)
        self.assertEqual(c.responses()[0][0], 408)

    def test_slow_header_behind_a_pipelined_request(self) -> None:
        """A header section that begins in the read of a complete request gets its timeout from that read."""
        c = Connected(H1Limits(header_timeout=10, keepalive_timeout=75))
        c.send(GET)
        c.take()
        c.clock.advance(50)
        c.send(GET + b"GET / HTTP/1.1\r\n")
        c.clock.advance(9)
        self.assertFalse(c.closing)
        c.clock.advance(1)
        self.assertEqual([status for status, _, _ in c.responses()], [200, 408])

    def test_slow_body(self) -> None:
        """A body that stops arriving is answered 408 after the body timeout; each read restarts it."""
        c = Connected(H1Limits(body_timeout=10))
        c.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n")
        for _ in range(5):
            c.clock.advance(9)
            c.send(b"x")
        self.assertFalse(c.closing)
        c.clock.advance(10)
        [(status, _, _)] = c.responses()
        self.assertEqual(status, 408)
        self.assertTrue(c.closing)
        self.assertEqual(c.resource.seen, [])

    def test_no_read_timeout_while_the_resource_works(self) -> None:
        """While a request is being answered, no read timeout applies (the backend has its own)."""
        c = Connected(H1Limits(header_timeout=1, keepalive_timeout=1))
        c.send(b"GET /later HTTP/1.1\r\nHost: a\r\n\r\n")
        c.clock.advance(100)
        self.assertFalse(c.closing)
        c.resource.open[0].finish()
        self.assertFalse(c.closing)
        c.clock.advance(1)
        self.assertTrue(c.closing)


@implementer(IPushProducer)
class Producer:
    def __init__(self) -> None:
        self.state = "producing"

    def pauseProducing(self) -> None:
        self.state = "paused"

    def resumeProducing(self) -> None:
        self.state = "producing"

    def stopProducing(self) -> None:
        self.state = "stopped"


class BackpressureTests(SynchronousTestCase):
    def test_transport_pauses_the_producer(self) -> None:
        """When the transport's buffer is full, the response's producer is paused, then resumed."""
        c = Connected()
        self.assertIs(c.transport.producer, c.channel)
        self.assertTrue(c.transport.streaming)
        c.send(b"GET /later HTTP/1.1\r\nHost: a\r\n\r\n")
        request = c.resource.open[0]
        producer = Producer()
        request.registerProducer(producer, True)
        c.channel.pauseProducing()  # what the transport does when its buffer is full
        self.assertEqual(producer.state, "paused")
        c.channel.resumeProducing()
        self.assertEqual(producer.state, "producing")
        request.unregisterProducer()
        request.finish()

    def test_full_buffer_stops_reading(self) -> None:
        """A client that does not read its answers is not read from either (no pile-up in memory)."""
        c = Connected()
        c.send(b"GET /later HTTP/1.1\r\nHost: a\r\n\r\n")
        c.channel.pauseProducing()
        self.assertEqual(c.transport.producerState, "paused")
        c.channel.resumeProducing()
        self.assertEqual(c.transport.producerState, "producing")

    def test_registered_while_paused(self) -> None:
        """A producer registered while the transport is full starts paused."""
        c = Connected()
        c.send(b"GET /later HTTP/1.1\r\nHost: a\r\n\r\n")
        c.channel.pauseProducing()
        producer = Producer()
        c.resource.open[0].registerProducer(producer, True)
        self.assertEqual(producer.state, "paused")

    def test_send_timeout(self) -> None:
        """A client that reads nothing for ``send_timeout`` seconds is disconnected."""
        c = Connected(H1Limits(send_timeout=30))
        aborted: list[bool] = []
        c.transport.abortConnection = lambda: aborted.append(True)  # type: ignore[method-assign]
        c.send(b"GET /later HTTP/1.1\r\nHost: a\r\n\r\n")
        c.channel.pauseProducing()
        c.clock.advance(29)
        c.channel.resumeProducing()
        c.channel.pauseProducing()
        c.clock.advance(29)
        self.assertEqual(aborted, [])
        c.clock.advance(1)
        self.assertEqual(aborted, [True])


class SlowReaderTests(SynchronousTestCase):
    def test_a_slow_steady_reader_is_not_aborted(self) -> None:
        """The send timeout re-arms while the client drains the buffer, however slowly; it aborts a stuck one."""
        c = Connected(H1Limits(send_timeout=30))
        aborted: list[bool] = []
        c.transport.abortConnection = lambda: aborted.append(True)  # type: ignore[method-assign]
        c.transport.dataBuffer = b"x" * 1000  # type: ignore[attr-defined]
        c.transport._tempDataLen = 0  # type: ignore[attr-defined]
        c.send(b"GET /later HTTP/1.1\r\nHost: a\r\n\r\n")
        c.channel.pauseProducing()
        c.transport.dataBuffer = b"x" * 600  # type: ignore[attr-defined]
        c.clock.advance(30)
        self.assertEqual(aborted, [])
        c.clock.advance(30)  # nothing read since
        self.assertEqual(aborted, [True])


class LingerTests(SynchronousTestCase):
    def test_linger_follows_a_client_still_sending(self) -> None:
        """After a refusal, input still arriving moves the linger deadline (the client then reads the answer), up to linger_total."""

        class HalfClosable(StringTransport):
            aborted = False

            def loseWriteConnection(self) -> None: ...

            def abortConnection(self) -> None:
                self.aborted = True

        c = Connected(H1Limits(linger=1, linger_total=5))
        c.transport = HalfClosable()
        c.channel = c.server.buildProtocol(None)
        c.channel.makeConnection(c.transport)
        c.send(b"GET / HTTP/1.1\r\nX: 1\r\n\r\n")
        self.assertEqual(c.responses()[0][0], 400)
        for _ in range(4):  # 3.6 s, each pause under linger
            c.clock.advance(0.9)
            c.send(b"x" * 100)
        self.assertFalse(c.transport.aborted)
        for _ in range(3):
            c.clock.advance(0.9)
            c.send(b"x" * 100)
        self.assertTrue(c.transport.aborted, "not longer than linger_total")


class FuzzTests(SynchronousTestCase):
    """
    Mutated requests (bytes flipped, inserted, dropped, cut; a fixed seed)
    never crash the channel nor leave it hanging: once the clock passes the
    longest timeout, every connection is closed, and every request the
    resource saw passed the checks.
    """

    SEEDS = 1500

    def test_mutations_end_closed(self) -> None:
        """Every mutated input ends with the connection closed, and the resource sees only valid requests."""
        import random

        rng = random.Random(11)
        bases = [
            GET,
            b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
            b"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
            b"PUT /u HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok",
        ]
        alphabet = b" \t\r\n:,;0fF-\x00\x7f\x80Hh/"
        for _ in range(self.SEEDS):
            data = bytearray(rng.choice(bases) * rng.randint(1, 2))
            for _ in range(rng.randint(1, 4)):
                where = rng.randrange(len(data))
                action = rng.randrange(4)
                if action == 0:
                    data[where] = rng.choice(alphabet)
                elif action == 1:
                    data.insert(where, rng.choice(alphabet))
                elif action == 2:
                    del data[where]
                else:
                    del data[where:]
                if not data:
                    data = bytearray(b"G")
            c = Connected()
            step = rng.choice((len(data), 1, 5))
            for i in range(0, len(data), step):
                c.send(bytes(data[i : i + step]))
            c.clock.advance(100)  # past every read timeout
            self.assertTrue(c.closing, bytes(data))
            for request in c.resource.seen:
                hosts = request.requestHeaders.getRawHeaders(b"host") or []
                self.assertLessEqual(len(hosts), 1, bytes(data))
                if request.clientproto == b"HTTP/1.1":
                    self.assertEqual(len(hosts), 1, bytes(data))
        self.assertEqual(self.flushLoggedErrors(), [])
