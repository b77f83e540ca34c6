"""
One non-blocking HTTP GET for the key cache: a discovery document or a
JWKS. ``https`` certificates are verified against the system trust store
(``BrowserLikePolicyForHTTPS``); the whole exchange has a deadline and the
body a size limit, so a slow or hostile identity provider cannot hold a
connection or memory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, ResponseDone
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse

__all__ = ["Fetch", "FetchError", "http_fetch"]

#: ``fetch(url)`` → a Deferred firing with the body of a 200 response.
Fetch = Callable[[str], "Deferred[bytes]"]

_DONE = Failure(ResponseDone())

_HEADERS = Headers({b"accept": [b"application/json"], b"user-agent": [b"apimgw"]})


class FetchError(Exception):
    """The response was not a usable 200 (status, size); the message says which."""


class _Body(Protocol):
    """Collects a response body up to ``limit`` bytes; more aborts the connection."""

    def __init__(self, done: Deferred[bytes], limit: int) -> None:
        self.done = done
        self.limit = limit
        self.parts: list[bytes] = []
        self.size = 0

    def dataReceived(self, data: bytes) -> None:
        if self.done.called:
            return
        self.size += len(data)
        if self.size > self.limit:
            self.done.errback(FetchError(f"the body exceeds {self.limit} bytes"))
            if self.transport is not None:
                self.transport.stopProducing()
            return
        self.parts.append(data)

    def connectionLost(self, reason: Failure = _DONE) -> None:
        if self.done.called:
            return
        if reason.check(ResponseDone):
            self.done.callback(b"".join(self.parts))
        else:
            self.done.errback(reason)


def http_fetch(reactor: Any, timeout: float = 10.0, max_bytes: int = 1 << 20,
               clock: IReactorTime | None = None) -> Fetch:
    """
    The real fetch: ``twisted.web.client.Agent`` on ``reactor`` (verified
    TLS, a fresh connection per fetch: they are hourly), at most
    ``timeout`` seconds for the whole exchange (measured on ``clock``,
    the reactor unless given) and ``max_bytes`` of body.
    """
    agent = Agent(reactor, contextFactory=BrowserLikePolicyForHTTPS(), connectTimeout=timeout)

    def fetch(url: str) -> Deferred[bytes]:
        responded = agent.request(b"GET", url.encode("ascii"), _HEADERS)

        def got(response: IResponse) -> Deferred[bytes]:
            if response.code != 200:
                response.deliverBody(_Discard())
                raise FetchError(f"HTTP {response.code}")
            if isinstance(response.length, int) and response.length > max_bytes:
                response.deliverBody(_Discard())
                raise FetchError(f"the body exceeds {max_bytes} bytes")

            def cancel(d: Deferred[bytes]) -> None:
                transport = getattr(body, "transport", None)
                if transport is not None:
                    transport.stopProducing()

            done: Deferred[bytes] = Deferred(cancel)
            body = _Body(done, max_bytes)
            response.deliverBody(body)
            return done

        requested: Deferred[bytes] = responded.addCallback(got)  # type: ignore[assignment]
        # Deferred.addTimeout would not do: cancelling Agent's request fails
        # it with ResponseNeverReceived, not CancelledError.
        timed_out: list[bool] = []

        def expire() -> None:
            timed_out.append(True)
            requested.cancel()

        timer = (clock if clock is not None else reactor).callLater(timeout, expire)

        def done(result: object) -> object:
            if timer.active():
                timer.cancel()
            if timed_out and isinstance(result, Failure):
                raise FetchError(f"timed out after {timeout:g} s")
            return result

        requested.addBoth(done)
        return requested

    return fetch


class _Discard(Protocol):
    """Reads and drops a body we will not use, so the connection closes cleanly."""

    def connectionLost(self, reason: Failure = _DONE) -> None:
        pass
