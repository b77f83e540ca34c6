"""
Waiting for a condition in tests: poll with a deadline, never sleep a fixed
time. The deadline is generous because it only matters when the test is
failing; a passing test waits exactly as long as the condition takes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import deferLater

__all__ = ["wait_for"]


def wait_for(
    predicate: Callable[[], Any],
    timeout: float = 10.0,
    what: str = "condition",
    *,
    interval: float = 0.02,
    reactor: Any = None,
) -> Deferred[Any]:
    """
    Poll ``predicate()`` (which may return a Deferred) every ``interval``
    seconds until it is true, and fire with its value; fail with
    ``AssertionError`` after ``timeout`` seconds.
    """
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor

    async def poll() -> Any:
        deadline = reactor.seconds() + timeout
        while True:
            result = await maybeDeferred(predicate)
            if result:
                return result
            if reactor.seconds() > deadline:
                raise AssertionError(f"{what} not met within {timeout} s")
            await deferLater(reactor, interval, lambda: None)

    return Deferred.fromCoroutine(poll())
