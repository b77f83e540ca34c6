"""Tests of the long-poll wake-ups (:class:`configservice.ChangeFeed`) and of live instances."""

from __future__ import annotations

from twisted.internet.defer import CancelledError
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from configservice import ChangeFeed, Instances
from configservice._audience import EVERYONE, Audience
from configservice._changes import Commit


def commit(revision: int, *gateways: str, everyone: bool = False) -> Commit:
    return Commit(revision=revision,
                  audience=EVERYONE if everyone else Audience(gateways=frozenset(gateways)))


class ChangeFeedTests(TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.feed = ChangeFeed(self.clock)

    def test_wakes_the_gateway_concerned(self) -> None:
        """A commit for gateway a wakes a's waiter and leaves b's waiting."""
        a = self.feed.wait("a", 5, 30)
        b = self.feed.wait("b", 5, 30)
        self.feed.notify(commit(6, "a"))
        self.assertIs(self.successResultOf(a), True)
        self.assertNoResult(b)
        self.assertEqual(self.feed.waiting(), 1)

    def test_everyone(self) -> None:
        """A commit for every gateway wakes every waiter."""
        waits = [self.feed.wait(g, 5, 30) for g in ("a", "b")]
        self.feed.notify(commit(6, everyone=True))
        self.assertEqual([self.successResultOf(d) for d in waits], [True, True])

    def test_times_out(self) -> None:
        """Without a commit, the wait fires False after its timeout and leaves no timer."""
        d = self.feed.wait("a", 5, 30)
        self.clock.advance(29)
        self.assertNoResult(d)
        self.clock.advance(1)
        self.assertIs(self.successResultOf(d), False)
        self.assertEqual((self.feed.waiting(), self.clock.getDelayedCalls()), (0, []))

    def test_commit_before_wait(self) -> None:
        """A commit after the revision a waiter has seen, notified before it waits, answers at once."""
        self.feed.notify(commit(7, "a"))
        self.assertIs(self.successResultOf(self.feed.wait("a", 6, 30)), True)
        self.assertNoResult(self.feed.wait("a", 7, 30))

    def test_cancel(self) -> None:
        """Cancelling a wait (client gone) removes the waiter and its timer."""
        d = self.feed.wait("a", 5, 30)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual((self.feed.waiting(), self.clock.getDelayedCalls()), (0, []))

    def test_close(self) -> None:
        """Closing the feed answers every wait with False."""
        d = self.feed.wait("a", 5, 30)
        self.feed.close()
        self.assertIs(self.successResultOf(d), False)


class InstancesTests(TestCase):
    def test_alive_for_three_intervals(self) -> None:
        """An instance is listed until its last heartbeat is more than three intervals old."""
        clock = Clock()
        instances = Instances(clock, interval=10)
        self.assertEqual(instances.heartbeat("gw", "i1", "host-1", "1.0", 4), 1)
        clock.advance(20)
        self.assertEqual(instances.heartbeat("gw", "i2", "host-2", "1.0", 5), 2)
        clock.advance(10)
        self.assertEqual([i["instanceId"] for i in instances.alive("gw")], ["i1", "i2"])
        clock.advance(0.5)
        self.assertEqual([i["instanceId"] for i in instances.alive("gw")], ["i2"])
        self.assertEqual(instances.alive("gw")[0]["revision"], 5)

    def test_bounded(self) -> None:
        """A gateway holds at most ``limit`` instances; the longest silent one goes first."""
        clock = Clock()
        instances = Instances(clock, interval=10, limit=2)
        for name in ("a", "b", "c"):
            instances.heartbeat("gw", name, "", "", 0)
            clock.advance(1)
        self.assertEqual([i["instanceId"] for i in instances.alive("gw")], ["b", "c"])
