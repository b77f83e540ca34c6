"""
What happens after each answered request: a metric update and an access
log line. One object so the proxy makes one call per request.

An APIM API call (``request.api_call``, a :class:`gateway.translate.ApiCall`)
adds its api, operation, product and subscription ids to both; they come
from the configuration and never include a key.
"""

from __future__ import annotations

from typing import Any

from ._accesslog import AccessLog
from ._metrics import GatewayMetrics


class RequestObserver:
    """Feeds :class:`GatewayMetrics` and :class:`AccessLog` from the proxy."""

    def __init__(self, metrics: GatewayMetrics, access_log: AccessLog) -> None:
        self.metrics = metrics
        self.access_log = access_log
        self._backend_errors: dict[tuple[str, str], Any] = {}

    def request_done(
        self,
        request: Any,
        status: int,
        sent: int,
        duration: float,
        route: str,
        backend: str,
        request_id: str,
    ) -> None:
        method = request.method.decode("ascii", "replace")
        # ids from the configuration, set by the proxy once the subscription
        # check admitted an APIM API call; None otherwise (and on test doubles)
        call = getattr(request, "api_call", None)
        self.metrics.observe_request(route, method, status, duration, call)
        if self.access_log.enabled:
            client = request.getClientAddress()
            # Headers' storage by canonical name (no name encoding per line).
            host = request.requestHeaders._rawHeaders.get(b"Host")
            self.access_log.emit(
                client=getattr(client, "host", "-"),
                method=method,
                path=request.uri.decode("latin-1"),
                protocol=request.clientproto.decode("ascii", "replace"),
                status=status,
                bytes=sent,
                duration=duration,
                host=host[0].decode("latin-1") if host else "-",
                route=route,
                backend=backend,
                request_id=request_id,
                api_call=call,
                checked=getattr(request, "fields_checked", False),
            )

    def request_refused(self, request: Any, status: int, message: str, sent: int) -> None:
        """
        A request the HTTP/1.1 server answered itself (malformed, over a
        limit, timed out; :class:`gateway.proxy.H1Server`'s ``on_refused``):
        counted in ``apimgw_http_refused_total{status}`` (not in the
        request metrics: it matched no route) and logged with route,
        backend and request id ``-``. What did not arrive is ``-`` (the
        method and target of input llhttp refused before them), and the
        duration is 0: the server does not time a request it refuses (the
        fast path reads no clock per header section). The reason
        (``message``) is in the answer's body, and in the debug log. The
        ``Host`` may be the invalid one that was refused: the text line
        escapes it (``checked`` is false).
        """
        self.metrics.http_refused.labels(str(status)).inc()
        if not self.access_log.enabled:
            return
        client = request.getClientAddress()
        host = request.requestHeaders._rawHeaders.get(b"Host")
        self.access_log.emit(
            client=getattr(client, "host", "-"),
            method=request.method.decode("ascii", "replace") or "-",
            path=request.uri.decode("latin-1") or "-",
            protocol=request.clientproto.decode("ascii", "replace"),
            status=status,
            bytes=sent,
            duration=0.0,
            host=host[0].decode("latin-1") if host else "-",
            route="-",
            backend="-",
            request_id="-",
        )

    def upgrade_opened(self, protocol: str) -> None:
        self.metrics.upgrade_opened(protocol)

    def upgrade_closed(self, reason: str) -> None:
        self.metrics.upgrade_closed(reason)

    def backend_error(self, backend: str, kind: str) -> None:
        key = (backend, kind)
        child = self._backend_errors.get(key)
        if child is None:
            child = self._backend_errors[key] = self.metrics.backend_errors.labels(backend, kind)
        child.inc()
