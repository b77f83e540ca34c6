"""
Twisted's stock reverse proxy, as a baseline for ``bench/proxy_bench.py``.

This is ``twisted.web.proxy.ReverseProxyResource`` behind a plain
``twisted.web.server.Site``, with nothing of apimgw in it, so the benchmark
can show what the gateway's own backend client buys over the stock design
(which opens one backend connection per request and forces
``Connection: close``).

Two things are turned off so that the comparison measures proxying, not
logging:

  - the access log: ``Site(resource, logPath=None)`` still writes one line
    per request to the legacy global log, so ``_QuietSite.log`` drops it;
  - the "Starting factory" / "Stopping factory" lines that the stock
    ``ProxyClientFactory`` emits for every backend connection.

Run::

    python bench/stock_proxy.py --port 9100 --backend-port 9001

It listens on 127.0.0.1 only and stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse

from twisted.internet import endpoints, reactor
from twisted.web.proxy import ProxyClientFactory, ReverseProxyResource
from twisted.web.server import Request, Site


class _QuietSite(Site):
    """
    A ``Site`` that writes no access log.
    """

    noisy = False

    def log(self, request: Request) -> None:
        """
        Drop the access-log line: ``logPath=None`` alone would still send it
        to the global log.
        """


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--port", type=int, required=True, help="port to listen on (127.0.0.1)")
    parser.add_argument("--backend-host", default="127.0.0.1")
    parser.add_argument("--backend-port", type=int, required=True)
    args = parser.parse_args()

    # ReverseProxyResource.getChild builds plain ReverseProxyResource
    # children, so a subclass or an instance attribute would not reach the
    # resource that renders "/": silence the class, in this process only.
    ProxyClientFactory.noisy = False
    resource = ReverseProxyResource(args.backend_host, args.backend_port, b"")
    site = _QuietSite(resource, logPath=None)
    endpoint = endpoints.serverFromString(reactor, f"tcp:{args.port}:interface=127.0.0.1")
    d = endpoint.listen(site)

    def failed(failure):
        print(f"stock_proxy: cannot listen: {failure.getErrorMessage()}", flush=True)
        reactor.stop()

    d.addErrback(failed)
    reactor.run()


if __name__ == "__main__":
    main()
