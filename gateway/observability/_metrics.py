"""
Prometheus metrics of one gateway process.

Every gateway builds its own :class:`CollectorRegistry` (never the global
one), so several gateways can run in one test process. Label children are
cached per label tuple: on the request path a metric update is one dict
lookup and one increment, never a label-set construction.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

#: Latency buckets in seconds, dense where a proxy hop lives (sub-ms to 10 ms).
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)

_STATUS_CLASSES = {1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}


class GatewayMetrics:
    """The metrics the gateway exposes on the admin port's ``/metrics``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "apimgw_requests",
            "Requests answered, by route (API or route label), method and status class.",
            ["route", "method", "status_class"],
            registry=r,
        )
        self.latency = Histogram(
            "apimgw_request_duration_seconds",
            "Time from the complete request to the end of the response, by route.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.backend_errors = Counter(
            "apimgw_backend_errors",
            "Requests that failed at the backend (refused, timeout, broken response), by backend and kind.",
            ["backend", "kind"],
            registry=r,
        )
        self.generation = Gauge(
            "apimgw_config_generation",
            "Number of the configuration generation being served (0 before the first).",
            registry=r,
        )
        self.generation_routes = Gauge(
            "apimgw_config_routes", "Effective routes in the live generation.", registry=r
        )
        self.config_problems = Gauge(
            "apimgw_config_problems",
            "Objects left out of the live generation because they are invalid.",
            registry=r,
        )
        self.shadowed_routes = Gauge(
            "apimgw_config_shadowed_routes",
            "Routes configured by more than one object where an older one lost.",
            registry=r,
        )
        self.reload_failures = Counter(
            "apimgw_config_reload_failures",
            "Configuration loads or rebuilds that failed (the last good configuration kept serving), by source.",
            ["source"],
            registry=r,
        )
        self.in_flight = Gauge(
            "apimgw_requests_in_flight", "Requests being proxied right now.", registry=r
        )
        self.backend_connections = Counter(
            "apimgw_backend_connections_opened",
            "New backend connections opened (reused keep-alive connections are not counted).",
            registry=r,
        )
        self._request_children: dict[tuple[str, str, int], Counter] = {}
        self._latency_children: dict[str, Histogram] = {}

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request and its duration (hot path: cached children)."""
        key = (route, method, status // 100)
        child = self._request_children.get(key)
        if child is None:
            child = self.requests.labels(route, method, _STATUS_CLASSES.get(key[2], "other"))
            self._request_children[key] = child
        child.inc()
        hist = self._latency_children.get(route)
        if hist is None:
            hist = self._latency_children[route] = self.latency.labels(route)
        hist.observe(seconds)
