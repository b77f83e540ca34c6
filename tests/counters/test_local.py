"""
:class:`LocalCounters` on a fake clock: the semantics tables, the
synchronous answer, expiry and replay support.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from gateway.counters import Entry, LocalCounters, Verdict

from ._semantics import SemanticsMixin, add_cases


@add_cases
class LocalSemanticsTests(SemanticsMixin, TestCase):
    """The local counters follow the tables of cases."""

    def setUp(self) -> None:
        self.clock = Clock()

    def make(self) -> LocalCounters:
        return LocalCounters(self.clock)


class LocalCountersTests(SynchronousTestCase):
    """What only the local store promises."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.counters = LocalCounters(self.clock, sweep_interval=10.0)

    def test_answers_synchronously(self) -> None:
        """take and peek return a Verdict, not a Deferred (the hot path pays for none)."""
        self.assertIsInstance(self.counters.take("k", 1, 1.0), Verdict)
        self.assertIsInstance(self.counters.peek("k", 1, 1.0), Verdict)
        self.assertIsInstance(self.counters.take("k", 1, 1.0, sliding=False), Verdict)

    def test_sweep_drops_expired_counters(self) -> None:
        """Counters whose windows hold nothing are dropped by the periodic sweep; then no timer is left."""
        for i in range(1000):
            self.counters.take(f"s{i}", 5, 3.0)
            self.counters.take(f"f{i}", 5, 3.0, sliding=False)
        self.assertEqual(len(self.counters), 2000)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(10)
        self.assertEqual(len(self.counters), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_sweep_keeps_open_windows(self) -> None:
        """A counter whose window is still open survives the sweep, and keeps counting."""
        self.counters.take("long", 1, 60.0)
        self.counters.take("short", 1, 1.0)
        self.clock.advance(10)
        self.assertEqual(len(self.counters), 1)
        self.assertFalse(self.counters.take("long", 1, 60.0).admitted)
        self.clock.advance(50)
        self.assertEqual(len(self.counters), 0)

    def test_period_zero_is_kept_without_a_timer(self) -> None:
        """A never-resetting quota is not swept, and alone does not keep the sweep running."""
        self.counters.take("q", 5, 0.0, sliding=False)
        self.clock.advance(10)
        self.assertEqual(len(self.counters), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(1e9)
        self.assertEqual(self.counters.take("q", 5, 0.0, sliding=False).count, 2)

    def test_sliding_log_is_bounded_by_the_limit(self) -> None:
        """Refused calls add nothing: the log of a take-only counter holds at most `limit` entries."""
        for _ in range(10_000):
            self.counters.take("k", 3, 60.0)
            self.clock.advance(0.001)
        self.assertEqual(len(self.counters._sliding[("k", 60.0)].log), 3)

    def test_recorded_only_log_stays_within_the_window(self) -> None:
        """A counter only ever recorded into (the shadow of Redis's) drops what left its window."""
        for _ in range(36_000):  # an hour at 10 calls a second, 60 s window
            self.counters.record("k", 1, 60.0, at=self.clock.seconds())
            self.clock.advance(0.1)
        counter = self.counters._sliding[("k", 60.0)]
        self.assertLessEqual(len(counter.log), 601)
        self.assertEqual(counter.count, len(counter.log))

    def test_entries_lists_open_windows(self) -> None:
        """entries() gives what is counted in windows still open, with its time, for replay."""
        self.counters.take("s", 5, 10.0, 2)
        self.clock.advance(4)
        self.counters.take("s", 5, 10.0)
        self.counters.take("f", 5, 10.0, 3, sliding=False, anchor=1.0)
        self.clock.advance(7)  # t=11: the sliding entry of t=0 left; the fixed window [1, 11) closed
        self.counters.take("g", 5, 10.0, sliding=False, anchor=1.0)
        self.assertEqual(
            list(self.counters.entries()),
            [Entry("s", 10.0, True, 0.0, 4.0, 1), Entry("g", 10.0, False, 1.0, 11.0, 1)],
        )

    def test_record_at_a_time(self) -> None:
        """record() adds as of a given time; an amount for a closed fixed window is dropped."""
        self.clock.advance(20)
        self.counters.record("s", 2, 10.0, at=15.0)
        self.assertEqual(self.counters.peek("s", 5, 10.0).count, 2)
        self.clock.advance(5)  # t=25: recorded at 15, left at 25
        self.assertEqual(self.counters.peek("s", 5, 10.0).count, 0)
        self.counters.take("f", 5, 10.0, sliding=False)  # window [20, 30)
        self.counters.record("f", 3, 10.0, sliding=False, at=12.0)  # window [10, 20): closed
        self.assertEqual(self.counters.peek("f", 5, 10.0, sliding=False).count, 1)
