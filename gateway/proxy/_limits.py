"""
The limit policies at run time: ``rate-limit``, ``rate-limit-by-key`` and
``quota``, with APIM's semantics (docs/rate-limits.md).

The executor stays free of I/O: a limit step is a generator that yields
:class:`CounterCall` s and receives each call's verdict, so the caller
(:func:`gateway.proxy._policies.run_inbound_counted`) can answer from a
local counter store synchronously or from Redis with one round trip per
call, without the executor knowing which. What APIM counts after the
response (``rate-limit-by-key`` with an expression ``increment-condition``
or ``increment-count``; ``quota`` bandwidth) is noted as
:class:`Postponed` on the request view and added by
:func:`apply_postponed` once the response is done.

Counter keys name the policy's scope and the subscription (``rate-limit``,
``quota``) or the key value (``rate-limit-by-key``, one counter for every
scope as in APIM), never configuration-internal identities, so replicas
and successive configurations share them.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.translate.policy import (
    Condition,
    ExpressionRuntimeError,
    LimitTarget,
    Quota,
    RateLimit,
    RateLimitByKey,
)

from ._outcomes import Failure, Stop, envelope_response

__all__ = [
    "CounterCall",
    "Counters",
    "Postponed",
    "Verdict",
    "apply_postponed",
    "limit_step",
    "quota_message",
]

#: What a section yields to its driver, and what it is sent back.
LimitRun = Generator["CounterCall", "Verdict", None]


class Verdict(Protocol):
    """A counter store's answer (:class:`gateway.counters.Verdict`)."""

    @property
    def admitted(self) -> bool: ...

    @property
    def count(self) -> int: ...

    @property
    def remaining(self) -> int: ...

    @property
    def retry_after(self) -> float: ...


class Counters(Protocol):
    """The counter store (:mod:`gateway.counters`): local, or Redis with a local fallback."""

    def take(self, key: str, limit: int, period: float, amount: int = 1, *,
             sliding: bool = True, anchor: float = 0.0) -> Any: ...

    def peek(self, key: str, limit: int, period: float, *,
             sliding: bool = True, anchor: float = 0.0) -> Any: ...

    def add(self, key: str, amount: int, period: float, *,
            sliding: bool = True, anchor: float = 0.0) -> None: ...


@dataclass(frozen=True, slots=True)
class CounterCall:
    """
    One counter operation for the driver to perform: ``take`` (check and
    count atomically; a refused call is not counted) or a ``peek`` (check
    only; the count comes later, :class:`Postponed`).
    """

    take: bool
    key: str
    limit: int
    period: float
    amount: int = 1
    sliding: bool = True

    def perform(self, counters: Counters) -> Any:
        """The store's verdict, or a Deferred of it (Redis)."""
        if self.take:
            return counters.take(self.key, self.limit, self.period, self.amount,
                                 sliding=self.sliding)
        return counters.peek(self.key, self.limit, self.period, sliding=self.sliding)


@dataclass(frozen=True, slots=True)
class Postponed:
    """
    A count to add once the response is done.

    :ivar condition: evaluated then (it may read ``context.Response``);
        ``None``: always.
    :ivar amount: the amount; ``None``: the request's and response's body
        bytes in kilobytes (``quota`` bandwidth).
    """

    key: str
    period: float
    sliding: bool
    condition: Condition | None
    amount: int | None


def _postpone(ctx: Any, item: Postponed) -> None:
    if ctx.postponed is None:
        ctx.postponed = [item]
    else:
        ctx.postponed.append(item)


def _add_response_header(ctx: Any, name: str, value: str) -> None:
    pair = (name.lower(), value)
    if ctx.response_headers is None:
        ctx.response_headers = [pair]
    else:
        ctx.response_headers.append(pair)


def _applies(target: LimitTarget, ctx: Any) -> bool:
    return target.api == ctx.api_id and (
        target.operation is None or target.operation == ctx.operation_id
    )


def _target_key(base: str, target: LimitTarget) -> str:
    key = f"{base}/apis/{target.api}"
    return key if target.operation is None else f"{key}/operations/{target.operation}"


def _seconds(retry_after: float, period: float = 0.0) -> int:
    """
    Whole seconds to wait, at least 1. The store says ``inf`` when no wait
    would admit the call (``increment-count`` above ``calls``): the
    period is then the honest hint.
    """
    if not math.isfinite(retry_after):
        retry_after = period
    return max(1, math.ceil(retry_after))


def _timespan(seconds: int) -> str:
    """.NET's ``TimeSpan`` text, as APIM writes it: ``hh:mm:ss``, ``d.hh:mm:ss`` past a day."""
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days}.{text}" if days else text


def quota_message(what: str, retry_after: float | None) -> str:
    """APIM's quota message; ``retry_after`` ``None``: the quota never renews."""
    head = f"Out of {what} quota."
    if retry_after is None:
        return head
    return f"{head} Quota will be replenished in {_timespan(_seconds(retry_after))}."


def _rate_exceeded(step: RateLimit | RateLimitByKey, ctx: Any, section: str,
                   verdict: Verdict) -> Stop:
    """429 with ``Retry-After`` (or the policy's header name) and APIM's message."""
    seconds = _seconds(verdict.retry_after, step.renewal_period)
    response = envelope_response(429, f"Rate limit is exceeded. Try again in {seconds} seconds.")
    response.headers.append(((step.retry_after_header_name or "Retry-After").lower(), str(seconds)))
    if step.retry_after_variable_name:
        ctx.variables[step.retry_after_variable_name] = seconds
    source = "rate-limit" if isinstance(step, RateLimit) else "rate-limit-by-key"
    return Stop(Failure(source, "RateLimitExceeded", "Rate limit is exceeded", section, response))


