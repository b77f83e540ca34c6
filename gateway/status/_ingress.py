"""
What the gateway writes back about the Ingresses it serves, after each
generation swap, from the replica holding the Lease only (every replica
would otherwise write the same status and Events and fight over
``resourceVersion``):

* ``status.loadBalancer.ingress``: the gateway's address, so
  ``kubectl get ingress`` shows an ADDRESS and tools such as external-dns
  find it (:class:`StatusPublisher`). The address comes from

  * ``k8s.ingress.publish-address``: fixed addresses (IPs become ``ip``
    entries, anything else ``hostname``), or
  * ``k8s.ingress.publish-service`` (``namespace/name``): the gateway's own
    Service, watched: its ``status.loadBalancer.ingress``, else its
    ``spec.externalIPs``, else its ``clusterIP`` (as ingress-nginx does).

  With neither, no status is written. A pass compares each served
  Ingress's status with the address and updates only those that differ,
  one request at a time; a conflict (the Ingress changed meanwhile) is
  retried shortly, and a periodic pass repairs anything else (an operator
  who edited the status by hand). Ingresses that stop being ours keep
  their last status: the new owner's controller overwrites it.
* Warning Events: ``InvalidIngress`` for each problem of an Ingress in the
  generation's ``config.problems`` (found by the decoder or by
  translation), ``RouteShadowed`` for each of its routes in
  ``config.shadowed`` (another source's newer object won "last one wins").
  Each is written once while it lasts; a new leader writes the current
  ones again, since the previous leader may not have.

:class:`IngressStatusWriter` is the :class:`~gateway.status.StatusWriter`
doing both, built from what the :class:`~gateway.sources.ingress.IngressSource`
exposes: its client, its informer of Ingresses, its leadership.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from gateway.model import ObjectRef
from gateway.routing import Generation
from gateway.sources.ingress import SOURCE, IngressSource
from gateway.sources.kubernetes import (
    INGRESS,
    SERVICE,
    Conflict,
    EventRecorder,
    Informer,
    KubeClient,
    NotFound,
)

__all__ = ["IngressStatusWriter", "StatusPublisher", "address_entries", "service_addresses"]

JSON = dict[str, Any]
Address = dict[str, str]


def address_entries(addresses: tuple[str, ...]) -> list[Address]:
    """``publish-address`` values as ``loadBalancer.ingress`` entries."""
    entries = []
    for value in addresses:
        value = value.strip()
        if not value:
            continue
        try:
            ipaddress.ip_address(value)
        except ValueError:
            entries.append({"hostname": value})
        else:
            entries.append({"ip": value})
    return entries


def service_addresses(service: Mapping[str, Any] | None) -> list[Address]:
    """The address of the gateway's Service, as ``loadBalancer.ingress`` entries."""
    if service is None:
        return []
    balanced = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or ()
    entries = []
    for item in balanced:
        entry = {k: item[k] for k in ("ip", "hostname") if item.get(k)}
        if entry:
            entries.append(entry)
    if entries:
        return entries
    spec = service.get("spec") or {}
    external = spec.get("externalIPs") or ()
    if external:
        return address_entries(tuple(external))
    cluster_ip = spec.get("clusterIP")
    if cluster_ip and cluster_ip != "None":
        return [{"ip": cluster_ip}]
    return []


def _current(ingress: Mapping[str, Any]) -> list[Address]:
    return list(((ingress.get("status") or {}).get("loadBalancer") or {}).get("ingress") or ())


