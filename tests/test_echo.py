"""
Tests for :mod:`gateway.echo`, the built-in echo backend, over real loopback
sockets with a raw HTTP/1.1 client (so that what is sent is exactly what the
test wrote: header order, repeated headers, odd methods).
"""

from __future__ import annotations

import json
import re
from typing import Any

from twisted.internet import error, reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.server import Site

from gateway.echo import BODY_LIMIT, EchoBackend, EchoResource


class _RawClient(Protocol):
    """Sends one request as raw bytes and collects everything until the close."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.received: list[bytes] = []
        self.done: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.done.callback(b"".join(self.received))


class _Response:
    """A parsed HTTP/1.1 response: status, headers in order, body."""

    def __init__(self, raw: bytes) -> None:
        head, _, self.body = raw.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split(" ")[1])
        self.headers = [tuple(line.split(": ", 1)) for line in lines]

    def header(self, name: str) -> str:
        [value] = [v for n, v in self.headers if n.lower() == name.lower()]
        return value

    def json(self) -> Any:
        return json.loads(self.body)


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


@inlineCallbacks
def exchange(port: int, request: bytes) -> Any:
    """Send ``request`` to ``127.0.0.1:port`` and parse the response."""
    client = _RawClient(request)
    yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
    raw = yield client.done
    return _Response(raw)


class EchoBackendTests(TestCase):
    """The echo backend answering real HTTP on a loopback port."""

    @inlineCallbacks
    def setUp(self) -> Any:
        self.backend = EchoBackend(reactor)
        self.backend.startService()
        self.addCleanup(self.backend.stopService)
        self.url = yield self.backend.when_listening()
        self.port = _port(self.url)

    def request(self, head: str, body: bytes = b"") -> Deferred[_Response]:
        """Send a request with ``Connection: close`` and the given body."""
        text = head.replace("\n", "\r\n") + "Connection: close\r\n"
        if body:
            text += f"Content-Length: {len(body)}\r\n"
        return exchange(self.port, text.encode("latin-1") + b"\r\n" + body)

    def test_url(self) -> None:
        """The URL is the loopback address and the real port; when_listening agrees."""
        self.assertTrue(re.fullmatch(r"http://127\.0\.0\.1:\d+", self.url), self.url)
        self.assertNotEqual(self.port, 0)
        self.assertEqual(self.backend.url, self.url)
        self.assertEqual(self.successResultOf(self.backend.when_listening()), self.url)

    @inlineCallbacks
    def test_get_with_query_and_repeated_headers(self) -> Any:
        """A GET is echoed with its path, raw query, parsed args and headers in arrival order."""
        response = yield self.request(
            "GET /echo/resource?param1=sample&b=1&b=2&c=&d=%C3%A9 HTTP/1.1\n"
            "Host: example.com\n"
            "X-Rep: one\n"
            "X-Other: o\n"
            "X-Rep: two\n"
        )
        self.assertEqual(response.status, 200)
        self.assertEqual(response.header("Content-Type"), "application/json; charset=utf-8")
        self.assertEqual(
            response.json(),
            {
                "method": "GET",
                "path": "/echo/resource",
                "query": "param1=sample&b=1&b=2&c=&d=%C3%A9",
                "args": {"param1": ["sample"], "b": ["1", "2"], "c": [""], "d": ["\u00e9"]},
                "headers": [
                    ["Host", "example.com"],
                    ["X-Rep", "one"],
                    ["X-Other", "o"],
                    ["X-Rep", "two"],
                    ["Connection", "close"],
                ],
                "body": "",
                "bodyLength": 0,
            },
        )

    @inlineCallbacks
    def test_post_body(self) -> Any:
        """A POST body is echoed as text, invalid UTF-8 replaced, with its length in bytes."""
        response = yield self.request(
            "POST /things HTTP/1.1\nHost: h\nContent-Type: text/plain\n", b"hello \xff"
        )
        echo = response.json()
        self.assertEqual(
            (response.status, echo["method"], echo["path"], echo["body"], echo["bodyLength"]),
            (200, "POST", "/things", "hello \ufffd", 7),
        )

    @inlineCallbacks
    def test_form_body_not_in_args(self) -> Any:
        """Form fields in the body stay out of ``args``, which is the query string's."""
        response = yield self.request(
            "POST /f?q=2 HTTP/1.1\nHost: h\nContent-Type: application/x-www-form-urlencoded\n",
            b"a=1",
        )
        echo = response.json()
        self.assertEqual((echo["args"], echo["body"]), ({"q": ["2"]}, "a=1"))

    @inlineCallbacks
    def test_body_capped(self) -> Any:
        """Only BODY_LIMIT bytes of a large body are echoed; bodyLength has the full size."""
        response = yield self.request("PUT /big HTTP/1.1\nHost: h\n", b"x" * (BODY_LIMIT + 10))
        echo = response.json()
        self.assertEqual((echo["body"], echo["bodyLength"]), ("x" * BODY_LIMIT, BODY_LIMIT + 10))

    @inlineCallbacks
    def test_head_has_no_body(self) -> Any:
        """A HEAD gets 200 and the headers a GET would get, but no body."""
        get = yield self.request("GET /r HTTP/1.1\nHost: h\n")
        head = yield self.request("HEAD /r HTTP/1.1\nHost: h\n")
        self.assertEqual((head.status, head.body), (200, b""))
        self.assertEqual(head.header("Content-Type"), get.header("Content-Type"))
        # The described method differs by one letter: "HEAD" versus "GET".
        self.assertEqual(int(head.header("Content-Length")), len(get.body) + 1)

    @inlineCallbacks
    def test_any_method(self) -> Any:
        """Methods twisted.web does not know are echoed too."""
        for method in ("PATCH", "DELETE", "OPTIONS", "PURGE"):
            response = yield self.request(f"{method} /x HTTP/1.1\nHost: h\n")
            self.assertEqual((response.status, response.json()["method"]), (200, method))

    @inlineCallbacks
    def test_stop(self) -> Any:
        """After stopService the port is closed and url is None."""
        yield self.backend.stopService()
        self.assertIsNone(self.backend.url)
        client = _RawClient(b"")
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port)
        yield self.assertFailure(connectProtocol(endpoint, client), error.ConnectionRefusedError)


