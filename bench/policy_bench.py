"""
CPU cost of the policy executor per request, without sockets: build the
request view from a twisted.web-like request, run a typical inbound
pipeline (set-header + rewrite-uri), the backend section and an empty
outbound, and build the target. The subscription check is the caller's
and is measured by ``bench/proxy_bench.py``.

    python bench/policy_bench.py
"""

from __future__ import annotations

import timeit

from twisted.internet.address import IPv4Address
from twisted.web.http_headers import Headers

from gateway.proxy._policies import (
    PolicyResponse, policy_request, run_backend, run_inbound, run_outbound,
)
from gateway.translate.policy import compile_scopes

DOCUMENT = (
    "<policies><inbound><base/>"
    '<set-header name="X-Env" exists-action="override"><value>prod</value></set-header>'
    '<rewrite-uri template="/v2/items/{id}"/>'
    "</inbound><backend><base/></backend><outbound><base/></outbound></policies>"
)


class _Request:
    method = b"GET"
    requestHeaders = Headers({
        b"Host": [b"api.example"], b"User-Agent": [b"wrk"], b"Accept": [b"*/*"],
        b"Ocp-Apim-Subscription-Key": [b"k" * 32],
    })
    _client = IPv4Address("TCP", "10.0.0.5", 40000)

    def getClientAddress(self) -> IPv4Address:
        return self._client


def main() -> None:
    pipeline, problems = compile_scopes({"api": DOCUMENT})
    assert not problems
    request = _Request()
    params = {"id": "7"}

    def one() -> None:
        ctx = policy_request(request, "/items/7", b"fmt=json", params, "sub-1", "starter",
                             drop=b"ocp-apim-subscription-key")
        run_inbound(pipeline.inbound, ctx)
        run_backend(pipeline.backend, ctx)
        ctx.target()
        run_outbound(pipeline.outbound, ctx, PolicyResponse(200, "OK", [("content-type", "text/plain")]))

    n = 100_000
    best = min(timeit.repeat(one, number=n, repeat=5))
    print(f"view + inbound (set-header, rewrite-uri) + backend + outbound: {best / n * 1e6:.2f} µs per request")


if __name__ == "__main__":
    main()