class StatusPublisher(MultiService):
    """
    Keeps ``status.loadBalancer.ingress`` of served Ingresses equal to the
    gateway's address while this replica leads.

    :ivar addresses: the entries written; ``None`` when there is nothing
        to publish (not configured, or the Service has no address yet).
    :ivar updates: status writes that succeeded (for tests and metrics).
    """

    _log = Logger()

    def __init__(
        self,
        client: KubeClient,
        *,
        reactor: Any,
        ingresses: Informer,
        served: Callable[[], tuple[str, ...]] = tuple,
        publish_service: str | None = None,
        publish_addresses: tuple[str, ...] = (),
        resync: float = 60.0,
        conflict_retry: float = 1.0,
    ) -> None:
        """
        :param ingresses: the informer whose cache holds the Ingresses.
        :param served: the ``ns/name`` of the Ingresses to write, read at
            each pass (the source's latest decoding).
        :param resync: seconds between periodic passes.
        :param conflict_retry: seconds before a pass after a write lost to
            a concurrent change (the informer then has the new version).
        """
        super().__init__()
        self._client = client
        self._reactor = reactor
        self._ingresses = ingresses
        self._served = served
        self._resync = resync
        self._conflict_retry = conflict_retry
        self._leading = False
        self._running_pass: Deferred[None] | None = None
        self._again = False
        self._timer: IDelayedCall | None = None
        self._retry: IDelayedCall | None = None
        self.updates = 0
        self.addresses: list[Address] | None = None
        self.service_informer: Informer | None = None
        if publish_addresses:
            self.addresses = address_entries(publish_addresses)
        elif publish_service:
            namespace, _, name = publish_service.partition("/")
            if not namespace or not name:
                raise ValueError(
                    f"k8s.ingress.publish-service must be namespace/name, not {publish_service!r}"
                )
            self.service_informer = Informer(
                client,
                SERVICE,
                reactor=reactor,
                namespace=namespace,
                field_selector=f"metadata.name={name}",
                on_upsert=self._service_changed,
                on_delete=lambda obj: self._service_changed(None),
            )
            self.service_informer.setServiceParent(self)

    def startService(self) -> None:
        super().startService()
        self._timer = self._reactor.callLater(self._resync, self._periodic)

    def stopService(self) -> Deferred[None]:  # type: ignore[override]
        for call in (self._timer, self._retry):
            if call is not None and call.active():
                call.cancel()
        self._timer = self._retry = None
        self._leading = False
        d = super().stopService()
        running = self._running_pass
        if running is not None and not running.called:
            return d.addBoth(lambda _: running)
        return d

    # -- inputs ----------------------------------------------------------

    def set_leading(self, leading: bool) -> None:
        """This replica gained or lost the Lease."""
        self._leading = leading
        if leading:
            self.sync()

    @property
    def leading(self) -> bool:
        """Whether this publisher writes (its replica holds the Lease)."""
        return self._leading

    def _service_changed(self, service: JSON | None) -> None:
        addresses = service_addresses(service)
        if addresses != self.addresses:
            self._log.info(
                "Ingress status address is now {addresses}",
                addresses=", ".join(e.get("ip") or e.get("hostname", "") for e in addresses)
                or "(none)",
            )
        self.addresses = addresses or None
        self.sync()

    def _periodic(self) -> None:
        self._timer = self._reactor.callLater(self._resync, self._periodic)
        self.sync()

    # -- writing ---------------------------------------------------------

    def sync(self) -> Deferred[None]:
        """Run a pass now, or right after the one in progress."""
        if not self._leading or self.addresses is None:
            return succeed(None)
        if self._running_pass is not None and not self._running_pass.called:
            self._again = True
            return self._running_pass
        self._running_pass = Deferred.fromCoroutine(self._pass())
        return self._running_pass

    async def _pass(self) -> None:
        while True:
            self._again = False
            for key in self._served():
                if not self._leading or self.addresses is None:
                    return
                await self._update(key, self.addresses)
            if not self._again:
                return

    async def _update(self, key: str, addresses: list[Address]) -> None:
        namespace, _, name = key.partition("/")
        ingress = self._ingresses.get(namespace, name)
        if ingress is None or _current(ingress) == addresses:
            return
        updated = dict(ingress)
        updated["status"] = {"loadBalancer": {"ingress": addresses}}
        try:
            await self._client.update_status(INGRESS, updated)
        except NotFound:
            # Deleted meanwhile: nothing to write.
            return
        except Conflict:
            # Changed meanwhile: the watch brings the new version into the
            # informer's cache; a pass shortly after writes over it.
            if self._retry is None or not self._retry.active():
                self._retry = self._reactor.callLater(self._conflict_retry, self.sync)
            return
        except Exception as e:
            self._log.warn(
                "Could not write the status of Ingress {ingress}: {error}",
                ingress=key,
                error=f"{type(e).__name__}: {e}",
            )
            return
        self.updates += 1


def _ingress_key(ref: ObjectRef) -> str | None:
    """
    The ``namespace/name`` of the Ingress an object of the Ingress source
    comes from: ``routes/<ns>/<name>`` or ``certificate/<ns>/<name>/<secret>``.
    """
    if ref.source != SOURCE:
        return None
    parts = ref.name.split("/")
    if len(parts) < 2:
        return None
    return f"{parts[0]}/{parts[1]}"


