"""
Client-side load balancing over a route's endpoints (the Ingress source's
``endpoints`` mode, as ingress-nginx balances over a Service's ready pod
addresses instead of going through its ClusterIP).

Round robin, skipping an endpoint for :data:`FAILURE_HOLD` seconds after a
connection to it failed (a pod that died before its EndpointSlice caught
up); when every endpoint is on hold, round robin over all of them, since a
guess beats refusing the request.

This is the one piece of mutable state a :class:`RouteEntry` carries: a
cursor and the hold times. It lives and dies with its generation (a new
configuration starts with no endpoint on hold), costs one modulo and one
comparison per request, and is only touched from the reactor thread.
"""

from __future__ import annotations

from ._config import Backend

#: Seconds an endpoint is skipped after a failed connection.
FAILURE_HOLD = 10.0


class Endpoints:
    """The endpoints of one route and the balancing state over them."""

    __slots__ = ("backends", "_next", "_held_until")

    def __init__(self, backends: tuple[Backend, ...]) -> None:
        self.backends = backends
        self._next = 0
        self._held_until: dict[Backend, float] = {}

    def __repr__(self) -> str:
        return f"<Endpoints {', '.join(b.authority for b in self.backends) or '(none ready)'}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Endpoints) and other.backends == self.backends

    def __hash__(self) -> int:
        return hash(self.backends)

    def pick(self, now: float, avoid: Backend | None = None) -> Backend | None:
        """
        The next endpoint in turn that is not on hold (and is not ``avoid``,
        the one a retry comes from); ``None`` when there is none at all.
        """
        backends = self.backends
        count = len(backends)
        if not count:
            return None
        start = self._next
        held = self._held_until
        for step in range(count):
            candidate = backends[(start + step) % count]
            if candidate is avoid or (held and held.get(candidate, 0.0) > now):
                continue
            self._next = (start + step + 1) % count
            return candidate
        # All on hold (or the only one is ``avoid``): plain round robin.
        self._next = (start + 1) % count
        candidate = backends[start % count]
        if candidate is avoid and count == 1:
            return None
        return candidate

    def failed(self, backend: Backend, now: float) -> None:
        """A connection to ``backend`` failed: skip it for a while."""
        self._held_until[backend] = now + FAILURE_HOLD

    def held(self, now: float) -> tuple[Backend, ...]:
        """The endpoints currently skipped (for the admin view and tests)."""
        return tuple(b for b in self.backends if self._held_until.get(b, 0.0) > now)
