"""
HTTP/2 with prior knowledge (h2c) on the plain listener
(:class:`~gateway.proxy.H2CServer`, ``gateway.http2.cleartext``): the
decision on a connection's first bytes, fed to the channel piece by piece,
and the gateway as ``twistd apimgw`` builds it on real loopback sockets,
with an ``h2`` client in a thread and the real backend.
"""

from __future__ import annotations

import email.utils
import itertools
import json
import socket
import time
from typing import Any, ClassVar

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from gateway.proxy import GatewaySite, H1Limits, H1Server, H2CServer
from gateway.proxy._alpn import H2_PREFACE, _PrefaceChannel
from gateway.proxy._h1 import H1Channel
from tests.integration.h2client import h2_streams
from tests.integration.harness import GatewayTestCase, raw_exchange

#: What a client with prior knowledge sends after the preface: its SETTINGS.
SETTINGS_FRAME = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def _decisions(pieces: list[bytes]) -> list[tuple[bool, bytes] | None]:
    """
    What a fresh channel decides for each piece, read after read, up to the
    first decision (after it the channel no longer asks).
    """
    channel = _PrefaceChannel(H1Server(Resource(), Clock()))
    decisions = []
    for piece in pieces:
        decisions.append(channel._h2_decides(piece))
        if decisions[-1] is not None:
            break
    return decisions


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c for c in cuts if 0 < c < len(data)})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


class DecisionTests(SynchronousTestCase):
    """The first bytes decide; held bytes are never lost."""

    def test_preface_in_one_read(self) -> None:
        self.assertEqual(
            _decisions([H2_PREFACE + SETTINGS_FRAME]), [(True, H2_PREFACE + SETTINGS_FRAME)]
        )

    def test_preface_in_pieces_is_held_until_whole(self) -> None:
        data = H2_PREFACE + SETTINGS_FRAME
        self.assertEqual(
            _decisions([data[:1], data[1:8], data[8:23], data[23:]]),
            [None, None, None, (True, data)],
        )

    def test_http11_at_the_first_differing_byte(self) -> None:
        """``POST`` shares its first byte with the preface, ``PRI /`` four: the rest decides."""
        self.assertEqual(_decisions([b"P", b"OST / HTTP/1.1\r\n"]), [None, (False, b"POST / HTTP/1.1\r\n")])
        self.assertEqual(_decisions([b"PRI ", b"/x"]), [None, (False, b"PRI /x")])
        self.assertEqual(_decisions([b"GET / HTTP/1.1\r\n"]), [(False, b"GET / HTTP/1.1\r\n")])

    @given(
        st.one_of(
            st.binary(min_size=1, max_size=60),
            st.binary(max_size=20).map(lambda tail: H2_PREFACE + tail),
            st.integers(0, len(H2_PREFACE) - 1).flatmap(
                lambda n: st.binary(min_size=1, max_size=10).map(lambda t: H2_PREFACE[:n] + t)
            ),
        ),
        st.lists(st.integers(1, 70), max_size=6),
    )
    def test_any_split_decides_as_the_whole(self, data: bytes, cuts: list[int]) -> None:
        """
        However the first bytes are split into reads, the decision is made
        once, says whether they start with the preface, and carries every
        byte read so far (or everything is still held).
        """
        pieces = _split(data, cuts)
        decisions = _decisions(pieces)
        if len(data) < len(H2_PREFACE) and H2_PREFACE.startswith(data):
            self.assertEqual(set(decisions), {None})  # still a prefix: nothing decided
            return
        # Decided once, at the first read that tells, with every byte so far.
        *undecided, decision = decisions
        self.assertEqual(set(undecided), {None} if undecided else set())
        assert decision is not None
        is_h2, carried = decision
        self.assertEqual(is_h2, data.startswith(H2_PREFACE))
        self.assertEqual(carried, b"".join(pieces[: len(decisions)]))
        prefix_length = min(len(carried), len(H2_PREFACE))
        # The first read that tells: the preface is whole, or a byte differs.
        self.assertTrue(
            len(carried) >= len(H2_PREFACE) or carried[:prefix_length] != H2_PREFACE[:prefix_length]
        )


def _h2c(port: int, method: str, path: str, **kw: Any) -> list[Any]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        return h2_streams(sock, "http", "www.example.com", method, path, **kw)


def _h2c_left_open(port: int) -> tuple[socket.socket, Any]:
    """One answered h2c request, the connection left open (idle)."""
    import h2.config
    import h2.connection
    import h2.events

    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    conn.send_headers(
        1,
        [(":method", "GET"), (":path", "/app/idle"), (":scheme", "http"),
         (":authority", "www.example.com")],
        end_stream=True,
    )
    sock.sendall(conn.data_to_send())
    while True:
        data = sock.recv(65536)
        if not data:
            raise AssertionError("closed before the response")
        events = conn.receive_data(data)
        sock.sendall(conn.data_to_send())
        if any(isinstance(e, h2.events.StreamEnded) for e in events):
            return sock, conn


