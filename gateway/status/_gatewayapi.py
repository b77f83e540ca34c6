"""
What the gateway writes back about the Gateway API objects it serves:
the ``status`` of its GatewayClasses, Gateways and HTTPRoutes, as the
resolver computed it (:class:`~gateway.sources.gatewayapi.Resolution`),
from the replica holding the Gateway API Lease only (every replica
resolves the same objects; only one may write, or they would fight over
``resourceVersion``).

* GatewayClass ``status.conditions`` (``Accepted``); other status fields
  (``supportedFeatures``, say) are left as they are.
* Gateway ``status.conditions`` (``Accepted``, ``Programmed``) and
  ``status.listeners`` (name, ``supportedKinds``, ``attachedRoutes``,
  conditions). ``status.addresses`` is never touched: the resolution
  does not compute addresses, and an operator's or a previous writer's
  value is better than an empty one.
* HTTPRoute ``status.parents``: only the entries whose
  ``controllerName`` is ours are replaced; other controllers' entries are
  kept as they are, in place. A route that stops naming our Gateways has
  our entries removed (the spec: a controller removes the entries it no
  longer owns), found by scanning the informer's cache, since the
  resolution only lists routes that name one of our Gateways.

Conditions are ``metav1.Condition``\\ s. A condition whose type and status
are unchanged keeps its ``lastTransitionTime`` (the spec: the time *the
status* last changed, not the last write), so an unchanged resolution
writes nothing at all. ``observedGeneration`` is the generation the
resolver saw; when it is unknown, the object's current one.

How it writes, like the Ingress writer (:mod:`._ingress`): a pass
compares the desired status of each object with the current one (the
informer's cache, or the object a write of ours returned while the watch
has not delivered it yet) and ``PUT``\\ s the ``/status`` subresource of
those that differ, one request at a time, with the object's
``resourceVersion`` as precondition. ``409 Conflict`` (the object changed
between read and write) schedules a pass shortly after, from the fresh
object the watch brings; ``404`` drops the object (deleted meanwhile).
A pass runs on each new resolution, on gaining leadership (a new leader
rewrites whatever differs: the previous one may have died mid-pass), and
periodically (repairs a status edited by hand). Losing leadership stops
at once: the request in flight is cancelled, no retry stays scheduled.
A pass over many up-to-date objects yields to the reactor every
``_CHECKS_PER_TURN`` comparisons, so that a large cluster's no-op pass
does not stall the proxy sharing the reactor.

Objects that stop being ours (a GatewayClass whose ``controllerName``
changed, a Gateway moved to another class) keep their last status: the
new owner's controller overwrites it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any, Protocol

from twisted.application.service import MultiService
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.task import deferLater
from twisted.logger import Logger

from gateway.routing import Generation
from gateway.sources.gatewayapi import (
    Condition,
    GatewayClassStatus,
    GatewayStatus,
    ParentRef,
    Resolution,
    RouteParentStatus,
    RouteStatus,
)
from gateway.sources.kubernetes import (
    GATEWAY,
    GATEWAY_CLASS,
    HTTP_ROUTE,
    Conflict,
    Informer,
    Kind,
    KubeClient,
    NotFound,
)

__all__ = [
    "GatewayApiStatusSource",
    "GatewayApiStatusWriter",
    "condition_entries",
    "gateway_class_status",
    "gateway_status",
    "rfc3339",
    "route_status",
]

JSON = dict[str, Any]

#: Up-to-date objects compared before a pass yields to the reactor once.
_CHECKS_PER_TURN = 200

GROUP = "gateway.networking.k8s.io"


class GatewayApiStatusSource(Protocol):
    """
    What the writer needs of the Gateway API source
    (``gateway.sources.gatewayapi.GatewayApiSource``): its client, its
    informers, its leadership and its latest resolution.
    """

    @property
    def controller_name(self) -> str: ...

    @property
    def leading(self) -> bool: ...

    @property
    def resolution(self) -> Resolution | None: ...

    def when_started(self) -> Deferred[KubeClient]: ...

    def add_leadership_listener(self, listener: Callable[[bool], None]) -> None: ...

    def add_resolution_listener(self, listener: Callable[[Resolution], None]) -> None: ...

    def informer(self, kind: Kind) -> Informer: ...


# --- the desired status (pure) ----------------------------------------------


def rfc3339(seconds: float) -> str:
    """A ``metav1.Time``: RFC 3339 in UTC, whole seconds."""
    return datetime.fromtimestamp(int(seconds), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _generation(obj: Mapping[str, Any]) -> int | None:
    value = (obj.get("metadata") or {}).get("generation")
    return value if isinstance(value, int) else None


def condition_entries(
    conditions: Sequence[Condition],
    current: Sequence[Mapping[str, Any]] | None,
    *,
    now: str,
    generation: int | None,
) -> list[JSON]:
    """
    ``conditions`` as ``metav1.Condition`` JSON. A condition whose type
    and status equal one in ``current`` keeps that one's
    ``lastTransitionTime``; any other gets ``now``. ``generation`` stands
    in for an unknown ``observedGeneration``.
    """
    before = {c.get("type"): c for c in current or () if isinstance(c, dict) and c.get("type")}
    entries = []
    for condition in conditions:
        status = "True" if condition.status else "False"
        previous = before.get(condition.type)
        transition = now
        if previous is not None and previous.get("status") == status:
            transition = previous.get("lastTransitionTime") or now
        entry: JSON = {
            "type": condition.type,
            "status": status,
            "reason": condition.reason,
            "message": condition.message,
            "lastTransitionTime": transition,
        }
        observed = (
            condition.observed_generation
            if condition.observed_generation is not None
            else generation
        )
        if observed is not None:
            entry["observedGeneration"] = observed
        entries.append(entry)
    return entries


def _status(obj: Mapping[str, Any]) -> JSON:
    status = obj.get("status")
    return dict(status) if isinstance(status, dict) else {}


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else []


def gateway_class_status(desired: GatewayClassStatus, obj: Mapping[str, Any], *, now: str) -> JSON:
    """The whole ``status`` a GatewayClass should have: its conditions replaced."""
    status = _status(obj)
    status["conditions"] = condition_entries(
        desired.conditions,
        _list(status.get("conditions")),
        now=now,
        generation=_generation(obj),
    )
    return status


def gateway_status(desired: GatewayStatus, obj: Mapping[str, Any], *, now: str) -> JSON:
    """
    The whole ``status`` a Gateway should have: conditions and listeners
    replaced, anything else (``addresses``) kept.
    """
    status = _status(obj)
    generation = _generation(obj)
    status["conditions"] = condition_entries(
        desired.conditions, _list(status.get("conditions")), now=now, generation=generation
    )
    before = {
        entry.get("name"): entry
        for entry in _list(status.get("listeners"))
        if isinstance(entry, dict)
    }
    status["listeners"] = [
        {
            "name": listener.name,
            "supportedKinds": [{"group": GROUP, "kind": kind} for kind in listener.supported_kinds],
            "attachedRoutes": listener.attached_routes,
            "conditions": condition_entries(
                listener.conditions,
                _list((before.get(listener.name) or {}).get("conditions")),
                now=now,
                generation=generation,
            ),
        }
        for listener in desired.listeners
    ]
    return status


def _parent_ref(parent: ParentRef) -> JSON:
    ref: JSON = {
        "group": parent.group,
        "kind": parent.kind,
        "namespace": parent.namespace,
        "name": parent.name,
    }
    if parent.section_name is not None:
        ref["sectionName"] = parent.section_name
    if parent.port is not None:
        ref["port"] = parent.port
    return ref


def _ref_key(ref: Mapping[str, Any], namespace: str) -> tuple[Any, ...]:
    """A ``parentRef`` with the API's defaults filled in, to match entries."""
    return (
        ref.get("group", GROUP),
        ref.get("kind", "Gateway"),
        ref.get("namespace") or namespace,
        ref.get("name", ""),
        ref.get("sectionName"),
        ref.get("port"),
    )