def _quota_exceeded(what: str, period: int, verdict: Verdict, section: str) -> Stop:
    """403 with ``Retry-After`` and APIM's message (no wait when the quota never renews)."""
    retry = verdict.retry_after if period > 0 and math.isfinite(verdict.retry_after) else None
    message = quota_message(what, retry)
    response = envelope_response(403, message)
    if retry is not None:
        response.headers.append(("retry-after", str(_seconds(retry))))
    return Stop(Failure("quota", "QuotaExceeded", message, section, response))


def _report(step: RateLimit | RateLimitByKey, ctx: Any, remaining: int) -> None:
    """The remaining-calls and total-calls headers and variable, after the policy ran."""
    if step.remaining_calls_header_name:
        _add_response_header(ctx, step.remaining_calls_header_name, str(remaining))
    if step.remaining_calls_variable_name:
        ctx.variables[step.remaining_calls_variable_name] = remaining
    if step.total_calls_header_name:
        _add_response_header(ctx, step.total_calls_header_name, str(step.calls))


def limit_step(step: RateLimit | RateLimitByKey | Quota, ctx: Any, section: str) -> LimitRun:
    """
    Run one limit step: yield its counter calls, raise :class:`Stop` with
    the 429/403 failure when one is refused.

    ``rate-limit`` and ``quota`` apply to calls with a subscription only
    (APIM: "only applied when an API is accessed using a subscription key");
    the nested API/operation limits are checked after the policy's own, each
    counted independently (a call refused by an inner limit has been counted
    by the outer ones).
    """
    if isinstance(step, RateLimit):
        subscription = ctx.subscription_id
        if subscription is None:
            return
        base = f"rate-limit/{step.scope}/{subscription}"
        verdict = yield CounterCall(True, base, step.calls, step.renewal_period)
        if not verdict.admitted:
            raise _rate_exceeded(step, ctx, section, verdict)
        remaining = verdict.remaining
        for target in step.targets:
            if _applies(target, ctx):
                assert target.calls is not None and target.renewal_period is not None
                inner = yield CounterCall(True, _target_key(base, target), target.calls,
                                          target.renewal_period)
                if not inner.admitted:
                    raise _rate_exceeded(step, ctx, section, inner)
        _report(step, ctx, remaining)
    elif isinstance(step, RateLimitByKey):
        counter = step.counter_key
        value = counter if isinstance(counter, str) else counter.text(ctx)
        key = f"rate-limit-by-key/{value}"
        condition = step.increment_condition
        if condition is None or condition is True:
            verdict = yield CounterCall(True, key, step.calls, step.renewal_period,
                                        step.increment_count)
        else:
            verdict = yield CounterCall(False, key, step.calls, step.renewal_period)
            if verdict.admitted and condition is not False:
                # An expression: APIM evaluates it, and counts, after the
                # response (a 429 may then come one call late, as in APIM).
                _postpone(ctx, Postponed(key, step.renewal_period, True, condition,
                                         step.increment_count))
        if not verdict.admitted:
            raise _rate_exceeded(step, ctx, section, verdict)
        _report(step, ctx, verdict.remaining)
    else:
        subscription = ctx.subscription_id
        if subscription is None:
            return
        base = f"quota/{step.scope}/{subscription}"
        limits = [(base, step.calls, step.bandwidth, step.renewal_period)]
        limits += [
            (_target_key(base, t), t.calls, t.bandwidth,
             t.renewal_period if t.renewal_period is not None else step.renewal_period)
            for t in step.targets if _applies(t, ctx)
        ]
        for key, calls, bandwidth, period in limits:
            if calls is not None:
                verdict = yield CounterCall(True, key + "/calls", calls, period, sliding=False)
                if not verdict.admitted:
                    raise _quota_exceeded("call volume", period, verdict, section)
            if bandwidth is not None:
                verdict = yield CounterCall(False, key + "/kilobytes", bandwidth, period,
                                            sliding=False)
                if not verdict.admitted:
                    raise _quota_exceeded("bandwidth", period, verdict, section)
                _postpone(ctx, Postponed(key + "/kilobytes", period, False, None, None))


def apply_postponed(ctx: Any, counters: Counters, body_bytes: int) -> list[str]:
    """
    Add the counts noted during the request, now that the response is done
    (``context.Response.StatusCode`` is set). Returns the messages of
    conditions that failed to evaluate (not counted; the caller logs them).

    :param body_bytes: the request's and the response's body bytes, for
        bandwidth quotas (kilobytes of 1024 bytes, rounded up).
    """
    failures: list[str] = []
    for item in ctx.postponed or ():
        condition = item.condition
        if condition is not None and not isinstance(condition, bool):
            try:
                if not condition.evaluate(ctx):
                    continue
            except ExpressionRuntimeError as error:
                failures.append(f"{item.key}: increment-condition failed: {error}")
                continue
        amount = item.amount if item.amount is not None else math.ceil(body_bytes / 1024)
        if amount > 0:
            counters.add(item.key, amount, item.period, sliding=item.sliding)
    return failures
