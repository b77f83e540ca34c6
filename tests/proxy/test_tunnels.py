"""
The open tunnels of a listener (:mod:`gateway.proxy._tunnels`), for the
drain: tracked while open, waited for, closed at the grace's end; and the
idle timeout each tunnel takes from its connection's limits. Over
``StringTransport`` with a fake clock (the real sockets are in
``test_upgrade_drain``).
"""

from __future__ import annotations

from types import SimpleNamespace

from twisted.internet.defer import CancelledError
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from gateway.observability import GatewayMetrics
from gateway.proxy import H1Limits
from gateway.proxy._splice import IDLE_TIMEOUT, Splice
from gateway.proxy._tunnels import Tunnels, upgrade_idle_timeout

DONE = Failure(ConnectionDone())


class TunnelsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.tunnels = Tunnels(self.clock)
        self.ended: list[Splice] = []

    def open(self, idle_timeout: float = IDLE_TIMEOUT) -> Splice:
        return self.tunnels.open(
            StringTransport(), StringTransport(), idle_timeout=idle_timeout,
            on_closed=self.ended.append,
        )

    def test_when_empty_waits_for_the_last(self) -> None:
        """Fires at once with none open; else once the last one ends by itself."""
        self.assertIsNone(self.successResultOf(self.tunnels.when_empty()))
        one, two = self.open(), self.open()
        waiting = self.tunnels.when_empty()
        one.client_lost(DONE)
        self.assertNoResult(waiting)
        self.assertEqual(len(self.tunnels), 1)
        two.backend_lost(DONE)
        self.successResultOf(waiting)
        self.assertEqual(len(self.tunnels), 0)
        self.assertEqual(self.ended, [one, two])

    def test_bytes_copied_by_open_and_ended_tunnels(self) -> None:
        """
        Both directions, open tunnels included, and never less after a
        tunnel ends; the metrics collector adds the listeners up.
        """
        one, two = self.open(), self.open()
        one.client_data(b"abc")
        one.backend_data(b"hello")
        two.client_data(b"12345678")
        self.assertEqual(self.tunnels.bytes_copied(), (11, 5))
        one.client_lost(DONE)
        one.client_data(b"after the end")  # dropped: not copied, not counted
        self.assertEqual(self.tunnels.bytes_copied(), (11, 5))
        two.backend_data(b"xy")
        two.backend_lost(DONE)
        self.assertEqual(self.tunnels.bytes_copied(), (11, 7))
        other = Tunnels(self.clock)
        other.open(StringTransport(), StringTransport()).client_data(b"z" * 100)
        metrics = GatewayMetrics()
        metrics.tunnel_bytes.watch(self.tunnels)
        metrics.tunnel_bytes.watch(other)
        get = metrics.registry.get_sample_value
        self.assertEqual(get("apimgw_upgraded_bytes_total", {"direction": "to_backend"}), 111)
        self.assertEqual(get("apimgw_upgraded_bytes_total", {"direction": "to_client"}), 7)

    def test_close_all(self) -> None:
        """Both sides of each open tunnel are closed (not aborted), counted, ended by ``shutdown``."""
        one, two = self.open(), self.open()
        two.client_lost(DONE)
        waiting = self.tunnels.when_empty()
        self.assertEqual(self.tunnels.close_all(), 1)
        self.assertTrue(one.client.disconnecting and one.backend.disconnecting)
        self.assertEqual(one.ended_by, "shutdown")
        self.successResultOf(waiting)
        self.assertEqual(self.ended, [two, one])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_opened_after_the_drain(self) -> None:
        """A tunnel opened once they were all closed (a late 101) is closed at once."""
        self.tunnels.close_all()
        late = self.open()
        self.assertTrue(late.closed)
        self.assertTrue(late.client.disconnecting)
        self.assertEqual(len(self.tunnels), 0)

    def test_cancelled_wait(self) -> None:
        """The grace timer cancels the wait: the tunnels stay open, their end later touches nothing."""
        one = self.open()
        waiting = self.tunnels.when_empty()
        waiting.cancel()
        self.failureResultOf(waiting, CancelledError)
        self.assertFalse(one.closed)
        one.client_lost(DONE)
        self.assertEqual(len(self.tunnels), 0)

    def test_idle_timeout_of_each_tunnel(self) -> None:
        """Each tunnel's own idle timeout closes it (and only it)."""
        short, default = self.open(idle_timeout=2.0), self.open()
        self.clock.advance(2.0)
        self.assertEqual((short.closed, short.ended_by), (True, "idle"))
        self.assertFalse(default.closed)
        self.clock.advance(IDLE_TIMEOUT)
        self.assertEqual(default.ended_by, "idle")


class IdleTimeoutSourceTests(SynchronousTestCase):
    def test_from_the_connection_limits(self) -> None:
        """The request's connection's ``H1Limits.upgrade_idle_timeout``; the default without one."""
        request = SimpleNamespace(channel=SimpleNamespace(limits=H1Limits(upgrade_idle_timeout=7.5)))
        self.assertEqual(upgrade_idle_timeout(request), 7.5)
        self.assertEqual(upgrade_idle_timeout(SimpleNamespace(channel=None)), IDLE_TIMEOUT)
        self.assertEqual(H1Limits().upgrade_idle_timeout, IDLE_TIMEOUT)
