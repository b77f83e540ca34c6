"""
The SNI map: which certificate a TLS handshake gets, by the server name the
client sends.

One :class:`SNIMap` is built per configuration generation, with an OpenSSL
context per certificate made once (and carried over to the next generation
when the certificate did not change), never per handshake. The lookup, in
order:

1. the exact name (case-insensitive, without a trailing dot);
2. a one-label wildcard: ``*.example.com`` serves ``a.example.com``, never
   ``a.b.example.com`` nor ``example.com`` (RFC 6125 §6.4.3);
3. the default certificate: the configured one, or a generated self-signed
   one. A client that sends no server name gets it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from OpenSSL import SSL

from gateway.translate import CertificateEntry, GatewayConfig, Problem

from ._context import TLSSettings, certificate_context, dispatch_context

#: How a handshake's certificate was chosen (the label of
#: ``apimgw_tls_handshakes_total``); ``failed``: the handshake did not complete.
EXACT = "exact"
WILDCARD = "wildcard"
DEFAULT = "default"
FAILED = "failed"
OUTCOMES = (EXACT, WILDCARD, DEFAULT, FAILED)

#: The host label of the default certificate in :attr:`SNIMap.served`.
DEFAULT_HOST = "*"

_Choice = tuple[CertificateEntry, SSL.Context]


@dataclass(frozen=True, slots=True)
class ServedCertificate:
    """
    One host name served with one certificate (for metrics and ``/config``).

    :ivar host: a configured host name, or ``*`` for the default certificate.
    :ivar source: the certificate's object, such as ``file:certificate/example``.
    """

    host: str
    source: str
    not_after: float
    fingerprint: str


def _host(server_name: bytes | str | None) -> str | None:
    if not server_name:
        return None
    if isinstance(server_name, bytes):
        try:
            server_name = server_name.decode("ascii")
        except UnicodeDecodeError:
            return None
    return server_name.lower().rstrip(".")


class _Selector:
    """
    The lookup tables and the server-name callback of one map.

    Kept apart from :class:`SNIMap` so that the dispatch context, which
    holds the callback, refers to the tables only: no reference cycle.
    """

    __slots__ = ("exact", "wildcard", "default")

    def __init__(
        self, exact: dict[str, _Choice], wildcard: dict[str, _Choice], default: _Choice
    ) -> None:
        self.exact = exact
        #: Keyed by the part after ``*.``.
        self.wildcard = wildcard
        self.default = default

    def select(self, server_name: bytes | str | None) -> tuple[_Choice, str]:
        host = _host(server_name)
        if host is None:
            return self.default, DEFAULT
        choice = self.exact.get(host)
        if choice is not None:
            return choice, EXACT
        label, dot, rest = host.partition(".")
        if label and dot:
            choice = self.wildcard.get(rest)
            if choice is not None:
                return choice, WILDCARD
        return self.default, DEFAULT

    def __call__(self, connection: SSL.Connection) -> None:
        """
        OpenSSL's server-name callback: move the connection to the chosen
        certificate's context and tell the TLS protocol (the connection's
        app data, when set) how it was chosen, for the handshake counter.
        """
        (_, context), outcome = self.select(connection.get_servername())
        connection.set_context(context)
        protocol = connection.get_app_data()
        if protocol is not None:
            protocol.sni_outcome = outcome


class _SNIConnection(SSL.Connection):
    """
    A server connection that keeps the context it started on alive for as
    long as it lives.

    The server-name callback moves the connection to a certificate's
    context, and pyOpenSSL then drops its reference to the first one. But
    OpenSSL may call that context's callback again on the same connection
    (a second ClientHello after a HelloRetryRequest, in TLS 1.3); if a
    swap has meanwhile released the old map, the callback would be freed
    memory.
    """

    def __init__(self, dispatch: SSL.Context) -> None:
        super().__init__(dispatch, None)
        self._dispatch = dispatch


class SNIMap:
    """
    An immutable server-name → certificate map with its OpenSSL contexts.

    Build it with :class:`SNIMapBuilder`. :meth:`connection` makes the
    ``SSL.Connection`` of a new TLS connection; its handshake picks the
    certificate from this map.
    """

    def __init__(
        self,
        selector: _Selector,
        settings: TLSSettings,
        served: tuple[ServedCertificate, ...],
        contexts: Mapping[tuple[str, str], SSL.Context],
    ) -> None:
        self._selector = selector
        self._dispatch = dispatch_context(settings, selector)
        self.settings = settings
        #: Every (host, certificate) pair served, the default as host ``*``.
        self.served = served
        #: Contexts by (chain, key), reused by the next generation's map.
        self._contexts = contexts

    @property
    def default(self) -> CertificateEntry:
        """The certificate for unknown and absent server names."""
        return self._selector.default[0]

    def select(self, server_name: bytes | str | None) -> tuple[CertificateEntry, str]:
        """The certificate for ``server_name`` and how it was chosen (:data:`OUTCOMES`)."""
        (entry, _), outcome = self._selector.select(server_name)
        return entry, outcome

    def connection(self, app_data: Any = None) -> SSL.Connection:
        """
        A server-side ``SSL.Connection`` whose handshake chooses its
        certificate from this map. ``app_data`` (the TLS protocol) is told
        the outcome through its ``sni_outcome`` attribute.
        """
        connection = _SNIConnection(self._dispatch)
        if app_data is not None:
            connection.set_app_data(app_data)
        return connection


class SNIMapBuilder:
    """
    Builds the :class:`SNIMap` of each generation from its translated
    certificates.

    :param settings: the protocol settings of every context.
    :param fallback: the default certificate when the configuration names
        none (the generated self-signed one).
    """

    def __init__(self, settings: TLSSettings, fallback: CertificateEntry) -> None:
        self.settings = settings
        self.fallback = fallback
        self._fallback_context = certificate_context(fallback, settings)

    def build(
        self, config: GatewayConfig, previous: SNIMap | None = None
    ) -> tuple[SNIMap, tuple[Problem, ...]]:
        """
        The map for ``config``, reusing the contexts of ``previous`` for
        certificates that did not change.

        :return: the map, and a problem for each certificate OpenSSL
            refused (its hosts fall back to the default certificate).
        """
        reusable: Mapping[tuple[str, str], SSL.Context] = {}
        if previous is not None and previous.settings == self.settings:
            reusable = previous._contexts
        contexts: dict[tuple[str, str], SSL.Context] = {}
        problems: list[Problem] = []
        exact: dict[str, _Choice] = {}
        wildcard: dict[str, _Choice] = {}
        served: list[ServedCertificate] = []
        default: _Choice | None = None
        for entry in config.certificates:
            key = (entry.chain_pem, entry.key_pem)
            context = contexts.get(key) or reusable.get(key)
            if context is None:
                try:
                    context = certificate_context(entry, self.settings)
                except (SSL.Error, ValueError) as e:
                    problems.append(
                        Problem(
                            entry.ref,
                            f"OpenSSL refuses the certificate or key ({e}); its hosts fall back "
                            "to the default certificate",
                        )
                    )
                    continue
            contexts[key] = context
            choice = (entry, context)
            for host in entry.served_hosts:
                if host.startswith("*."):
                    wildcard[host[2:]] = choice
                else:
                    exact[host] = choice
                served.append(
                    ServedCertificate(host, str(entry.ref), entry.not_after, entry.fingerprint)
                )
            if entry.ref == config.default_certificate:
                default = choice
        if default is None:
            default = (self.fallback, self._fallback_context)
        served.append(
            ServedCertificate(
                DEFAULT_HOST, str(default[0].ref), default[0].not_after, default[0].fingerprint
            )
        )
        served.sort(key=lambda s: (s.host, s.source))
        selector = _Selector(exact, wildcard, default)
        return SNIMap(selector, self.settings, tuple(served), contexts), tuple(problems)
