"""
A fake Kubernetes API server on a real loopback port, for tests.

The gateway's Kubernetes code talks to it exactly as it talks to a
kube-apiserver: real HTTP (optionally real TLS with a cluster CA and client
certificates), bearer tokens that are checked, ``Status`` objects for
errors, and the list/watch semantics the informers depend on:

* one global, monotonically increasing resourceVersion (an opaque string
  of an integer); every write gets a new one, and so does a List;
* per object: ``uid``, ``creationTimestamp``, ``generation`` (kinds with a
  spec), ``managedFields`` with a ``time`` on every write;
* create (``409 AlreadyExists``), get, update (``409 Conflict`` on a stale
  resourceVersion), merge patch, delete (with preconditions), the
  ``/status`` subresource of Ingress, Service, Namespace and the Gateway
  API kinds;
* the validation clients trip over: names, Secret data, a Lease's
  positive whole-second duration, an Event in its involved object's
  namespace (``422 Invalid``);
* list with ``labelSelector``, ``fieldSelector``, ``limit``/``continue``
  (an expired ``continue`` answers ``410``) and the ``resourceVersion`` /
  ``resourceVersionMatch`` rules of the API;
* watch as a chunked stream of newline-delimited JSON events, replayed
  from a retained history, with periodic BOOKMARK events and, for a
  version older than the history (see :meth:`FakeKubeServer.compact`),
  an ``ERROR`` event with a ``410 Expired`` Status before the stream ends.

Kinds: v1 Namespace, Service, Secret, Event; networking.k8s.io/v1 Ingress
and IngressClass; discovery.k8s.io/v1 EndpointSlice; coordination.k8s.io/v1
Lease; gateway.networking.k8s.io/v1 GatewayClass (cluster-scoped), Gateway
and HTTPRoute (each with ``/status``) and gateway.networking.k8s.io/v1beta1
ReferenceGrant, served as if their standard-channel CRDs were installed:
status dropped on create, the CRDs' default status (Accepted and, for a
Gateway, Programmed ``Unknown``, reason ``Pending``) on a GatewayClass or
Gateway without one, and a GatewayClass's ``controllerName`` immutable.
Simplifications, each one a place where a test cannot tell: no
finalizers or graceful deletion (a delete is immediate, a namespace's
objects go with it), strategic merge patch is applied as a JSON merge patch
(lists are replaced, not merged by key), no admission, RBAC only for users
restricted with ``rbac.grant`` (see :mod:`._kuberbac`; every other
authenticated user may do everything), ``managedFields`` carry no field
sets. One a test can tell: the Gateway API CRDs' OpenAPI schema is neither
validated nor defaulted (a real server rejects a Gateway without
listeners and fills in e.g. an HTTPRoute parentRef's group and kind), so
the contract suite writes only complete, valid objects.

Test controls: :meth:`~FakeKubeServer.set_object`,
:meth:`~FakeKubeServer.delete_object`, :meth:`~FakeKubeServer.compact`,
:meth:`~FakeKubeServer.close_watches`, :meth:`~FakeKubeServer.stop` /
:meth:`~FakeKubeServer.restart`, :meth:`~FakeKubeServer.fail_next`, token
management, and :attr:`~FakeKubeServer.requests`, the request log.

It is verified by ``tests/sources/kubernetes/test_contract.py``, whose
suite also runs against a real kube-apiserver.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import ipaddress
import json
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IListeningPort, IReactorTCP, IReactorTime
from twisted.internet.ssl import Certificate, CertificateOptions, KeyPair
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.protocols.policies import WrappingFactory
from twisted.web.resource import Resource as WebResource
from twisted.web.server import NOT_DONE_YET, Request, Site

from ._kuberbac import RBAC
from ._kubeselect import SelectorError, parse_field_selector, parse_label_selector
from ._kubestate import (
    RESOURCES,
    ApiStatus,
    Change,
    KubeState,
    Resource,
    status_body,
    watch_event,
)

__all__ = [
    "RESOURCES",
    "ApiStatus",
    "FakeKubeServer",
    "LoggedRequest",
    "Resource",
]

JSON = dict[str, Any]

#: What ``/version`` reports.
VERSION = {
    "major": "1",
    "minor": "31",
    "gitVersion": "v1.31.0-apimgw-fakekube",
    "platform": "linux/amd64",
}


@dataclass
class LoggedRequest:
    """
    One request the fake received, for assertions.

    :ivar verb: the API verb: ``list``, ``watch``, ``get``, ``create``,
        ``update``, ``patch``, ``delete`` (or ``discovery``).
    :ivar query: the query parameters (first value of each).
    :ivar user: who the request authenticated as (``None``: it did not).
    :ivar code: the HTTP status of the response (for a watch: of its start).
    """

    method: str
    path: str
    query: dict[str, str]
    verb: str = ""
    plural: str = ""
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None
    user: str | None = None
    code: int | None = None


@dataclass(eq=False)
class _Watcher:
    request: Request
    resource: Resource
    filter: Any
    bookmarks: bool
    log: LoggedRequest
    timeout: Any = None
    done: bool = False


@dataclass(frozen=True)
class _Route:
    resource: Resource
    namespace: str | None
    name: str | None
    subresource: str | None


def _arg(request: Request, name: str) -> str | None:
    values = request.args.get(name.encode("ascii"))
    return values[0].decode("utf-8") if values else None


def _flag(value: str | None) -> bool:
    return value is not None and value.lower() in ("true", "1")


def _parse_rv(value: str, what: str = "resourceVersion") -> int:
    try:
        rv = int(value)
        if rv < 0:
            raise ValueError(value)
    except ValueError:
        raise ApiStatus(
            400, "BadRequest", f"{what}: Invalid value: {value!r}: must be a valid resource version"
        ) from None
    return rv


#: The message of a kube-apiserver for an expired ``continue`` token.
_CONTINUE_EXPIRED = (
    "The provided continue parameter is too old to display a consistent list result. You can "
    "start a new list without the continue parameter, or use the continue token in this response "
    "to retrieve the remainder of the results. Continuing with the provided token results in an "
    "inconsistent list - objects that were created, modified, or deleted between the time the "
    "first chunk was returned and now may show up in the list."
)


def _encode_continue(rv: int, key: tuple[str, str]) -> str:
    raw = json.dumps({"v": "fakekube/1", "rv": rv, "start": list(key)}).encode()
    return base64.urlsafe_b64encode(raw).decode("ascii")


def _decode_continue(token: str) -> tuple[int, tuple[str, str]]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode("ascii")))
        return int(data["rv"]), (str(data["start"][0]), str(data["start"][1]))
    except (ValueError, KeyError, IndexError, TypeError, binascii.Error):
        raise ApiStatus(
            400,
            "BadRequest",
            "continue key is not valid: incorrect encoded start resourceVersion (version "
            "meta.k8s.io/v1)",
        ) from None


class _Tls:
    """
    The TLS material of a fake cluster: a CA that signs both the server's
    certificate (for ``127.0.0.1`` and ``localhost``) and client
    certificates (user = CN, groups = O), as kubeadm clusters do.
    """

    def __init__(self) -> None:
        now = datetime.datetime.now(datetime.timezone.utc)
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fakekube-ca")])
        self._name = name
        self.ca = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .sign(self._key, hashes.SHA256())
        )
        self.ca_pem = self.ca.public_bytes(serialization.Encoding.PEM)
        self.server_cert_pem, self.server_key_pem = self.issue(
            "kube-apiserver",
            sans=[x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")],
            usage=ExtendedKeyUsageOID.SERVER_AUTH,
        )

    def issue(
        self,
        common_name: str,
        *,
        organizations: Iterable[str] = (),
        sans: list[x509.GeneralName] | None = None,
        usage: x509.ObjectIdentifier = ExtendedKeyUsageOID.CLIENT_AUTH,
    ) -> tuple[bytes, bytes]:
        now = datetime.datetime.now(datetime.timezone.utc)
        key = ec.generate_private_key(ec.SECP256R1())
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
        attrs += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attrs))
            .issuer_name(self._name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return cert.public_bytes(serialization.Encoding.PEM), key_pem

    def server_options(self) -> CertificateOptions:
        ca = Certificate.loadPEM(self.ca_pem)
        return CertificateOptions(
            privateKey=KeyPair.load(self.server_key_pem, 1).original,  # FILETYPE_PEM
            certificate=Certificate.loadPEM(self.server_cert_pem).original,
            verify=True,
            caCerts=[ca.original],
            requireCertificate=False,
        )


class _ApiResource(WebResource):
    """The one leaf resource that answers every API path."""

    isLeaf = True

    def __init__(self, server: FakeKubeServer) -> None:
        super().__init__()
        self._server = server

    def render(self, request: Request) -> bytes | int:  # type: ignore[override]
        return self._server._render(request)


class FakeKubeServer(Service):
    """
    The fake API server: state, HTTP resource, listening port and test
    controls.

    Use it as a service (``startService`` listens) or call :meth:`start`
    and :meth:`stop` from a test::

        server = FakeKubeServer(bookmark_interval=0.5)
        url = yield server.start()
        self.addCleanup(server.stop)
        server.kubeconfig(path)           # for the real credential loader

    :ivar requests: every request received, oldest first.
    :ivar token: the bearer token of the default user (``None`` when the
        server was made with ``token=None``: then nothing is checked).
    """

    _log = Logger()

    def __init__(
        self,
        *,
        reactor: Any = None,
        token: str | None = "",
        tls: bool = False,
        bookmark_interval: float | None = 60.0,
        interface: str = "127.0.0.1",
        now: Any = None,
    ) -> None:
        """
        :param reactor: listens and schedules bookmarks and watch timeouts;
            the global reactor by default.
        :param token: the accepted bearer token of user ``admin``; ``""``
            (the default) makes a random one; ``None`` accepts anonymous
            requests.
        :param tls: serve HTTPS with a generated cluster CA; client
            certificates from :meth:`issue_client_certificate` then also
            authenticate.
        :param bookmark_interval: seconds between BOOKMARK events on watches
            that allow them (a kube-apiserver sends about one a minute);
            ``None``: never.
        :param now: the clock for timestamps (``creationTimestamp``,
            ``managedFields[].time``), ``time.time`` by default.
        """
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        self._reactor: IReactorTCP & IReactorTime = reactor  # type: ignore[valid-type]
        self._tokens: dict[str, str] = {}
        if token == "":
            token = secrets.token_urlsafe(24)
        self.token = token
        self._anonymous = token is None
        if token is not None:
            self._tokens[token] = "admin"
        self._tls = _Tls() if tls else None
        self._interface = interface
        self._bookmark_interval = bookmark_interval
        self._bookmarks: LoopingCall | None = None
        self._watchers: list[_Watcher] = []
        kwargs = {} if now is None else {"now": now}
        self.state = KubeState(on_change=self._changed, **kwargs)
        self._failures: list[tuple[str | None, str | None, int, str, list[int]]] = []
        #: Users restricted to RBAC rules (:meth:`RBAC.grant`); others may do anything.
        self.rbac = RBAC()
        self.requests: list[LoggedRequest] = []
        #: A fault to inject: when true, watches ignore ``timeoutSeconds``
        #: and stay open silently, as behind a half-open connection.
        self.ignore_watch_timeouts = False
        self._factory = WrappingFactory(Site(_ApiResource(self)))
        self._port: IListeningPort | None = None
        self._port_number = 0

    # -- lifecycle -------------------------------------------------------

    @property
    def url(self) -> str:
        """The base URL (``http://127.0.0.1:PORT``), once started."""
        scheme = "https" if self._tls else "http"
        return f"{scheme}://{self._interface}:{self._port_number}"

    @property
    def ca_pem(self) -> bytes | None:
        """The cluster CA certificate (PEM), with ``tls=True``."""
        return self._tls.ca_pem if self._tls else None

    def start(self) -> Deferred[str]:
        """Listen (on the port of the previous start, if any); fires with the URL."""
        if self._port is None:
            if self._tls is not None:
                self._port = self._reactor.listenSSL(  # type: ignore[attr-defined]
                    self._port_number,
                    self._factory,
                    self._tls.server_options(),
                    interface=self._interface,
                )
            else:
                self._port = self._reactor.listenTCP(
                    self._port_number, self._factory, interface=self._interface
                )
            self._port_number = self._port.getHost().port
        if self._bookmark_interval is not None and self._bookmarks is None:
            self._bookmarks = LoopingCall(self._send_bookmarks)
            self._bookmarks.clock = self._reactor
            self._bookmarks.start(self._bookmark_interval, now=False)
        return succeed(self.url)

    def stop(self) -> Deferred[None]:
        """
        Stop listening and drop every connection (open watches included)
        without a clean end, as a crashed or restarting API server does.
        The objects and the history are kept.
        """
        if self._bookmarks is not None and self._bookmarks.running:
            self._bookmarks.stop()
        self._bookmarks = None
        for watcher in list(self._watchers):
            self._end_watch(watcher, clean=False)
        for proto in list(self._factory.protocols):
            if proto.transport is not None:
                proto.transport.abortConnection()
        port, self._port = self._port, None
        if port is None:
            return succeed(None)
        return maybeDeferred(port.stopListening).addCallback(lambda _: None)

    def restart(self) -> Deferred[str]:
        """:meth:`stop`, then :meth:`start` on the same port."""
        d = self.stop()
        d.addCallback(lambda _: self.start())
        return d

    def startService(self) -> None:
        super().startService()
        self.start()

    def stopService(self) -> Deferred[None]:  # type: ignore[override]
        super().stopService()
        return self.stop()

    # -- credentials -----------------------------------------------------

    def add_token(self, token: str, user: str) -> None:
        """Accept ``token`` as ``user`` from now on."""
        self._tokens[token] = user

    def revoke_token(self, token: str) -> None:
        """Answer ``401`` to ``token`` from now on."""
        self._tokens.pop(token, None)

    def issue_client_certificate(
        self, user: str, groups: Iterable[str] = ()
    ) -> tuple[bytes, bytes]:
        """A client certificate and key (PEM) that authenticate as ``user`` (``tls=True`` only)."""
        if self._tls is None:
            raise RuntimeError("client certificates need FakeKubeServer(tls=True)")
        return self._tls.issue(user, organizations=groups)

    def kubeconfig(
        self,
        path: str,
        *,
        token: str | None = None,
        token_file: str | None = None,
        client_certificate: tuple[bytes, bytes] | None = None,
        namespace: str | None = None,
        context: str = "fakekube",
    ) -> str:
        """
        Write a kubeconfig for this server to ``path`` and return the path.

        The user authenticates with ``token_file`` (a ``tokenFile``: the
        file is read on every change), else ``client_certificate``, else
        ``token`` (the default user's token by default). With ``tls=True``
        the cluster CA goes in as ``certificate-authority-data``.
        """
        cluster: JSON = {"server": self.url}
        if self._tls is not None:
            cluster["certificate-authority-data"] = base64.b64encode(self._tls.ca_pem).decode()
        user: JSON = {}
        if token_file is not None:
            user["tokenFile"] = token_file
        elif client_certificate is not None:
            user["client-certificate-data"] = base64.b64encode(client_certificate[0]).decode()
            user["client-key-data"] = base64.b64encode(client_certificate[1]).decode()
        else:
            chosen = token if token is not None else self.token
            if chosen is not None:
                user["token"] = chosen
        ctx: JSON = {"cluster": context, "user": context}
        if namespace is not None:
            ctx["namespace"] = namespace
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": context, "cluster": cluster}],
            "users": [{"name": context, "user": user}],
            "contexts": [{"name": context, "context": ctx}],
            "current-context": context,
        }
        with open(path, "w", encoding="utf-8") as f:
            yaml.safe_dump(config, f)
        return path

    # -- test controls ---------------------------------------------------

    def set_object(self, obj: Mapping[str, Any]) -> JSON:
        """
        Create or replace an object (by ``apiVersion``, ``kind``, namespace
        and name) as a real write: new resourceVersion, history, watch
        events. Its namespace is created if needed; ``status`` is applied
        too. Returns the stored object.
        """
        return self.state.put(obj)

    def get_object(
        self, api_version: str, kind: str, namespace: str | None, name: str
    ) -> JSON | None:
        """The stored object, or ``None``."""
        resource = self.state.resource_for(api_version, kind)
        obj = self.state.current(resource, namespace, name)
        return None if obj is None else self.state.present(resource, obj)

    def delete_object(self, api_version: str, kind: str, namespace: str | None, name: str) -> None:
        """Delete an object as a real write (DELETED events follow)."""
        self.state.delete(self.state.resource_for(api_version, kind), namespace, name)

    def objects(self, api_version: str, kind: str) -> list[JSON]:
        """Every stored object of one kind, in key order."""
        return list(self.state.all_objects(self.state.resource_for(api_version, kind)))

    @property
    def resource_version(self) -> str:
        """The latest resourceVersion."""
        return str(self.state.rv)

    def compact(self, resource_version: str | None = None) -> None:
        """
        Drop the retained history up to ``resource_version`` (default: all
        of it), as etcd compaction does: a watch from an older version, an
        exact list at one, or a ``continue`` token of one is answered
        ``410 Gone`` from now on.
        """
        self.state.compact(None if resource_version is None else int(resource_version))

    def close_watches(self) -> int:
        """End every open watch stream cleanly (as a watch timeout does); returns how many."""
        watchers = list(self._watchers)
        for watcher in watchers:
            self._end_watch(watcher, clean=True)
        return len(watchers)

    @property
    def open_watches(self) -> int:
        """How many watch streams are open now."""
        return len(self._watchers)

    def fail_next(
        self,
        code: int = 500,
        *,
        verb: str | None = None,
        plural: str | None = None,
        count: int = 1,
        reason: str = "InternalError",
    ) -> None:
        """
        Answer the next ``count`` requests of ``verb`` on ``plural`` (``None``:
        any) with a Status of ``code`` instead of serving them.
        """
        self._failures.append((verb, plural, code, reason, [count]))

    def requests_for(
        self, verb: str | None = None, plural: str | None = None
    ) -> list[LoggedRequest]:
        """The logged requests of one verb and/or resource."""
        return [
            r
            for r in self.requests
            if (verb is None or r.verb == verb) and (plural is None or r.plural == plural)
        ]

    # -- HTTP ------------------------------------------------------------

    def _authenticate(self, request: Request) -> str | None:
        transport = request.channel.transport if request.channel else None
        getter = getattr(transport, "getPeerCertificate", None)
        if self._tls is not None and getter is not None:
            cert = getter()
            if cert is not None:
                return cert.get_subject().CN
        header = request.getHeader("authorization")
        if header and header[:7].lower() == "bearer ":
            return self._tokens.get(header[7:].strip())
        return None

    def _route(self, segments: list[str]) -> _Route | None:
        if segments[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", segments[2:]
        elif len(segments) >= 3 and segments[0] == "apis":
            group, version, rest = segments[1], segments[2], segments[3:]
        else:
            return None
        candidates = [r for r in RESOURCES if r.group == group and r.version == version]

        def find(plural: str, namespaced: bool | None) -> Resource | None:
            for r in candidates:
                if r.plural == plural and (namespaced is None or r.namespaced == namespaced):
                    return r
            return None

        if len(rest) >= 3 and rest[0] == "namespaces":
            resource = find(rest[2], True)
            if resource is not None and len(rest) <= 5:
                return _Route(
                    resource,
                    rest[1],
                    rest[3] if len(rest) > 3 else None,
                    rest[4] if len(rest) > 4 else None,
                )
        if 1 <= len(rest) <= 3:
            resource = find(rest[0], None)
            if resource is not None:
                if resource.namespaced and len(rest) > 1:
                    return None
                return _Route(
                    resource,
                    None,
                    rest[1] if len(rest) > 1 else None,
                    rest[2] if len(rest) > 2 else None,
                )
        return None

    def _render(self, request: Request) -> bytes | int:
        raw_path = (request.path or b"/").decode("utf-8", "replace")
        segments = [s for s in urlsplit(raw_path).path.split("/") if s]
        method = request.method.decode("ascii")
        log = LoggedRequest(
            method=method,
            path=raw_path,
            query={k.decode(): v[0].decode("utf-8", "replace") for k, v in request.args.items()},
        )
        self.requests.append(log)
        log.user = self._authenticate(request)
        if log.user is None and not self._anonymous:
            self._log.debug("fakekube: 401 for {method} {path}", method=method, path=raw_path)
            return self._error(request, log, ApiStatus(401, "Unauthorized", "Unauthorized"))
        try:
            discovery = self._discovery(segments)
            if discovery is not None:
                log.verb = "discovery"
                return self._json(request, log, 200, discovery)
            route = self._route(segments)
            if route is None:
                raise ApiStatus(404, "NotFound", "the server could not find the requested resource")
            log.plural, log.namespace, log.name, log.subresource = (
                route.resource.plural,
                route.namespace,
                route.name,
                route.subresource,
            )
            log.verb = self._verb(method, route, request)
            self._authorize(log, route)
            self._injected_failure(log)
            return self._dispatch(request, log, route)
        except ApiStatus as status:
            return self._error(request, log, status)
        except SelectorError as e:
            return self._error(
                request, log, ApiStatus(400, "BadRequest", f"unable to parse requirement: {e}")
            )
        except Exception as e:
            # A bug in the fake: answered the way the API server answers its
            # own, so the client under test sees a Status, and logged so the
            # test's log shows it.
            self._log.failure("fakekube: {method} {path} failed", method=method, path=raw_path)
            return self._error(request, log, ApiStatus(500, "InternalError", repr(e)))

    @staticmethod
    def _verb(method: str, route: _Route, request: Request) -> str:
        if method == "GET":
            if route.name is not None:
                return "get"
            return "watch" if _flag(_arg(request, "watch")) else "list"
        return {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(
            method, method.lower()
        )

    def _authorize(self, log: LoggedRequest, route: _Route) -> None:
        group = route.resource.group
        if not self.rbac.allows(
            log.user, log.verb, group, log.plural, log.subresource, log.namespace, log.name
        ):
            raise ApiStatus(
                403,
                "Forbidden",
                self.rbac.forbidden_message(
                    log.user, log.verb, group, log.plural, log.subresource, log.namespace
                ),
            )

    def _injected_failure(self, log: LoggedRequest) -> None:
        for entry in list(self._failures):
            verb, plural, code, reason, left = entry
            if (verb is None or verb == log.verb) and (plural is None or plural == log.plural):
                left[0] -= 1
                if left[0] <= 0:
                    self._failures.remove(entry)
                raise ApiStatus(code, reason, f"injected failure ({code} {reason})")

    def _discovery(self, segments: list[str]) -> JSON | None:
        if segments == ["version"]:
            return dict(VERSION)
        if segments == ["api"]:
            return {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": self._interface}
                ],
            }
        if segments == ["apis"]:
            groups: dict[str, list[str]] = {}
            for r in RESOURCES:
                if r.group and r.version not in groups.setdefault(r.group, []):
                    groups[r.group].append(r.version)
            return {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [
                    {
                        "name": g,
                        "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
                        "preferredVersion": {"groupVersion": f"{g}/{vs[0]}", "version": vs[0]},
                    }
                    for g, vs in groups.items()
                ],
            }
        group_version = None
        if segments == ["api", "v1"]:
            group_version = ("", "v1")
        elif len(segments) == 3 and segments[0] == "apis":
            group_version = (segments[1], segments[2])
        if group_version is None:
            return None
        listed = []
        for r in RESOURCES:
            if (r.group, r.version) != group_version:
                continue
            verbs = ["create", "delete", "get", "list", "patch", "update", "watch"]
            listed.append(
                {
                    "name": r.plural,
                    "singularName": r.kind.lower(),
                    "namespaced": r.namespaced,
                    "kind": r.kind,
                    "verbs": verbs,
                }
            )
            if r.status_subresource:
                listed.append(
                    {
                        "name": f"{r.plural}/status",
                        "singularName": "",
                        "namespaced": r.namespaced,
                        "kind": r.kind,
                        "verbs": ["get", "patch", "update"],
                    }
                )
        if not listed:
            return None
        gv = f"{group_version[0]}/{group_version[1]}" if group_version[0] else group_version[1]
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": gv,
            "resources": listed,
        }

    def _dispatch(self, request: Request, log: LoggedRequest, route: _Route) -> bytes | int:
        resource, namespace, name, sub = (
            route.resource,
            route.namespace,
            route.name,
            route.subresource,
        )
        method = log.method
        manager = self._manager(request)
        if sub is not None and (sub != "status" or not resource.status_subresource):
            raise ApiStatus(404, "NotFound", "the server could not find the requested resource")
        if name is None:
            if method == "GET":
                if log.verb == "watch":
                    return self._watch(request, log, resource, namespace)
                return self._json(request, log, 200, self._list(request, resource, namespace))
            if method == "POST":
                if resource.namespaced and namespace is None:
                    raise ApiStatus(
                        405,
                        "MethodNotAllowed",
                        "the server does not allow this method on the requested resource",
                    )
                created = self.state.create(
                    resource, self._body(request), namespace, manager=manager
                )
                return self._json(request, log, 201, created)
            raise ApiStatus(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            )
        if method == "GET":
            return self._json(request, log, 200, self.state.get(resource, namespace, name))
        if method == "PUT":
            updated = self.state.update(
                resource, self._body(request), namespace, name, subresource=sub, manager=manager
            )
            return self._json(request, log, 200, updated)
        if method == "PATCH":
            content_type = (request.getHeader("content-type") or "").split(";")[0].strip()
            if content_type not in (
                "application/merge-patch+json",
                "application/strategic-merge-patch+json",
            ):
                raise ApiStatus(
                    415,
                    "UnsupportedMediaType",
                    f"the body of the request was in an unknown format ({content_type}) - "
                    "accepted media "
                    "types include: application/merge-patch+json, "
                    "application/strategic-merge-patch+json",
                )
            patched = self.state.update(
                resource,
                None,
                namespace,
                name,
                subresource=sub,
                manager=manager,
                merge=self._body(request),
            )
            return self._json(request, log, 200, patched)
        if method == "DELETE":
            if sub is not None:
                raise ApiStatus(
                    405,
                    "MethodNotAllowed",
                    "the server does not allow this method on the requested resource",
                )
            body = self._body(request, optional=True) or {}
            result = self.state.delete(
                resource,
                namespace,
                name,
                preconditions=body.get("preconditions") if isinstance(body, dict) else None,
            )
            return self._json(request, log, 200, result)
        raise ApiStatus(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )

    @staticmethod
    def _manager(request: Request) -> str:
        explicit = _arg(request, "fieldManager")
        if explicit:
            return explicit
        agent = (request.getHeader("user-agent") or "unknown").split("/")[0].strip()
        return agent or "unknown"

    @staticmethod
    def _body(request: Request, *, optional: bool = False) -> Any:
        data = request.content.read() if request.content is not None else b""
        if not data.strip():
            if optional:
                return None
            raise ApiStatus(400, "BadRequest", "the request body is empty")
        try:
            return json.loads(data)
        except ValueError as e:
            raise ApiStatus(
                400, "BadRequest", f"the body of the request is not valid JSON: {e}"
            ) from None

    def _selectors(self, request: Request, resource: Resource) -> tuple[Any, Any]:
        labels = parse_label_selector(_arg(request, "labelSelector"))
        fields = parse_field_selector(_arg(request, "fieldSelector"), resource.field_allowed)
        return labels, fields

    def _list(self, request: Request, resource: Resource, namespace: str | None) -> JSON:
        labels, fields = self._selectors(request, resource)
        limit_arg = _arg(request, "limit")
        limit = int(limit_arg) if limit_arg and limit_arg.isdigit() and int(limit_arg) > 0 else None
        token = _arg(request, "continue")
        rv_arg = _arg(request, "resourceVersion")
        match = _arg(request, "resourceVersionMatch")
        start: tuple[str, str] | None = None
        if token:
            if rv_arg:
                raise ApiStatus(
                    400,
                    "BadRequest",
                    "specifying resource version is not allowed when using continue",
                )
            at, start = _decode_continue(token)
            if at < self.state.compacted:
                raise ApiStatus(
                    410,
                    "Expired",
                    _CONTINUE_EXPIRED,
                )
        else:
            at = self._list_version(rv_arg, match, limit)
        objects = (
            self.state.state_at(resource, at)
            if at != self.state.rv
            else self.state.objects_of(resource)
        )
        selected = self.state.select(resource, objects, namespace, labels, fields)
        if start is not None:
            selected = [(k, o) for k, o in selected if k > start]
        meta: JSON = {"resourceVersion": str(at)}
        if limit is not None and len(selected) > limit:
            meta["continue"] = _encode_continue(at, selected[limit - 1][0])
            if not _arg(request, "labelSelector") and not _arg(request, "fieldSelector"):
                meta["remainingItemCount"] = len(selected) - limit
            selected = selected[:limit]
        items = [json.loads(json.dumps(o)) for _, o in selected]
        return {
            "kind": f"{resource.kind}List",
            "apiVersion": resource.api_version,
            "metadata": meta,
            "items": items,
        }

    def _list_version(self, rv_arg: str | None, match: str | None, limit: int | None) -> int:
        """
        Which version a list (without ``continue``) is served at, by the
        rules of "Semantics for get and list" in the API concepts.
        """
        current = self.state.rv
        if match:
            if match not in ("Exact", "NotOlderThan"):
                raise ApiStatus(
                    400, "BadRequest", f"resourceVersionMatch: Unsupported value: {match!r}"
                )
            if not rv_arg:
                raise ApiStatus(
                    422,
                    "Invalid",
                    "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless "
                    "resourceVersion is provided",
                )
        if not rv_arg or rv_arg == "0":
            if match == "Exact":
                raise ApiStatus(
                    422,
                    "Invalid",
                    'resourceVersionMatch: Forbidden: resourceVersionMatch "exact" is forbidden '
                    'for resourceVersion "0"',
                )
            return current
        rv = _parse_rv(rv_arg)
        if rv > current:
            raise ApiStatus(
                504,
                "Timeout",
                f"Too large resource version: {rv}, current: {current}",
                {
                    "causes": [
                        {
                            "reason": "ResourceVersionTooLarge",
                            "message": "Too large resource version",
                        }
                    ],
                    "retryAfterSeconds": 1,
                },
            )
        exact = match == "Exact" or (match is None and limit is not None)
        if exact:
            if rv < self.state.compacted:
                raise self.state.expired(rv)
            return rv
        return current

    # -- watches ---------------------------------------------------------

    def _watch(
        self, request: Request, log: LoggedRequest, resource: Resource, namespace: str | None
    ) -> int:
        labels, fields = self._selectors(request, resource)
        rv_arg = _arg(request, "resourceVersion")
        since = None if not rv_arg or rv_arg == "0" else _parse_rv(rv_arg)
        bookmarks = _flag(_arg(request, "allowWatchBookmarks"))
        timeout_arg = _arg(request, "timeoutSeconds")
        watcher = _Watcher(
            request, resource, self.state.filter(namespace, labels, fields), bookmarks, log
        )
        request.setResponseCode(200)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-cache, private")
        log.code = 200
        request.write(b"")  # the status line and headers go out now, as upstream
        if since is not None and since < self.state.compacted:
            # A watch from an expired version starts, reports 410 as an
            # ERROR event and ends: what the watch cache does.
            self._write_event(watcher, "ERROR", self.state.expired(since).body())
            request.finish()
            return NOT_DONE_YET
        if since is None:
            for _, obj in self.state.select(
                resource, self.state.objects_of(resource), namespace, labels, fields
            ):
                self._write_event(watcher, "ADDED", self.state.present(resource, obj))
        else:
            for change in self.state.changes_after(since):
                if change.resource is resource:
                    self._deliver(watcher, change)
        self._watchers.append(watcher)
        request.notifyFinish().addBoth(lambda _: self._forget(watcher))
        if timeout_arg and timeout_arg.isdigit() and not self.ignore_watch_timeouts:
            watcher.timeout = self._reactor.callLater(
                int(timeout_arg), self._end_watch, watcher, True
            )
        return NOT_DONE_YET

    def _deliver(self, watcher: _Watcher, change: Change) -> None:
        seen = watch_event(change, watcher.filter)
        if seen is not None:
            kind, obj = seen
            self._write_event(watcher, kind, self.state.present(change.resource, obj))

    @staticmethod
    def _write_event(watcher: _Watcher, kind: str, obj: JSON) -> None:
        if watcher.done:
            return
        line = (
            json.dumps({"type": kind, "object": obj}, separators=(",", ":")).encode("utf-8") + b"\n"
        )
        watcher.request.write(line)

    def _changed(self, change: Change) -> None:
        for watcher in list(self._watchers):
            if watcher.resource is change.resource:
                self._deliver(watcher, change)

    def _send_bookmarks(self) -> None:
        for watcher in list(self._watchers):
            if watcher.bookmarks:
                r = watcher.resource
                self._write_event(
                    watcher,
                    "BOOKMARK",
                    {
                        "kind": r.kind,
                        "apiVersion": r.api_version,
                        "metadata": {
                            "resourceVersion": str(self.state.rv),
                            "creationTimestamp": None,
                        },
                    },
                )

    def _forget(self, watcher: _Watcher) -> None:
        watcher.done = True
        if watcher in self._watchers:
            self._watchers.remove(watcher)
        if watcher.timeout is not None and watcher.timeout.active():
            watcher.timeout.cancel()

    def _end_watch(self, watcher: _Watcher, clean: bool) -> None:
        if watcher.done:
            return
        self._forget(watcher)
        if clean:
            watcher.request.finish()
        else:
            transport = watcher.request.channel.transport if watcher.request.channel else None
            if transport is not None:
                transport.abortConnection()

    # -- responses -------------------------------------------------------

    @staticmethod
    def _json(request: Request, log: LoggedRequest, code: int, body: Any) -> bytes:
        log.code = code
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(body, separators=(",", ":")).encode("utf-8")

    def _error(self, request: Request, log: LoggedRequest, status: ApiStatus) -> bytes:
        return self._json(
            request,
            log,
            status.code,
            status_body(status.code, status.reason, status.message, status.details),
        )
