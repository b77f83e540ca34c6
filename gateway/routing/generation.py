"""
The contract between the build and the request path: one live
:class:`Generation`, swapped whole.

The reconciler builds a generation from the translated configuration (route
table, and with HTTPS on, the TLS layer's certificate map) and replaces one
reference to it. Everything downstream (the proxy's resource, the TLS
connection creator, the status stage, metrics) reads that reference through
:class:`LiveGeneration` and never sees a half-applied change. This module
sits in ``routing`` because the route table is the generation's core; the
TLS layer, which imports ``routing``, supplies the certificate map through
the small :class:`CertificateMap` protocol, so ``routing`` never imports
``tls``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.translate import CertificateEntry, GatewayConfig

from ._trie import RouteTable

__all__ = ["CertificateMap", "Generation", "LiveGeneration"]


class CertificateMap(Protocol):
    """
    What a generation's certificate map offers to the rest of the gateway
    (implemented by :class:`gateway.tls.SNIMap`).
    """

    @property
    def default(self) -> CertificateEntry:
        """The certificate served for unknown and absent server names."""

    @property
    def served(self) -> Sequence[Any]:
        """Every (host, certificate) pair served, for metrics."""

    def connection(self, app_data: Any = None) -> Any:
        """A server-side TLS connection whose handshake chooses from this map."""


@dataclass(frozen=True, slots=True)
class Generation:
    """
    One live configuration: the translated config, its compiled route
    table and, with HTTPS on, its certificate map, swapped together.

    :ivar number: 1 for the first generation, then one more per swap.
    :ivar config: the translated configuration it was built from.
    :ivar table: the compiled route table the proxy looks requests up in.
    :ivar created: when it was built (seconds since the epoch, the
        reconciler's clock).
    :ivar sni: the certificates by server name; ``None`` when the gateway
        has no HTTPS listener.
    """

    number: int
    config: GatewayConfig
    table: RouteTable
    created: float
    sni: CertificateMap | None = None


class LiveGeneration(Protocol):
    """
    Holds the live generation (the reconciler): ``current`` is read once per
    request or connection, so a swap never affects one in progress.
    """

    @property
    def current(self) -> Generation | None:
        """The live generation, or ``None`` before the first one."""
