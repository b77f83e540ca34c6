"""
The open tunnels (upgraded connections) of one traffic listener, for the
drain.

A tunnel outlives the request that opened it (the request ends at the
101), so the in-flight count does not see it. At shutdown the drain waits
for the tunnels as it waits for requests, up to the grace period, then
closes those still open (:meth:`Tunnels.close_all`): a WebSocket client is
told by a FIN (a TLS close_notify first) instead of a reset when the
process exits, and can reconnect to another replica at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from ._splice import IDLE_TIMEOUT, Splice

__all__ = ["Tunnels", "upgrade_idle_timeout"]


class Tunnels:
    """
    The :class:`Splice` s open on one listener: :meth:`open` builds and
    tracks one, :meth:`when_empty` fires once none is open,
    :meth:`close_all` ends the drain's wait by closing them.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._open: set[Splice] = set()
        self._waiters: list[Deferred[None]] = []
        #: the drain closed them all: a tunnel opened later (a 101 that
        #: arrived after the grace) is closed at once
        self.shut = False
        #: bytes the tunnels that ended copied (client to backend, back)
        self._ended_up = 0
        self._ended_down = 0

    def __len__(self) -> int:
        return len(self._open)

    def bytes_copied(self) -> tuple[int, int]:
        """
        Bytes copied so far by this listener's tunnels, open and ended:
        from clients to backends, and back. Read at scrape time, so a
        tunnel costs nothing more per chunk than the two counts it keeps;
        the totals only grow (an ended tunnel's counts move to the ended
        totals as it leaves the open set).
        """
        up, down = self._ended_up, self._ended_down
        for splice in self._open:
            up += splice.sent_up
            down += splice.sent_down
        return up, down

    def open(
        self,
        client: Any,
        backend: Any,
        *,
        idle_timeout: float = IDLE_TIMEOUT,
        on_closed: Callable[[Splice], None] | None = None,
    ) -> Splice:
        """A :class:`Splice` between ``client`` and ``backend``, tracked until it ends."""

        def closed(splice: Splice) -> None:
            if splice in self._open:
                self._open.discard(splice)
                self._ended_up += splice.sent_up
                self._ended_down += splice.sent_down
            if on_closed is not None:
                on_closed(splice)
            if not self._open and self._waiters:
                waiters, self._waiters = self._waiters, []
                for d in waiters:
                    d.callback(None)

        splice = Splice(client, backend, self._clock, idle_timeout=idle_timeout, on_closed=closed)
        self._open.add(splice)
        if self.shut:
            splice.close()
        return splice

    def when_empty(self) -> Deferred[None]:
        """Fires once no tunnel is open (at once if none is). Cancellable: the wait stops."""
        d: Deferred[None] = Deferred(lambda d: self._forget(d))
        if not self._open:
            d.callback(None)
        else:
            self._waiters.append(d)
        return d

    def _forget(self, d: Deferred[None]) -> None:
        if d in self._waiters:
            self._waiters.remove(d)

    def close_all(self) -> int:
        """Close every open tunnel (the grace is over); how many. Later ones close at once."""
        self.shut = True
        splices = list(self._open)
        for splice in splices:
            splice.close()
        return len(splices)


def upgrade_idle_timeout(request: Any) -> float:
    """
    The idle timeout of the tunnel ``request`` switches to: its
    connection's limits (``H1Limits.upgrade_idle_timeout``, from
    ``net.server.upgrade-idle-timeout``), else the default.
    """
    limits = getattr(getattr(request, "channel", None), "limits", None)
    return getattr(limits, "upgrade_idle_timeout", IDLE_TIMEOUT)
