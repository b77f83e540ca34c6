"""
The counter store's life in the gateway's service tree: Redis is connected
when the gateway starts and closed when it stops (after the listeners
drained, since services stop in reverse order).
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.application.service import Service
from twisted.internet.defer import Deferred

__all__ = ["CountersService"]


class _Startable(Protocol):
    def start(self) -> None: ...

    def stop(self) -> Deferred[None]: ...


class _Closable(Protocol):
    def close(self) -> None: ...


class CountersService(Service):
    """
    Starts and stops a :class:`~gateway.counters.FallbackCounters` (or
    Redis) store, or closes :class:`~gateway.counters.LocalCounters` (its
    expiry sweep) at stop.
    """

    def __init__(self, counters: _Startable | _Closable) -> None:
        self.counters = counters

    def startService(self) -> None:
        super().startService()
        start = getattr(self.counters, "start", None)
        if start is not None:
            start()

    def stopService(self) -> Any:
        super().stopService()
        stop = getattr(self.counters, "stop", None)
        if stop is not None:
            return stop()
        self.counters.close()  # type: ignore[union-attr]
        return None
