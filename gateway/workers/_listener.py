"""
A worker's traffic listener: the drain-aware listener of ``gateway.proxy``
on a listening socket inherited from the supervisor.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred

from gateway.proxy import TrafficListener

__all__ = ["AdoptedTrafficListener"]


class AdoptedTrafficListener(TrafficListener):
    """
    Serves an inherited listening socket, from the moment ``ready()`` fires
    (the worker's first generation is live): until then the kernel keeps
    the connections it routes to this socket queued, so a worker that
    starts (or restarts) never answers 503 for want of a configuration.

    The inherited descriptor is closed once adopted (the reactor holds its
    own duplicate), so stopping to listen at the drain really closes this
    worker's hold on the socket.
    """

    def __init__(
        self,
        reactor: Any,
        fd: int,
        site: Any,
        resource: Any,
        health: Any,
        *,
        ready: Callable[[], Deferred[Any]],
        **kwargs: Any,
    ) -> None:
        super().__init__(reactor, f"inherited fd {fd}", site, resource, health, **kwargs)
        self.fd = fd
        self._ready = ready

    def startService(self) -> None:
        Service.startService(self)
        self._ready().addCallback(self._adopt)

    def _adopt(self, _: Any) -> None:
        if not self.running or self.fd < 0:
            return
        probe = socket.socket(fileno=os.dup(self.fd))
        family = probe.family
        probe.close()
        self.port = self.reactor.adoptStreamPort(self.fd, family, self.factory)
        os.close(self.fd)
        self.fd = -1
        self._log.info(
            "{name} listener on {address} (shared with the other workers)",
            name=self.listener_name,
            address=str(self.port.getHost()),
        )
