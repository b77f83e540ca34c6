"""
A real HTTP backend for tests, driven by query parameters so one backend
serves every scenario while the path stays free for routing tests:

* no parameter: the echo of :mod:`gateway.echo`;
* ``sleep=<ms>``: answer the echo after a delay (in-flight requests);
* ``size=<bytes>``: stream that many bytes with backpressure (large bodies);
* ``status=<code>``: answer with that status and the echo (or no body for
  204/304);
* ``headers=1``: add repeated and hop-by-hop response headers.

It counts the connections it accepted, so keep-alive reuse is observable.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IPushProducer
from twisted.web.server import NOT_DONE_YET, Site
from zope.interface import implementer

from gateway.echo import EchoResource, _EchoRequest

_CHUNK = b"x" * 65536


@implementer(IPushProducer)
class _Streamer:
    """Writes ``remaining`` bytes as fast as the client takes them."""

    def __init__(self, request: Any, size: int) -> None:
        self.request = request
        self.remaining = size
        self.paused = False
        self.stopped = False
        request.registerProducer(self, True)
        request.notifyFinish().addErrback(lambda _: self.stopProducing())
        self.resumeProducing()

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        while not self.paused and not self.stopped and self.remaining > 0:
            chunk = _CHUNK[: self.remaining]
            self.remaining -= len(chunk)
            self.request.write(chunk)
        if self.remaining == 0 and not self.stopped:
            self.stopped = True
            self.request.unregisterProducer()
            self.request.finish()

    def stopProducing(self) -> None:
        self.stopped = True


class ScenarioResource(EchoResource):
    """The echo, plus the behaviours listed in the module docstring."""

    def __init__(self, reactor: Any) -> None:
        super().__init__()
        self.reactor = reactor
        #: Delayed (``sleep=``) requests whose client went away before the answer.
        self.aborted = 0

    def render(self, request: Any) -> Any:
        args = request.args
        if b"size" in args:
            size = int(args[b"size"][0])
            request.setHeader(b"content-type", b"application/octet-stream")
            request.setHeader(b"content-length", b"%d" % size)
            _Streamer(request, size)
            return NOT_DONE_YET
        if b"headers" in args:
            request.responseHeaders.addRawHeader(b"Set-Cookie", b"a=1")
            request.responseHeaders.addRawHeader(b"Set-Cookie", b"b=2")
            request.responseHeaders.addRawHeader(b"Keep-Alive", b"timeout=5")
            request.responseHeaders.addRawHeader(b"Connection", b"X-Secret")
            request.responseHeaders.addRawHeader(b"X-Secret", b"hop")
        if b"status" in args:
            status = int(args[b"status"][0])
            if status in (204, 304):
                request.setResponseCode(status)
                return b""
            body = EchoResource.render(self, request)
            request.setResponseCode(status)
            return body
        if b"sleep" in args:
            delay = int(args[b"sleep"][0]) / 1000.0
            call = self.reactor.callLater(delay, self._late, request)
            request.notifyFinish().addErrback(self._gone, call)
            return NOT_DONE_YET
        return EchoResource.render(self, request)

    def _gone(self, reason: Any, call: Any) -> None:
        if call.active():
            call.cancel()
            self.aborted += 1

    def _late(self, request: Any) -> None:
        body = EchoResource.render(self, request)
        request.write(body)
        request.finish()


class CountingSite(Site):
    """A quiet :class:`Site` that counts accepted connections."""

    noisy = False

    def __init__(self, resource: Any, **kw: Any) -> None:
        super().__init__(resource, **kw)
        self.connections = 0

    def buildProtocol(self, addr: Any) -> Any:
        self.connections += 1
        return super().buildProtocol(addr)

    def log(self, request: Any) -> None:
        pass


def scenario_site(reactor: Any) -> CountingSite:
    """A backend site for :class:`ScenarioResource`."""
    return CountingSite(ScenarioResource(reactor), requestFactory=_EchoRequest)
