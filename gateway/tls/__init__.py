"""
TLS termination: certificates chosen by SNI, built once per generation.

* :class:`SNIMapBuilder` turns a generation's validated certificates into an
  immutable :class:`SNIMap` (an OpenSSL context per certificate, all with
  the same :class:`TLSSettings`: minimum version, ciphers, ALPN);
* :class:`SNIConnectionCreator` creates each new connection from the live
  generation's map, so a swap rotates certificates for new handshakes
  without touching open connections or the listener;
* :class:`TLSServerFactory` wraps the HTTPS site in TLS and reports each
  handshake's outcome;
* :func:`generate_default_certificate` makes the self-signed default served
  when the configuration names none.

Imports ``translate`` (the validated certificate entries) and ``routing``
(the :class:`~gateway.routing.Generation` whose map it serves), never
``proxy``.
"""

from ._context import ALPN_PROTOCOLS, MODERN_CIPHERS, TLS_VERSIONS, TLSSettings
from ._creator import SNIConnectionCreator, TLSServerFactory
from ._selfsigned import SELF_SIGNED_NAME, SELF_SIGNED_REF, generate_default_certificate
from ._snimap import (
    DEFAULT,
    DEFAULT_HOST,
    EXACT,
    FAILED,
    OUTCOMES,
    WILDCARD,
    ServedCertificate,
    SNIMap,
    SNIMapBuilder,
)

__all__ = [
    "ALPN_PROTOCOLS",
    "DEFAULT",
    "DEFAULT_HOST",
    "EXACT",
    "FAILED",
    "MODERN_CIPHERS",
    "OUTCOMES",
    "SELF_SIGNED_NAME",
    "SELF_SIGNED_REF",
    "TLS_VERSIONS",
    "WILDCARD",
    "SNIConnectionCreator",
    "SNIMap",
    "SNIMapBuilder",
    "ServedCertificate",
    "TLSServerFactory",
    "TLSSettings",
    "generate_default_certificate",
]