class EchoBackendListenTests(TestCase):
    """when_listening before, and when listening fails."""

    @inlineCallbacks
    def test_when_listening_before_start(self) -> Any:
        """A Deferred asked for before startService fires with the URL once listening."""
        backend = EchoBackend(reactor)
        waiting = backend.when_listening()
        self.assertNoResult(waiting)
        backend.startService()
        self.addCleanup(backend.stopService)
        url = yield waiting
        self.assertEqual(url, backend.url)

    @inlineCallbacks
    def test_listen_failure(self) -> Any:
        """A port already in use fails when_listening, and is logged."""
        first = EchoBackend(reactor)
        first.startService()
        self.addCleanup(first.stopService)
        url = yield first.when_listening()
        second = EchoBackend(reactor, f"tcp:{_port(url)}:interface=127.0.0.1")
        second.startService()
        self.addCleanup(second.stopService)
        self.failureResultOf(second.when_listening(), error.CannotListenError)
        self.assertIsNone(second.url)
        self.assertEqual(len(self.flushLoggedErrors(error.CannotListenError)), 1)


class EchoResourceTests(TestCase):
    """The resource served by a Site that is not the echo backend's."""

    @inlineCallbacks
    def test_headers_grouped_in_plain_site(self) -> Any:
        """In a plain Site, repeated headers are all kept, grouped by name."""
        port = reactor.listenTCP(0, Site(EchoResource()), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        response = yield exchange(
            port.getHost().port,
            b"GET / HTTP/1.1\r\nHost: h\r\nX-Rep: 1\r\nX-B: b\r\nX-Rep: 2\r\n"
            b"Connection: close\r\n\r\n",
        )
        self.assertEqual(
            response.json()["headers"],
            [["Host", "h"], ["X-Rep", "1"], ["X-Rep", "2"], ["X-B", "b"], ["Connection", "close"]],
        )
