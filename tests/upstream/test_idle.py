"""
The backend idle timeout (:meth:`Connection._timed_out
<gateway.upstream._connection.Connection._timed_out>` once the response
started): a backend that stops sending mid-response, and stops reading a
streamed request body, fails the exchange after the response timeout of
silence, while a slow but moving backend, or one we stopped reading for a
slow client, does not. The connection runs on a string transport and a fake
clock, so the tests say exactly when the exchange fails.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from gateway.translate import Backend
from gateway.upstream import BackendPool, BackendResponseTimeout
from gateway.upstream._connection import Connection
from gateway.upstream._exchange import Exchange
from gateway.upstream._upload import StreamSender

from ._loopback import RecordingSink

TIMEOUT = 5.0
BACKEND = Backend("http", "127.0.0.1", 8080, "", "127.0.0.1:8080")
HEAD = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"


class Source:
    """A streamed request body whose pieces the test delivers by hand."""

    def __init__(self) -> None:
        self.consumer: Any = None

    def start(self, consumer: Any) -> None:
        self.consumer = consumer

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def detach(self, consumer: Any = None) -> None:
        self.consumer = None

    def discard(self) -> None:
        self.consumer = None

    def rewind(self) -> bool:
        return False


class IdleTimeoutTests(SynchronousTestCase):
    def exchange(self, source: Source | None = None) -> tuple[Clock, Connection, RecordingSink]:
        """One exchange sent at time 0 on a connection over a string transport."""
        clock = Clock()
        pool = BackendPool(clock, response_timeout=TIMEOUT)
        conn = Connection(pool, ("http", "127.0.0.1", 8080))
        conn.transport = StringTransport()
        sink = RecordingSink()
        length = -1 if source is not None else 0
        ex = Exchange(
            pool,
            BACKEND,
            b"POST",
            b"POST / HTTP/1.1\r\n\r\n",
            None,
            length,
            sink,
            None,
            TIMEOUT,
            source,
        )
        conn.send(ex)
        return clock, conn, sink

    def assertTimedOut(self, conn: Connection, sink: RecordingSink) -> None:
        self.assertEqual(sink.calls[-1], "failed", sink.calls)
        assert sink.failure is not None
        self.assertIsInstance(sink.failure.value, BackendResponseTimeout)
        self.assertIn("sent nothing for 5 s", str(sink.failure.value))
        self.assertTrue(conn.transport.disconnecting)

    def test_stalled_mid_body(self) -> None:
        """Headers and part of the body, then silence: failed one timeout after the last byte."""
        clock, conn, sink = self.exchange()
        clock.advance(1)
        conn.dataReceived(HEAD + b"abc")
        clock.advance(3)
        conn.dataReceived(b"de")
        clock.advance(TIMEOUT - 0.25)
        self.assertEqual(sink.calls, ["started", "body", "body"])
        self.assertFalse(conn.transport.disconnecting)
        clock.advance(0.25)
        self.assertTimedOut(conn, sink)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_slow_but_moving(self) -> None:
        """A body whose pieces come less than a timeout apart completes, on one timer."""
        clock, conn, sink = self.exchange()
        conn.dataReceived(HEAD)
        for piece in b"0123456789":
            clock.advance(TIMEOUT - 0.5)
            # One timer for the exchange, whatever the number of pieces.
            self.assertEqual(len(clock.getDelayedCalls()), 1)
            conn.dataReceived(bytes([piece]))
        self.assertEqual((sink.calls[-1], sink.body), ("finished", b"0123456789"))

    def test_paused_for_a_slow_client(self) -> None:
        """While we do not read (the client is slow), the backend's silence is ours: idle counts from resuming."""
        clock, conn, sink = self.exchange()
        conn.dataReceived(HEAD + b"a")
        assert sink.producer is not None
        sink.producer.pauseProducing()
        clock.advance(4 * TIMEOUT)
        self.assertEqual(sink.calls, ["started", "body"])
        sink.producer.resumeProducing()
        clock.advance(TIMEOUT - 0.25)
        self.assertEqual(sink.calls, ["started", "body"])
        clock.advance(0.25)
        self.assertTimedOut(conn, sink)

    def test_response_timeout_before_headers_unchanged(self) -> None:
        """Before the headers, the timer is still the response timeout."""
        clock, _conn, sink = self.exchange()
        clock.advance(TIMEOUT)
        self.assertEqual(sink.calls, ["failed"])
        assert sink.failure is not None
        self.assertIn("no response from 127.0.0.1:8080 within 5 s", str(sink.failure.value))

    def test_upload_stalled_after_headers(self) -> None:
        """
        The backend answered early, sent one piece and stopped reading the
        body as well: failed after a timeout of neither response bytes nor
        body progress.
        """
        source = Source()
        clock, conn, sink = self.exchange(source)
        sender = conn._sender
        assert isinstance(sender, StreamSender)
        source.consumer.body_received(b"x" * 100)
        conn.dataReceived(HEAD + b"first")
        sender.pauseProducing()  # the backend's socket buffer is full
        clock.advance(1)
        source.consumer.body_received(b"y" * 100)  # the last the backend takes
        clock.pump([0.25] * int((TIMEOUT - 0.25) / 0.25))
        self.assertEqual(sink.calls, ["started", "body"])
        clock.advance(0.25)
        self.assertTimedOut(conn, sink)
        self.assertIsNone(conn._sender)

    def test_upload_moving_after_headers(self) -> None:
        """A backend that still takes the body is not idle, even when it sends nothing."""
        source = Source()
        clock, conn, sink = self.exchange(source)
        conn.dataReceived(HEAD + b"first")
        assert conn._sender is not None
        conn._sender.pauseProducing()  # its buffer full: it takes the body slowly
        for _ in range(10):
            clock.pump([0.25] * int((TIMEOUT - 0.25) / 0.25))
            source.consumer.body_received(b"x" * 100)
        self.assertEqual(sink.calls, ["started", "body"])
        self.assertFalse(conn.transport.disconnecting)

    def test_upload_waiting_for_the_client(self) -> None:
        """A body that waits for the client (the backend is not holding it) leaves the client's timeout in charge."""
        source = Source()
        clock, conn, sink = self.exchange(source)
        conn.dataReceived(HEAD + b"first")
        clock.advance(10 * TIMEOUT)
        self.assertEqual(sink.calls, ["started", "body"])
        self.assertFalse(conn.transport.disconnecting)
