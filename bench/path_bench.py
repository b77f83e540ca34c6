"""
CPU cost of the whole HTTP/1.1 proxy path in process, on in-memory
transports: the client's request bytes go into the gateway's own
``H1Channel`` (llhttp parsing, limits, the request object), through the
proxy resource (routing, headers, the backend client's pooled connection
writing the request), then a canned backend response goes into that
connection (llhttp again, the response forwarded, the client's bytes
written, metrics, the access log if asked). Everything apimgw's Python
does per request, nothing of the kernel's: no socket calls, no reactor
iteration.

So the figure is the proxy path's Python cost alone, and unlike
``proxy_bench.py`` it hardly moves with the (shared, noisy) machine: a
change of 1 µs is visible. ``proxy_bench.py`` remains the measure of
throughput; the difference between the two is the system calls and the
reactor (see docs/benchmarks.md).

    python bench/path_bench.py [--number 20000] [--repeat 7] [--log none|text|json]
    python bench/path_bench.py --tree /tmp/other-checkout     # another revision, same bench
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import timeit
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent

REQUEST = b"GET /items/42?view=full HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: wrk\r\n\r\n"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Server: nginx/1.22.1\r\n"
    b"Date: Thu, 03 Dec 2026 17:30:00 GMT\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: 100\r\n"
    b"Connection: keep-alive\r\n"
    b"\r\n" + b"x" * 100
)
BACKEND = ("127.0.0.1", 9)


def _transport_class() -> Any:
    from twisted.internet.address import IPv4Address
    from twisted.internet.testing import StringTransport

    class MemoryTransport(StringTransport):
        """A connection's transport in memory (what a TCP one offers the protocols)."""

        def __init__(self, peer_port: int) -> None:
            super().__init__(
                hostAddress=IPv4Address("TCP", "127.0.0.1", 8080),
                peerAddress=IPv4Address("TCP", "127.0.0.1", peer_port),
            )

        def setTcpNoDelay(self, enabled: bool) -> None:
            pass

        def abortConnection(self) -> None:
            self.loseConnection()

    return MemoryTransport


def prepare(log: str, connections: int = 1) -> tuple[Any, Any]:
    """
    A gateway built in process, ``connections`` client connections and as
    many pooled backend connections; the function that sends one request
    on each and answers them all.
    """
    from _common import gateway_in_process
    from twisted.internet import reactor

    from gateway import dispatch
    from gateway.dispatch import _run_after_io, streamline
    from gateway.upstream._connection import Connection

    # The dispatch twistd installs: end-of-iteration callbacks, not callLater(0).
    streamline(reactor)

    transport_class = _transport_class()
    gateway = gateway_in_process(
        "routes:\n  - path: /\n    pathType: Prefix\n"
        f"    backend: http://{BACKEND[0]}:{BACKEND[1]}\n",
        log=log,
        stdout_writer=True,
    )
    listener = gateway.listeners["http"]
    pool = gateway.pool

    class Connected:
        """Stands in for the connect attempt: the connection is pooled, nothing to send yet."""

        def connected(self, conn: Any) -> bool:
            return True

    def backend_connection(port: int) -> tuple[Any, Any]:
        conn = Connection(pool, ("http", BACKEND[0], BACKEND[1]))
        conn._attempt = Connected()  # type: ignore[assignment]
        side = transport_class(port)
        conn.makeConnection(side)
        pool._release(conn)
        return conn, side

    def client_connection(port: int) -> tuple[Any, Any]:
        channel = listener.factory.buildProtocol(None)
        side = transport_class(port)
        channel.makeConnection(side)
        return channel, side

    backends = [backend_connection(50000 + i) for i in range(connections)]
    clients = [client_connection(40000 + i) for i in range(connections)]

    def batch() -> None:
        # As under wrk's connections: every client sends, the requests go
        # out on as many pooled backend connections, then each answers.
        for channel, _ in clients:
            channel.dataReceived(REQUEST)
        for conn, side in backends:
            if side.value():
                side.clear()
                conn.dataReceived(RESPONSE)

    batch()
    _, client_side = clients[0]
    answer = client_side.value()
    if not answer.startswith(b"HTTP/1.1 200 OK\r\n") or not answer.endswith(b"x" * 100):
        raise SystemExit(f"unexpected answer:\n{answer!r}")
    if any(not side.value() for _, side in clients):
        raise SystemExit("a client got no answer")

    run_due = reactor.runUntilCurrent  # type: ignore[attr-defined]
    # (read as older revisions keep it, for --tree)
    end_of_iteration = getattr(reactor, dispatch._AFTER_IO, None)
    assert end_of_iteration is not None

    def measured() -> None:
        batch()
        for _, side in clients:
            side.clear()  # what the sockets would have taken
        # One reactor iteration per batch: timers due run, and at its end
        # the access log's buffered writer flushes (as under twistd).
        run_due()
        _run_after_io(end_of_iteration)

    return gateway, measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--number", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--log", default="none", choices=("none", "text", "json"))
    parser.add_argument("--connections", type=int, default=1,
                        help="client (and backend) connections, one request on each per "
                        "round: 20-50 is closer to wrk's load (more objects per round: "
                        "fewer cache hits)")
    parser.add_argument("--tree", type=Path, default=BENCH_DIR.parent,
                        help="the checkout whose gateway package to measure")
    args = parser.parse_args()
    sys.path.insert(0, str(args.tree.resolve()))
    import gateway

    if Path(gateway.__file__).resolve().parent.parent != args.tree.resolve():
        raise SystemExit(f"gateway imported from {gateway.__file__}, not {args.tree}")
    if args.log != "none":
        # The access log goes to standard output: here, nowhere.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
    _, one = prepare(args.log, args.connections)
    gc.collect()
    rounds = max(1, args.number // args.connections)
    best = min(timeit.repeat(one, number=rounds, repeat=args.repeat))
    per_request = best / (rounds * args.connections) * 1e6
    print(f"{args.tree}: {per_request:.2f} µs per request, access log {args.log}, "
          f"{args.connections} connections (best of {args.repeat} × "
          f"{rounds * args.connections})", file=sys.stderr)


if __name__ == "__main__":
    main()
