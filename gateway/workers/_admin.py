"""
The supervisor's admin resource: ``/metrics`` merged over the supervisor
and every worker; everything else answered by the usual admin resource.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from ._merge import merge_expositions

__all__ = ["MergedMetricsResource"]


class MergedMetricsResource(Resource):
    """
    :param inner: the admin resource (a leaf) for every other path.
    :param registry: the supervisor's own registry (sources, generation,
        workers).
    :param scrape: asks every worker for its metrics text.
    """

    isLeaf = True
    _log = Logger()

    def __init__(
        self, inner: Resource, registry: Any, scrape: Callable[[], Deferred[list[bytes]]]
    ) -> None:
        super().__init__()
        self.inner = inner
        self.registry = registry
        self._scrape = scrape

    @property
    def protected(self) -> bool:
        """Whether ``/config`` requires a token (the admin listener warns when not, off loopback)."""
        return bool(getattr(self.inner, "protected", False))

    def render(self, request: Any) -> Any:
        path = request.path.rstrip(b"/")
        if path != b"/metrics" or request.method not in (b"GET", b"HEAD"):
            return self.inner.render(request)
        own = generate_latest(self.registry)
        finished = request.notifyFinish()
        finished.addErrback(lambda _: None)
        d = self._scrape()

        def write(texts: list[bytes]) -> None:
            if request._disconnected or request.finished:
                return
            body = merge_expositions([own, *texts])
            request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode())
            request.setHeader(b"content-length", str(len(body)).encode())
            if request.method != b"HEAD":
                request.write(body)
            request.finish()

        def failed(failure: Any) -> None:
            self._log.failure("Merging the workers' metrics failed", failure)
            if not (request._disconnected or request.finished):
                request.setResponseCode(500)
                request.finish()

        d.addCallback(write).addErrback(failed)
        return NOT_DONE_YET
