"""
Tests for :mod:`gateway.sources.kubernetes._election`.

Every test talks to the fake API server over real loopback HTTP. Two
layers: replicas on the real reactor with sub-second timings (acquire,
one leader among two, release on stop, takeover after a silent death,
conflicts), and one replica whose *timers* run on a ``Clock`` while its
requests run on the real reactor, for the decisions that depend on time
(expiry judged by the local clock, the renew deadline). Waiting is always
polling with a deadline, never a fixed sleep.
"""

from __future__ import annotations

import os
import re
from typing import Any

from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from gateway.sources.kubernetes import KubeClient, LeaderElection, load_kubeconfig
from gateway.sources.kubernetes._election import micro_time
from gateway.testing.fakekube import FakeKubeServer

from ._support import start_fake, wait_for

JSON = dict[str, Any]

NAMESPACE = "default"
LEASE_NAME = "apimgw-leader"
MICRO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")

#: Sub-second timings for the real reactor: leaseDurationSeconds is 1 on the wire.
FAST = {"lease_duration": 0.3, "renew_deadline": 0.2, "retry_period": 0.05}
#: Timings under which only a release lets another replica take over quickly.
SLOW_EXPIRY = {"lease_duration": 15.0, "renew_deadline": 10.0, "retry_period": 0.05}


def lease_of(server: FakeKubeServer) -> JSON | None:
    return server.get_object("coordination.k8s.io/v1", "Lease", NAMESPACE, LEASE_NAME)


def holder_of(server: FakeKubeServer) -> str | None:
    lease = lease_of(server)
    return None if lease is None else lease["spec"].get("holderIdentity")


def set_lease(server: FakeKubeServer, **spec: Any) -> JSON:
    return server.set_object(
        {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": LEASE_NAME, "namespace": NAMESPACE},
            "spec": spec,
        }
    )


class _Replica:
    """A candidate and what its callbacks reported, in a log shared by the test."""

    def __init__(self, election: LeaderElection, log: list[tuple[str, str]]) -> None:
        self.election = election
        self.log = log

    @property
    def calls(self) -> list[str]:
        return [what for who, what in self.log if who == self.election.identity]


class _Silent(Factory):
    """A server that accepts connections, records what it receives and never answers."""

    def __init__(self) -> None:
        self.received = b""

    def buildProtocol(self, addr: Any) -> Protocol:
        factory = self

        class Sink(Protocol):
            def dataReceived(self, data: bytes) -> None:
                factory.received += data

        return Sink()


class ElectionMixin:
    """Making candidates and clients against one fake API server."""

    server: FakeKubeServer
    client: KubeClient
    log: list[tuple[str, str]]

    def replica(
        self, identity: str, client: KubeClient | None = None, *, start: bool = True, **kwargs: Any
    ) -> _Replica:
        test: TestCase = self  # type: ignore[assignment]
        options = dict(FAST)
        options.update(kwargs)
        options.setdefault("reactor", reactor)
        election = LeaderElection(
            client or self.client,
            namespace=NAMESPACE,
            name=LEASE_NAME,
            identity=identity,
            on_started_leading=lambda: self.log.append((identity, "started")),
            on_stopped_leading=lambda: self.log.append((identity, "stopped")),
            **options,
        )
        if start:
            election.startService()
        test.addCleanup(election.stopService)
        return _Replica(election, self.log)

    def own_client(self, user: str) -> tuple[KubeClient, str]:
        """A client with a token of its own (so that the test can revoke it)."""
        test: TestCase = self  # type: ignore[assignment]
        token = f"token-of-{user}"
        self.server.add_token(token, user)
        path = self.server.kubeconfig(os.path.join(test.mktemp() + ".kubeconfig"), token=token)
        client = KubeClient(load_kubeconfig(path), reactor=reactor)
        test.addCleanup(client.close)
        return client, token