def route_status(
    desired: Sequence[RouteParentStatus],
    obj: Mapping[str, Any],
    *,
    controller: str,
    now: str,
) -> JSON:
    """
    The whole ``status`` an HTTPRoute should have: the ``parents`` entries
    of ``controller`` replaced by ``desired`` (none: removed), other
    controllers' entries kept in place.
    """
    status = _status(obj)
    namespace = (obj.get("metadata") or {}).get("namespace") or ""
    generation = _generation(obj)
    current = [p for p in _list(status.get("parents")) if isinstance(p, dict)]
    ours = {
        _ref_key(p.get("parentRef") or {}, namespace): p
        for p in current
        if p.get("controllerName") == controller
    }
    parents: list[Any] = [p for p in current if p.get("controllerName") != controller]
    for entry in desired:
        ref = _parent_ref(entry.parent)
        previous = ours.get(_ref_key(ref, namespace)) or {}
        parents.append(
            {
                "parentRef": ref,
                "controllerName": entry.controller_name,
                "conditions": condition_entries(
                    entry.conditions,
                    _list(previous.get("conditions")),
                    now=now,
                    generation=generation,
                ),
            }
        )
    status["parents"] = parents
    return status


def _has_ours(route: Mapping[str, Any], controller: str) -> bool:
    return any(
        isinstance(p, dict) and p.get("controllerName") == controller
        for p in _list(_status(route).get("parents"))
    )


