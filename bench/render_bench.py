"""
CPU cost of the proxy's own request path, without sockets: the gateway is
built in process from a configuration file, its traffic resource renders
requests made of plain objects, and a backend pool that answers at once
(status, headers, a 100-byte body) stands in for the network. What is
measured is everything apimgw does per request (routing, subscription
check, policies, counters, forwarding decisions, response streaming calls,
metrics) and nothing of the kernel's, twisted.web's parser or wrk's; so,
unlike ``bench/proxy_bench.py``, the figures hardly move with the machine's
other load, and differences of a few µs are visible.

Cases (each a configuration and a request):

  plain         a plain route (Ingress-like), GET /
  key           an APIM API with a subscription key, no policy
  policy        + set-header + rewrite-uri (the typical pipeline)
  limit-local   + a product rate-limit, local counters

    python bench/render_bench.py [--number 20000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import gc
import sys
import timeit
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import proxy_bench  # noqa: E402
from _common import gateway_in_process  # noqa: E402
from twisted.internet import reactor  # noqa: E402
from twisted.internet.address import IPv4Address  # noqa: E402
from twisted.web.http_headers import Headers  # noqa: E402

BODY = b"x" * 100
BACKEND = ("127.0.0.1", 9)

CASES: dict[str, tuple[str, bytes, list[tuple[bytes, bytes]]]] = {
    "plain": (
        f"routes:\n  - path: /\n    pathType: Prefix\n    backend: http://{BACKEND[0]}:{BACKEND[1]}\n",
        b"/",
        [],
    ),
    "key": (
        proxy_bench.POLICY_CONFIG.split("policies:")[0].format(host=BACKEND[0], port=BACKEND[1]),
        b"/bench/items/42",
        [(b"Ocp-Apim-Subscription-Key", b"bench-key-0001")],
    ),
    "policy": (
        proxy_bench.POLICY_CONFIG.format(host=BACKEND[0], port=BACKEND[1]),
        b"/bench/items/42",
        [(b"Ocp-Apim-Subscription-Key", b"bench-key-0001")],
    ),
    "limit-local": (
        proxy_bench.LIMIT_CONFIG.format(host=BACKEND[0], port=BACKEND[1]),
        b"/bench/items/42",
        [(b"Ocp-Apim-Subscription-Key", b"bench-key-0001")],
    ),
}


class _Producer:
    def pauseProducing(self) -> None: ...

    def resumeProducing(self) -> None: ...

    def stopProducing(self) -> None: ...


class _Exchange:
    #: answered within ``request``: over, as the pool's would say
    done = True

    def cancel(self) -> None: ...


class InstantPool:
    """Answers every request at once: 200, two headers, a 100-byte body."""

    def __init__(self, real: Any) -> None:
        self.balancers = real.balancers
        self.response_timeout = real.response_timeout
        self._producer = _Producer()

    def request(self, backend: Any, method: bytes, target: bytes, headers: Any, body: Any,
                length: int, sink: Any, balancer: Any = None, response_timeout: Any = None,
                **_: Any) -> Any:
        sink.response_started(
            200, b"OK", [(b"Content-Type", b"text/plain"), (b"Content-Length", b"100")],
            self._producer,
        )
        sink.body_received(BODY)
        sink.response_finished()
        return _Exchange()


class Request:
    """The attributes and methods of the proxy's request contract, doing nothing."""

    clientproto = b"HTTP/1.1"
    channel = None
    content = None
    _client = IPv4Address("TCP", "10.0.0.5", 40000)

    def __init__(self, uri: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        self.method = b"GET"
        self.uri = uri
        raw = Headers()
        raw.addRawHeader(b"Host", b"api.example")
        raw.addRawHeader(b"User-Agent", b"wrk")
        for name, value in headers:
            raw.addRawHeader(name, value)
        self.requestHeaders = raw
        self.responseHeaders = Headers()
        self.code = 200
        self.sentLength = 0
        self.startedWriting = 0
        self.on_client_gone = None
        self.api_call = None

    def getClientAddress(self) -> Any:
        return self._client

    def getRequestHostname(self) -> bytes:
        return b"api.example"

    def setResponseCode(self, code: int, message: bytes | None = None) -> None:
        self.code = code

    def setHeader(self, name: bytes, value: bytes) -> None:
        self.responseHeaders.setRawHeaders(name, [value])

    def registerProducer(self, producer: Any, streaming: bool) -> None: ...

    def unregisterProducer(self) -> None: ...

    def write(self, data: bytes) -> None:
        self.startedWriting = 1
        self.sentLength += len(data)

    def finish(self) -> None: ...

    def loseConnection(self) -> None: ...


def prepare(name: str) -> tuple[Any, Any]:
    """A started gateway for case ``name`` and the function rendering one request."""
    config_text, uri, headers = CASES[name]
    gateway = gateway_in_process(config_text)
    resource = gateway.listeners["http"].resource
    resource._pool = InstantPool(resource._pool)

    def one() -> None:
        request = Request(uri, headers)
        resource.render(request)
        if request.code != 200:
            raise SystemExit(f"{name}: answered {request.code}")

    one()
    return gateway, one


def measure(names: list[str], number: int, repeat: int) -> dict[str, float]:
    """
    Best time per request of each case. The cases are timed in turn, round
    after round, so that a slower period of the (shared) machine falls on
    all of them alike; the best round of each is kept.
    """
    prepared = {name: prepare(name) for name in names}
    best = {name: float("inf") for name in names}
    try:
        gc.collect()
        for _ in range(repeat):
            for name, (_, one) in prepared.items():
                best[name] = min(best[name], timeit.timeit(one, number=number) / number * 1e6)
    finally:
        for gateway, _ in prepared.values():
            gateway.stopService()
        for _ in range(20):
            reactor.iterate(0.01)  # type: ignore[attr-defined]
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--number", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--only", default=",".join(CASES))
    args = parser.parse_args()
    names = args.only.split(",")
    results = measure(names, args.number, args.repeat)
    for name in names:
        print(f"{name:12s} {results[name]:7.1f} µs per request "
              f"(best of {args.repeat} rounds × {args.number})")
    if "plain" in results:
        for name, value in results.items():
            if name != "plain":
                print(f"{name:12s} {value - results['plain']:+7.1f} µs over plain")


if __name__ == "__main__":
    main()
