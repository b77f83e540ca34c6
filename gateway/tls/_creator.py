"""
TLS on the HTTPS listener: a connection creator that reads the live SNI map
at each new connection, and a TLS factory that counts handshakes.

Rotation costs nothing here: a new generation brings a new map, the next
connection is created from it, and connections already open keep the
contexts they were created with until they close.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from twisted.internet.interfaces import IOpenSSLServerConnectionCreator, IProtocolFactory
from twisted.protocols.tls import BufferingTLSTransport, TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from gateway.routing import LiveGeneration

from ._snimap import DEFAULT, FAILED, SNIMap


@implementer(IOpenSSLServerConnectionCreator)
class SNIConnectionCreator:
    """
    Creates each server connection from the live generation's :class:`SNIMap`.

    :param generations: holds the live generation (the reconciler), whose
        ``sni`` map is read once per connection.
    :param fallback: the map used before the first generation (or when it
        has none): the default certificate only, so that a client connecting
        that early completes its handshake and gets the HTTP answer (503).
    """

    def __init__(self, generations: LiveGeneration, fallback: SNIMap) -> None:
        self._generations = generations
        self._fallback = fallback

    def current_map(self) -> SNIMap:
        """The map new connections are created from."""
        generation = self._generations.current
        if generation is None or generation.sni is None:
            return self._fallback
        # Generations carry the maps this layer built (SNIMapBuilder).
        return cast(SNIMap, generation.sni)

    def serverConnectionForTLS(self, tlsProtocol: Any) -> Any:  # noqa: N802 (interface)
        return self.current_map().connection(tlsProtocol)


class _HandshakeCountingTLS(BufferingTLSTransport):
    """
    Twisted's TLS protocol, reporting once per connection how its handshake
    went: the SNI outcome when it completes, ``failed`` when the connection
    ends after the client sent something but before the handshake completed
    (a connection closed without a byte is not a handshake).
    """

    #: Set by the SNI map's server-name callback.
    sni_outcome = DEFAULT
    #: 0: nothing received yet; 1: handshake under way; 2: reported.
    _handshake_state = 0

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 (Twisted's name)
        if self._handshake_state == 0:
            self._handshake_state = 1
        super().dataReceived(data)
        if self._handshake_state == 1 and self._handshakeDone:
            self._report(self.sni_outcome)

    def connectionLost(self, reason: Failure) -> None:  # noqa: N802 (Twisted's name)
        if self._handshake_state == 1:
            self._report(FAILED)
        super().connectionLost(reason)

    def _report(self, outcome: str) -> None:
        self._handshake_state = 2
        observer = self.factory.on_handshake  # type: ignore[attr-defined]
        if observer is not None:
            observer(outcome)


class TLSServerFactory(TLSMemoryBIOFactory):
    """
    Wraps the HTTPS site in TLS with an :class:`SNIConnectionCreator`.

    :param on_handshake: called with each connection's handshake outcome
        (``exact``, ``wildcard``, ``default`` or ``failed``).
    """

    protocol = _HandshakeCountingTLS

    def __init__(
        self,
        creator: SNIConnectionCreator,
        wrapped: IProtocolFactory,
        *,
        on_handshake: Callable[[str], None] | None = None,
        clock: Any = None,
    ) -> None:
        super().__init__(creator, False, wrapped, clock)
        self.on_handshake = on_handshake
