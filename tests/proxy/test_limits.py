"""
The limit policies' tables, run by the executor on the real local counter
store with a fake clock: windows, boundaries, nested limits, keys,
postponed counts, messages and headers (APIM's rate-limit, rate-limit-by-key
and quota references).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from gateway.counters import LocalCounters
from gateway.proxy._limits import apply_postponed, quota_message
from gateway.proxy._policies import (
    PROCEED,
    Failure,
    PolicyRequest,
    has_limits,
    run_inbound_counted,
)
from gateway.translate.policy import compile_document


def inbound(xml: str, scope: str = "products/starter") -> tuple[Any, ...]:
    document = compile_document(f"<policies><inbound>{xml}</inbound></policies>", scope=scope)
    assert not document.problems, document.problems
    assert document.inbound is not None
    return document.inbound  # type: ignore[return-value]


def request(subscription: str | None = "alice", api: str = "orders",
            operation: str | None = "get", ip: str = "10.0.0.5") -> PolicyRequest:
    ctx = PolicyRequest("GET", "/7", "", [], ip, {}, subscription, "starter")
    ctx.api_id, ctx.operation_id = api, operation
    return ctx


class LimitTableTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.counters = LocalCounters(self.clock)
        self.addCleanup(self.counters.close)

    def run_(self, steps: tuple[Any, ...], ctx: PolicyRequest | None = None) -> Any:
        outcome = run_inbound_counted(steps, ctx or request(), None, self.counters)
        self.assertFalse(isinstance(outcome, Deferred), "local counters answer at once")
        return outcome

    def statuses(self, steps: tuple[Any, ...], n: int, **kw: Any) -> list[int]:
        out = []
        for _ in range(n):
            outcome = self.run_(steps, request(**kw))
            out.append(200 if outcome is PROCEED else outcome.response.status)
        return out

    def test_sliding_window(self) -> None:
        """calls per renewal-period, sliding: the first call leaves the window a period after it was made."""
        steps = inbound('<rate-limit calls="2" renewal-period="10"/>')
        self.assertEqual(self.statuses(steps, 3), [200, 200, 429])
        self.clock.advance(5)
        self.assertEqual(self.statuses(steps, 1), [429])
        self.clock.advance(5)  # the first two calls are 10 s old: out of the window
        self.assertEqual(self.statuses(steps, 3), [200, 200, 429])

    def test_refused_calls_are_not_counted(self) -> None:
        """A refused call does not extend the wait: after the period, calls are admitted again."""
        steps = inbound('<rate-limit calls="1" renewal-period="10"/>')
        self.assertEqual(self.statuses(steps, 1), [200])
        for _ in range(9):
            self.clock.advance(1)
            self.assertEqual(self.statuses(steps, 1), [429])
        self.clock.advance(1)
        self.assertEqual(self.statuses(steps, 1), [200])

    def test_message_retry_after_and_last_error(self) -> None:
        """429: APIM's envelope message, Retry-After (or the policy's name), the retry variable, LastError."""
        steps = inbound('<rate-limit calls="1" renewal-period="30" retry-after-header-name="X-Wait" '
                        'retry-after-variable-name="wait"/>')
        self.run_(steps)
        self.clock.advance(12)
        ctx = request()
        failure = self.run_(steps, ctx)
        assert isinstance(failure, Failure)
        self.assertEqual((failure.source, failure.reason, failure.message),
                         ("rate-limit", "RateLimitExceeded", "Rate limit is exceeded"))
        self.assertEqual(failure.response.message, "Rate limit is exceeded. Try again in 18 seconds.")
        self.assertIn(("x-wait", "18"), failure.response.headers)
        self.assertEqual(ctx.variables["wait"], 18)

    def test_per_subscription_and_scope(self) -> None:
        """Counters are per subscription and per policy scope; calls without a subscription are not limited."""
        product = inbound('<rate-limit calls="1" renewal-period="60"/>', "products/starter")
        api = inbound('<rate-limit calls="1" renewal-period="60"/>', "apis/orders")
        self.assertEqual(self.statuses(product, 2), [200, 429])
        self.assertEqual(self.statuses(product, 1, subscription="bob"), [200])
        self.assertEqual(self.statuses(api, 1), [200], "another scope, another counter")
        self.assertEqual(self.statuses(product, 3, subscription=None), [200, 200, 200])

    def test_nested_limits_apply_to_their_api_and_operation(self) -> None:
        """<api>/<operation> limits count only their calls, independently of the product's."""
        steps = inbound('<rate-limit calls="10" renewal-period="60">'
                        '<api name="orders" calls="3" renewal-period="60">'
                        '<operation name="get" calls="1" renewal-period="60"/></api></rate-limit>')
        self.assertEqual(self.statuses(steps, 2, operation="get"), [200, 429])
        # The refused get was counted by the product and API limits, checked
        # before the operation's (each counts independently): one list left.
        self.assertEqual(self.statuses(steps, 2, operation="list"), [200, 429])
        self.assertEqual(self.statuses(steps, 3, api="files", operation=None), [200, 200, 200])

    def test_remaining_and_total_headers(self) -> None:
        """remaining-calls and total-calls headers go on the response; the variable holds the count."""
        steps = inbound('<rate-limit calls="3" renewal-period="60" remaining-calls-header-name="X-Left" '
                        'remaining-calls-variable-name="left" total-calls-header-name="X-Total"/>')
        ctx = request()
        self.assertIs(self.run_(steps, ctx), PROCEED)
        self.assertEqual(ctx.response_headers, [("x-left", "2"), ("x-total", "3")])
        self.assertEqual(ctx.variables["left"], 2)

    def test_by_key_counter_shared_across_scopes(self) -> None:
        """rate-limit-by-key: one counter per key value, whatever the scope; increment-count counts that many."""
        a = inbound('<rate-limit-by-key calls="3" renewal-period="60" counter-key="@(context.Request.IpAddress)" '
                    'increment-count="2"/>', "apis/a")
        b = inbound('<rate-limit-by-key calls="3" renewal-period="60" counter-key="@(context.Request.IpAddress)"/>',
                    "apis/b")
        self.assertEqual(self.statuses(a, 1), [200])
        self.assertEqual(self.statuses(b, 2), [200, 429])
        self.assertEqual(self.statuses(b, 1, ip="10.0.0.6"), [200])

    def test_by_key_postponed_condition(self) -> None:
        """An expression increment-condition is evaluated after the response: only 200s count, one call late."""
        steps = inbound('<rate-limit-by-key calls="1" renewal-period="60" counter-key="k" '
                        'increment-condition="@(context.Response.StatusCode == 200)"/>')
        for status in (500, 200):
            ctx = request()
            self.assertIs(self.run_(steps, ctx), PROCEED)
            ctx.response_status = status
            self.assertEqual(apply_postponed(ctx, self.counters, 0), [])
        self.assertEqual(self.statuses(steps, 1), [429])

    def test_increment_count_above_calls(self) -> None:
        """increment-count above calls can never be admitted: 429 with the period as the wait (not infinity)."""
        steps = inbound('<rate-limit-by-key calls="2" renewal-period="30" counter-key="k" increment-count="5"/>')
        failure = self.run_(steps)
        self.assertEqual(failure.response.message, "Rate limit is exceeded. Try again in 30 seconds.")

    def test_literal_false_condition_never_counts(self) -> None:
        steps = inbound('<rate-limit-by-key calls="1" renewal-period="60" counter-key="k" '
                        'increment-condition="false"/>')
        self.assertEqual(self.statuses(steps, 3), [200, 200, 200])

    def test_quota_fixed_window(self) -> None:
        """quota: fixed windows (aligned, not sliding): the whole allowance comes back at the boundary."""
        steps = inbound('<quota calls="2" renewal-period="100"/>')
        start = self.clock.seconds()
        boundary = (start // 100 + 1) * 100
        self.assertEqual(self.statuses(steps, 3), [200, 200, 403])
        self.clock.advance(boundary - start - 1)
        failure = self.run_(steps)
        self.assertEqual(failure.response.message,
                         "Out of call volume quota. Quota will be replenished in 00:00:01.")
        self.assertIn(("retry-after", "1"), failure.response.headers)
        self.assertEqual((failure.source, failure.reason), ("quota", "QuotaExceeded"))
        self.clock.advance(1)
        self.assertEqual(self.statuses(steps, 3), [200, 200, 403])

    def test_quota_never_renewed(self) -> None:
        """renewal-period 0: never reset, no Retry-After, no replenish time in the message."""
        steps = inbound('<quota calls="1" renewal-period="0"/>')
        self.run_(steps)
        self.clock.advance(10**7)
        failure = self.run_(steps)
        self.assertEqual(failure.response.message, "Out of call volume quota.")
        self.assertNotIn("retry-after", dict(failure.response.headers))

    def test_quota_bandwidth_after_the_response(self) -> None:
        """Bandwidth in KB (1024 bytes, rounded up per call), counted after the response."""
        steps = inbound('<quota bandwidth="2" renewal-period="3600"/>')
        ctx = request()
        self.assertIs(self.run_(steps, ctx), PROCEED)
        apply_postponed(ctx, self.counters, 1025)  # 2 KB
        self.assertEqual(self.run_(steps).response.message.split(".")[0], "Out of bandwidth quota")

    def test_timespan_past_a_day(self) -> None:
        self.assertEqual(quota_message("call volume", 90061),
                         "Out of call volume quota. Quota will be replenished in 1.01:01:01.")

    def test_has_limits_looks_inside_choose(self) -> None:
        nested = inbound('<choose><when condition="true"><rate-limit calls="1" renewal-period="1"/></when></choose>')
        self.assertTrue(has_limits(nested))
        self.assertFalse(has_limits(inbound('<set-header name="a"><value>1</value></set-header>')))
        self.assertEqual(self.statuses(nested, 2), [200, 429])


class DeferredCounters:
    """A store answering through Deferreds fired later (as Redis does)."""

    def __init__(self, local: LocalCounters) -> None:
        self.local = local
        self.pending: list[tuple[Deferred[Any], Any]] = []

    def take(self, *args: Any, **kw: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.pending.append((d, self.local.take(*args, **kw)))
        return d

    def peek(self, *args: Any, **kw: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.pending.append((d, self.local.peek(*args, **kw)))
        return d

    def add(self, *args: Any, **kw: Any) -> None:
        self.local.add(*args, **kw)

    def fire(self) -> None:
        while self.pending:
            d, verdict = self.pending.pop(0)
            d.callback(verdict)


class DeferredRunTests(SynchronousTestCase):
    def test_outcome_after_each_answer(self) -> None:
        """With a store that answers later, the run resumes after each answer, in order, and refuses as the local one."""
        clock = Clock()
        local = LocalCounters(clock)
        self.addCleanup(local.close)
        store = DeferredCounters(local)
        steps = inbound('<rate-limit calls="1" renewal-period="60"><api name="orders" calls="5" '
                        'renewal-period="60"/></rate-limit><set-header name="X-After"><value>1</value></set-header>')
        ctx = request()
        outcome = run_inbound_counted(steps, ctx, None, store)
        self.assertIsInstance(outcome, Deferred)
        results: list[Any] = []
        outcome.addCallback(results.append)
        self.assertEqual(len(store.pending), 1)
        store.fire()
        self.assertEqual(results, [PROCEED])
        self.assertEqual(ctx.headers, [("x-after", "1")])
        again = run_inbound_counted(steps, request(), None, store)
        again.addCallback(results.append)
        store.fire()
        self.assertEqual(results[1].response.status, 429)