def _events_until_close(sock: socket.socket, conn: Any) -> list[str]:
    names = []
    while True:
        data = sock.recv(65536)
        if not data:
            return names
        names += [type(e).__name__ for e in conn.receive_data(data)]


class H2CGatewayTests(GatewayTestCase):
    """The default gateway: HTTP/1.1 and h2c on the same plain port."""

    environ: ClassVar[dict[str, str]] = {"net.server.header-timeout": "1"}

    def test_default_listener(self) -> None:
        """``gateway.http2.cleartext`` defaults to true: the plain listener switches on the preface."""
        self.assertIsInstance(self.gateway.listeners["http"].site, H2CServer)

    @inlineCallbacks
    def test_prior_knowledge_streams_reach_the_backend(self) -> Any:
        """Three concurrent h2c streams and a POST body are proxied like HTTP/1.1 requests."""
        before = self.backend_site.connections
        gets = yield deferToThread(_h2c, self.port, "GET", "/echo/resource?p=1", streams=3)
        (post,) = yield deferToThread(_h2c, self.port, "POST", "/echo/resource", body=b"hi")
        self.assertEqual([r.status for r in gets], [200, 200, 200])
        for response in gets:
            echoed = json.loads(response.body)
            self.assertEqual((echoed["path"], echoed["query"]), ("/api/resource", "p=1"))
            forwarded = {name.lower(): value for name, value in echoed["headers"]}
            self.assertEqual(forwarded["x-forwarded-proto"], "http")
            self.assertIsNotNone(response.header("x-request-id"))
        self.assertEqual(len({r.header("x-request-id") for r in gets}), 3)
        self.assertEqual((post.status, json.loads(post.body)["body"]), (200, "hi"))
        self.assertGreater(self.backend_site.connections, before)

    @inlineCallbacks
    def test_every_answer_has_one_date(self) -> Any:
        """Over HTTP/2 too: the gateway's 404 gets a Date, a proxied answer keeps the backend's, alone."""
        (missing,) = yield deferToThread(_h2c, self.port, "GET", "/nowhere")
        (proxied,) = yield deferToThread(_h2c, self.port, "GET", "/app/dated")
        self.assertEqual((missing.status, proxied.status), (404, 200))
        for response in (missing, proxied):
            dates = [v for k, v in response.headers if k == "date"]
            self.assertEqual(len(dates), 1, response.headers)
            parsed = email.utils.parsedate_to_datetime(dates[0])
            self.assertLess(abs(parsed.timestamp() - time.time()), 3600)

    @inlineCallbacks
    def test_preface_split_across_reads(self) -> Any:
        """
        A client that writes its preface in pieces (1, 3 and 10 bytes, a
        pause apart) is served as HTTP/2. (Loopback may still deliver them
        together: that each piece is held is shown by ChannelTests.)
        """
        (response,) = yield deferToThread(
            _h2c, self.port, "GET", "/app/pieces", preface_pieces=(1, 3, 10)
        )
        self.assertEqual(response.status, 200)
        self.assertEqual(json.loads(response.body)["path"], "/app/pieces")

    @inlineCallbacks
    def test_http11_sharing_the_first_bytes(self) -> Any:
        """
        A ``POST`` whose ``P`` is written alone, a pause before the rest, is
        served as HTTP/1.1 with its body. (ChannelTests feeds the two reads
        separately for certain.)
        """

        def run() -> bytes:
            with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
                sock.sendall(b"P")
                time.sleep(0.05)
                sock.sendall(
                    b"OST /echo/resource HTTP/1.1\r\nHost: www.example.com\r\n"
                    b"Content-Length: 5\r\nConnection: close\r\n\r\nhello"
                )
                chunks = []
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
                return b"".join(chunks)

        raw = yield deferToThread(run)
        self.assertTrue(raw.startswith(b"HTTP/1.1 200 "), raw[:200])
        self.assertEqual(json.loads(raw.split(b"\r\n\r\n", 1)[1])["body"], "hello")

    @inlineCallbacks
    def test_partial_preface_closed_at_the_header_timeout(self) -> Any:
        """A client that stops inside the preface is answered 408 and closed at the header timeout."""
        # (raw_exchange reads until the server closes; its own timeout, 20 s,
        # would fail the test.)
        raw = yield deferToThread(raw_exchange, self.port, H2_PREFACE[:10], 20)
        # A request had begun: answered 408 (in HTTP/1.1, the only protocol
        # it could be told in), then closed.
        self.assertTrue(raw.startswith(b"HTTP/1.1 408 "), raw)

    @inlineCallbacks
    def test_drain_closes_idle_h2c_connections(self) -> Any:
        """The listener's drain sends GOAWAY to an idle h2c connection and closes it."""
        sock, conn = yield deferToThread(_h2c_left_open, self.port)
        self.addCleanup(sock.close)
        closed = self.gateway.listeners["http"].site.close_idle_connections()
        self.assertEqual(closed, 1)
        events = yield deferToThread(_events_until_close, sock, conn)
        self.assertIn("ConnectionTerminated", events)


