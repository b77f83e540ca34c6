"""
The HTTP side of the configuration service protocol (``docs/config-service.md``):
the snapshot, the change feed's long poll and its ``410 Gone``, the
heartbeat request, and what each kind of failure means.

Every call carries ``Authorization: GatewayKey …``. The answers are JSON;
anything else, or another status than the protocol's, is an
:class:`Unexpected` failure that the source treats like an unreachable
service (back off, keep serving).
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any
from urllib.parse import quote, urlsplit

import treq
from treq.client import HTTPClient
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IReactorTime
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool

from cloudproto import Token

__all__ = [
    "CloudClient",
    "Gone",
    "Refused",
    "Unexpected",
    "cleartext_remote",
    "describe",
    "trust_policy",
]


class Gone(Exception):
    """The change feed answered 410: the snapshot must be fetched again."""


class Refused(Exception):
    """The service refused the token (401/403)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class Unexpected(Exception):
    """Any other answer than the protocol's."""


def cleartext_remote(endpoint: str) -> bool:
    """
    Whether ``endpoint`` is plain ``http://`` to a host that is not
    loopback: the token (a bearer credential) and the subscription keys of
    the snapshot would cross the network readable by anyone on the path.
    ``localhost`` and loopback addresses are fine (a sidecar, a test).
    """
    parts = urlsplit(endpoint)
    if parts.scheme.lower() != "http":
        return False
    host = (parts.hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True


def trust_policy(ca: str) -> BrowserLikePolicyForHTTPS:
    """
    A TLS policy that verifies the service's certificate (and host name)
    against the certificate authorities in ``ca``: a PEM bundle, or the
    path of a file holding one (``config.service.ca``). Without it the
    system's trust store applies (``SSL_CERT_FILE`` also works there).

    :raises ValueError: no PEM certificate in it, or the file cannot be read.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    from twisted.internet.ssl import Certificate, trustRootFromCertificates

    text = ca
    if "-----BEGIN" not in ca:
        try:
            with open(ca, encoding="ascii") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"cannot read the CA file {ca}: {e}") from None
    try:
        certificates = x509.load_pem_x509_certificates(text.encode("ascii"))
    except ValueError:
        raise ValueError(f"no PEM certificate in {ca if text is not ca else 'the CA setting'}") from None
    roots = [Certificate.loadPEM(c.public_bytes(Encoding.PEM)) for c in certificates]
    return BrowserLikePolicyForHTTPS(trustRoot=trustRootFromCertificates(roots))


def describe(error: BaseException) -> str:
    """A failure's reason as one line (``ResponseNeverReceived`` and friends wrap theirs)."""
    reasons = getattr(error, "reasons", None)
    if reasons:
        return "; ".join(str(getattr(r, "value", r)) for r in reasons)
    return str(error) or type(error).__name__


def _message(content: bytes) -> str:
    try:
        body = json.loads(content)
    except ValueError:
        return content[:200].decode("utf-8", "replace")
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return body["message"]
    return content[:200].decode("utf-8", "replace")


class CloudClient:
    """
    The calls of the protocol, over one persistent connection pool.

    :param reactor: the reactor the HTTP client runs on.
    :param clock: times the requests out.
    :param endpoint: the service's base URL.
    :param request_timeout: the limit of a request (a long poll gets its
        ``wait`` on top).
    :param ca: trusted certificate authorities (PEM or a file), ``None``:
        the system's.
    """

    def __init__(self, reactor: Any, clock: IReactorTime, endpoint: str, *,
                 request_timeout: float, ca: str | None = None) -> None:
        self.endpoint = endpoint.rstrip("/")
        self._clock = clock
        self._timeout = request_timeout
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self._pool.retryAutomatically = False
        if ca is not None:
            agent = Agent(reactor, contextFactory=trust_policy(ca), pool=self._pool)
        else:
            agent = Agent(reactor, pool=self._pool)
        self._http = HTTPClient(agent)

    def close(self) -> Deferred[Any]:
        """Close the pooled connections."""
        return self._pool.closeCachedConnections()

    def snapshot(self, token: Token) -> Deferred[dict[str, Any]]:
        """``GET /gateways/{id}/configuration``: the full snapshot, with a revision."""
        d = self._request("GET", _path(token, "configuration"), token, timeout=self._timeout)
        return d.addCallback(_with_revision, "the snapshot")

    def events(self, token: Token, after: int, wait: float) -> Deferred[dict[str, Any]]:
        """
        ``GET /gateways/{id}/events?after=N&wait=S``: the changes after
        revision ``after`` (a long poll).

        :raises Gone: the feed no longer reaches back to ``after``.
        """
        d = self._request("GET", _path(token, f"events?after={after}&wait={wait:g}"), token,
                          timeout=wait + self._timeout)
        return d.addCallback(_with_revision, "the change feed's answer")

    def heartbeat(self, token: Token, body: dict[str, Any]) -> Deferred[Any]:
        """``POST /gateways/{id}/heartbeat``: report this instance; the service's answer."""
        return self._request("POST", _path(token, "heartbeat"), token, body=body,
                             timeout=self._timeout)

    @inlineCallbacks
    def _request(self, method: str, path: str, token: Token, *, body: Any = None,
                 timeout: float) -> Any:
        headers = {b"Authorization": [token.header().encode("ascii")],
                   b"Accept": [b"application/json"]}
        kwargs: dict[str, Any] = {"headers": headers}
        if body is not None:
            kwargs["json"] = body
        d = self._http.request(method, self.endpoint + path, **kwargs)
        d.addCallback(lambda response: treq.content(response).addCallback(
            lambda content: (response.code, content)))
        d.addTimeout(timeout, self._clock)
        status, content = yield d
        if status in (401, 403):
            raise Refused(status, _message(content))
        if status == 410:
            raise Gone(_message(content))
        if status != 200:
            raise Unexpected(f"HTTP {status}: {_message(content)}")
        try:
            return json.loads(content)
        except ValueError:
            raise Unexpected("the answer is not JSON") from None


def _path(token: Token, rest: str) -> str:
    return f"/gateways/{quote(token.gateway_id, safe='')}/{rest}"


def _with_revision(answer: Any, what: str) -> dict[str, Any]:
    if not isinstance(answer, dict) or isinstance(answer.get("revision"), bool) or not isinstance(
        answer.get("revision"), int
    ):
        raise Unexpected(f"{what} has no revision")
    return answer
