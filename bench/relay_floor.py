"""
The floor of a proxy on apimgw's reactor path, for ``bench/proxy_bench.py``
(case ``relay``): each client connection gets its own backend connection,
and bytes are copied both ways as they come. No HTTP parsing, no routing,
no headers, no pooling: what is left is the epoll loop of
``gateway.dispatch`` and the direct socket writes of ``gateway.netio``,
the same two reads and two writes per request as the gateway.

What it shows: how much of a proxied request the reactor and the kernel
cost on this machine, so that the rest of the gateway's CPU per request is
known to be its own (HTTP, routing, headers, the exchange objects).

Run::

    python bench/relay_floor.py --port 9100 --backend-port 9001

It listens on 127.0.0.1 only and stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from twisted.internet import epollreactor

epollreactor.install()

from twisted.internet import reactor
from twisted.internet.protocol import ClientFactory, Factory, Protocol

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.dispatch import streamline
from gateway.netio import direct_writer


class _Backend(Protocol):
    """The backend side of one client connection."""

    def __init__(self, front: _Front) -> None:
        self.front = front

    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)
        self.write = direct_writer(self.transport)
        self.front.backend_ready(self)

    def dataReceived(self, data: bytes) -> None:
        self.front.write(data)

    def connectionLost(self, reason: Any = None) -> None:
        self.front.transport.loseConnection()


class _Front(Protocol):
    """One client connection: bytes to its backend connection and back."""

    def __init__(self, backend_port: int) -> None:
        self.backend_port = backend_port
        self.backend: _Backend | None = None
        self.pending: list[bytes] = []

    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)
        self.write = direct_writer(self.transport)
        factory = ClientFactory()
        factory.buildProtocol = lambda addr: _Backend(self)  # type: ignore[method-assign]
        reactor.connectTCP("127.0.0.1", self.backend_port, factory)  # type: ignore[attr-defined]

    def backend_ready(self, backend: _Backend) -> None:
        self.backend = backend
        if self.pending:
            backend.write(b"".join(self.pending))
            self.pending = []

    def dataReceived(self, data: bytes) -> None:
        if self.backend is None:
            self.pending.append(data)
        else:
            self.backend.write(data)

    def connectionLost(self, reason: Any = None) -> None:
        if self.backend is not None:
            self.backend.transport.loseConnection()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--backend-port", type=int, required=True)
    args = parser.parse_args()
    streamline(reactor)
    factory = Factory()
    factory.buildProtocol = lambda addr: _Front(args.backend_port)  # type: ignore[method-assign]
    reactor.listenTCP(args.port, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
