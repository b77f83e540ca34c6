"""
A traffic listener that drains at shutdown.

Stopping order (Kubernetes sends SIGTERM and removes the pod from the
Service's endpoints at about the same time):

1. readiness turns 503 (``/status-0123456789abcdef`` and ``/readyz``) and
   responses carry ``Connection: close``;
2. for ``drain_delay`` seconds new connections are still accepted, so
   clients that have not yet seen the endpoint change are served;
3. the port stops listening;
4. in-flight requests and open tunnels (WebSocket, any Upgrade) get up
   to ``grace`` seconds to finish (a new upgrade is answered 503 from
   step 1: its tunnel would be cut soon);
5. the tunnels still open are closed (a FIN to both sides) and idle
   keep-alive connections are closed cleanly.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.application.service import Service
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import serverFromString
from twisted.internet.task import deferLater
from twisted.logger import Logger

from ._resource import ProxyResource


class Drainable(Protocol):
    """
    What a listener serves with, as the drain sees it: a
    :class:`~gateway.proxy.GatewaySite`, an :class:`~gateway.proxy.H1Server`
    or (HTTPS) an :class:`~gateway.proxy.ALPNServer`.
    """

    def close_idle_connections(self) -> int:
        """Close the connections between requests; how many."""
        ...


class TrafficListener(Service):
    """
    Listens on a strports description with ``site`` (see
    :func:`~gateway.proxy.listener_factory`).

    :param factory: what to listen with, when not the site itself: the
        HTTPS listener passes the site wrapped in TLS. Draining still works
        on the site's connections.
    """

    _log = Logger()

    def __init__(
        self,
        reactor: Any,
        description: str,
        site: Drainable,
        resource: ProxyResource,
        health: Any,
        *,
        name: str = "http",
        grace: float = 30.0,
        drain_delay: float = 0.0,
        factory: Any = None,
    ) -> None:
        self.reactor = reactor
        self.description = description
        self.site = site
        self.factory = site if factory is None else factory
        self.resource = resource
        self.health = health
        self.listener_name = name
        self.grace = grace
        self.drain_delay = drain_delay
        self.port: Any = None
        self._listening: Deferred[Any] | None = None

    def startService(self) -> None:
        super().startService()
        endpoint = serverFromString(self.reactor, self.description)
        self._listening = endpoint.listen(self.factory)
        self._listening.addCallback(self._listened)
        self._listening.addErrback(self._listen_failed)

    @inlineCallbacks
    def _requests_then_tunnels(self) -> Any:
        """
        Fires once no request is in flight, then once no tunnel is open
        (an upgrade in flight may still open one). Cancelling it cancels
        the wait under way.
        """
        yield self.resource.when_idle()
        yield self.resource.tunnels.when_empty()

    def _listened(self, port: Any) -> Any:
        self.port = port
        self._log.info(
            "{name} listener on {address}", name=self.listener_name, address=str(port.getHost())
        )
        return port

    def _listen_failed(self, failure: Any) -> None:
        self._log.failure(
            "Cannot listen on {description}; stopping", failure, description=self.description
        )
        self.reactor.stop()

    @inlineCallbacks
    def stopService(self) -> Any:
        super().stopService()
        self.health.draining = True
        self._log.info(
            "Draining {name}: not ready; {in_flight} requests in flight, grace {grace}s",
            name=self.listener_name,
            in_flight=self.resource.in_flight,
            grace=self.grace,
        )
        if self.drain_delay > 0:
            yield deferLater(self.reactor, self.drain_delay)
        if self.port is not None:
            yield self.port.stopListening()
        idle = self._requests_then_tunnels()
        timer = self.reactor.callLater(self.grace, idle.cancel)
        try:
            yield idle
        except Exception:
            self._log.warn(
                "Grace period of {grace}s over with {in_flight} requests still in flight "
                "and {tunnels} tunnels open",
                grace=self.grace,
                in_flight=self.resource.in_flight,
                tunnels=len(self.resource.tunnels),
            )
        else:
            if timer.active():
                timer.cancel()
        cut = self.resource.tunnels.close_all()
        if cut:
            self._log.info(
                "{name} listener: closed {cut} tunnels (upgraded connections) at the end of "
                "the grace period",
                name=self.listener_name,
                cut=cut,
            )
        closed = self.site.close_idle_connections()
        self._log.info(
            "{name} listener drained; closed {closed} idle connections",
            name=self.listener_name,
            closed=closed,
        )
