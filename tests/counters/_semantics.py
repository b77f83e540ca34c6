"""
Runs the tables of :mod:`tests.counters.cases` against a counter store:
one test method per case, on whatever store the concrete test class makes.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks, maybeDeferred
from twisted.internet.task import Clock

from gateway.counters import NEVER, Verdict

from .cases import FIXED, SLIDING, Step


class SemanticsMixin:
    """Mixed into a ``TestCase`` that defines :meth:`make` (a store on ``self.clock``)."""

    clock: Clock

    def make(self) -> Any:
        raise NotImplementedError

    @inlineCallbacks
    def run_case(self, steps: list[Step], sliding: bool) -> Generator[Deferred[Any], Any, None]:
        store = self.make()
        for number, (at, op, args, expected) in enumerate(steps):
            self.clock.advance(at - self.clock.seconds())
            args = dict(args)
            key = args.pop("key", "k")
            if not sliding:
                args["sliding"] = False
            if op == "add":
                store.add(key, args.pop("amount"), args.pop("period"), **args)
                yield getattr(store, "settled", lambda: None)()
                continue
            verdict = yield maybeDeferred(getattr(store, op), key, **args)
            self.check(verdict, expected, f"step {number} at t={at} {op} {args}")

    def check(self, verdict: Verdict, expected: Any, where: str) -> None:
        admitted, count, remaining, retry = expected
        got = (verdict.admitted, verdict.count, verdict.remaining)
        self.assertEqual(got, (admitted, count, remaining), where)  # type: ignore[attr-defined]
        if retry is NEVER:
            self.assertEqual(verdict.retry_after, NEVER, where)  # type: ignore[attr-defined]
        else:
            self.assertAlmostEqual(verdict.retry_after, retry, 6, where)  # type: ignore[attr-defined]


def _method(steps: list[Step], sliding: bool, name: str) -> Callable[[Any], Deferred[None]]:
    def test(self: SemanticsMixin) -> Deferred[None]:
        return self.run_case(steps, sliding)

    test.__doc__ = f"The {'sliding' if sliding else 'fixed'} window case {name!r} holds step by step."
    return test


def add_cases(cls: type) -> type:
    """Add ``test_sliding_<case>`` and ``test_fixed_<case>`` methods to ``cls``."""
    for name, steps in SLIDING.items():
        setattr(cls, f"test_sliding_{name}", _method(steps, True, name))
    for name, steps in FIXED.items():
        setattr(cls, f"test_fixed_{name}", _method(steps, False, name))
    return cls
