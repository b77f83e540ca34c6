"""Tests for the worker's end of the channel: snapshots into the mirror store, acknowledgements, scrapes."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from gateway.model import ObjectRef, Route, RouteSet, SourceObject, Store
from gateway.reconcile import Reconciler
from gateway.workers import Applied, Channel, Scrape, Scraped, Snapshot, WorkerLink, encode


def routes(source: str, *paths: str, modified: float = 1.0) -> SourceObject:
    return SourceObject(
        ObjectRef(source, "routes", "routes"),
        modified,
        RouteSet(tuple(Route(path=p, backend="http://127.0.0.1:9") for p in paths)),
    )


class Supervisor:
    """The supervisor's end, as the worker sees it: what arrived on the wire."""

    def __init__(self, link: WorkerLink) -> None:
        self.transport = StringTransport()
        link.channel.makeConnection(self.transport)
        self.received: list[Any] = []
        self.decoder = Channel(self.received.append, lambda: None)
        self.decoder.makeConnection(StringTransport())
        self.link = link

    def send(self, message: Any) -> None:
        self.link.channel.dataReceived(encode(message))

    def messages(self) -> list[Any]:
        self.decoder.dataReceived(self.transport.value())
        self.transport.clear()
        out, self.received[:] = list(self.received), []
        return out


class WorkerLinkTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.store = Store()
        self.lost: list[bool] = []
        self.link = WorkerLink(self.store, lambda: b"# metrics\n", lambda: self.lost.append(True))
        self.reconciler = Reconciler(
            self.store,
            self.clock,  # type: ignore[arg-type]
            synced=[self.link.first_snapshot],  # type: ignore[list-item]
            on_swap=[self.link.swapped],
            on_failure=self.link.failed,
        )
        self.reconciler.startService()
        self.supervisor = Supervisor(self.link)

    def paths(self) -> list[str]:
        generation = self.reconciler.current
        assert generation is not None
        return sorted(e.path for e in generation.config.routes)

    def test_first_snapshot_builds_and_is_acknowledged(self) -> None:
        """The first snapshot fills the mirror store, the reconciler builds at once, the worker acknowledges it."""
        self.assertIsNone(self.reconciler.current)
        self.supervisor.send(Snapshot(1, {"file": (routes("file", "/a"),)}, {}))
        self.assertEqual(self.paths(), ["/a"])
        self.assertEqual(self.supervisor.messages(), [Applied(1, 1)])

    def test_change_acknowledged_after_the_swap(self) -> None:
        """A changed snapshot is acknowledged only once the worker's own generation is built (after the coalescing delay)."""
        self.supervisor.send(Snapshot(1, {"file": (routes("file", "/a"),)}, {}))
        self.supervisor.messages()
        self.supervisor.send(Snapshot(2, {"file": (routes("file", "/a", "/b"),)}, {}))
        self.assertEqual(self.supervisor.messages(), [])
        self.assertEqual(self.paths(), ["/a"])
        self.clock.advance(1)
        self.assertEqual(self.paths(), ["/a", "/b"])
        self.assertEqual(self.supervisor.messages(), [Applied(2, 2)])

    def test_unchanged_snapshot_acknowledged_at_once(self) -> None:
        """A snapshot equal to what the worker holds builds nothing and is acknowledged with the same generation."""
        self.supervisor.send(Snapshot(1, {"file": (routes("file", "/a"),)}, {}))
        self.supervisor.messages()
        self.supervisor.send(Snapshot(2, {"file": (routes("file", "/a"),)}, {}))
        self.assertEqual(self.supervisor.messages(), [Applied(2, 1)])
        self.assertEqual(self.reconciler.current.number, 1)  # type: ignore[union-attr]

    def test_a_source_that_disappears_is_emptied(self) -> None:
        """Objects of a source absent from the next snapshot leave the mirror store."""
        self.supervisor.send(
            Snapshot(1, {"file": (routes("file", "/a"),), "cloud": (routes("cloud", "/c"),)}, {})
        )
        self.assertEqual(self.paths(), ["/a", "/c"])
        self.supervisor.send(Snapshot(2, {"file": (routes("file", "/a"),)}, {}))
        self.clock.advance(1)
        self.assertEqual(self.paths(), ["/a"])
        self.assertEqual([o.ref.source for o in self.store.objects()], ["file"])

    def test_scrape_answered(self) -> None:
        """A scrape is answered with the worker's metrics text under the same request number."""
        self.supervisor.send(Scrape(5))
        self.assertEqual(self.supervisor.messages(), [Scraped(5, b"# metrics\n")])

    def test_channel_end(self) -> None:
        """The supervisor's end closing tells the worker to go, unless it is already shutting down."""
        self.link.channel.connectionLost(None)
        self.assertEqual(self.lost, [True])
        other = WorkerLink(Store(), lambda: b"", lambda: self.lost.append(True))
        other.channel.makeConnection(StringTransport())
        other.closing = True
        other.channel.connectionLost(None)
        self.assertEqual(self.lost, [True])
