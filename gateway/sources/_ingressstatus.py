"""
Publishing the gateway's address in ``status.loadBalancer.ingress`` of the
Ingresses it serves, so ``kubectl get ingress`` shows an ADDRESS and tools
such as external-dns find it.

Only the replica holding the Lease writes (the Ingress source tells this
publisher when it leads); every replica would otherwise write the same
status and fight over ``resourceVersion``. The address comes from

* ``k8s.ingress.publish-address``: fixed addresses (IPs become ``ip``
  entries, anything else ``hostname``), or
* ``k8s.ingress.publish-service`` (``namespace/name``): the gateway's own
  Service, watched: its ``status.loadBalancer.ingress``, else its
  ``spec.externalIPs``, else its ``clusterIP`` (as ingress-nginx does).

With neither, no status is written. A pass compares each served Ingress's
status with the address and updates only those that differ, one request
at a time; a conflict (the Ingress changed meanwhile) is repaired by the
next pass, which the changed Ingress itself triggers, and a periodic pass
repairs anything else (an operator who edited the status by hand).
Ingresses that stop being ours keep their last status: the new owner's
controller overwrites it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from .kubernetes import INGRESS, SERVICE, Conflict, Informer, KubeClient, NotFound

__all__ = ["StatusPublisher", "address_entries", "service_addresses"]

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
        publish_service: str | None = None,
        publish_addresses: tuple[str, ...] = (),
        resync: float = 60.0,
    ) -> None:
        super().__init__()
        self._client = client
        self._reactor = reactor
        self._ingresses = ingresses
        self._resync = resync
        self._leading = False
        self._served: tuple[str, ...] = ()
        self._running_pass: Deferred[None] | None = None
        self._again = False
        self._timer: IDelayedCall | None = None
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
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
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

    def served_changed(self, served: tuple[str, ...]) -> None:
        """The served Ingresses (``ns/name``), after each translation."""
        self._served = served
        self.sync()

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
            for key in self._served:
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
        except (Conflict, NotFound):
            # Changed or deleted meanwhile: the watch brings the new state,
            # and with it another pass.
            return
        except Exception as e:
            self._log.warn(
                "Could not write the status of Ingress {ingress}: {error}",
                ingress=key,
                error=f"{type(e).__name__}: {e}",
            )
            return
        self.updates += 1