class IngressStatusWriter(MultiService):
    """
    The status writer of the Ingress source (see the module docstring).

    It starts writing once the source has its client and informers
    (:meth:`IngressSource.when_started`); generations that arrive before
    are kept, and the last one is written then.

    :ivar events: the Event recorder, once started.
    :ivar publisher: the address publisher, once started.
    """

    _log = Logger()

    def __init__(
        self,
        source: IngressSource,
        *,
        reactor: Any,
        publish_service: str | None = None,
        publish_addresses: tuple[str, ...] | None = None,
        resync: float = 60.0,
    ) -> None:
        """
        :param source: the Ingress source whose Ingresses this writes about.
        :param publish_service: ``namespace/name`` of the gateway's
            Service; by default the source's ``publish_service``.
        :param publish_addresses: fixed addresses instead; by default the
            source's ``publish_addresses``.
        :param resync: seconds between periodic status passes.
        """
        super().__init__()
        self.setName("ingress")
        self._source = source
        self._reactor = reactor
        self._publish_service = (
            source.publish_service if publish_service is None else publish_service
        )
        self._publish_addresses = (
            source.publish_addresses if publish_addresses is None else publish_addresses
        )
        if self._publish_service and not self._publish_addresses:
            namespace, _, name = self._publish_service.partition("/")
            if not namespace or not name:
                raise ValueError(
                    "k8s.ingress.publish-service must be namespace/name, "
                    f"not {self._publish_service!r}"
                )
        self._resync = resync
        self.events: EventRecorder | None = None
        self.publisher: StatusPublisher | None = None
        self._generation: Generation | None = None
        self._waiting: Deferred[Any] | None = None
        #: ``(ingress, reason, message)`` written as Events while leading.
        self._reported: set[tuple[str, str, str]] = set()

    def __repr__(self) -> str:
        return f"<IngressStatusWriter for {self._source!r}>"

    @property
    def updates(self) -> int:
        """Status writes that succeeded."""
        return self.publisher.updates if self.publisher is not None else 0

    @property
    def leading(self) -> bool:
        """Whether this replica writes (it holds the Lease, or there is no election)."""
        return self.publisher is not None and self.publisher.leading

    def startService(self) -> None:
        super().startService()
        self._waiting = self._source.when_started()
        self._waiting.addCallback(self._source_started)
        self._waiting.addErrback(lambda f: f.trap(CancelledError))

    def stopService(self) -> Deferred[None]:  # type: ignore[override]
        if self._waiting is not None and not self._waiting.called:
            self._waiting.cancel()
        return super().stopService()  # type: ignore[no-any-return]

    def _source_started(self, client: KubeClient) -> None:
        source = self._source
        self.events = EventRecorder(client, reactor=self._reactor, instance=source.identity)
        self.publisher = StatusPublisher(
            client,
            reactor=self._reactor,
            ingresses=source.informers["ingresses"],
            served=self._served,
            publish_service=self._publish_service,
            publish_addresses=self._publish_addresses,
            resync=self._resync,
        )
        self.publisher.setServiceParent(self)
        source.add_leadership_listener(self._leadership)
        if self._generation is not None:
            self.publish(self._generation)

    def _served(self) -> tuple[str, ...]:
        decoding = self._source.translation
        return decoding.served if decoding is not None else ()

    def _leadership(self, leading: bool) -> None:
        if self.publisher is None or not self.running:
            # Stopped (the election tells the source during shutdown too).
            return
        if leading:
            # What the previous leader reported may never have been
            # written: this replica writes everything current once.
            self._reported.clear()
        self.publisher.set_leading(leading)
        if leading and self._generation is not None:
            self._report(self._generation)

    # -- StatusWriter ------------------------------------------------------

    def publish(self, generation: Generation) -> None:
        """A new generation: write the status and the Events it implies."""
        self._generation = generation
        if self.publisher is None or not self.running:
            return
        self.publisher.sync()
        self._report(generation)

    def _report(self, generation: Generation) -> None:
        current: dict[tuple[str, str, str], None] = {}
        for problem in generation.config.problems:
            key = _ingress_key(problem.ref)
            if key is not None:
                current[(key, "InvalidIngress", problem.message)] = None
        for shadow in generation.config.shadowed:
            if shadow.loser.source != SOURCE or shadow.loser.kind != "routes":
                continue
            host, match, path = shadow.key
            message = (
                f"route {host or '*'}{path} ({match}) is shadowed by {shadow.winner}, "
                "modified later (last one wins)"
            )
            current[(shadow.loser.name, "RouteShadowed", message)] = None
        if not self.leading or self.events is None:
            # A follower keeps nothing: on winning the Lease it writes all.
            self._reported = set()
            return
        # Logged by the reconciler already; here they become Events.
        for key, reason, message in sorted(set(current) - self._reported):
            namespace, _, name = key.partition("/")
            ingress = self._source.informers["ingresses"].get(namespace, name)
            if ingress is not None:
                self.events.warning(ingress, reason, message)
        self._reported = set(current)
