"""
The Gateway API source: informers → :func:`resolve` → store, the third
live source beside Ingress and the configuration service.

One :class:`~gateway.sources.kubernetes.Informer` per kind the resolver
reads: GatewayClass and Namespace (cluster-scoped), Gateway, HTTPRoute,
ReferenceGrant, Service and ``kubernetes.io/tls`` Secret (in the watched
namespace, or all). Any change schedules one resolution of the whole
cache a few milliseconds later (a burst of watch events, or a relist,
becomes one), whose route bodies (one
:class:`~gateway.model.GatewayRoutes` per Gateway), certificates and
problems replace everything this source holds in the store. The same shape as
:class:`~gateway.sources.ingress.IngressSource`, whose habits it keeps:

* **Readiness**: nothing is published before every informer has
  delivered its first complete list; until then the source is listed in
  ``Health.waiting``. Beside other sources, :meth:`when_synced` also
  fires after the first failed attempt to reach the API server, so those
  are served meanwhile.
* **Outages** keep the last configuration: the informers keep their
  caches and retry (relisting after ``410``), and the store is only ever
  replaced by a complete resolution.
* **Secrets**: only those an HTTPS listener of one of our Gateways names
  are held (:func:`._publish.referenced_secrets`); a newly named one is
  fetched, and the resolution that needs it waits for the fetch, but only
  for a short while (``secret_grace``): a slow or failing fetch must not
  hold back every other Gateway's changes. Past that, the resolution is
  published with that listener reporting the missing Secret, and again
  when the fetch lands. A fetch that fails with anything but ``404`` is
  retried with backoff (1 s doubling to 30 s) for as long as a listener
  names the Secret; a missing one arrives by the watch once created.
  Secret data is never logged.
* **Status** is not written here: a status writer reads the last
  :attr:`~GatewayApiSource.resolution` (or listens for new ones), the
  informers' current objects, and whether this replica holds the Lease
  elected here (its own Lease, not the Ingress source's: either source
  runs without the other).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from twisted.application.internet import backoffPolicy
from twisted.application.service import MultiService
from twisted.internet.base import DelayedCall
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import deferLater
from twisted.logger import Logger

from gateway.model import Store
from gateway.ready import OneShot

from ..kubernetes import (
    GATEWAY,
    GATEWAY_CLASS,
    HTTP_ROUTE,
    NAMESPACE,
    REFERENCE_GRANT,
    SECRET,
    SERVICE,
    TLS_SECRET_FIELD_SELECTOR,
    Informer,
    Kind,
    KubeClient,
    LeaderElection,
    Leadership,
    NotFound,
    connect,
    list_failure,
    replica_identity,
)
from ._bodies import BodiesMemo
from ._listeners import SecretChecks
from ._publish import (
    SOURCE,
    certificates,
    keyed,
    ours,
    referenced_secrets,
    resolution_problems,
    route_objects,
)
from ._resolve import GatewayApiInputs, GatewayApiSettings, resolve
from ._routes import RulesMemo
from ._types import Resolution

__all__ = ["DEFAULT_ELECTION_ID", "WAITING", "GatewayApiSource"]

JSON = dict[str, Any]

#: The name this source uses in ``Health.waiting``.
WAITING = "kubernetes gateway api"
#: The Lease electing the replica that writes Gateway API status.
DEFAULT_ELECTION_ID = "apimgw-gateway-api"

#: What the resolver reads, by the field of :class:`GatewayApiInputs`.
#: A failed Secret fetch is retried after 1 s, doubling up to this.
_FETCH_MAX_DELAY = 30.0

#: The watched kinds that have a ``status`` the Lease holder writes.
_STATUS_KINDS = frozenset({"gateway_classes", "gateways", "http_routes"})

_KINDS: tuple[tuple[str, Kind], ...] = (
    ("gateway_classes", GATEWAY_CLASS),
    ("gateways", GATEWAY),
    ("http_routes", HTTP_ROUTE),
    ("reference_grants", REFERENCE_GRANT),
    ("services", SERVICE),
    ("secrets", SECRET),
    ("namespaces", NAMESPACE),
)


class GatewayApiSource(MultiService):
    """
    Serves the Gateways of our GatewayClasses and the HTTPRoutes attached
    to them (see the module docstring).

    :ivar resolution: the last published resolution (``None`` before).
    :ivar resolutions: how many resolutions ran (tests, metrics).
    :ivar client: the API client, once credentials are loaded.
    :ivar informers: the informers by :class:`GatewayApiInputs` field
        (``gateways``, ``http_routes``, ...), once the client is there.
    :ivar election: the Lease election of the replica that writes status
        (``None`` without one, or before start).
    :ivar identity: this replica's name in the election.
    """

    _log = Logger()

    def __init__(
        self,
        store: Store,
        *,
        reactor: Any,
        controller_name: str,
        namespace: str | None,
        dns_suffix: str = "svc.cluster.local",
        config_path: str | None = None,
        client: KubeClient | None = None,
        health: Any = None,
        require_configuration: bool = True,
        election_id: str | None = DEFAULT_ELECTION_ID,
        identity: str | None = None,
        environ: Mapping[str, str] = os.environ,
        coalesce: float = 0.01,
        lease_timing: tuple[float, float, float] = (15.0, 10.0, 2.0),
        allow_external_name: bool = False,
        http_port: int = 80,
        https_port: int = 443,
        secret_grace: float = 0.5,
    ) -> None:
        """
        :param controller_name: ``k8s.gateway.controller``: the
            GatewayClasses whose ``spec.controllerName`` this is are ours.
        :param namespace: the namespace watched; ``None``: all.
        :param config_path: a kubeconfig; else in-cluster or ``KUBECONFIG``.
        :param client: an API client to use instead of loading credentials
            (tests; the source then does not close it).
        :param health: the gateway's :class:`Health`, to hold readiness
            until the Gateway API objects are live.
        :param require_configuration: ``True`` when this is the gateway's
            only source: :meth:`when_synced` waits for the first
            resolution. ``False``: it also fires after the first failed
            attempt to reach the API server.
        :param election_id: the Lease electing the replica that writes
            status; ``None``: no election, this replica writes.
        :param lease_timing: lease duration, renew deadline, retry period.
        :param allow_external_name: ``k8s.gateway.allow-external-name``:
            serve backendRefs to ``ExternalName`` Services (off by default:
            a tenant could name localhost or a metadata endpoint).
        :param http_port: ``k8s.gateway.http-port``, the port clients reach
            the gateway's HTTP on (its Service's): listeners on another
            port are ``PortUnavailable``; ``https_port`` likewise.
        :param secret_grace: how long a resolution waits for the fetch of
            a newly named Secret before it is published without it.
        """
        super().__init__()
        self._store = store
        #: ``IReactorTime`` (typed ``Any``: the interface's methods do not type-check).
        self._reactor: Any = reactor
        self.controller_name = controller_name
        self.settings = GatewayApiSettings(
            controller_name=controller_name,
            dns_suffix=dns_suffix,
            allow_external_name=allow_external_name,
            http_port=http_port,
            https_port=https_port,
        )
        self.namespace = namespace
        self._config_path = config_path
        self.client = client
        self._own_client = client is None
        self._health = health
        self._require_configuration = require_configuration
        self._election_id = election_id
        self.identity = identity or replica_identity(environ)
        self._environ = environ
        self._coalesce = coalesce
        self._backoff = backoffPolicy(initialDelay=1.0, maxDelay=60.0, factor=2.0)
        self._leadership = Leadership(
            label="Gateway API source",
            what="Gateway API status",
            identity=self.identity,
            reactor=reactor,
            election_id=election_id,
            lease_timing=lease_timing,
            environ=environ,
        )

        self.informers: dict[str, Informer] = {}
        self.resolution: Resolution | None = None
        self.resolutions = 0
        #: Secrets our listeners name; ``None`` until the first resolution
        #: (the first list keeps every TLS Secret, so starting up needs no
        #: GET per Secret; the others are dropped right after).
        self._referenced: set[str] | None = None
        #: Secret ``namespace/name`` → when its fetch started, and the fetch.
        self._fetching: dict[str, tuple[float, Deferred[None]]] = {}
        self._secret_grace = secret_grace
        self._grace_call: DelayedCall | None = None
        self._pending: DelayedCall | None = None
        #: The spec version last seen of each object with a status
        #: (see :meth:`_upserted`).
        self._seen: dict[tuple[str, str, str], tuple[Any, ...]] = {}
        self._rules_memo = RulesMemo()
        self._secret_checks = SecretChecks()
        self._bodies_memo = BodiesMemo()
        self._synced = False
        self._released: OneShot[None] = OneShot()
        self._started: OneShot[KubeClient] = OneShot()
        self._resolution_listeners: list[Callable[[Resolution], None]] = []
        self._starting: Deferred[Any] | None = None
        if health is not None:
            health.waiting[WAITING] = "first list of the Gateway API objects"

    def __repr__(self) -> str:
        return f"<GatewayApiSource controller={self.controller_name} namespace={self.namespace or '*'}>"

    # -- lifecycle -------------------------------------------------------

    def when_synced(self) -> Deferred[None]:
        """
        Fires once the first resolution is in the store or, without
        ``require_configuration``, once the first attempt to reach the
        API server failed.
        """
        return self._released.when()

    def when_started(self) -> Deferred[KubeClient]:
        """
        Fires with the API client once the credentials are loaded and the
        informers and the election exist (a status writer starts then).
        """
        return self._started.when()

    def informer(self, kind: Kind) -> Informer:
        """
        The informer of ``kind`` (``GATEWAY_CLASS``, ``GATEWAY``,
        ``HTTP_ROUTE``, ...): its cache holds the current objects, with
        their ``resourceVersion`` and ``status``.

        :raises KeyError: not started yet, or a kind this source does not watch.
        """
        for name, watched in _KINDS:
            if watched == kind:
                return self.informers[name]
        raise KeyError(f"{kind} is not watched by the Gateway API source")

    def startService(self) -> None:
        super().startService()
        if self.client is not None:
            self._start(self.client)
            return
        self._starting = Deferred.fromCoroutine(self._load_credentials())
        self._starting.addErrback(lambda f: f.trap(CancelledError))

    async def _load_credentials(self) -> None:
        client = await connect(
            self._reactor,
            self._config_path,
            self._environ,
            label="Gateway API source",
            running=lambda: bool(self.running),
            backoff=self._backoff,
            failed=self._first_attempt_failed,
        )
        if client is not None:
            self.client = client
            self._start(client)

    def _watch_options(self, kind: Kind) -> dict[str, Any]:
        """Where and what an informer of ``kind`` lists."""
        namespace = self.namespace
        if kind == NAMESPACE:
            # Only for allowedRoutes selectors: with one namespace watched,
            # no route comes from another (RBAC may name just that one).
            return {"field_selector": f"metadata.name={namespace}"} if namespace else {}
        if not kind.namespaced:
            return {}
        if kind == SECRET:
            return {
                "namespace": namespace,
                "field_selector": TLS_SECRET_FIELD_SELECTOR,
                "keep": self._keep_secret,
            }
        return {"namespace": namespace}

    def _start(self, client: KubeClient) -> None:
        for name, kind in _KINDS:
            informer = Informer(
                client,
                kind,
                reactor=self._reactor,
                on_upsert=partial(self._upserted, name),
                on_delete=partial(self._deleted, name),
                on_synced=self._informer_synced,
                on_failure=partial(self._informer_failed_for, name),
                **self._watch_options(kind),
            )
            self.informers[name] = informer
            informer.setServiceParent(self)
        self._leadership.start(self, client, self.namespace)
        self._started.fire(client)

    def stopService(self) -> Deferred[None]:  # type: ignore[override]
        for call in (self._pending, self._grace_call):
            if call is not None and call.active():
                call.cancel()
        self._pending = self._grace_call = None
        for _, fetch in list(self._fetching.values()):
            fetch.cancel()
        self._fetching.clear()
        if self._starting is not None and not self._starting.called:
            self._starting.cancel()
        d = super().stopService()
        if self.client is not None and self._own_client:
            client = self.client
            d.addBoth(lambda result: client.close().addBoth(lambda _: result))
        return d

    # -- leadership ------------------------------------------------------

    def add_leadership_listener(self, listener: Callable[[bool], None]) -> None:
        """
        Call ``listener(True)`` when this replica starts leading and
        ``listener(False)`` when it stops; called at once with the current
        state when the source has started (the listener may come late).
        """
        self._leadership.add_listener(listener)

    @property
    def leading(self) -> bool:
        """Whether this replica writes status (no election: always)."""
        return self._leadership.leading

    @property
    def election(self) -> LeaderElection | None:
        """The status writer's election, once started (``None`` without one)."""
        return self._leadership.election

    def _tell_resolution(self, resolution: Resolution) -> None:
        for listener in list(self._resolution_listeners):
            try:
                listener(resolution)
            except Exception:  # noqa: BLE001 (one listener never stops the others)
                self._log.failure("Gateway API source: a resolution listener raised")

    def add_resolution_listener(self, listener: Callable[[Resolution], None]) -> None:
        """
        Call ``listener(resolution)`` after each resolution is pushed to
        the store (also when it equals the previous one: the objects it
        was resolved from, and so their status, may have changed). Not
        called for what was published before the listener was added:
        read :attr:`resolution` for that.
        """
        self._resolution_listeners.append(listener)

    # -- changes ---------------------------------------------------------

    def _informer_synced(self) -> None:
        self._changed(None)

    def _informer_failed_for(self, name: str, error: Exception) -> None:
        if not self._synced:
            self._first_attempt_failed(list_failure(self.informers[name].kind.plural, error))

    def _first_attempt_failed(self, why: str) -> None:
        if self._health is not None and not self._synced:
            self._health.waiting[WAITING] = why
        if self._require_configuration or self._released.done or self._synced:
            return
        self._log.warn(
            "Gateway API source: {why}; the gateway serves its other sources meanwhile and "
            "stays not-ready until the Gateway API objects are live",
            why=why,
        )
        self._released.fire(None)

    def _upserted(self, name: str, obj: JSON) -> None:
        """
        A new or changed object: resolve soon, unless it is a GatewayClass,
        Gateway or HTTPRoute whose spec did not change (same
        ``metadata.generation``, which the API server raises on every spec
        change of these kinds; labels and annotations are not read). Those
        are status writes, ours above all: resolving again for each would
        cost a whole resolution per status the Lease holder writes, and
        delay the next change being served.
        """
        if name in _STATUS_KINDS:
            meta = obj.get("metadata") or {}
            key = (name, meta.get("namespace", ""), meta.get("name", ""))
            version = (meta.get("uid"), meta.get("generation"), meta.get("deletionTimestamp"))
            if version[1] is not None and self._seen.get(key) == version:
                return
            self._seen[key] = version
        self._changed(obj)

    def _deleted(self, name: str, obj: JSON) -> None:
        meta = obj.get("metadata") or {}
        self._seen.pop((name, meta.get("namespace", ""), meta.get("name", "")), None)
        self._changed(obj)

    def _changed(self, obj: Any) -> None:
        """Any change: resolve soon (one resolution per burst)."""
        if self._pending is None or not self._pending.active():
            self._pending = self._reactor.callLater(self._coalesce, self._resolve)

    def _all_synced(self) -> bool:
        return bool(self.informers) and all(i.synced for i in self.informers.values())

    def _cached(self, name: str) -> tuple[JSON, ...]:
        return tuple(self.informers[name].cache.values())

    def _resolve(self) -> None:
        self._pending = None
        if not self._all_synced():
            return
        inputs = GatewayApiInputs(
            gateway_classes=self._cached("gateway_classes"),
            gateways=self._cached("gateways"),
            http_routes=self._cached("http_routes"),
            reference_grants=self._cached("reference_grants"),
            services=self._cached("services"),
            secrets=self._cached("secrets"),
            namespaces=self._cached("namespaces"),
            settings=self.settings,
        )
        gateways = ours(inputs.gateway_classes, inputs.gateways, self.controller_name)
        if self._hold_for_secrets(referenced_secrets(gateways)):
            # A newly named Secret is being fetched: publishing now would
            # take its listener down for a moment. The fetch, or the end
            # of the grace period, resolves again.
            return
        resolution = resolve(inputs, self._rules_memo, self._secret_checks)
        self.resolutions += 1
        by_key = keyed(gateways)
        objects, problems = certificates(resolution, by_key, keyed(inputs.secrets))
        objects.extend(
            route_objects(resolution, by_key, keyed(inputs.http_routes), self._bodies_memo)
        )
        problems.extend(resolution_problems(resolution))
        self._store.replace_source(SOURCE, objects, problems)
        self.resolution = resolution
        if not self._synced:
            self._synced = True
            if self._health is not None:
                self._health.waiting.pop(WAITING, None)
            self._log.info(
                "Gateway API source: {gateways} Gateways of controller {controller} served "
                "(namespace {namespace})",
                gateways=len(resolution.gateways),
                controller=self.controller_name,
                namespace=self.namespace or "(all)",
            )
            self._released.fire(None)
        self._tell_resolution(resolution)

    def _keep_secret(self, secret: JSON) -> bool:
        meta = secret.get("metadata") or {}
        return self._referenced is None or (
            f"{meta.get('namespace', '')}/{meta.get('name', '')}" in self._referenced
        )

    def _hold_for_secrets(self, wanted: set[str]) -> bool:
        """
        Keep only the named Secrets and fetch newly named ones; whether
        the resolution should wait: a fetch of a named Secret started less
        than ``secret_grace`` ago (then a resolution is scheduled for the
        end of the grace period).
        """
        self._update_secrets(wanted)
        now = self._reactor.seconds()
        started = [since for secret, (since, _) in self._fetching.items() if secret in wanted]
        recent = [since for since in started if since + self._secret_grace > now + 1e-6]
        if not recent:
            return False
        if self._grace_call is None or not self._grace_call.active():
            self._grace_call = self._reactor.callLater(
                min(recent) + self._secret_grace - now, self._changed, None
            )
        return True

    def _update_secrets(self, wanted: set[str]) -> None:
        """Keep only the named Secrets; fetch newly named ones; stop fetching unnamed ones."""
        if wanted == self._referenced:
            return
        added = wanted - (self._referenced or set())
        self._referenced = wanted
        informer = self.informers["secrets"]
        for cached in [k for k in informer.cache if f"{k[0]}/{k[1]}" not in wanted]:
            informer.forget(cached)
        for secret in [s for s in self._fetching if s not in wanted]:
            _, fetch = self._fetching.pop(secret)
            fetch.cancel()
        for secret in sorted(added):
            namespace, _, name = secret.partition("/")
            if self.namespace is not None and namespace != self.namespace:
                # Outside the watched namespace: neither listed nor
                # fetched (RBAC would refuse); the listener reports it.
                continue
            if informer.get(namespace, name) is None and secret not in self._fetching:
                fetch = Deferred.fromCoroutine(self._fetch_secret(informer, secret))
                fetch.addErrback(lambda f: f.trap(CancelledError))
                if fetch.called:  # done at once (a synchronous client: tests)
                    continue
                self._fetching[secret] = (self._reactor.seconds(), fetch)

    async def _fetch_secret(self, informer: Informer, secret: str) -> None:
        """
        GET one newly named Secret into the informer's cache, retrying
        failures other than ``404`` with backoff while it stays named; a
        watch event that brought it in first (at least as new) wins. Then
        resolve again with what we have (found, missing or given up).
        Cancelled (no longer named, or stopping): whoever cancelled it
        already forgot it.
        """
        client = self.client
        assert client is not None
        namespace, _, name = secret.partition("/")
        attempt = 0
        try:
            while self.running and self._referenced is not None and secret in self._referenced:
                try:
                    obj = await client.get(SECRET, namespace, name)
                except NotFound:
                    break  # the watch brings it once it is created
                except CancelledError:
                    raise
                except Exception as e:  # noqa: BLE001 (any failure: retried, and said)
                    delay = min(_FETCH_MAX_DELAY, 2.0**attempt)
                    attempt += 1
                    self._log.warn(
                        "Gateway API source: cannot fetch Secret {secret} ({error}); "
                        "retrying in {delay:.0f} s",
                        secret=secret,
                        error=f"{type(e).__name__}: {e}",
                        delay=delay,
                    )
                    await deferLater(self._reactor, delay, lambda: None)
                    continue
                key = (namespace, name)
                if key not in informer.cache and self._keep_secret(obj):
                    informer.cache[key] = obj
                break
        except CancelledError:
            return
        self._fetching.pop(secret, None)
        if self.running:
            self._changed(None)
