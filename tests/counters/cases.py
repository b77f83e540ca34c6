"""
The counter semantics as tables of cases, run against the local counters
(on a fake clock) and against a real Redis (the same fake clock's time
passed to the scripts), so both stores are held to one definition.

A case is a list of steps ``(time, operation, arguments, expected)``;
``expected`` is ``(admitted, count, remaining, retry_after)`` or ``None``
for an ``add``. Keys default to ``"k"``.
"""

from __future__ import annotations

from typing import Any

from gateway.counters import NEVER

Step = tuple[float, str, dict[str, Any], tuple[bool, int, int, float] | None]

S10 = {"limit": 2, "period": 10.0}

SLIDING: dict[str, list[Step]] = {
    # A call at t counts while now - period < t: it leaves exactly at t + period.
    "boundary_exactly_at_period": [
        (0, "take", S10, (True, 1, 1, 0)),
        (1, "take", S10, (True, 2, 0, 0)),
        (2, "take", S10, (False, 2, 0, 8)),
        (3, "take", S10, (False, 2, 0, 7)),
        (9.5, "peek", S10, (False, 2, 0, 0.5)),
        (10, "take", S10, (True, 2, 0, 0)),
        (10.5, "take", S10, (False, 2, 0, 0.5)),
        (11, "take", S10, (True, 2, 0, 0)),
    ],
    "amount_greater_than_one": [
        (0, "take", {"limit": 5, "period": 10.0, "amount": 3}, (True, 3, 2, 0)),
        (1, "take", {"limit": 5, "period": 10.0, "amount": 3}, (False, 3, 2, 9)),
        (2, "take", {"limit": 5, "period": 10.0, "amount": 2}, (True, 5, 0, 0)),
        (3, "take", {"limit": 5, "period": 10.0, "amount": 1}, (False, 5, 0, 7)),
        (4, "take", {"limit": 5, "period": 10.0, "amount": 6}, (False, 5, 0, NEVER)),
        (10, "take", {"limit": 5, "period": 10.0, "amount": 4}, (False, 2, 3, 2)),
        (10, "take", {"limit": 5, "period": 10.0, "amount": 3}, (True, 5, 0, 0)),
    ],
    "refused_calls_are_not_counted": [
        (0, "take", {"limit": 1, "period": 5.0}, (True, 1, 0, 0)),
        *[(0.5 * i, "take", {"limit": 1, "period": 5.0}, (False, 1, 0, 5 - 0.5 * i)) for i in range(1, 10)],
        (5, "take", {"limit": 1, "period": 5.0}, (True, 1, 0, 0)),
    ],
    "add_counts_without_checking": [
        (0, "add", {"amount": 5, "period": 10.0}, None),
        (0, "peek", {"limit": 3, "period": 10.0}, (False, 5, 0, 10)),
        (4, "take", {"limit": 7, "period": 10.0}, (True, 6, 1, 0)),
        (10, "peek", {"limit": 3, "period": 10.0}, (True, 1, 2, 0)),
    ],
    "keys_and_periods_are_separate_counters": [
        (0, "take", {"limit": 1, "period": 10.0}, (True, 1, 0, 0)),
        (0, "take", {"limit": 1, "period": 20.0}, (True, 1, 0, 0)),
        (0, "take", {"key": "other", "limit": 1, "period": 10.0}, (True, 1, 0, 0)),
        (0, "take", {"limit": 1, "period": 10.0}, (False, 1, 0, 10)),
    ],
    "limit_zero_admits_nothing": [
        (0, "take", {"limit": 0, "period": 10.0}, (False, 0, 0, NEVER)),
        (0, "peek", {"limit": 0, "period": 10.0}, (False, 0, 0, NEVER)),
    ],
}

F = {"limit": 2, "period": 10.0, "anchor": 5.0}

FIXED: dict[str, list[Step]] = {
    # Windows [5, 15), [15, 25), ...: aligned at the anchor, not at zero.
    "windows_aligned_at_anchor": [
        (5, "take", F, (True, 1, 1, 0)),
        (14.5, "take", F, (True, 2, 0, 0)),
        (14.75, "take", F, (False, 2, 0, 0.25)),
        (14.75, "peek", F, (False, 2, 0, 0.25)),
        (15, "take", F, (True, 1, 1, 0)),
        (24, "peek", F, (True, 1, 1, 0)),
        (25, "peek", F, (True, 0, 2, 0)),
    ],
    "before_the_anchor": [
        (0, "take", {"limit": 1, "period": 10.0, "anchor": 5.0}, (True, 1, 0, 0)),
        (1, "take", {"limit": 1, "period": 10.0, "anchor": 5.0}, (False, 1, 0, 4)),
        (5, "take", {"limit": 1, "period": 10.0, "anchor": 5.0}, (True, 1, 0, 0)),
    ],
    "period_zero_never_resets": [
        (0, "take", {"limit": 2, "period": 0.0}, (True, 1, 1, 0)),
        (1, "take", {"limit": 2, "period": 0.0}, (True, 2, 0, 0)),
        (1e6, "take", {"limit": 2, "period": 0.0}, (False, 2, 0, NEVER)),
        (2e6, "peek", {"limit": 2, "period": 0.0}, (False, 2, 0, NEVER)),
    ],
    "amount_and_add": [
        (0, "take", {"limit": 10, "period": 60.0, "amount": 4}, (True, 4, 6, 0)),
        (1, "add", {"amount": 5, "period": 60.0}, None),
        (2, "take", {"limit": 10, "period": 60.0, "amount": 2}, (False, 9, 1, 58)),
        (2, "take", {"limit": 10, "period": 60.0}, (True, 10, 0, 0)),
        (3, "take", {"limit": 10, "period": 60.0, "amount": 11}, (False, 10, 0, NEVER)),
        (3, "peek", {"limit": 10, "period": 60.0}, (False, 10, 0, 57)),
        (60, "peek", {"limit": 10, "period": 60.0}, (True, 0, 10, 0)),
        (60, "take", {"limit": 10, "period": 60.0, "amount": 10}, (True, 10, 0, 0)),
    ],
}
