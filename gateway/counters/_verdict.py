"""
The answer of a counter check, and the interface the policy side calls.

The rate-limit and quota policies only need "was this call within the
limit, how many are left, and how long until it would be": one small frozen
value carries that whichever store (local or Redis) decided it, so the
policy code never knows which one did.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from twisted.internet.defer import Deferred

__all__ = ["NEVER", "Counters", "Verdict"]

#: ``retry_after`` when no wait would admit the amount: it exceeds the limit,
#: or the fixed window never renews (``period == 0``). Callers turn it into
#: "no Retry-After" (or a cap) rather than into a number of seconds.
NEVER = math.inf


@dataclass(frozen=True, slots=True)
class Verdict:
    """
    :ivar admitted: the amount was within the limit (and was added).
    :ivar count: the window's count after this call (added or not).
    :ivar remaining: ``max(0, limit - count)``.
    :ivar retry_after: seconds until ``amount`` more would be admitted;
        ``0`` when admitted, :data:`NEVER` when no wait would do.
    """

    admitted: bool
    count: int
    remaining: int
    retry_after: float


class Counters(Protocol):
    """
    A store of named counters over sliding or fixed windows.

    ``sliding=True``: a sliding window of ``period`` seconds (APIM's
    ``rate-limit``); a call at ``t`` counts while ``now - period < t``.
    ``sliding=False``: fixed windows of ``period`` seconds aligned at
    ``anchor`` (window ``floor((now - anchor) / period)``; APIM's quota
    renews relative to the subscription's start); ``period == 0`` never
    resets. A counter is named by ``key`` *and* ``period`` (and its kind):
    the same key with another period is another counter.
    """

    def take(
        self,
        key: str,
        limit: int,
        period: float,
        amount: int = 1,
        *,
        sliding: bool = True,
        anchor: float = 0.0,
    ) -> Verdict | Deferred[Verdict]:
        """Atomically: admitted iff count + amount <= limit, and then add ``amount``; refused calls are not counted."""

    def peek(
        self, key: str, limit: int, period: float, *, sliding: bool = True, anchor: float = 0.0
    ) -> Verdict | Deferred[Verdict]:
        """The count without adding (admitted iff count < limit)."""

    def add(
        self, key: str, amount: int, period: float, *, sliding: bool = True, anchor: float = 0.0
    ) -> None:
        """Add without checking (e.g. quota bandwidth known only after the response); fire and forget."""
