"""
Kubernetes API access on the reactor: treq over an ``Agent`` whose TLS
trusts the cluster CA, no thread per request and no thread per watch.

Why not the ``kubernetes`` package's generated client: it is blocking
(urllib3), so every watch would hold a thread for its whole life and every
call would need a thread hop. Its credential loaders are used
(:mod:`._credentials`); the wire protocol is simple enough to speak
directly, and doing so lets a watch be parsed incrementally as the bytes
arrive.

Objects are plain JSON dictionaries, as the API serves them; a list's
items get their ``kind`` and ``apiVersion`` filled in (the API server
leaves them out of typed lists) so that handlers see whole objects.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import treq
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.ssl import (
    Certificate,
    CertificateOptions,
    PrivateCertificate,
    optionsForClientTLS,
    platformTrust,
    trustRootFromCertificates,
)
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from ._credentials import ClusterCredentials, TokenSource
from ._errors import ApiError, WatchStalled, api_error
from ._kinds import Kind
from ._watch import ObjectList, WatchEvent, WatchProtocol

__all__ = ["ClusterTLSPolicy", "KubeClient"]

JSON = dict[str, Any]


@implementer(IPolicyForHTTPS)
class ClusterTLSPolicy:
    """
    TLS for the API server: trust exactly the cluster CA (not the
    platform's roots, when a CA is given), verify the server's name (or
    ``tls-server-name``), and present the client certificate if any.
    """

    def __init__(self, credentials: ClusterCredentials) -> None:
        self._server_name = credentials.tls_server_name
        self._verify = credentials.verify_tls
        self._client: PrivateCertificate | None = None
        if credentials.client_cert_pem and credentials.client_key_pem:
            self._client = PrivateCertificate.loadPEM(
                credentials.client_key_pem + b"\n" + credentials.client_cert_pem
            )
        if credentials.ca_pem:
            self._trust = trustRootFromCertificates(
                [Certificate.loadPEM(pem) for pem in _split_pem(credentials.ca_pem)]
            )
        else:
            self._trust = platformTrust()

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
        if not self._verify:
            extra: dict[str, Any] = {}
            if self._client is not None:
                extra = {
                    "privateKey": self._client.privateKey.original,
                    "certificate": self._client.original,
                }
            return CertificateOptions(verify=False, **extra)
        name = self._server_name or hostname.decode("ascii")
        return optionsForClientTLS(name, trustRoot=self._trust, clientCertificate=self._client)


def _split_pem(bundle: bytes) -> list[bytes]:
    marker = b"-----END CERTIFICATE-----"
    blocks = []
    for part in bundle.split(marker):
        if b"-----BEGIN CERTIFICATE-----" in part:
            blocks.append(part[part.index(b"-----BEGIN CERTIFICATE-----") :] + marker + b"\n")
    if not blocks:
        raise ValueError("no certificate in the cluster CA bundle")
    return blocks


class KubeClient:
    """
    Calls to one API server.

    Every method returns a Deferred; failures are :class:`ApiError`
    subclasses for answers from the server, and Twisted's connection
    errors when it could not be reached.

    :ivar credentials: what it authenticates with.
    """

    _log = Logger()

    def __init__(
        self,
        credentials: ClusterCredentials,
        *,
        reactor: Any = None,
        user_agent: str = "apimgw/0.1",
        request_timeout: float = 30.0,
        connect_timeout: float = 10.0,
        watch_grace: float = 30.0,
    ) -> None:
        """
        :param reactor: for connections and timeouts; the global reactor by default.
        :param request_timeout: seconds for a whole non-watch request.
        :param watch_grace: seconds past a watch's ``timeoutSeconds`` after
            which the client drops the connection itself (a half-open
            connection would otherwise hang the watch forever).
        """
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        self.credentials = credentials
        self._reactor: IReactorTime = reactor
        self._tokens = TokenSource(credentials)
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self._pool.maxPersistentPerHost = 4
        agent = Agent(
            reactor,
            contextFactory=ClusterTLSPolicy(credentials),
            connectTimeout=connect_timeout,
            pool=self._pool,
        )
        self._http = treq.client.HTTPClient(agent)
        self._base = credentials.server.rstrip("/")
        self._user_agent = user_agent
        self._timeout = request_timeout
        self._watch_grace = watch_grace

    def close(self) -> Deferred[None]:
        """Close idle pooled connections (call when done, e.g. in a test's cleanup)."""
        return self._pool.closeCachedConnections()

    # -- plumbing --------------------------------------------------------

    def _headers(self, content_type: str | None) -> dict[str, list[str]]:
        headers = {"Accept": ["application/json"], "User-Agent": [self._user_agent]}
        authorization = self._tokens.header()
        if authorization:
            headers["Authorization"] = [authorization]
        if content_type:
            headers["Content-Type"] = [content_type]
        return headers

    async def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str | None = None,
        stream: bool = False,
    ) -> Any:
        """Send one request; on a 401 with renewable credentials, renew once and resend."""
        data = None if body is None else json.dumps(body).encode("utf-8")
        if data is not None and content_type is None:
            content_type = "application/json"
        for attempt in (1, 2):
            response = await self._http.request(
                method,
                self._base + path,
                params=dict(params or {}),
                headers=self._headers(content_type),
                data=data,
                allow_redirects=False,
                unbuffered=stream,
                reactor=self._reactor,
                timeout=self._timeout,
            )
            if response.code == 401 and attempt == 1 and self._tokens.refreshable:
                await treq.content(response)
                pool = getattr(self._reactor, "getThreadPool", None)
                if pool is not None:
                    changed = await deferToThreadPool(
                        self._reactor, pool(), self._tokens.refresh_blocking
                    )
                else:
                    changed = self._tokens.refresh_blocking()
                if changed:
                    self._log.info("API server answered 401: retrying with renewed credentials")
                    continue
            return response
        raise AssertionError("unreachable")

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self._send(method, path, **kwargs)
        raw = await treq.content(response)
        try:
            decoded = json.loads(raw) if raw.strip() else None
        except ValueError:
            decoded = None
        if not 200 <= response.code < 300:
            raise api_error(response.code, decoded, response.phrase.decode("latin-1", "replace"))
        if not isinstance(decoded, dict):
            raise ApiError(
                response.code, "BadResponse", f"{method} {path}: the answer is not a JSON object"
            )
        return decoded

    def _request(self, method: str, path: str, **kwargs: Any) -> Deferred[Any]:
        d = ensureDeferred(self._call(method, path, **kwargs))
        return d.addTimeout(self._timeout, self._reactor)

    # -- API -------------------------------------------------------------

    def get(self, kind: Kind, namespace: str | None, name: str) -> Deferred[JSON]:
        """One object; :class:`NotFound` if absent."""
        return self._request("GET", kind.path(namespace, name))

    def list(
        self,
        kind: Kind,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = None,
        continue_token: str | None = None,
        resource_version: str | None = None,
        resource_version_match: str | None = None,
    ) -> Deferred[ObjectList]:
        """
        One page of a collection (``namespace=None``: all namespaces). With
        no ``resource_version`` the list is a consistent read of the latest
        state, which is what an informer needs after a ``410``.

        :raises Gone: for an expired ``continue`` token or an exact version
            no longer available.
        """
        params: dict[str, str] = {}
        for key, value in (
            ("labelSelector", label_selector),
            ("fieldSelector", field_selector),
            ("limit", str(limit) if limit else None),
            ("continue", continue_token),
            ("resourceVersion", resource_version),
            ("resourceVersionMatch", resource_version_match),
        ):
            if value:
                params[key] = value
        d = self._request("GET", kind.path(namespace), params=params)
        return d.addCallback(self._object_list, kind)

    @staticmethod
    def _object_list(body: JSON, kind: Kind) -> ObjectList:
        meta = body.get("metadata") or {}
        items = []
        for item in body.get("items") or []:
            whole = {"kind": kind.kind, "apiVersion": kind.api_version}
            whole.update(item)
            items.append(whole)
        return ObjectList(
            items=items,
            resource_version=str(meta.get("resourceVersion") or ""),
            continue_token=meta.get("continue") or None,
            remaining=meta.get("remainingItemCount"),
        )

    def list_all(
        self,
        kind: Kind,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        page_size: int = 500,
    ) -> Deferred[ObjectList]:
        """
        A whole collection, fetched in pages of ``page_size`` and consistent
        at the first page's version (the server keeps the snapshot for the
        ``continue`` tokens). :class:`Gone` when a token expired meanwhile:
        the caller starts again.
        """

        async def pages() -> ObjectList:
            items: list[JSON] = []
            token: str | None = None
            version = ""
            while True:
                page = await self.list(
                    kind,
                    namespace,
                    label_selector=label_selector,
                    field_selector=field_selector,
                    limit=page_size,
                    continue_token=token,
                )
                if token is None:
                    version = page.resource_version
                items.extend(page.items)
                token = page.continue_token
                if not token:
                    return ObjectList(items, version)

        return ensureDeferred(pages())

    def create(
        self, kind: Kind, obj: Mapping[str, Any], namespace: str | None = None
    ) -> Deferred[JSON]:
        """
        Create ``obj`` (in ``namespace``, else its own
        ``metadata.namespace``); :class:`AlreadyExists` if the name is taken.
        """
        body = self._typed(kind, obj)
        if kind.namespaced:
            namespace = namespace or (body.get("metadata") or {}).get("namespace") or "default"
        else:
            namespace = None
        return self._request("POST", kind.path(namespace), body=body)

    def update(self, kind: Kind, obj: Mapping[str, Any]) -> Deferred[JSON]:
        """
        Replace an object. Its ``metadata.resourceVersion`` (when set) is a
        precondition: :class:`Conflict` if the object changed since.
        """
        namespace, name = self._where(kind, obj)
        return self._request("PUT", kind.path(namespace, name), body=self._typed(kind, obj))

    def update_status(self, kind: Kind, obj: Mapping[str, Any]) -> Deferred[JSON]:
        """
        Replace an object's ``status`` through the ``/status`` subresource (nothing else changes).
        """
        namespace, name = self._where(kind, obj)
        return self._request(
            "PUT", kind.path(namespace, name, "status"), body=self._typed(kind, obj)
        )

    def patch(
        self,
        kind: Kind,
        namespace: str | None,
        name: str,
        patch: Mapping[str, Any],
        *,
        subresource: str | None = None,
        content_type: str = "application/merge-patch+json",
    ) -> Deferred[JSON]:
        """Apply a JSON merge patch (by default) to an object or its ``status``."""
        return self._request(
            "PATCH",
            kind.path(namespace, name, subresource),
            body=dict(patch),
            content_type=content_type,
        )

    def delete(
        self,
        kind: Kind,
        namespace: str | None,
        name: str,
        *,
        preconditions: Mapping[str, str] | None = None,
    ) -> Deferred[JSON]:
        """
        Delete an object; ``preconditions`` (``uid``, ``resourceVersion``)
        make it conditional. Returns what the server answers (a Status, or
        the object for some kinds).
        """
        body = None
        if preconditions:
            body = {
                "kind": "DeleteOptions",
                "apiVersion": "v1",
                "preconditions": dict(preconditions),
            }
        return self._request("DELETE", kind.path(namespace, name), body=body)

    @staticmethod
    def _typed(kind: Kind, obj: Mapping[str, Any]) -> JSON:
        body = dict(obj)
        body.setdefault("kind", kind.kind)
        body.setdefault("apiVersion", kind.api_version)
        return body

    @staticmethod
    def _where(kind: Kind, obj: Mapping[str, Any]) -> tuple[str | None, str]:
        meta = obj.get("metadata") or {}
        name = meta.get("name")
        if not name:
            raise ValueError("the object has no metadata.name")
        return (meta.get("namespace") or "default") if kind.namespaced else None, name

    def watch(
        self,
        kind: Kind,
        namespace: str | None = None,
        *,
        on_event: Callable[[WatchEvent], None],
        resource_version: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        allow_bookmarks: bool = True,
        timeout_seconds: int | None = None,
    ) -> Deferred[None]:
        """
        Watch a collection from ``resource_version``, calling ``on_event``
        for every event as soon as its line is complete.

        The Deferred fires with ``None`` when the server ends the stream
        (a timeout; the caller watches again from the last version it saw),
        fails with :class:`Gone` for an expired version (an HTTP ``410`` or
        an ``ERROR`` event with code 410: the caller must list again), with
        another :class:`ApiError` for other refusals, with a connection
        error when the stream breaks, and with :class:`WatchStalled` when
        the server does not end the stream within ``timeout_seconds`` plus
        a grace period. Cancelling it closes the connection.
        """
        params = {"watch": "true"}
        if resource_version:
            params["resourceVersion"] = resource_version
        if allow_bookmarks:
            params["allowWatchBookmarks"] = "true"
        if label_selector:
            params["labelSelector"] = label_selector
        if field_selector:
            params["fieldSelector"] = field_selector
        if timeout_seconds:
            params["timeoutSeconds"] = str(int(timeout_seconds))

        watch = _Watch()
        done: Deferred[None] = Deferred(lambda d: watch.stop(Failure(CancelledError())))

        async def start() -> None:
            response = await self._send("GET", kind.path(namespace), params=params, stream=True)
            if response.code != 200:
                raw = await treq.content(response)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                raise api_error(response.code, body, response.phrase.decode("latin-1", "replace"))
            if done.called:
                return
            watch.protocol = WatchProtocol(on_event, done)
            response.deliverBody(watch.protocol)

        watch.started = ensureDeferred(start())

        def start_failed(failure: Failure) -> None:
            if not done.called:
                done.errback(failure)

        watch.started.addErrback(start_failed)
        if timeout_seconds:
            deadline = self._reactor.callLater(
                timeout_seconds + self._watch_grace,
                watch.stop,
                Failure(WatchStalled("the API server did not end the watch in time")),
            )

            def clear(result: Any) -> Any:
                if deadline.active():
                    deadline.cancel()
                return result

            done.addBoth(clear)
        return done


class _Watch:
    """
    One watch in progress: the request being started, then the protocol
    receiving its body. Stopping it ends whichever stage it is in.
    """

    def __init__(self) -> None:
        self.started: Deferred[None] | None = None
        self.protocol: WatchProtocol | None = None

    def stop(self, reason: Failure) -> None:
        """End the watch with ``reason`` (cancelled, or stalled past its deadline)."""
        if self.protocol is not None:
            self.protocol.abort(reason)
        elif self.started is not None:
            self.started.cancel()
