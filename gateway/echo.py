"""
The built-in echo backend: what the default configuration's Echo API
forwards to, so that a gateway started with nothing configured answers
``curl http://127.0.0.1:8080/echo/resource?param1=sample`` with something
useful.

It answers every method and path with ``200`` and a JSON description of the
request exactly as it reached the backend, which also makes it the backend
of choice for tests of the proxy: what the gateway forwarded (path, query,
repeated headers in order, body) can be read back from the response.
"""

from __future__ import annotations

import json
from typing import IO, Any
from urllib.parse import parse_qs

from twisted.application.service import Service
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IAddress, IListeningPort, IReactorTCP
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from gateway.ready import OneShot

__all__ = ["BODY_LIMIT", "EchoBackend", "EchoResource"]

#: Bytes of the request body echoed back; ``bodyLength`` has the full length.
#: The echo is for looking at, not for moving payloads.
BODY_LIMIT = 64 * 1024


class _ArrivalHeaders(Headers):
    """
    Request headers that also remember the order they arrived in.

    :class:`Headers` groups the values of one name together, so a request
    with ``A, B, A`` would be echoed as ``A, A, B``; a test that checks the
    proxy keeps header order needs the real sequence.
    """

    __slots__ = ("arrival",)

    def __init__(self, rawHeaders: Any = None) -> None:
        super().__init__(rawHeaders)
        self.arrival: list[tuple[bytes, bytes]] = []

    def addRawHeader(self, name: str | bytes, value: str | bytes) -> None:
        super().addRawHeader(name, value)
        self.arrival.append((_bytes(name), _bytes(value)))


def _bytes(value: str | bytes) -> bytes:
    return value.encode("latin-1") if isinstance(value, str) else value


class _EchoRequest(Request):
    """A request whose headers keep their arrival order."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.requestHeaders = _ArrivalHeaders()


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def _headers(request: Request) -> list[list[str]]:
    headers = request.requestHeaders
    if isinstance(headers, _ArrivalHeaders):
        pairs = headers.arrival
    else:
        # Served by another Site: names in first-arrival order, the values
        # of a repeated name together.
        pairs = [(name, value) for name, values in headers.getAllRawHeaders() for value in values]
    return [[_text(name), _text(value)] for name, value in pairs]


def _body(content: IO[bytes] | None) -> tuple[bytes, int]:
    """The first :data:`BODY_LIMIT` bytes of the body, and its full length."""
    if content is None:
        return b"", 0
    length = content.seek(0, 2)
    content.seek(0)
    head = content.read(BODY_LIMIT)
    content.seek(0)
    return head, length


def _describe(request: Request) -> dict[str, Any]:
    """
    The request as it arrived, as a JSON-ready mapping.

    ``args`` is parsed from the query string only: twisted.web also merges
    the fields of a form-encoded body into ``request.args``, which would
    make the echo claim they were in the URL.
    """
    path, _, query = request.uri.partition(b"?")
    body, length = _body(request.content)
    return {
        "method": _text(request.method),
        "path": _text(path),
        "query": _text(query),
        "args": parse_qs(_text(query), keep_blank_values=True),
        "headers": _headers(request),
        "body": _text(body),
        "bodyLength": length,
    }


class EchoResource(Resource):
    """
    A leaf that answers every method and path with ``200`` and the JSON of
    :func:`_describe`; ``HEAD`` gets the same headers without the body.
    """

    isLeaf = True

    def render(self, request: Request) -> bytes:
        payload = json.dumps(_describe(request)).encode("utf-8") + b"\n"
        request.setResponseCode(200)
        request.setHeader(b"Content-Type", b"application/json; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-store")
        request.setHeader(b"Content-Length", b"%d" % (len(payload),))
        if request.method == b"HEAD":
            # Returning the body would make twisted.web log a warning per
            # request before dropping it.
            return b""
        return payload


class _EchoSite(Site):
    """
    A quiet site: the gateway's access log already has a line for each
    request that reaches the echo backend through it.
    """

    noisy = False

    def log(self, request: http.Request) -> None:
        pass


def _base_url(address: IAddress) -> str:
    """
    The ``http://`` base URL that reaches a listening TCP address; a
    wildcard bind is reached over the loopback interface.

    :raises ValueError: not a TCP address.
    """
    if isinstance(address, IPv4Address):
        host = "127.0.0.1" if address.host in ("", "0.0.0.0") else address.host
        return f"http://{host}:{address.port}"
    if isinstance(address, IPv6Address):
        host = "::1" if address.host in ("", "::") else address.host
        return f"http://[{host}]:{address.port}"
    raise ValueError(f"the echo backend needs a TCP endpoint, not {address!r}")


class EchoBackend(Service):
    """
    The echo backend as a service: listens while running.

    :ivar url: the base URL it answers on (``http://127.0.0.1:<port>``)
        while it is listening, else ``None``.
    """

    _log = Logger()

    def __init__(self, reactor: IReactorTCP, endpoint: str = "tcp:0:interface=127.0.0.1") -> None:
        """
        :param reactor: the reactor to listen with.
        :param endpoint: a TCP strports description; the default, a free
            loopback port, keeps it private to the gateway.
        """
        self.url: str | None = None
        self._reactor = reactor
        self._endpoint = endpoint
        self._listening: Deferred[IListeningPort] | None = None
        self._port: IListeningPort | None = None
        self._listening_url: OneShot[str] = OneShot()

    def startService(self) -> None:
        """Start listening; :meth:`when_listening` says when it does."""
        super().startService()
        self._listening_url.reset()
        site = _EchoSite(EchoResource(), requestFactory=_EchoRequest)
        listening = serverFromString(self._reactor, self._endpoint).listen(site)
        self._listening = listening
        listening.addCallback(self._listened).addErrback(self._listen_failed)

    def stopService(self) -> Deferred[None] | None:
        """Stop listening; connections already accepted are left to finish."""
        super().stopService()
        if self._listening is not None:
            self._listening.cancel()
        port, self._port, self.url = self._port, None, None
        self._listening_url.reset()
        if port is None:
            return None
        return port.stopListening()

    def when_listening(self) -> Deferred[str]:
        """
        A new Deferred that fires with :attr:`url` once the backend listens
        (at once if it already does), or fails if it cannot listen.
        """
        return self._listening_url.when()

    def _listened(self, port: IListeningPort) -> None:
        self._listening = None
        self._port = port
        self.url = _base_url(port.getHost())
        self._log.info("Echo backend listening on {url}", url=self.url)
        self._listening_url.fire(self.url)

    def _listen_failed(self, failure: Failure) -> None:
        self._listening = None
        if not failure.check(CancelledError):
            self._log.failure(
                "Echo backend cannot listen on {endpoint}", failure, endpoint=self._endpoint
            )
        self._listening_url.fail(failure)
        if failure.check(CancelledError):
            # Stopped before it listened: a later start waits afresh.
            self._listening_url.reset()
