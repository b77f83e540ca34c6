"""
A Gateway's listeners: validation, TLS certificate references, conflicts
and ``allowedRoutes`` — which listeners exist for routes to attach to, and
the per-listener conditions the Gateway's status reports.

Core conformance rules (``Listener``, ``ListenerStatus`` in the v1 API):

* Protocols ``HTTP`` and ``HTTPS`` are served; any other is
  ``Accepted=False UnsupportedProtocol``.
* A listener's ``port`` must be the one the gateway serves its protocol
  on (settings ``k8s.gateway.http-port``, ``k8s.gateway.https-port``):
  else ``Accepted=False PortUnavailable``, not programmed. All Gateways
  share the gateway's two ports, so a listener on another port would be
  served where its ``allowedRoutes`` were never meant to apply.
* Listeners sharing a port must agree on the protocol
  (``Conflicted=True ProtocolConflict``) and differ in hostname
  (``HostnameConflict``); a conflicted listener is not programmed. Across
  our Gateways (one pair of ports for all), a (hostname, protocol) two
  programmed listeners claim goes to the oldest Gateway
  (``creationTimestamp``, then ``namespace/name``); the others' listeners
  are ``Conflicted=True HostnameConflict`` (:func:`mark_gateway_conflicts`).
* ``HTTPS`` terminates TLS with ``tls.certificateRefs``: core Secrets of
  type ``kubernetes.io/tls``; another namespace needs a ReferenceGrant
  (``RefNotPermitted``); missing or malformed is
  ``InvalidCertificateRef``. No usable certificate: not programmed.
* ``allowedRoutes.kinds`` defaults to ``HTTPRoute``; kinds we do not
  serve give ``ResolvedRefs=False InvalidRouteKinds`` and are left out of
  ``supportedKinds``.
* ``allowedRoutes.namespaces.from``: ``Same`` (default), ``All``, or
  ``Selector`` over the route namespace's labels.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from ..kubernetes import InvalidSecret, tls_secret_pem
from ._grants import Reference, permitted
from ._kube import GROUP, KubeObject, generation, key, meta, spec
from ._selectors import InvalidSelector, selector_matches
from ._types import Condition

__all__ = ["ListenerState", "SecretChecks", "mark_gateway_conflicts", "resolve_listeners"]

_PROTOCOLS = ("HTTP", "HTTPS")
_ROUTE_KINDS = ((GROUP, "HTTPRoute"),)


@dataclass
class ListenerState:
    """One listener while resolving: its spec, its verdict, and what attached."""

    gateway: str
    namespace: str
    name: str
    port: int
    protocol: str
    hostname: str | None
    allowed_from: str
    selector: Mapping[str, Any] | None
    kinds: tuple[str, ...]
    generation: int | None
    conditions: list[Condition] = field(default_factory=list)
    certificates: tuple[str, ...] = ()
    programmed: bool = False
    attached: set[str] = field(default_factory=set)

    def admits_namespace(self, namespace: str, labels: Mapping[str, str] | None) -> bool:
        """
        ``allowedRoutes.namespaces``: may a route of ``namespace`` attach?
        ``labels`` is ``None`` when the Namespace is not known (yet): a
        selector then admits nothing, since reading it as "no labels"
        would let ``NotIn``/``DoesNotExist`` admit it (fail closed).
        """
        if self.allowed_from == "All":
            return True
        if self.allowed_from == "Selector":
            if labels is None:
                return False
            try:
                return self.selector is not None and selector_matches(self.selector, labels)
            except InvalidSelector:
                return False
        return namespace == self.namespace

    @property
    def serves_http(self) -> bool:
        """Whether HTTPRoutes may attach at all (HTTP or HTTPS, whatever else is wrong)."""
        return self.protocol in _PROTOCOLS

    def admits_kind(self, kind: str) -> bool:
        return kind in self.kinds


def _condition(state: ListenerState, kind: str, ok: bool, reason: str, message: str = "") -> None:
    state.conditions.append(Condition(kind, ok, reason, message, state.generation))


def _pem_problem(secret: KubeObject | None) -> str | None:
    """
    Why a Secret cannot serve as a listener's certificate, or ``None``:
    missing, another type, an item missing or not base64 text, or text
    that is not PEM (``tls.crt``: at least one X.509 certificate;
    ``tls.key``: an unencrypted private key). Whether the two match is
    translation's check, as for Ingress; RSA keys are parsed without
    their (slow) consistency check for the same reason.
    """
    try:
        cert_pem, key_pem = tls_secret_pem(secret)
    except InvalidSecret as e:
        return str(e)
    try:
        x509.load_pem_x509_certificates(cert_pem.encode("ascii"))
    except (ValueError, UnsupportedAlgorithm):
        return "tls.crt holds no PEM certificate"
    try:
        serialization.load_pem_private_key(
            key_pem.encode("ascii"), password=None, unsafe_skip_rsa_key_validation=True
        )
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return "tls.key holds no unencrypted PEM private key"
    return None


class SecretChecks:
    """
    The verdict of each TLS Secret (:func:`_pem_problem`) kept from one
    resolution to the next by ``(uid, resourceVersion)``: parsing a
    certificate and key is cheap but not free, and every resolution checks
    every named Secret again. Only the entries used by the last resolution
    are kept (:meth:`begin`); Secrets without both (hand-built inputs) are
    checked every time.
    """

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], str | None] = {}
        self._used: dict[tuple[str, str], str | None] = {}
        self.hits = 0

    def begin(self) -> None:
        """Start a resolution: forget what the last one did not use."""
        self._entries, self._used = self._used, {}

    def problem(self, secret: KubeObject | None) -> str | None:
        m = meta(secret) if secret is not None else {}
        uid, rv = m.get("uid"), m.get("resourceVersion")
        if not (uid and rv):
            return _pem_problem(secret)
        version = (uid, rv)
        if version in self._entries:
            self.hits += 1
            found = self._entries[version]
        else:
            found = _pem_problem(secret)
        self._used[version] = found
        return found


def _certificates(
    state: ListenerState,
    tls: Mapping[str, Any],
    secrets: Mapping[str, KubeObject],
    grants: Iterable[KubeObject],
    checks: SecretChecks | None,
) -> tuple[tuple[str, ...], str | None, str]:
    """The usable certificate Secrets, and the first problem (reason, message)."""
    usable: list[str] = []
    reason: str | None = None
    message = ""
    if (tls.get("mode") or "Terminate") != "Terminate":
        return (), "UnsupportedValue", "HTTPS listeners only terminate TLS"
    for ref in tls.get("certificateRefs") or ():
        group, kind = ref.get("group") or "", ref.get("kind") or "Secret"
        namespace = ref.get("namespace") or state.namespace
        target = f"{namespace}/{ref.get('name', '')}"
        if (group, kind) != ("", "Secret"):
            problem = ("InvalidCertificateRef", f"{group}/{kind} {target}: only core Secrets")
        elif not permitted(
            Reference(
                GROUP, "Gateway", state.namespace, "", "Secret", namespace, ref.get("name", "")
            ),
            grants,
        ):
            problem = ("RefNotPermitted", f"Secret {target}: no ReferenceGrant allows it")
        elif (
            why := _pem_problem(secrets.get(target))
            if checks is None
            else checks.problem(secrets.get(target))
        ) is not None:
            problem = ("InvalidCertificateRef", f"Secret {target}: {why}")
        else:
            usable.append(target)
            continue
        if reason is None:
            reason, message = problem
    if not tls.get("certificateRefs") and reason is None:
        reason, message = "InvalidCertificateRef", "no certificateRefs"
    return tuple(usable), reason, message


def _kinds(allowed: Mapping[str, Any], protocol: str) -> tuple[tuple[str, ...], bool]:
    """``supportedKinds`` and whether every listed kind is one we serve."""
    listed = allowed.get("kinds")
    if not listed:
        return ("HTTPRoute",) if protocol in _PROTOCOLS else (), True
    kinds = []
    for entry in listed:
        pair = (entry.get("group", GROUP) or "", entry.get("kind"))
        if pair in _ROUTE_KINDS and pair[1] not in kinds:
            kinds.append(pair[1])
    return tuple(kinds), len(kinds) == len(listed)


def resolve_listeners(
    gateway: KubeObject,
    secrets: Mapping[str, KubeObject],
    grants: Iterable[KubeObject],
    checks: SecretChecks | None = None,
    ports: Mapping[str, int] | None = None,
) -> list[ListenerState]:
    """
    Every listener of ``gateway``, validated, with its conditions (routes
    not attached yet); ``checks`` keeps the Secrets' verdicts across
    resolutions; ``ports``: the port each protocol is served on (``None``:
    any port is accepted).
    """
    grants = tuple(grants)
    namespace = meta(gateway).get("namespace", "")
    states: list[ListenerState] = []
    for listener in spec(gateway).get("listeners") or ():
        allowed = listener.get("allowedRoutes") or {}
        namespaces = allowed.get("namespaces") or {}
        protocol = listener.get("protocol", "")
        kinds, kinds_ok = _kinds(allowed, protocol)
        state = ListenerState(
            gateway=key(gateway),
            namespace=namespace,
            name=listener.get("name", ""),
            port=int(listener.get("port", 0)),
            protocol=protocol,
            hostname=(listener.get("hostname") or None) and listener["hostname"].lower(),
            allowed_from=namespaces.get("from") or "Same",
            selector=namespaces.get("selector"),
            kinds=kinds,
            generation=generation(gateway),
        )
        states.append(state)
        refs_reason, refs_message = (
            (None, "")
            if kinds_ok
            else (
                "InvalidRouteKinds",
                "only HTTPRoute is served",
            )
        )
        accepted = protocol in _PROTOCOLS
        served_port = (ports or {}).get(protocol)
        port_ok = served_port is None or state.port == served_port
        if protocol == "HTTPS":
            state.certificates, reason, message = _certificates(
                state, listener.get("tls") or {}, secrets, grants, checks
            )
            if reason is not None and refs_reason is None:
                refs_reason, refs_message = reason, message
        state.programmed = (
            accepted and port_ok and (protocol != "HTTPS" or bool(state.certificates))
        )
        if accepted and not port_ok:
            _condition(
                state,
                "Accepted",
                False,
                "PortUnavailable",
                f"{protocol} is served on port {served_port} only "
                f"(setting k8s.gateway.{protocol.lower()}-port)",
            )
        elif accepted:
            _condition(state, "Accepted", True, "Accepted")
        else:
            _condition(
                state,
                "Accepted",
                False,
                "UnsupportedProtocol",
                f"protocol {protocol!r} is not served",
            )
        state.conditions.append(
            Condition(
                "ResolvedRefs",
                refs_reason is None,
                refs_reason or "ResolvedRefs",
                refs_message,
                state.generation,
            )
        )
    _mark_conflicts(states)
    for state in states:
        if state.programmed:
            _condition(state, "Programmed", True, "Programmed")
        else:
            _condition(state, "Programmed", False, "Invalid")
    return states


def _mark_conflicts(states: list[ListenerState]) -> None:
    """``Conflicted`` on every listener: same port with another protocol, or the same hostname twice."""
    for state in states:
        reason = None
        for other in states:
            if other is state or other.port != state.port:
                continue
            if other.protocol != state.protocol:
                reason = "ProtocolConflict"
                break
            if other.hostname == state.hostname:
                reason = reason or "HostnameConflict"
        if reason is None:
            state.conditions.append(
                Condition("Conflicted", False, "NoConflicts", "", state.generation)
            )
        else:
            state.programmed = False
            state.conditions.append(Condition("Conflicted", True, reason, "", state.generation))


def _replace(state: ListenerState, condition: Condition) -> None:
    state.conditions = [c for c in state.conditions if c.type != condition.type] + [condition]


def mark_gateway_conflicts(gateways: list[tuple[str, list[ListenerState]]]) -> None:
    """
    Conflicts across our Gateways, which share the gateway's ports: a
    (hostname, protocol) claimed by programmed listeners of several
    Gateways stays with the first in ``gateways`` (the caller orders them
    oldest first); the others' listeners become ``Conflicted=True
    HostnameConflict`` and not programmed. (Two Gateways serving one host
    would otherwise merge their routes: a Gateway allowing routes from
    every namespace could serve paths of a host another Gateway keeps
    to its own namespace.)
    """
    owners: dict[tuple[str | None, str], str] = {}
    for gateway, states in gateways:
        for state in states:
            if not state.programmed:
                continue
            claim = (state.hostname, state.protocol)
            owner = owners.setdefault(claim, gateway)
            if owner == gateway:
                continue
            state.programmed = False
            host = state.hostname or "(any host)"
            _replace(
                state,
                Condition(
                    "Conflicted",
                    True,
                    "HostnameConflict",
                    f"{state.protocol} {host} is served by the older Gateway {owner}",
                    state.generation,
                ),
            )
            _replace(state, Condition("Programmed", False, "Invalid", "", state.generation))
