"""
The admin port: ``/metrics`` (Prometheus text), ``/healthz`` (the process
is alive), ``/readyz`` (a configuration is live and we are not draining),
``/config`` (the effective configuration).

It listens apart from traffic so probes and scrapes never queue behind
proxied requests, and so it can be bound to a private interface: by default
loopback only (the container image binds every interface, for the cluster's
probes and Prometheus). ``/config`` shows every route, backend and source of
the gateway, so an optional bearer token (``gateway.admin.token``) guards
it; ``/metrics``, ``/healthz`` and ``/readyz`` stay open, because probes
and scrapers are configured with no credentials.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from twisted.application.service import Service
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import serverFromString
from twisted.logger import ILogObserver, Logger
from twisted.web.resource import Resource
from twisted.web.server import Site

from gateway.routing import LiveGeneration

from ._configdump import describe_generation
from ._health import Health
from ._metrics import GatewayMetrics

#: The realm of the ``WWW-Authenticate`` challenge on ``/config``.
REALM = "apimgw-admin"


def _is_path(setting: str) -> bool:
    """
    Whether ``gateway.admin.token`` names a file: an absolute or ``.``-relative
    path. A rule on the text rather than "a file exists there", so a token file
    that is missing at start is refused instead of its path becoming the token.
    """
    return setting.startswith(("/", "."))


class AdminToken:
    """
    The bearer token ``/config`` requires, from the setting's text or a file.

    A file (a mounted Kubernetes Secret, say) is checked with ``stat`` at
    every :meth:`matches` and read again when its device, inode, size or
    modification time changed, so a rotated token applies without a restart.
    A file that is missing, unreadable or empty lets nobody in (the operator
    asked for a token; failing open would publish ``/config``), and the
    reason is logged once per change.
    """

    _log = Logger()

    def __init__(self, setting: str, *, observer: ILogObserver | None = None) -> None:
        """
        :param setting: the value of ``gateway.admin.token``: the token, or
            the path of a file holding it (starting with ``/`` or ``.``).
        :param observer: where the warnings go (tests); default: the global
            log publisher.
        """
        if observer is not None:
            self._log = Logger(observer=observer, source=self)
        value = setting.strip()
        self.path: str | None = value if _is_path(value) else None
        self._token: bytes | None = None if self.path else value.encode("utf-8")
        self._seen: tuple[int, int, int, int] | None = None
        self._problem: str | None = None

    def matches(self, presented: bytes) -> bool:
        """
        Whether ``presented`` is the token, compared in constant time (no
        timing tells how many leading bytes were right).
        """
        if self.path is not None:
            self._refresh(self.path)
        expected = self._token
        if not expected:
            # Still compare, so a refusal takes the time an attempt takes.
            hmac.compare_digest(presented, presented)
            return False
        return hmac.compare_digest(presented, expected)

    def _refresh(self, path: str) -> None:
        try:
            st = os.stat(path)
        except OSError as e:
            self._seen = None
            self._fail(path, e.strerror or str(e))
            return
        signature = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if signature == self._seen:
            return
        self._seen = signature
        try:
            with open(path, "rb") as f:
                token = f.read().strip()
        except OSError as e:
            self._fail(path, e.strerror or str(e))
            return
        if not token:
            self._fail(path, "the file is empty")
            return
        self._token, self._problem = token, None

    def _fail(self, path: str, problem: str) -> None:
        self._token = None
        if problem != self._problem:
            self._problem = problem
            self._log.warn(
                "Cannot read the admin token file {path} ({problem}): /config refuses every "
                "request until it holds a token",
                path=path,
                problem=problem,
            )


class AdminResource(Resource):
    """
    Leaf resource answering the admin paths; anything else is 404.

    :ivar protected: whether ``/config`` requires a bearer token.
    """

    isLeaf = True
    _log = Logger()

    def __init__(
        self,
        metrics: GatewayMetrics,
        health: Health,
        generations: LiveGeneration,
        *,
        token: str | AdminToken | None = None,
        sections: Mapping[str, Callable[[], object]] | None = None,
    ) -> None:
        """
        :param generations: has ``current``, the live generation (the reconciler).
        :param token: ``gateway.admin.token`` (empty or ``None``: ``/config``
            is open), or an :class:`AdminToken`.
        :param sections: more top-level entries of ``/config``, each asked
            for its JSON-ready state at every request (runtime state that is
            not part of a generation, e.g. ``openidKeys``); no secrets.
        """
        super().__init__()
        self._metrics = metrics
        self._health = health
        self._generations = generations
        self._sections = dict(sections or {})
        if isinstance(token, str):
            token = AdminToken(token) if token.strip() else None
        self._token = token
        self.protected = token is not None

    def render_GET(self, request: Any) -> bytes:
        path = request.path.rstrip(b"/") or b"/"
        if path == b"/metrics":
            request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode())
            return generate_latest(self._metrics.registry)
        if path == b"/healthz":
            return self._text(request, 200, "ok")
        if path == b"/readyz":
            return self._text(request, 200 if self._health.ready else 503, self._health.describe())
        if path == b"/config":
            if self._token is not None:
                refusal = self._refuse(request, self._token)
                if refusal is not None:
                    return refusal
            request.setHeader(b"content-type", b"application/json")
            dump = describe_generation(self._generations.current)
            for name, describe in self._sections.items():
                dump[name] = describe()
            return json.dumps(dump, indent=2, sort_keys=True).encode() + b"\n"
        return self._text(request, 404, "not found: try /metrics, /healthz, /readyz, /config")

    render_HEAD = render_GET

    def _refuse(self, request: Any, token: AdminToken) -> bytes | None:
        """
        ``None`` when the request carries the token; else the 401 body, with
        the RFC 6750 challenge (``error="invalid_token"`` when a bearer token
        was sent but is not the one).
        """
        header = request.getHeader(b"authorization") or b""
        scheme, _, credentials = header.strip().partition(b" ")
        credentials = credentials.strip()
        if scheme.lower() == b"bearer" and credentials:
            if token.matches(credentials):
                return None
            challenge = f'Bearer realm="{REALM}", error="invalid_token"'
            message = "Access denied due to invalid admin token."
        else:
            challenge = f'Bearer realm="{REALM}"'
            message = "Access denied due to missing admin token. Send Authorization: Bearer <token>."
        client = request.getClientAddress()
        self._log.warn(
            "Admin /config refused to {client}: {reason}",
            client=getattr(client, "host", "-"),
            reason="wrong token" if credentials and scheme.lower() == b"bearer" else "no token",
        )
        request.setResponseCode(401)
        request.setHeader(b"www-authenticate", challenge.encode())
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({"statusCode": 401, "message": message}).encode()

    def _text(self, request: Any, status: int, text: str) -> bytes:
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return text.encode() + b"\n"


def _loopback(address: Any) -> bool:
    """Whether a listening address is reachable from this host only."""
    if not isinstance(address, (IPv4Address, IPv6Address)):
        return True  # a UNIX socket: the file's permissions decide
    try:
        return ipaddress.ip_address(address.host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


class AdminListener(Service):
    """
    The admin port (a strports description); records the listening port
    (tests listen on port 0).

    Warns once at start when the port is reachable beyond this host and
    ``/config`` needs no token: the effective configuration (every backend
    and route) would be open to the network.
    """

    _log = Logger()

    def __init__(self, reactor: Any, description: str, resource: AdminResource) -> None:
        self._reactor = reactor
        self._description = description
        self._resource = resource
        self.site = Site(resource)
        # Probes and scrapes every few seconds would drown the access log.
        self.site.log = lambda request: None  # type: ignore[method-assign]
        self.port: Any = None
        self._listening: Deferred[Any] | None = None

    def startService(self) -> None:
        super().startService()
        listening = serverFromString(self._reactor, self._description).listen(self.site)
        self._listening = listening
        listening.addCallbacks(self._listened, self._listen_failed)

    def _listen_failed(self, failure: Any) -> None:
        # As the traffic listeners do: a gateway whose probes and metrics
        # cannot be reached is not one to keep running unnoticed.
        self._listening = None
        if failure.check(CancelledError):
            return
        self._log.failure(
            "Cannot listen on {description} (admin port); stopping",
            failure,
            description=self._description,
        )
        self._reactor.stop()

    def _listened(self, port: Any) -> None:
        self._listening = None
        self.port = port
        address = port.getHost()
        self._log.info("admin listener on {address}", address=str(address))
        if not self._resource.protected and not _loopback(address):
            self._log.warn(
                "The admin port listens on {address}, beyond loopback, and /config (the "
                "effective configuration) needs no token: set gateway.admin.token "
                "(--admin-token), or bind gateway.listen.admin to 127.0.0.1",
                address=str(address),
            )

    def stopService(self) -> Any:
        super().stopService()
        if self._listening is not None:
            # Stopped before the port was open: do not open it afterwards.
            self._listening.cancel()
        if self.port is not None:
            return self.port.stopListening()
        return None
