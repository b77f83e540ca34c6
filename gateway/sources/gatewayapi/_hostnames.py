"""
Hostname rules of the Gateway API: wildcard matching, the intersection of a
Listener's hostname with an HTTPRoute's hostnames, and specificity.

Gateway API wildcards differ from Ingress ones: ``*.example.com`` matches
any number of leading labels (``a.example.com`` and ``a.b.example.com``) but
never ``example.com`` itself (``Listener.hostname`` in the v1 API
reference). Kept apart from the resolver because these few rules decide
both where a route attaches and which listener serves a request (listener
isolation), and are easiest to get wrong.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["effective_hostnames", "host_matches", "intersect", "specificity"]


def _is_wildcard(host: str) -> bool:
    return host.startswith("*.")


def host_matches(pattern: str | None, host: str) -> bool:
    """
    Whether a request ``host`` (lower case, no port) is matched by a
    hostname ``pattern``: ``None`` matches every host, ``*.suffix`` every
    host ending in ``.suffix`` with at least one more label, else equality.
    """
    if pattern is None:
        return True
    if _is_wildcard(pattern):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return host == pattern


def intersect(listener: str | None, route: str) -> str | None:
    """
    The hostname a route hostname is served under on a listener, or
    ``None`` when the two do not intersect (``HTTPRouteSpec.hostnames``):

    * no listener hostname: the route hostname as it is;
    * equal: that name;
    * one is a wildcard matching the other: the more specific one (an
      exact name, or the longer wildcard: ``*.foo.example.com`` on a
      ``*.example.com`` listener stays ``*.foo.example.com``).
    """
    if listener is None or listener == route:
        return route
    listener_wild, route_wild = _is_wildcard(listener), _is_wildcard(route)
    if listener_wild and not route_wild:
        return route if host_matches(listener, route) else None
    if route_wild and not listener_wild:
        return listener if host_matches(route, listener) else None
    if listener_wild and route_wild:
        if route[1:].endswith(listener[1:]):
            return route
        if listener[1:].endswith(route[1:]):
            return listener
    return None


def effective_hostnames(listener: str | None, route: Iterable[str]) -> tuple[str | None, ...]:
    """
    The hostnames a route serves on a listener: the intersections of its
    hostnames with the listener's (duplicates dropped, first kept), or,
    when the route names none, the listener's own hostname (``None``: any
    host). An empty result means the route does not attach to it
    (``NoMatchingListenerHostname``).
    """
    names = [h.lower() for h in route]
    if not names:
        return (listener,)
    found: list[str | None] = []
    for name in names:
        served = intersect(listener, name)
        if served is not None and served not in found:
            found.append(served)
    return tuple(found)


def specificity(pattern: str | None) -> tuple[int, int, str]:
    """
    Sort key, most specific first: exact names (longest first), then
    wildcards (longest suffix first), then "any host". The spec gives
    precedence to "the largest number of characters in a matching
    non-wildcard hostname", then "characters in a matching hostname"; the
    name itself is the stable tiebreak.
    """
    if pattern is None:
        return (2, 0, "")
    if _is_wildcard(pattern):
        return (1, -len(pattern), pattern)
    return (0, -len(pattern), pattern)
