"""
Tests for :mod:`gateway.routing`.

The helpers here build tables the way the gateway does, through
:func:`gateway.translate.translate`, so the tests exercise the entries the
reconciler really hands to :meth:`RouteTable.build` (normalised paths and
hosts, deduplicated keys) rather than hand-made ones.
"""

from __future__ import annotations

from gateway.model import Api, ObjectRef, Operation, Route, RouteSet, SourceObject
from gateway.routing import RouteTable
from gateway.translate import RouteEntry, translate

BACKEND = "http://127.0.0.1:9000"


def route_name(route: Route) -> str:
    """The source-object name :func:`source_objects` gives a route, e.g.
    ``"* Prefix /foo/"``: it shows the route as configured."""
    return f"{route.host or '*'} {route.path_type} {route.path}"


def api(
    name: str,
    path: str,
    operations: tuple[tuple[str, str], ...] = (),
    hostnames: tuple[str, ...] = (),
) -> Api:
    """An API with ``(method, urlTemplate)`` operations named after their
    position (``op0``, ``op1``, ...)."""
    return Api(
        name=name,
        path=path,
        service_url=BACKEND + "/base",
        hostnames=hostnames,
        operations=tuple(
            Operation(f"op{index}", method, template)
            for index, (method, template) in enumerate(operations)
        ),
    )


def source_objects(*bodies: Api | Route) -> list[SourceObject]:
    """One source object per API (named after it) or per route (named by
    :func:`route_name`), all modified at the same time."""
    objects = []
    for body in bodies:
        if isinstance(body, Api):
            ref = ObjectRef("memory", "api", body.name)
            objects.append(SourceObject(ref, 0.0, body))
        else:
            ref = ObjectRef("memory", "routes", route_name(body))
            objects.append(SourceObject(ref, 0.0, RouteSet((body,))))
    return objects


def entries(*bodies: Api | Route) -> tuple[RouteEntry, ...]:
    """Translate the bodies; fail loudly if translation reports a problem,
    since a test that silently loses a route proves nothing."""
    config = translate(source_objects(*bodies))
    if config.problems:
        raise AssertionError(f"translation problems: {[str(p) for p in config.problems]}")
    return config.routes


def build(*bodies: Api | Route) -> RouteTable:
    """A route table for the bodies, built as the reconciler builds one."""
    return RouteTable.build(entries(*bodies))


def matched_name(table: RouteTable, host: str, path: str, method: str = "GET") -> str | None:
    """The source-object name of the entry a lookup finds, or ``None``."""
    match = table.lookup(host, path, method)
    return None if match is None else match.entry.origin.name