class LeaderElectionTests(ElectionMixin, TestCase):
    """Replicas on the real reactor against the fake API server."""

    async def setUp(self) -> None:  # type: ignore[override]
        self.server, self.client = await start_fake(self)
        self.log = []

    async def test_single_replica_acquires(self) -> None:
        """
        A lone replica creates the Lease naming itself (a whole-second duration, micro times, no
        transitions), calls on_started_leading once and keeps renewing.
        """
        a = self.replica("a")
        await wait_for(lambda: a.election.is_leader, what="a leads")
        self.assertEqual(a.calls, ["started"])
        self.assertEqual(a.election.leader, "a")
        lease = lease_of(self.server)
        assert lease is not None
        spec = lease["spec"]
        self.assertEqual(spec["holderIdentity"], "a")
        self.assertEqual(spec["leaseDurationSeconds"], 1)
        self.assertEqual(spec["leaseTransitions"], 0)
        self.assertRegex(spec["acquireTime"], MICRO_TIME)
        self.assertRegex(spec["renewTime"], MICRO_TIME)
        first_version = lease["metadata"]["resourceVersion"]
        await wait_for(
            lambda: (lease_of(self.server) or {})["metadata"]["resourceVersion"] != first_version,
            what="a renewal",
        )
        renewed = lease_of(self.server)
        assert renewed is not None
        self.assertEqual(renewed["spec"]["acquireTime"], spec["acquireTime"])
        self.assertEqual(renewed["spec"]["holderIdentity"], "a")

    async def test_two_replicas_one_leader(self) -> None:
        """
        Of two replicas, exactly one leads through many renewals; the other knows who it is and
        never started leading.
        """
        a = self.replica("a")
        b = self.replica("b")
        renew_times: set[str] = set()

        def check() -> bool:
            self.assertFalse(a.election.is_leader and b.election.is_leader, "two leaders")
            spec = (lease_of(self.server) or {}).get("spec") or {}
            if spec.get("renewTime"):
                renew_times.add(spec["renewTime"])
            return (a.election.is_leader or b.election.is_leader) and len(renew_times) >= 8

        await wait_for(check, what="eight renewals by one leader")
        leader, follower = (a, b) if a.election.is_leader else (b, a)
        self.assertEqual(holder_of(self.server), leader.election.identity)
        await wait_for(lambda: follower.election.leader == leader.election.identity)
        self.assertEqual(leader.calls, ["started"])
        self.assertEqual(follower.calls, [])

    async def test_stopped_leader_releases(self) -> None:
        """
        A leader that is stopped calls on_stopped_leading and releases the Lease, so the other
        replica takes over at once instead of after the 15 s lease duration.
        """
        a = self.replica("a", **SLOW_EXPIRY)
        await wait_for(lambda: a.election.is_leader, what="a leads")
        b = self.replica("b", **SLOW_EXPIRY)
        await wait_for(lambda: b.election.leader == "a", what="b sees a")
        await a.election.stopService()
        self.assertEqual(a.calls, ["started", "stopped"])
        self.assertFalse(a.election.is_leader)
        self.assertIn(holder_of(self.server), ("", "b"))
        await wait_for(lambda: b.election.is_leader, timeout=5.0, what="b takes over")
        lease = lease_of(self.server)
        assert lease is not None
        self.assertEqual(lease["spec"]["holderIdentity"], "b")
        self.assertEqual(lease["spec"]["leaseTransitions"], 1)
        self.assertEqual(self.log, [("a", "started"), ("a", "stopped"), ("b", "started")])

    async def test_silent_death_expires(self) -> None:
        """
        A leader cut off from the API server stops leading at its renew deadline; the other
        replica takes over only once the lease has expired by its own clock, and never while the
        first still leads.
        """
        client_a, token_a = self.own_client("replica-a")
        a = self.replica("a", client_a)
        await wait_for(lambda: a.election.is_leader, what="a leads")
        b = self.replica("b")
        await wait_for(lambda: b.election.leader == "a", what="b sees a")
        self.server.revoke_token(token_a)
        cut = reactor.seconds()

        def b_took_over() -> bool:
            self.assertFalse(a.election.is_leader and b.election.is_leader, "two leaders")
            return b.election.is_leader

        await wait_for(b_took_over, what="b takes over")
        # The lease (1 s on the wire) was renewed at most one retry period
        # before the cut: it cannot have expired much sooner than 1 s after.
        self.assertGreater(reactor.seconds() - cut, 0.5)
        self.assertEqual(self.log, [("a", "started"), ("a", "stopped"), ("b", "started")])
        self.assertEqual(holder_of(self.server), "b")
        self.assertGreater(a.election.failures, 0)

    async def test_conflicting_renewal_keeps_leading(self) -> None:
        """
        When another writer bumps the Lease, the leader's optimistic renewal gets 409 Conflict; it
        reads the Lease again, renews, and keeps leading without a stop.
        """
        a = self.replica("a")
        await wait_for(lambda: a.election.is_leader, what="a leads")
        lease = lease_of(self.server)
        assert lease is not None
        lease["metadata"]["labels"] = {"bumped": "by-another-writer"}
        self.server.set_object(lease)

        def conflicts() -> list[Any]:
            return [r for r in self.server.requests_for("update", "leases") if r.code == 409]

        await wait_for(conflicts, what="a conflicting renewal")
        seen = len(self.server.requests)
        await wait_for(
            lambda: any(r.verb == "update" and r.code == 200 for r in self.server.requests[seen:]),
            what="a renewal after the conflict",
        )
        self.assertTrue(a.election.is_leader)
        self.assertEqual(a.calls, ["started"])
        bumped = lease_of(self.server)
        assert bumped is not None
        self.assertEqual(bumped["metadata"]["labels"], {"bumped": "by-another-writer"})
        self.assertEqual(bumped["spec"]["holderIdentity"], "a")

    async def test_conflict_while_acquiring(self) -> None:
        """
        A takeover that loses the race (409 Conflict on the update) is retried and succeeds; the
        holder change counts as one transition.
        """
        set_lease(self.server, holderIdentity="", leaseDurationSeconds=1, leaseTransitions=4)
        self.server.fail_next(409, verb="update", plural="leases", reason="Conflict")
        a = self.replica("a")
        await wait_for(lambda: a.election.is_leader, what="a leads")
        codes = [r.code for r in self.server.requests_for("update", "leases")]
        self.assertEqual(codes[:2], [409, 200])
        self.assertEqual(a.election.failures, 1)
        self.assertEqual(a.calls, ["started"])
        lease = lease_of(self.server)
        assert lease is not None
        self.assertEqual(lease["spec"]["leaseTransitions"], 5)

    async def test_create_already_exists(self) -> None:
        """A create answered 409 AlreadyExists is retried later (here: created then)."""
        self.server.fail_next(409, verb="create", plural="leases", reason="AlreadyExists")
        a = self.replica("a")
        await wait_for(lambda: a.election.is_leader, what="a leads")
        codes = [r.code for r in self.server.requests_for("create", "leases")]
        self.assertEqual(codes, [409, 201])
        self.assertEqual(holder_of(self.server), "a")

    async def test_unreachable_then_recovers(self) -> None:
        """
        While the API server is down the attempts fail (logged, nothing raised); once it is back,
        the replica leads.
        """
        await self.server.stop()
        a = self.replica("a")
        await wait_for(lambda: a.election.failures >= 2, what="failed attempts")
        self.assertFalse(a.election.is_leader)
        await self.server.start()
        await wait_for(lambda: a.election.is_leader, what="a leads")
        self.assertEqual(a.calls, ["started"])

    async def test_stop_is_bounded_when_unanswered(self) -> None:
        """
        Stopping a leader whose renewal hangs (the API server accepts connections and never
        answers) calls on_stopped_leading and fires within the release timeout (plus slack).
        """
        a = self.replica("a", release_timeout=0.3, **SLOW_EXPIRY)
        await wait_for(lambda: a.election.is_leader, what="a leads")
        port = int(self.server.url.rsplit(":", 1)[1])
        await self.server.stop()
        silent = _Silent()
        listening = reactor.listenTCP(port, silent, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        await wait_for(lambda: b"PUT " in silent.received, what="a renewal to the silent server")
        started = reactor.seconds()
        await a.election.stopService()
        self.assertLess(reactor.seconds() - started, 5.0)
        self.assertEqual(a.calls, ["started", "stopped"])
        self.assertFalse(a.election.is_leader)

    async def test_stop_before_start(self) -> None:
        """Stopping a replica that never ran fires at once and calls nothing."""
        a = self.replica("a", start=False)
        await a.election.stopService()
        self.assertEqual(a.calls, [])
        self.assertEqual(self.server.requests_for(plural="leases"), [])


class LeaderElectionClockTests(ElectionMixin, TestCase):
    """
    One replica whose timers run on a ``Clock`` (no jitter) and whose
    requests go to the fake over the real reactor: each step advances the
    clock and waits for the attempt it starts to finish.
    """

    async def setUp(self) -> None:  # type: ignore[override]
        self.server, self.client = await start_fake(self)
        self.log = []
        self.clock = Clock()
        self.clock.advance(1_780_000_000)

    async def step(self, replica: _Replica, seconds: float) -> None:
        """Advance the clock by ``seconds`` and wait for the attempt that starts."""
        before = replica.election.attempts
        self.clock.advance(seconds)
        await wait_for(lambda: replica.election.attempts > before, what="an attempt")

    def clocked(self, identity: str, **kwargs: Any) -> _Replica:
        return self.replica(
            identity,
            reactor=self.clock,
            lease_duration=10.0,
            renew_deadline=5.0,
            retry_period=2.0,
            random_source=lambda: 0.0,
            **kwargs,
        )

    async def test_expiry_judged_by_local_observation(self) -> None:
        """
        A Lease whose renewTime lies far in the future (a skewed remote clock) is taken over
        exactly when its leaseDurationSeconds have passed since this replica saw it last change.
        """
        set_lease(
            self.server,
            holderIdentity="other",
            leaseDurationSeconds=10,
            renewTime="2099-01-01T00:00:00.000000Z",
            acquireTime="2099-01-01T00:00:00.000000Z",
            leaseTransitions=0,
        )
        a = self.clocked("a")
        await self.step(a, 0)
        self.assertEqual(a.election.leader, "other")
        for _ in range(4):  # t = 2, 4, 6, 8: still live
            await self.step(a, 2.0)
            self.assertFalse(a.election.is_leader)
        await self.step(a, 2.0)  # t = 10: expired
        self.assertTrue(a.election.is_leader)
        self.assertEqual(holder_of(self.server), "a")
        lease = lease_of(self.server)
        assert lease is not None
        self.assertEqual(lease["spec"]["leaseTransitions"], 1)

    async def test_changing_lease_never_expires(self) -> None:
        """
        A holder whose renewTime is ancient but keeps changing is live: it is never taken over,
        however long the replica waits.
        """
        a = self.clocked("a")
        for i in range(10):  # 20 s, twice the lease duration
            set_lease(
                self.server,
                holderIdentity="other",
                leaseDurationSeconds=10,
                renewTime=micro_time(946_684_800 + i),
                leaseTransitions=0,
            )
            await self.step(a, 0 if i == 0 else 2.0)
            self.assertFalse(a.election.is_leader)
        self.assertEqual(a.election.leader, "other")

    async def test_renew_deadline_stops_leading(self) -> None:
        """
        A leader whose renewals fail keeps leading until renew_deadline has passed since the last
        success, then calls on_stopped_leading and goes back to acquiring.
        """
        a = self.clocked("a")
        await self.step(a, 0)
        self.assertTrue(a.election.is_leader)
        # Each failing attempt: the optimistic update, then the read.
        self.server.fail_next(500, plural="leases", count=4)
        await self.step(a, 2.0)  # t = 2: fails
        await self.step(a, 2.0)  # t = 4: fails
        self.assertTrue(a.election.is_leader)
        self.assertEqual(a.calls, ["started"])
        self.clock.advance(1.0)  # t = 5: the deadline
        self.assertFalse(a.election.is_leader)
        self.assertEqual(a.calls, ["started", "stopped"])
        await self.step(a, 1.0)  # t = 6: the lease still names a: acquired again
        self.assertTrue(a.election.is_leader)
        self.assertEqual(a.calls, ["started", "stopped", "started"])

    async def test_unanswered_release_bounded(self) -> None:
        """
        Stopping a leader whose release gets no answer (the API server accepts connections and
        stays silent) calls on_stopped_leading at once and fires after release_timeout.
        """
        a = self.clocked("a", release_timeout=2.0)
        await self.step(a, 0)
        self.assertTrue(a.election.is_leader)
        port = int(self.server.url.rsplit(":", 1)[1])
        await self.server.stop()
        listening = reactor.listenTCP(port, _Silent(), interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        stopped = a.election.stopService()
        self.assertEqual(a.calls, ["started", "stopped"])
        self.assertFalse(stopped.called)
        self.clock.advance(1.9)
        self.assertFalse(stopped.called)
        self.clock.advance(0.1)
        self.assertIsNone(self.successResultOf(stopped))

    async def test_renews_every_retry_period(self) -> None:
        """A leader renews every retry_period, each renewal one optimistic update."""
        a = self.clocked("a")
        await self.step(a, 0)
        before = len(self.server.requests_for(plural="leases"))
        for _ in range(3):
            await self.step(a, 2.0)
        renewals = self.server.requests_for(plural="leases")[before:]
        self.assertEqual([(r.verb, r.code) for r in renewals], [("update", 200)] * 3)
        lease = lease_of(self.server)
        assert lease is not None
        self.assertEqual(lease["spec"]["renewTime"], micro_time(self.clock.seconds()))


class LeaderElectionArgumentTests(SynchronousTestCase):
    """What the constructor refuses and how times are written."""

    def make(self, **kwargs: Any) -> LeaderElection:
        options: dict[str, Any] = {
            "reactor": Clock(),
            "namespace": NAMESPACE,
            "name": LEASE_NAME,
            "identity": "a",
        }
        options.update(kwargs)
        return LeaderElection(None, **options)  # type: ignore[arg-type]

    def test_timings_checked(self) -> None:
        """The lease outlives the renew deadline, which outlives a jittered retry period."""
        self.assertRaises(ValueError, self.make, lease_duration=10.0, renew_deadline=10.0)
        self.assertRaises(ValueError, self.make, renew_deadline=2.0, retry_period=2.0)
        self.assertRaises(ValueError, self.make, retry_period=0)
        self.assertRaises(ValueError, self.make, identity="")

    def test_lease_seconds_whole(self) -> None:
        """leaseDurationSeconds is the lease duration rounded up to whole seconds, at least 1."""
        self.assertEqual(self.make().lease_seconds, 15)
        self.assertEqual(self.make(**FAST).lease_seconds, 1)
        self.assertEqual(
            self.make(lease_duration=2.5, renew_deadline=2.0, retry_period=1.0).lease_seconds, 3
        )

    def test_micro_time(self) -> None:
        """Times are RFC 3339 in UTC with microseconds."""
        self.assertEqual(micro_time(1_796_119_200.25), "2026-12-01T10:00:00.250000Z")