class H2COffTests(GatewayTestCase):
    """``gateway.http2.cleartext: false``: the preface is refused as HTTP/1.1."""

    extra_args: ClassVar[list[str]] = ["--http2-cleartext", "false"]

    @inlineCallbacks
    def test_preface_answered_505(self) -> Any:
        self.assertIsInstance(self.gateway.listeners["http"].site, H1Server)
        raw = yield deferToThread(raw_exchange, self.port, H2_PREFACE + SETTINGS_FRAME)
        self.assertTrue(raw.startswith(b"HTTP/1.1 505 "), raw[:200])
        self.assertIn(b"Connection: close", raw)


class _Answer(Resource):
    """Answers ``<method> <uri> <body>``; remembers the methods it saw."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.methods: list[bytes] = []

    def render(self, request: Any) -> bytes:
        self.methods.append(request.method)
        body = b""
        if request.content is not None:
            request.content.seek(0)
            body = request.content.read()
        return request.method + b" " + request.uri + b" " + body


class ChannelTests(SynchronousTestCase):
    """
    One connection of :class:`H2CServer` on a ``StringTransport`` with a
    ``Clock``, fed read by read: what happens while the first bytes are
    held, and after they decide.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.resource = _Answer()
        self.h1 = H1Server(self.resource, self.clock, H1Limits(header_timeout=10))
        self.server = H2CServer(self.h1, GatewaySite(self.resource))
        self.channel = self.server.buildProtocol(None)
        self.transport = StringTransport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 8080),
            peerAddress=IPv4Address("TCP", "192.0.2.7", 40000),
        )
        self.channel.makeConnection(self.transport)

    def test_http11_whose_first_byte_came_alone(self) -> None:
        """``P``, held; then the rest of a POST: served as HTTP/1.1, body and all."""
        self.channel.dataReceived(b"P")
        self.assertEqual(self.transport.value(), b"")
        self.channel.dataReceived(
            b"OST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi"
        )
        self.assertEqual(self.resource.methods, [b"POST"])
        self.assertTrue(self.transport.value().startswith(b"HTTP/1.1 200 "))
        self.assertTrue(self.transport.value().endswith(b"POST /x hi"))
        # Decided: a plain H1Channel from now on (no test per read).
        self.assertIs(type(self.channel), H1Channel)

    def test_preface_in_pieces_becomes_http2(self) -> None:
        """The preface held across three reads reaches HTTP/2 whole: its SETTINGS, no GOAWAY."""
        data = H2_PREFACE + SETTINGS_FRAME
        for piece in (data[:1], data[1:9], data[9:]):
            self.channel.dataReceived(piece)
        connection = self.transport.wrappedProtocol  # (a TCP connection's would be .protocol)
        self.assertEqual(type(connection).__name__, "H2Connection")
        out = self.transport.value()
        # Frames: 3 bytes of length, then the type; the server opens with SETTINGS (4).
        self.assertEqual(out[3], 4)
        types = []
        while out:
            length = int.from_bytes(out[:3], "big")
            types.append(out[3])
            out = out[9 + length:]
        self.assertNotIn(7, types)  # no GOAWAY: the preface was valid
        self.assertFalse(self.transport.disconnecting)
        self.assertEqual(self.resource.methods, [])

    def test_held_bytes_are_not_idle(self) -> None:
        """A drain does not close a connection whose first bytes are held; once idle, it does."""
        self.channel.dataReceived(b"PR")
        self.assertEqual(self.server.close_idle_connections(), 0)
        self.assertFalse(self.transport.disconnecting)

    def test_header_timeout_while_held_answers_408(self) -> None:
        """A request had begun: 408 at the header timeout, as for a partial HTTP/1.1 head."""
        self.channel.dataReceived(b"PRI * HT")
        self.clock.advance(10)
        self.assertTrue(self.transport.value().startswith(b"HTTP/1.1 408 "))
        self.assertTrue(self.transport.disconnecting)
        # A whole preface arriving as the connection closes does not start
        # HTTP/2 on it: the decision ended with the answer.
        self.channel.dataReceived(H2_PREFACE + SETTINGS_FRAME)
        self.assertFalse(hasattr(self.transport, "wrappedProtocol"))

    def test_silent_connection_closed_without_answer(self) -> None:
        """Nothing sent at all: closed at the header timeout without an answer, as before."""
        self.clock.advance(10)
        self.assertEqual(self.transport.value(), b"")
        self.assertTrue(self.transport.disconnecting)