# --- the writer ---------------------------------------------------------------

#: One object to write: its kind, namespace (``None``: cluster-scoped),
#: name, and how to compute its status from the current object and "now".
_Target = tuple[Kind, str | None, str, Callable[[Mapping[str, Any], str], JSON]]


def _class_target(desired: GatewayClassStatus, obj: Mapping[str, Any], now: str) -> JSON:
    return gateway_class_status(desired, obj, now=now)


def _gateway_target(desired: GatewayStatus, obj: Mapping[str, Any], now: str) -> JSON:
    return gateway_status(desired, obj, now=now)


def _route_target(desired: RouteStatus, controller: str, obj: Mapping[str, Any], now: str) -> JSON:
    return route_status(desired.parents, obj, controller=controller, now=now)


def _split(key: str) -> tuple[str, str]:
    namespace, _, name = key.partition("/")
    return namespace, name


def _rv(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


class GatewayApiStatusWriter(MultiService):
    """
    Writes the status of our Gateway API objects (see the module
    docstring) while this replica leads.

    It is also a :class:`~gateway.status.StatusWriter` so that it can be
    added to the :class:`~gateway.status.StatusStage` (and start and stop
    with it); a generation tells it nothing, since the status follows the
    source's resolution, not what routing serves.

    :ivar updates: status writes that succeeded (for tests and metrics).
    :ivar conflicts: writes answered ``409 Conflict``.
    """

    _log = Logger()

    def __init__(
        self,
        source: GatewayApiStatusSource,
        *,
        reactor: Any,
        resync: float = 60.0,
        conflict_retry: float = 1.0,
        now: Callable[[], float] = time.time,
    ) -> None:
        """
        :param source: the Gateway API source whose objects this writes about.
        :param resync: seconds between periodic passes.
        :param conflict_retry: seconds before a pass after a write lost to
            a concurrent change (the informer then has the new version).
        :param now: the clock of ``lastTransitionTime``.
        """
        super().__init__()
        self.setName("gateway-api")
        self._source = source
        self._reactor = reactor
        self._resync = resync
        self._conflict_retry = conflict_retry
        self._now = now
        self._client: KubeClient | None = None
        self._waiting: Deferred[Any] | None = None
        self._leading = False
        self._running_pass: Deferred[None] | None = None
        self._in_flight: Deferred[Any] | None = None
        self._again = False
        # IDelayedCall, typed Any: mypy reads zope interfaces' methods as unbound.
        self._timer: Any = None
        self._retry: Any = None
        #: Objects newer than the informer's copy, by (plural, ns, name):
        #: what our write returned, the fresh object fetched after a
        #: conflict, or ``None`` (found deleted); each with the
        #: resourceVersion the informer held then, and used only while
        #: the informer still holds that version.
        self._known: dict[tuple[str, str, str], tuple[str, JSON | None]] = {}
        self.updates = 0
        self.conflicts = 0

    def __repr__(self) -> str:
        return f"<GatewayApiStatusWriter for {self._source!r}>"

    @property
    def leading(self) -> bool:
        """Whether this writer writes (its replica holds the Lease)."""
        return self._leading

    # -- lifecycle ---------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._timer = self._reactor.callLater(self._resync, self._periodic)
        self._waiting = self._source.when_started()
        self._waiting.addCallback(self._source_started)
        self._waiting.addErrback(lambda f: f.trap(CancelledError))

    def stopService(self) -> Deferred[None]:  # type: ignore[override]
        if self._waiting is not None and not self._waiting.called:
            self._waiting.cancel()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._stop_writing()
        d: Deferred[None] = super().stopService()
        running = self._running_pass
        if running is not None and not running.called:
            return d.addBoth(lambda _: running)
        return d

    def _source_started(self, client: KubeClient) -> None:
        self._client = client
        self._source.add_resolution_listener(self._resolved)
        self._source.add_leadership_listener(self._leadership)
        self._leadership(self._source.leading)

    # -- inputs ------------------------------------------------------------

    def publish(self, generation: Generation) -> None:
        """:class:`~gateway.status.StatusWriter`: nothing to do (see the class docstring)."""

    def _resolved(self, resolution: Resolution) -> None:
        self.sync()

    def _leadership(self, leading: bool) -> None:
        if not self.running or self._client is None:
            # Stopped (the election tells the source during shutdown too).
            return
        if leading == self._leading:
            return
        self._leading = leading
        if leading:
            self._log.info("Gateway API status: this replica now writes it")
            self.sync()
        else:
            self._stop_writing()

    def _stop_writing(self) -> None:
        self._leading = False
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is not None and not in_flight.called:
            in_flight.cancel()
        self._known.clear()

    def _periodic(self) -> None:
        self._timer = self._reactor.callLater(self._resync, self._periodic)
        self.sync()

    # -- writing -------------------------------------------------------------

    def sync(self) -> Deferred[None]:
        """Run a pass now, or right after the one in progress."""
        if not self._leading or self._client is None or self._source.resolution is None:
            return succeed(None)
        if self._running_pass is not None and not self._running_pass.called:
            self._again = True
            return self._running_pass
        self._running_pass = Deferred.fromCoroutine(self._pass())
        self._running_pass.addErrback(
            lambda f: self._log.failure("Gateway API status pass failed", f)
        )
        return self._running_pass

    def _targets(self, resolution: Resolution) -> list[_Target]:
        controller = self._source.controller_name
        targets: list[_Target] = []
        for cls in resolution.classes:
            targets.append(
                (
                    GATEWAY_CLASS,
                    None,
                    cls.name,
                    partial(_class_target, cls),
                )
            )
        for gw in resolution.gateways:
            namespace, name = _split(gw.gateway)
            targets.append(
                (
                    GATEWAY,
                    namespace,
                    name,
                    partial(_gateway_target, gw),
                )
            )
        routes: dict[tuple[str, str], RouteStatus] = {_split(r.route): r for r in resolution.routes}
        for (namespace, name), route in sorted(self._source.informer(HTTP_ROUTE).cache.items()):
            if (namespace, name) not in routes and _has_ours(route, controller):
                routes[(namespace, name)] = RouteStatus(f"{namespace}/{name}", ())
        for (namespace, name), desired in sorted(routes.items()):
            targets.append(
                (
                    HTTP_ROUTE,
                    namespace,
                    name,
                    partial(_route_target, desired, controller),
                )
            )
        return targets

    async def _pass(self) -> None:
        while True:
            self._again = False
            resolution = self._source.resolution
            if resolution is None:
                return
            now = rfc3339(self._now())
            unchanged = 0
            for kind, namespace, name, desired in self._targets(resolution):
                if not self._leading:
                    return
                if await self._update(kind, namespace, name, desired, now):
                    unchanged = 0
                    continue
                unchanged += 1
                if unchanged % _CHECKS_PER_TURN == 0:
                    # Thousands of up-to-date objects are compared without
                    # a single request: let the reactor serve traffic.
                    await deferLater(self._reactor, 0, lambda: None)
            if not self._again:
                return

    def _current(self, kind: Kind, namespace: str | None, name: str) -> JSON | None:
        """
        The newest version of an object this writer knows: the informer's,
        unless a request of ours since returned a newer one (or found it
        deleted) and the informer still holds the version that preceded.
        """
        cached = self._source.informer(kind).get(namespace, name)
        key = (kind.plural, namespace or "", name)
        known = self._known.get(key)
        if known is not None:
            replaced, obj = known
            if cached is not None and _rv(cached) == replaced:
                return obj
            # The watch has delivered our write, the deletion, or something newer.
            del self._known[key]
        return cached

    def _learn(self, kind: Kind, namespace: str | None, name: str, obj: JSON | None) -> None:
        """Remember ``obj`` (``None``: deleted) as newer than the informer's copy."""
        cached = self._source.informer(kind).get(namespace, name)
        if cached is not None:
            self._known[(kind.plural, namespace or "", name)] = (_rv(cached), obj)

    async def _request(self, d: Deferred[Any]) -> Any:
        """Await one API call so that losing leadership can cancel it."""
        self._in_flight = d
        try:
            return await d
        finally:
            self._in_flight = None

    async def _update(
        self,
        kind: Kind,
        namespace: str | None,
        name: str,
        desired: Callable[[Mapping[str, Any], str], JSON],
        now: str,
    ) -> bool:
        """Write one object's status if it differs; whether a request was made."""
        current = self._current(kind, namespace, name)
        if current is None:
            return False
        status = desired(current, now)
        if status == _status(current):
            return False
        updated = dict(current)
        updated["status"] = status
        assert self._client is not None
        where = f"{namespace}/{name}" if namespace else name
        try:
            result = await self._request(self._client.update_status(kind, updated))
        except CancelledError:
            return True
        except NotFound:
            # Deleted meanwhile: nothing to write, until the informer says otherwise.
            self._learn(kind, namespace, name, None)
            return True
        except Conflict:
            # Changed meanwhile: fetch the fresh object (the watch may lag)
            # and write over it shortly after.
            self.conflicts += 1
            await self._refresh(kind, namespace, name)
            if self._leading and (self._retry is None or not self._retry.active()):
                self._retry = self._reactor.callLater(self._conflict_retry, self._retry_now)
            return True
        except Exception as e:  # noqa: BLE001 - logged; the next pass repairs it
            self._log.warn(
                "Could not write the status of {kind} {name}: {error}",
                kind=kind.kind,
                name=where,
                error=f"{type(e).__name__}: {e}",
            )
            return True
        self.updates += 1
        if isinstance(result, dict):
            self._learn(kind, namespace, name, result)
        return True

    async def _refresh(self, kind: Kind, namespace: str | None, name: str) -> None:
        assert self._client is not None
        try:
            fresh = await self._request(self._client.get(kind, namespace, name))
        except NotFound:
            self._learn(kind, namespace, name, None)
        except Exception:  # noqa: BLE001 - cancelled or failed: the informer's copy serves
            return
        else:
            if isinstance(fresh, dict):
                self._learn(kind, namespace, name, fresh)

    def idle(self) -> Deferred[None]:
        """Fires once no pass is running (for tests and shutdown)."""
        running = self._running_pass
        if running is None or running.called:
            return succeed(None)
        d: Deferred[None] = Deferred()

        def done(result: object) -> object:
            d.callback(None)
            return result

        running.addBoth(done)
        return d

    def _retry_now(self) -> None:
        self._retry = None
        self.sync()
