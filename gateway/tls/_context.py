"""
OpenSSL server contexts: one per certificate, all with the same protocol
settings.

Every context a connection can end up on carries the same minimum version,
cipher list and ALPN selection. That is not cosmetic: after the SNI
callback switches a connection to a certificate's context, OpenSSL takes the
ALPN callback from *that* context, and a context without one negotiates no
application protocol; a client that offered ``h2`` then speaks HTTP/2 to a
server that expects HTTP/1.1 (DESIGN.md: "a TLS server factory that
advertises no ALPN protocols fails every handshake with clients that offer
ALPN").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL

from gateway.translate import CertificateEntry

#: ``net.server.tls.min-version`` values and the OpenSSL versions they mean.
TLS_VERSIONS = {"1.2": SSL.TLS1_2_VERSION, "1.3": SSL.TLS1_3_VERSION}

#: TLS 1.2 cipher suites: forward secrecy (ECDHE) and AEAD only, the
#: "intermediate" list of Mozilla's server-side TLS guidelines without the
#: DHE suites (no DH parameters to maintain). TLS 1.3 suites are OpenSSL's
#: defaults, all of which are AEAD.
MODERN_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)

#: What ALPN offers, in the server's order of preference.
ALPN_PROTOCOLS: tuple[bytes, ...] = (b"h2", b"http/1.1")

#: Shared by every context so that a session resumed after an SNI switch
#: finds the same session id context.
_SESSION_ID = b"apimgw"

_OPTIONS = SSL.OP_NO_COMPRESSION | getattr(SSL, "OP_NO_RENEGOTIATION", 0)


@dataclass(frozen=True, slots=True)
class TLSSettings:
    """
    The protocol settings every context of the HTTPS listener gets.

    :ivar min_version: ``"1.2"`` or ``"1.3"`` (``net.server.tls.min-version``).
    :ivar ciphers: OpenSSL cipher list for TLS 1.2.
    :ivar alpn: protocols offered through ALPN, preferred first; only
        ``h2`` and ``http/1.1`` are served.
    """

    min_version: str = "1.2"
    ciphers: str = MODERN_CIPHERS
    alpn: tuple[bytes, ...] = ALPN_PROTOCOLS

    def __post_init__(self) -> None:
        if self.min_version not in TLS_VERSIONS:
            raise ValueError(
                f"TLS minimum version must be one of {', '.join(TLS_VERSIONS)}, "
                f"not {self.min_version!r}"
            )
        unknown = [p for p in self.alpn if p not in ALPN_PROTOCOLS]
        if unknown or not self.alpn:
            raise ValueError(f"ALPN protocols must be among {ALPN_PROTOCOLS}, not {self.alpn}")


class _ALPNSelector:
    """The ALPN choice: the server's first preference that the client offers."""

    __slots__ = ("_preferred",)

    def __init__(self, preferred: Sequence[bytes]) -> None:
        self._preferred = tuple(preferred)

    def __call__(self, connection: SSL.Connection, offered: list[bytes]) -> bytes:
        for protocol in self._preferred:
            if protocol in offered:
                return protocol
        # Neither h2 nor http/1.1 offered: continue without ALPN (the client
        # then gets HTTP/1.1), rather than abort the handshake.
        return SSL.NO_OVERLAPPING_PROTOCOLS  # type: ignore[return-value]


def _base_context(settings: TLSSettings) -> SSL.Context:
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    context.set_min_proto_version(TLS_VERSIONS[settings.min_version])
    context.set_options(_OPTIONS)
    context.set_cipher_list(settings.ciphers.encode("ascii"))
    context.set_mode(SSL.MODE_RELEASE_BUFFERS)
    context.set_session_id(_SESSION_ID)
    context.set_alpn_select_callback(_ALPNSelector(settings.alpn))
    return context


def certificate_context(entry: CertificateEntry, settings: TLSSettings) -> SSL.Context:
    """
    A server context serving ``entry``'s chain and key.

    :raises SSL.Error: OpenSSL refuses the certificate or key (a case
        translation does not catch, such as a signature algorithm this
        OpenSSL does not allow).
    """
    chain = x509.load_pem_x509_certificates(entry.chain_pem.encode("ascii"))
    key = serialization.load_pem_private_key(entry.key_pem.encode("ascii"), password=None)
    context = _base_context(settings)
    context.use_certificate(chain[0])
    for issuer in chain[1:]:
        context.add_extra_chain_cert(issuer)
    context.use_privatekey(key)  # type: ignore[arg-type]
    context.check_privatekey()
    return context


def dispatch_context(settings: TLSSettings, on_server_name: object) -> SSL.Context:
    """
    The context every connection starts on: no certificate of its own; its
    server-name callback (which OpenSSL calls for every ClientHello, with
    or without SNI) moves the connection to a certificate's context.
    Version and cipher settings are taken from it when the connection is
    created, so it carries the same settings as the others.
    """
    context = _base_context(settings)
    context.set_tlsext_servername_callback(on_server_name)  # type: ignore[arg-type]
    return context
