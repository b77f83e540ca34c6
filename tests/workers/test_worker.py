"""Tests for the worker's end of the channel: snapshots into the mirror store, acknowledgements, scrapes."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from gateway.model import ObjectRef, Problem, Route, RouteSet, SourceObject, Store
from gateway.reconcile import Reconciler
from gateway.workers import Applied, Changes, Channel, Scrape, Scraped, WorkerLink, encode


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
            synced=[self.link.first_configuration],  # type: ignore[list-item]
            on_swap=[self.link.swapped],
            on_failure=self.link.failed,
        )
        self.reconciler.startService()
        self.supervisor = Supervisor(self.link)

    def paths(self) -> list[str]:
        generation = self.reconciler.current
        assert generation is not None
        return sorted(e.path for e in generation.config.routes)

    def test_first_configuration_builds_and_is_acknowledged(self) -> None:
        """The first snapshot fills the mirror store, the reconciler builds at once, the worker acknowledges it."""
        self.assertIsNone(self.reconciler.current)
        self.supervisor.send(Changes(1, (routes("file", "/a"),)))
        self.assertEqual(self.paths(), ["/a"])
        self.assertEqual(self.supervisor.messages(), [Applied(1, 1)])

    def test_change_acknowledged_after_the_swap(self) -> None:
        """A changed snapshot is acknowledged only once the worker's own generation is built (after the coalescing delay)."""
        self.supervisor.send(Changes(1, (routes("file", "/a"),)))
        self.supervisor.messages()
        self.supervisor.send(Changes(2, (routes("file", "/a", "/b"),)))
        self.assertEqual(self.supervisor.messages(), [])
        self.assertEqual(self.paths(), ["/a"])
        self.clock.advance(1)
        self.assertEqual(self.paths(), ["/a", "/b"])
        self.assertEqual(self.supervisor.messages(), [Applied(2, 2)])

    def test_unchanged_snapshot_acknowledged_at_once(self) -> None:
        """A snapshot equal to what the worker holds builds nothing and is acknowledged with the same generation."""
        self.supervisor.send(Changes(1, (routes("file", "/a"),)))
        self.supervisor.messages()
        self.supervisor.send(Changes(2, (routes("file", "/a"),)))
        self.assertEqual(self.supervisor.messages(), [Applied(2, 1)])
        self.supervisor.send(Changes(3))
        self.assertEqual(self.supervisor.messages(), [Applied(3, 1)])
        self.assertEqual(self.reconciler.current.number, 1)  # type: ignore[union-attr]

    def test_removed_objects_and_sources_leave(self) -> None:
        """A removed object leaves the mirror store; so does a source whose last object is removed."""
        self.supervisor.send(Changes(1, (routes("file", "/a"), routes("cloud", "/c"))))
        self.assertEqual(self.paths(), ["/a", "/c"])
        self.supervisor.send(Changes(2, removed=(ObjectRef("cloud", "routes", "routes"),)))
        self.clock.advance(1)
        self.assertEqual(self.paths(), ["/a"])
        self.assertEqual([o.ref.source for o in self.store.objects()], ["file"])

    def test_problems_replace_the_previous_ones(self) -> None:
        """Each Changes carries every source's problems: a source's problems disappear when it has none."""
        problem = Problem(ObjectRef("cloud", "api", "broken"), "no path")
        self.supervisor.send(Changes(1, (routes("file", "/a"),), problems={"cloud": (problem,)}))
        self.assertEqual(self.store.problems(), (problem,))
        self.supervisor.send(Changes(2))
        self.assertEqual(self.store.problems(), ())

    def test_unchanged_objects_stay_the_same_objects(self) -> None:
        """An object not in the Changes stays the very object held, so the build memo reuses its build."""
        self.supervisor.send(Changes(1, (routes("file", "/a"), routes("cloud", "/c"))))
        kept = self.store.objects("file")[0]
        self.supervisor.send(Changes(2, (routes("cloud", "/d"),)))
        self.clock.advance(1)
        self.assertIs(self.store.objects("file")[0], kept)
        self.assertEqual(self.paths(), ["/a", "/d"])

    def test_resent_state_after_a_failed_build_builds_again(self) -> None:
        """
        A failed build is acknowledged as failed (the last generation
        keeps serving); the supervisor's resend of the whole state, equal
        to what the mirror holds, builds again instead of being
        acknowledged as applied with no build.
        """
        import gateway.reconcile

        real = gateway.reconcile.translate
        broken = [True]

        def translate(*args: Any, **kwargs: Any) -> Any:
            if broken[0]:
                raise RuntimeError("out of memory, say")
            return real(*args, **kwargs)

        self.patch(gateway.reconcile, "translate", translate)
        self.supervisor.send(Changes(1, (routes("file", "/a"),)))
        self.assertEqual(self.supervisor.messages(), [Applied(1, 0, failed=True)])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        broken[0] = False
        self.supervisor.send(Changes(2, (routes("file", "/a"),)))
        self.clock.advance(1)
        self.assertEqual(self.supervisor.messages(), [Applied(2, 1)])
        self.assertEqual(self.paths(), ["/a"])
        # Once a build succeeded, an unchanged snapshot builds nothing again.
        self.supervisor.send(Changes(3, (routes("file", "/a"),)))
        self.assertEqual(self.supervisor.messages(), [Applied(3, 1)])

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
