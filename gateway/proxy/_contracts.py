"""
What the proxy resource needs from the objects it is given, as small
Protocols: the request it renders, the observer it reports to and the health
state it reads.

Structural rather than nominal, so that :mod:`gateway.proxy` names no class
of :mod:`gateway.observability` (which sits beside the data flow, not below
it) and tests can pass small fakes; exactly the attributes and methods the
proxy uses, no more, so a type checker catches a contract drifting on either
side. The request is a Protocol rather than ``twisted.web.iweb.IRequest``
because a zope interface is not a type a checker can verify, and the proxy
also uses ``GatewayRequest``'s ``on_client_gone`` and ``Request``'s
``channel``, which ``IRequest`` does not declare.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers

from gateway.translate import ApiCall

from ._body import BoundedBody, StreamedBody

__all__ = ["ProxyHealth", "ProxyObserver", "ProxyRequest"]


class ProxyRequest(Protocol):
    """
    The request the proxy renders: twisted.web's ``Request`` as extended by
    :class:`~gateway.proxy.GatewayRequest` (HTTP/1.1 and HTTP/2 alike).
    """

    method: bytes
    uri: bytes
    clientproto: bytes
    requestHeaders: Headers
    responseHeaders: Headers
    #: the spooled body (``None`` before twisted.web created one), or, on
    #: the strict HTTP/1.1 server, the body as it arrives (the policy path
    #: replaces it with the collected ``BoundedBody`` before it runs)
    content: BoundedBody | StreamedBody | None
    code: int
    sentLength: int
    startedWriting: int
    #: the HTTP/1.1 channel, or the HTTP/2 stream; ``None`` once gone
    channel: Any
    #: called once if the client disconnects before the response is done
    on_client_gone: Callable[[Failure], None] | None
    #: which API call this was (ids only), set once admitted; ``None`` for
    #: plain routes and requests refused before the subscription check
    api_call: ApiCall | None

    def getClientAddress(self) -> Any: ...

    def getRequestHostname(self) -> bytes: ...

    def setResponseCode(self, code: int, message: bytes | None = None) -> None: ...

    def setHeader(self, name: bytes, value: bytes) -> None: ...

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None: ...

    def unregisterProducer(self) -> None: ...

    def write(self, data: bytes) -> None: ...

    def finish(self) -> None: ...

    def loseConnection(self) -> None: ...


class ProxyObserver(Protocol):
    """
    Told about every answered request and every backend failure
    (implemented by :class:`gateway.observability.RequestObserver`: metrics
    and the access log).
    """

    def request_done(
        self,
        request: ProxyRequest,
        status: int,
        sent: int,
        duration: float,
        route: str,
        backend: str,
        request_id: str,
    ) -> None:
        """
        Once per answered request.

        :param sent: body bytes sent to the client.
        :param duration: seconds from the start of rendering.
        :param route: the route's label, ``"-"`` when none matched.
        :param backend: the URL of the backend (or endpoint) that answered,
            ``"-"`` when the gateway answered itself.
        :param request_id: the activity id, ``"-"`` when none was assigned.
        """

    def backend_error(self, backend: str, kind: str) -> None:
        """
        A backend failed: ``kind`` is ``error``, ``timeout``, ``broken`` (cut
        off mid-response) or ``endpoint`` (an endpoint refused and the
        request went to another).
        """

    def upgrade_opened(self, protocol: str) -> None:
        """A connection switched protocols (the backend's 101), e.g. ``websocket``."""

    def upgrade_closed(self, reason: str) -> None:
        """
        An upgraded connection ended: ``client`` or ``backend`` closed,
        ``idle`` too long, or cut at ``shutdown``.
        """


class ProxyHealth(Protocol):
    """
    The process's readiness as the proxy reads it (implemented by
    :class:`gateway.observability.Health`).
    """

    #: shutting down: ask keep-alive clients to reconnect elsewhere
    draining: bool

    @property
    def ready(self) -> bool:
        """Whether the status probe answers 200."""

    def describe(self) -> str:
        """One line for the status probe's body."""
