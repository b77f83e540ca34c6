"""
Client-side load balancing over a route's endpoints (the Ingress source's
``endpoints`` mode, as ingress-nginx balances over a Service's ready pod
addresses instead of going through its ClusterIP).

Round robin, skipping an endpoint for :data:`FAILURE_HOLD` seconds after a
connection to it failed (a pod that died before its EndpointSlice caught
up); when every endpoint is on hold, round robin over all of them, since a
guess beats refusing the request.

Where the state lives, and why. Translation is pure, so a route carries
only its endpoints, a plain tuple of :class:`Backend` (``RouteEntry.endpoints``).
The state that balancing needs lives here, in one :class:`Balancers`
registry owned by the :class:`~gateway.upstream.BackendPool`: one per
process, shared by the HTTP and HTTPS listeners, outliving every
generation.

* A failure hold belongs to an endpoint *address* (scheme, host, port), not
  to a route or a generation: a pod that refuses connections refuses them
  for every route pointing at it, and a configuration swap (any change to
  any object rebuilds the whole table) must not put a dead endpoint back in
  rotation. Holds expire by time, so they need no other bookkeeping.
* A round-robin cursor belongs to an endpoint *set* (the tuple's value): a
  swap that leaves a route's endpoints unchanged continues the rotation
  where it stood, instead of restarting at the first endpoint on every swap
  (which, under frequent swaps, sends that one more than its share). A set
  that changed starts a new rotation.
* Memory stays bounded: cursors of sets not looked up in the current or
  the previous generation are forgotten.

Per request, :meth:`Balancers.of` costs an integer comparison and one
dictionary lookup keyed by the tuple's identity (hashing a tuple of
backends by value would cost far more: every ``Backend`` hashes five
fields), and :meth:`Balancer.pick` one modulo and, only while some endpoint
is on hold, one lookup per candidate. Everything runs on the reactor thread.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.translate import Backend

__all__ = ["FAILURE_HOLD", "Balancer", "Balancers"]

#: Seconds an endpoint is skipped after a failed connection.
FAILURE_HOLD = 10.0

#: An endpoint address: ``Backend.key``.
_Address = tuple[str, str, int]


class Balancer:
    """
    Round robin over one endpoint set; holds are shared with every other
    balancer of the same :class:`Balancers`.

    :ivar backends: the endpoints, in the order translation gave them.
    """

    __slots__ = ("_held_until", "_next", "backends")

    def __init__(
        self, backends: tuple[Backend, ...], held_until: dict[_Address, float] | None = None
    ) -> None:
        self.backends = backends
        self._next = 0
        self._held_until: dict[_Address, float] = {} if held_until is None else held_until

    def __repr__(self) -> str:
        return f"<Balancer {', '.join(b.authority for b in self.backends) or '(none ready)'}>"

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
        # Compared by address: ``avoid`` may come from an earlier generation's
        # tuple of equal endpoints.
        avoided = avoid.key if avoid is not None else None
        for step in range(count):
            candidate = backends[(start + step) % count]
            if avoided is not None and candidate.key == avoided:
                continue
            if held:
                until = held.get(candidate.key)
                if until is not None:
                    if until > now:
                        continue
                    del held[candidate.key]
            self._next = (start + step + 1) % count
            return candidate
        # All on hold (or the only one is ``avoid``): plain round robin,
        # still never back to ``avoid``, which has just failed.
        candidate = backends[start % count]
        if avoided is not None and candidate.key == avoided:
            if count == 1:
                return None
            start += 1
            candidate = backends[start % count]
        self._next = (start + 1) % count
        return candidate

    def failed(self, backend: Backend, now: float) -> None:
        """A connection to ``backend`` failed: skip it for a while, in every set."""
        held = self._held_until
        if held:
            # Rare (a failure), and holds are few: drop the expired ones here
            # so that addresses which left every set do not linger.
            for address in [a for a, until in held.items() if until <= now]:
                del held[address]
        held[backend.key] = now + FAILURE_HOLD

    def held(self, now: float) -> tuple[Backend, ...]:
        """The endpoints of this set currently skipped (for the admin view and tests)."""
        held = self._held_until
        return tuple(b for b in self.backends if held.get(b.key, 0.0) > now)


class Balancers:
    """
    The balancing state of every endpoint set the proxy sends to: a
    :class:`Balancer` per set and the failure holds they share (see the
    module's docstring for why it lives here and survives generations).
    """

    def __init__(self) -> None:
        self._generation: int | None = None
        #: ``id(endpoints)`` → (the tuple, pinned so its id stays unique, and
        #: its balancer), for the current generation's tuples only
        self._by_id: dict[int, tuple[tuple[Backend, ...], Balancer]] = {}
        #: the sets looked up in the current and in the previous generation
        self._current: dict[tuple[Backend, ...], Balancer] = {}
        self._previous: dict[tuple[Backend, ...], Balancer] = {}
        self._held_until: dict[_Address, float] = {}

    def of(self, endpoints: tuple[Backend, ...], generation: int) -> Balancer:
        """
        The balancer of ``endpoints``, a route's endpoints in generation
        number ``generation`` (the same set in another generation gets the
        same balancer).
        """
        if generation != self._generation:
            self._turn(generation)
        found = self._by_id.get(id(endpoints))
        if found is not None:
            return found[1]
        return self._add(endpoints)

    def held(self, now: float) -> tuple[_Address, ...]:
        """Every endpoint address on hold, sorted (for the admin view and tests)."""
        return tuple(sorted(a for a, until in self._held_until.items() if until > now))

    def _turn(self, generation: int) -> None:
        """A new generation is live: identities of the old one's tuples no longer matter."""
        self._generation = generation
        self._by_id.clear()
        self._previous = self._current
        self._current = {}

    def _add(self, endpoints: tuple[Backend, ...]) -> Balancer:
        """First lookup of this tuple in this generation (once per route and swap)."""
        balancer = self._current.get(endpoints)
        if balancer is None:
            balancer = self._previous.pop(endpoints, None)
            if balancer is None:
                balancer = Balancer(endpoints, self._held_until)
            else:
                # Equal endpoints: let the older generation's objects go.
                balancer.backends = endpoints
            self._current[endpoints] = balancer
        self._by_id[id(endpoints)] = (endpoints, balancer)
        return balancer
