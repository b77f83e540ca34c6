"""
The Kubernetes Ingress source: informers → decoding → store.

One :class:`~gateway.sources.kubernetes.Informer` per kind the decoder
reads (Ingress, IngressClass, Service, ``kubernetes.io/tls`` Secrets and, in
endpoints mode, EndpointSlices) keeps a local cache current. Any change
schedules one decoding of the whole cache a few milliseconds later (a
burst of watch events, or a relist, becomes one decoding), whose objects
and problems replace everything the source holds in the store; the
reconciler then coalesces and swaps as for every source.

* **Readiness**: nothing is published before every informer has delivered
  its first complete list, so the first generation never holds half of
  the Ingresses, or Ingresses without their Services. Until then the
  source is listed in ``Health.waiting`` (``/readyz`` says so). When the
  API server cannot be reached at start and the gateway has other
  sources, :meth:`IngressSource.when_synced` fires after the first failed
  attempt so those are served meanwhile, but the gateway stays not-ready
  until the Ingresses are live. Later outages keep the last configuration:
  informers retry with backoff and the store is only ever replaced by a
  complete decoding.
* **Secrets**: only those a served Ingress references are held: the
  informer lists ``type=kubernetes.io/tls`` Secrets but keeps only the
  referenced ones; a newly referenced Secret is fetched. Secret data is
  never logged.
* **Problems** go to the store with the objects; translation reports them
  in ``GatewayConfig.problems`` (the reconciler logs each once, ``/config``
  lists them). Writing back to the cluster (``status.loadBalancer``, and
  ``InvalidIngress`` / ``RouteShadowed`` Events) is not this source's job:
  :class:`gateway.status.IngressStatusWriter` does it after each swap,
  from what this source exposes (:meth:`IngressSource.when_started`, its
  client, informers and leadership), on the replica holding the Lease
  elected here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from twisted.application.internet import backoffPolicy
from twisted.application.service import MultiService
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from gateway.model import Store
from gateway.ready import OneShot

from ..kubernetes import (
    ENDPOINT_SLICE,
    INGRESS,
    INGRESS_CLASS,
    SECRET,
    SERVICE,
    TLS_SECRET_FIELD_SELECTOR,
    Informer,
    KubeClient,
    LeaderElection,
    Leadership,
    connect,
    list_failure,
    replica_identity,
)
from ._decode import (
    SOURCE,
    IngressDecoding,
    IngressInputs,
    IngressMemo,
    IngressSettings,
    decode_ingresses,
)

__all__ = ["SECRET_FIELD_SELECTOR", "WAITING", "IngressSource", "replica_identity"]

JSON = dict[str, Any]

#: Only TLS Secrets are ever listed.
SECRET_FIELD_SELECTOR = TLS_SECRET_FIELD_SELECTOR
#: The name this source uses in ``Health.waiting``.
WAITING = "kubernetes ingress"


def _key(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


class IngressSource(MultiService):
    """
    Serves the Ingress objects of our class (see the module docstring).

    :ivar translation: the last published decoding (``None`` before); the
        name is kept for the metrics collector, which reads it.
    :ivar translations: how many decodings ran (for tests and metrics).
    :ivar client: the API client, once credentials are loaded.
    :ivar informers: the informers by role (``ingresses``, ``services``,
        ...), once the client is there; their caches are what a status
        writer reads the Ingresses from.
    :ivar election: the Lease election of the replica that writes status
        and Events (``None`` without one, or before start).
    :ivar identity: this replica's name in the election and in Events.
    """

    _log = Logger()

    def __init__(
        self,
        store: Store,
        *,
        reactor: Any,
        settings: IngressSettings,
        namespace: str | None,
        config_path: str | None = None,
        client: KubeClient | None = None,
        health: Any = None,
        require_configuration: bool = True,
        publish_service: str | None = None,
        publish_addresses: tuple[str, ...] = (),
        election_id: str | None = "apimgw-leader",
        identity: str | None = None,
        environ: Mapping[str, str] = os.environ,
        coalesce: float = 0.01,
        lease_timing: tuple[float, float, float] = (15.0, 10.0, 2.0),
    ) -> None:
        """
        :param namespace: the namespace watched; ``None``: all.
        :param config_path: ``k8s.ingress.config.path``; else in-cluster or
            ``KUBECONFIG``.
        :param client: an API client to use instead of loading credentials
            (tests; the source then does not close it).
        :param health: the gateway's :class:`Health`, to hold readiness
            until the Ingresses are live.
        :param require_configuration: ``True`` when this is the gateway's
            only source: :meth:`when_synced` waits for the first
            decoding. ``False``: it also fires after the first failed
            attempt to reach the API server.
        :param publish_service: ``namespace/name`` of the gateway's Service
            whose address goes into the Ingresses' status; kept for the
            status writer (:attr:`publish_service`), unused here.
        :param publish_addresses: fixed addresses for the status instead.
        :param election_id: the Lease electing the replica that writes
            status and Events; ``None``: no election, this replica writes.
        :param lease_timing: lease duration, renew deadline, retry period.
        """
        super().__init__()
        if settings.backend_mode not in ("service", "endpoints"):
            raise ValueError(f"backend mode must be service or endpoints, not {settings.backend_mode!r}")
        self._store = store
        self._reactor: IReactorTime = reactor
        self.settings = settings
        self.namespace = namespace
        self._config_path = config_path
        self.client = client
        self._own_client = client is None
        self._health = health
        self._require_configuration = require_configuration
        self.publish_service = publish_service
        self.publish_addresses = publish_addresses
        self._election_id = election_id
        self.identity = identity or replica_identity(environ)
        self._environ = environ
        self._coalesce = coalesce
        self._backoff = backoffPolicy(initialDelay=1.0, maxDelay=60.0, factor=2.0)
        self._leadership = Leadership(
            label="Kubernetes Ingress source",
            what="Ingress status and events",
            identity=self.identity,
            reactor=reactor,
            election_id=election_id,
            lease_timing=lease_timing,
            environ=environ,
        )

        self.informers: dict[str, Informer] = {}
        self.translation: IngressDecoding | None = None
        self._memo = IngressMemo()
        self.translations = 0
        #: Secrets referenced by served Ingresses; ``None`` until the first
        #: decoding (the first list keeps every TLS Secret, so starting
        #: up needs no GET per Secret; the unreferenced ones go right after).
        self._referenced: set[str] | None = None
        #: Secrets being fetched (``ns/name``).
        self._fetching: set[str] = set()
        self._pending: IDelayedCall | None = None
        self._synced = False
        #: Fires when the first decoding is in the store, or (without
        #: ``require_configuration``) after the first failed attempt.
        self._released: OneShot[None] = OneShot()
        #: Fires with the client once the informers and the election exist.
        self._started: OneShot[KubeClient] = OneShot()
        self._starting: Deferred[Any] | None = None
        if health is not None:
            health.waiting[WAITING] = "first list of the Kubernetes objects"

    def __repr__(self) -> str:
        return f"<IngressSource class={self.settings.ingress_class} namespace={self.namespace or '*'}>"

    # -- lifecycle -------------------------------------------------------

    def when_synced(self) -> Deferred[None]:
        """
        Fires once the first decoding is in the store or, without
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

    def startService(self) -> None:
        super().startService()
        if self.client is not None:
            self._start(self.client)
            return
        self._starting = Deferred.fromCoroutine(self._load_credentials())
        # Cancelled by stopService while waiting to retry: nothing to report.
        self._starting.addErrback(lambda f: f.trap(CancelledError))

    async def _load_credentials(self) -> None:
        client = await connect(
            self._reactor,
            self._config_path,
            self._environ,
            label="Kubernetes Ingress source",
            running=lambda: bool(self.running),
            backoff=self._backoff,
            failed=self._first_attempt_failed,
        )
        if client is not None:
            self.client = client
            self._start(client)

    def _start(self, client: KubeClient) -> None:
        namespace = self.namespace
        common: dict[str, Any] = {"reactor": self._reactor}
        kinds: list[tuple[str, Any, dict[str, Any]]] = [
            ("ingress_classes", INGRESS_CLASS, {}),
            ("ingresses", INGRESS, {"namespace": namespace}),
            ("services", SERVICE, {"namespace": namespace}),
            (
                "secrets",
                SECRET,
                {
                    "namespace": namespace,
                    "field_selector": SECRET_FIELD_SELECTOR,
                    "keep": self._keep_secret,
                },
            ),
        ]
        if self.settings.backend_mode == "endpoints":
            kinds.append(
                (
                    "endpoint_slices",
                    ENDPOINT_SLICE,
                    {"namespace": namespace, "label_selector": "kubernetes.io/service-name"},
                )
            )
        for name, kind, extra in kinds:
            informer = Informer(
                client,
                kind,
                on_upsert=self._changed,
                on_delete=self._changed,
                on_synced=self._informer_synced,
                on_failure=partial(self._informer_failed_for, name),
                **common,
                **extra,
            )
            self.informers[name] = informer
            informer.setServiceParent(self)
        self._leadership.start(self, client, self.namespace)
        self._started.fire(client)

    def stopService(self) -> Deferred[None]:  # type: ignore[override]
        if self._pending is not None and self._pending.active():
            self._pending.cancel()
        self._pending = None
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
        """Whether this replica writes status and Events (no election: always)."""
        return self._leadership.leading

    @property
    def election(self) -> LeaderElection | None:
        """The status writers' election, once started (``None`` without one)."""
        return self._leadership.election

    # -- changes ---------------------------------------------------------

    def _informer_synced(self) -> None:
        self._changed(None)

    def _informer_failed_for(self, name: str, error: Exception) -> None:
        self._informer_failed(self.informers[name], error)

    def _informer_failed(self, informer: Informer, error: Exception) -> None:
        if not self._synced:
            self._first_attempt_failed(list_failure(informer.kind.plural, error))

    def _first_attempt_failed(self, why: str) -> None:
        if self._health is not None and not self._synced:
            self._health.waiting[WAITING] = why
        if self._require_configuration or self._released.done or self._synced:
            return
        self._log.warn(
            "Kubernetes Ingress source: {why}; the gateway serves its other sources meanwhile "
            "and stays not-ready until the Ingresses are live",
            why=why,
        )
        self._released.fire(None)

    def _changed(self, obj: Any) -> None:
        """Any change: decode soon (one decoding per burst)."""
        if self._pending is None or not self._pending.active():
            self._pending = self._reactor.callLater(self._coalesce, self._decode)

    def _all_synced(self) -> bool:
        return bool(self.informers) and all(i.synced for i in self.informers.values())

    def _decode(self) -> None:
        self._pending = None
        if not self._all_synced():
            return
        informers = self.informers
        inputs = IngressInputs(
            ingresses=tuple(informers["ingresses"].cache.values()),
            ingress_classes=tuple(informers["ingress_classes"].cache.values()),
            services=tuple(informers["services"].cache.values()),
            secrets=tuple(informers["secrets"].cache.values()),
            endpoint_slices=(
                tuple(informers["endpoint_slices"].cache.values())
                if "endpoint_slices" in informers
                else ()
            ),
            settings=self.settings,
        )
        result = decode_ingresses(inputs, self._memo)
        self.translations += 1
        if self._update_secrets(result.secrets):
            # A newly referenced Secret is being fetched: publishing now
            # would report it missing and serve its hosts without their
            # certificate for a moment. The fetch's answer decodes again.
            return
        self.translation = result
        self._store.replace_source(SOURCE, result.objects, result.problems)
        if not self._synced:
            self._synced = True
            if self._health is not None:
                self._health.waiting.pop(WAITING, None)
            self._log.info(
                "Kubernetes Ingress source: {count} Ingresses of class {cls} served "
                "(namespace {namespace})",
                count=len(result.served),
                cls=self.settings.ingress_class,
                namespace=self.namespace or "(all)",
            )
            self._released.fire(None)

    def _keep_secret(self, secret: JSON) -> bool:
        return self._referenced is None or _key(secret) in self._referenced

    def _update_secrets(self, referenced: tuple[str, ...]) -> bool:
        """
        Keep only the referenced Secrets; fetch newly referenced ones.
        Whether fetches are in progress (the decoding then waits).
        """
        wanted = set(referenced)
        if wanted != self._referenced:
            added = wanted - (self._referenced or set())
            self._referenced = wanted
            informer = self.informers["secrets"]
            for key in [k for k in informer.cache if f"{k[0]}/{k[1]}" not in wanted]:
                informer.forget(key)
            for key in sorted(added):
                namespace, _, name = key.partition("/")
                if informer.get(namespace, name) is None and key not in self._fetching:
                    self._fetching.add(key)
                    informer.fetch(namespace, name).addBoth(self._fetched, key)
        return bool(self._fetching & wanted)

    def _fetched(self, _: object, key: str) -> None:
        """A fetch ended (found, missing or failed): decode with what we have."""
        self._fetching.discard(key)
        self._changed(None)
