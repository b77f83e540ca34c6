"""Tests for the lean epoll dispatch (gateway.dispatch), on a private reactor instance."""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet.epollreactor import EPollReactor
from twisted.internet.error import ConnectionDone
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from gateway.dispatch import after_io, after_io_queue, streamline


class _Reader:
    """A minimal IReadDescriptor over one end of a socket pair."""

    def __init__(self, sock: socket.socket, fail_read: bool = False, fail_lost: bool = False) -> None:
        self.sock = sock
        self.fail_read = fail_read
        self.fail_lost = fail_lost
        self.received: list[bytes] = []
        self.lost: list[Failure] = []

    def fileno(self) -> int:
        return self.sock.fileno()

    def logPrefix(self) -> str:  # noqa: N802 (Twisted's interface)
        return "reader"

    def doRead(self) -> None:  # noqa: N802
        data = self.sock.recv(100)
        if self.fail_read:
            raise ValueError("broken protocol")
        self.received.append(data)

    def connectionLost(self, reason: Failure) -> None:  # noqa: N802
        self.lost.append(reason)
        if self.fail_lost:
            raise RuntimeError("broken connectionLost")


class StreamlineTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = EPollReactor()
        self.addCleanup(self.reactor._poller.close)
        self.logged: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.logged.append)

    def pair(self, **kw: Any) -> tuple[socket.socket, _Reader]:
        a, b = socket.socketpair()
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        reader = _Reader(b, **kw)
        self.reactor.addReader(reader)
        return a, reader

    def test_only_plain_epoll_reactors(self) -> None:
        """Installed on EPollReactor itself, not on anything else."""
        self.assertTrue(streamline(self.reactor))
        self.assertFalse(streamline(object()))

        class Custom(EPollReactor):
            pass

        custom = Custom()
        self.addCleanup(custom._poller.close)
        self.assertFalse(streamline(custom))

    def test_events_are_dispatched(self) -> None:
        """A readable descriptor gets doRead, as with the stock loop."""
        streamline(self.reactor)
        a, reader = self.pair()
        a.send(b"hello")
        self.reactor.doIteration(1)
        self.assertEqual(reader.received, [b"hello"])

    def test_errors_still_logged_and_disconnected(self) -> None:
        """doRead raising: logged and disconnected; connectionLost raising too: logged, the loop goes on."""
        streamline(self.reactor)
        a, reader = self.pair(fail_read=True)
        c, other = self.pair(fail_read=True, fail_lost=True)
        a.send(b"x")
        c.send(b"y")
        self.reactor.doIteration(1)
        flushed = self.flushLoggedErrors(ValueError, RuntimeError)
        self.assertEqual(len(reader.lost), 1)
        self.assertEqual(len(other.lost), 1)
        self.assertEqual(sorted(type(f.value).__name__ for f in flushed), ["RuntimeError", "ValueError", "ValueError"])
        ours = [e for e in self.logged if e.get("log_namespace") == "apimgw.dispatch"]
        self.assertEqual(
            sorted(type(e["log_failure"].value).__name__ for e in ours),
            ["RuntimeError", "ValueError", "ValueError"],
        )
        self.assertNotIn(reader, self.reactor.getReaders())
        self.assertNotIn(other, self.reactor.getReaders())

    def test_read_says_done(self) -> None:
        """doRead returning ConnectionDone (the peer's FIN read): removed and told, as with the stock loop."""
        streamline(self.reactor)
        a, reader = self.pair()

        def read_done() -> Any:
            reader.sock.recv(100)
            return ConnectionDone()

        reader.doRead = read_done  # type: ignore[method-assign]
        a.send(b"x")
        self.reactor.doIteration(1)
        self.assertEqual([type(f.value) for f in reader.lost], [ConnectionDone])
        self.assertNotIn(reader, self.reactor.getReaders())


class AfterIOTests(SynchronousTestCase):
    """The end-of-iteration hook (after_io) of a streamlined reactor."""

    def setUp(self) -> None:
        self.reactor = EPollReactor()
        self.addCleanup(self.reactor._poller.close)
        self.assertTrue(streamline(self.reactor))

    def test_installed_once(self) -> None:
        """A second streamline keeps the first one's queue (callers hold on to it)."""
        queue = after_io_queue(self.reactor)
        iteration = self.reactor.doIteration
        self.assertTrue(streamline(self.reactor))
        self.assertIs(after_io_queue(self.reactor), queue)
        self.assertIs(self.reactor.doIteration, iteration)

    def test_not_streamlined(self) -> None:
        """A reactor streamline did not install on says so: the caller falls back to a timer."""
        other = EPollReactor()
        self.addCleanup(other._poller.close)
        self.assertFalse(after_io(other, lambda: None))

    def test_after_the_events_and_no_timer(self) -> None:
        """Queued while handling an event: run once, after the iteration's events, no timer left behind."""
        order: list[str] = []
        a, b = socket.socketpair()
        c, d = socket.socketpair()
        for sock in (a, b, c, d):
            self.addCleanup(sock.close)
        first, second = _Reader(b), _Reader(d)
        for reader, name in ((first, "first"), (second, "second")):

            def read(reader: _Reader = reader, name: str = name) -> None:
                reader.sock.recv(100)
                order.append(name)
                after_io(self.reactor, lambda: order.append("flush"))

            reader.doRead = read  # type: ignore[method-assign]
            self.reactor.addReader(reader)
        a.send(b"x")
        c.send(b"y")
        self.reactor.doIteration(1)
        self.assertEqual(sorted(order[:2]), ["first", "second"])
        self.assertEqual(order[2:], ["flush", "flush"])
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.reactor.doIteration(0)
        self.assertEqual(len(order), 4)

    def test_queued_by_a_timer_runs_before_the_wait(self) -> None:
        """
        Queued outside an event (by a timer): run at the start of the next
        iteration, before its wait. The callback makes a socket readable:
        run before the wait, its event is handled in the same iteration.
        """
        a, b = socket.socketpair()
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        reader = _Reader(b)
        self.reactor.addReader(reader)
        after_io(self.reactor, lambda: a.send(b"x"))
        self.reactor.doIteration(2)
        self.assertEqual(reader.received, [b"x"])

    def test_a_failing_callback_does_not_stop_the_others(self) -> None:
        ran: list[str] = []

        def broken() -> None:
            raise ValueError("broken")

        after_io(self.reactor, broken)
        after_io(self.reactor, lambda: ran.append("second"))
        self.reactor.doIteration(0)
        self.assertEqual(ran, ["second"])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
