"""
Prometheus metrics of one gateway process.

Every gateway builds its own :class:`CollectorRegistry` (never the global
one), so several gateways can run in one test process. The per-request
metrics (request count and latency) are plain integers in dicts, turned
into Prometheus samples only when ``/metrics`` is scraped: on the request
path an update is a dict lookup, a bisect and three increments, with no
lock (the reactor thread is the only writer). An APIM API call adds one
more dict lookup and four increments (:class:`ApiCallStats`).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from typing import Any, Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

#: Latency buckets in seconds, dense where a proxy hop lives (sub-ms to 10 ms).
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)

#: The ``le`` labels of :data:`LATENCY_BUCKETS`, then ``+Inf``.
_BOUNDS = (*(repr(float(b)) for b in LATENCY_BUCKETS), "+Inf")

_STATUS_CLASSES = {1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}


#: Handshake outcomes, pre-created so that every series exists from the start.
HANDSHAKE_OUTCOMES = ("exact", "wildcard", "default", "failed")


class GatewayMetrics:
    """
    The metrics the gateway exposes on the admin port's ``/metrics``.

    :param clock: the time certificate expiry is measured from, read at
        each scrape (``time.time`` by default).
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = RequestStats()
        r.register(self.requests)
        self.api_calls = ApiCallStats()
        r.register(self.api_calls)
        self.certificates = CertificateExpiry(clock)
        r.register(self.certificates)
        self.cloud = CloudStatus(clock)
        r.register(self.cloud)
        self.ingress = IngressSourceStatus()
        r.register(self.ingress)
        self.tunnel_bytes = TunnelBytes()
        r.register(self.tunnel_bytes)
        self.tls_handshakes = Counter(
            "apimgw_tls_handshakes",
            "TLS handshakes on the HTTPS listener, by how the certificate was chosen from the "
            "client's server name (exact, wildcard, default: no SNI or no match), or failed "
            "(the client sent something but the handshake did not complete).",
            ["outcome"],
            registry=r,
        )
        self._handshake_children = {
            outcome: self.tls_handshakes.labels(outcome) for outcome in HANDSHAKE_OUTCOMES
        }
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
        self.http_refused = Counter(
            "apimgw_http_refused",
            "Requests the HTTP/1.1 server answered itself, before the proxy saw them (malformed, "
            "too large, too slow), by status.",
            ["status"],
            registry=r,
        )
        self.ratelimit_fallback = Counter(
            "apimgw_ratelimit_fallback",
            "Limit checks decided by this replica's local counters because the configured Redis "
            "did not answer (the limits were per replica for these).",
            registry=r,
        )
        self.backend_connections = Counter(
            "apimgw_backend_connections_opened",
            "New backend connections opened (reused keep-alive connections are not counted).",
            registry=r,
        )
        self.upgraded = Counter(
            "apimgw_upgraded_connections",
            "Connections switched to another protocol after the backend's 101 (WebSocket), "
            "by protocol (websocket, h2c, tls, other).",
            ["protocol"],
            registry=r,
        )
        self._upgraded_children: dict[str, Any] = {}
        self.upgraded_open = Gauge(
            "apimgw_upgraded_connections_open",
            "Upgraded connections (WebSocket) open right now.",
            registry=r,
        )
        self.upgraded_closed = Counter(
            "apimgw_upgraded_connections_closed",
            "Upgraded connections (WebSocket) ended, by what ended them: client or backend "
            "(that side closed), idle (net.server.upgrade-idle-timeout), shutdown (still open "
            "when the drain's grace period ended: closed by the gateway).",
            ["reason"],
            registry=r,
        )
        self.access_log_dropped = Counter(
            "apimgw_access_log_dropped",
            "Access-log lines dropped because stdout did not take them fast enough (more than "
            "telemetry.logs.access.buffer bytes were pending) or could not be written at all.",
            registry=r,
        )

    def upgrade_opened(self, protocol: str) -> None:
        """An upgraded connection (a 101 from the backend) started, e.g. ``websocket``."""
        child = self._upgraded_children.get(protocol)
        if child is None:
            child = self._upgraded_children[protocol] = self.upgraded.labels(protocol)
        child.inc()
        self.upgraded_open.inc()

    def upgrade_closed(self, reason: str = "other") -> None:
        """
        An upgraded connection ended: ``client`` or ``backend`` closed,
        ``idle`` too long, or cut at ``shutdown``.
        """
        self.upgraded_open.dec()
        self.upgraded_closed.labels(reason or "other").inc()

    def observe_request(
        self, route: str, method: str, status: int, seconds: float, api_call: Any = None
    ) -> None:
        """
        Count one answered request and its duration; an APIM API call (a
        :class:`gateway.translate.ApiCall`, ``None`` for a plain route or a
        request refused before the subscription check) is counted per API
        call too.
        """
        # One bisect serves both histograms.
        bucket = bisect_left(LATENCY_BUCKETS, seconds)
        self.requests.observe(route, method, status, seconds, bucket)
        if api_call is not None:
            self.api_calls.observe(api_call, status, seconds, bucket)

    def handshake(self, outcome: str) -> None:
        """Count one TLS handshake (called by the TLS factory, once per connection)."""
        child = self._handshake_children.get(outcome)
        if child is None:
            child = self._handshake_children[outcome] = self.tls_handshakes.labels(outcome)
        child.inc()


class CertificateExpiry:
    """
    ``apimgw_tls_certificate_expiry_seconds`` (host, source): seconds until
    each served certificate expires, computed at scrape time from the
    certificates of the live generation (so the value keeps falling between
    configuration changes, and an alert on it needs no other input).
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._served: tuple[tuple[str, str, float], ...] = ()

    def update(self, served: Iterable[Any]) -> None:
        """
        Replace the served certificates (on each swap): objects with
        ``host``, ``source`` and ``not_after`` (seconds since the epoch).
        """
        self._served = tuple((s.host, s.source, s.not_after) for s in served)

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "apimgw_tls_certificate_expiry_seconds",
            "Seconds until the certificate served for a host expires (negative: expired), by "
            "host (* for the default certificate) and source object.",
            labels=["host", "source"],
        )
        now = self._clock()
        for host, source, not_after in self._served:
            family.add_metric([host, source], not_after - now)
        yield family


class _SourceCollector:
    """
    A collector reading one source's status attributes at scrape time, so
    sources need no metrics types; nothing is exported until
    :meth:`attach` names the source.
    """

    def __init__(self) -> None:
        self._source: Any = None

    def attach(self, source: Any) -> None:
        """Report on ``source`` from now on."""
        self._source = source

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        if self._source is not None:
            yield from self.collect_from(self._source)

    def collect_from(self, source: Any) -> Iterator[Metric]:
        raise NotImplementedError


class CloudStatus(_SourceCollector):
    """
    The cloud source's state, read at scrape time from the source's status
    attributes (``token_expiry``, ``auth_failures``, ``revision``,
    ``connected``, ``from_backup``), so the source needs no metrics types
    and the expiry keeps falling between requests:

    * ``apimgw_cloud_token_expiry_seconds``: seconds until the token expires
      (negative: expired); absent while there is no usable token;
    * ``apimgw_cloud_auth_failures_total``: requests the service refused
      (401/403) and attempts without a usable token;
    * ``apimgw_cloud_revision``: the configuration revision applied;
    * ``apimgw_cloud_connected``: 1 while the last request succeeded;
    * ``apimgw_cloud_from_backup``: 1 while what is served came from the
      backup and the service has not answered since.

    Nothing is exported while no cloud source is attached.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self._clock = clock

    def collect_from(self, source: Any) -> Iterator[Metric]:
        expiry = GaugeMetricFamily(
            "apimgw_cloud_token_expiry_seconds",
            "Seconds until the configuration service token expires (negative: expired).",
        )
        if source.token_expiry is not None:
            expiry.add_metric([], source.token_expiry - self._clock())
        yield expiry
        yield CounterMetricFamily(
            "apimgw_cloud_auth_failures",
            "Requests the configuration service refused (401/403), and attempts without a "
            "usable token.",
            value=source.auth_failures,
        )
        revision = GaugeMetricFamily(
            "apimgw_cloud_revision", "The configuration service revision applied (absent: none)."
        )
        if source.revision is not None:
            revision.add_metric([], source.revision)
        yield revision
        yield GaugeMetricFamily(
            "apimgw_cloud_connected",
            "1 while the last request to the configuration service succeeded, else 0.",
            value=1 if source.connected else 0,
        )
        yield GaugeMetricFamily(
            "apimgw_cloud_from_backup",
            "1 while the cloud configuration served was loaded from the backup, else 0.",
            value=1 if source.from_backup else 0,
        )


class TunnelBytes:
    """
    ``apimgw_upgraded_bytes_total{direction}``: bytes the upgraded
    connections (WebSocket after a 101) copied, ``to_backend`` and
    ``to_client``, open ones included, read from the listeners' tunnels at
    scrape time (a tunnel only counts into two integers per chunk).
    """

    def __init__(self) -> None:
        self._sources: list[Any] = []

    def watch(self, tunnels: Any) -> None:
        """Add ``tunnels`` (a listener's, with ``bytes_copied()``) to the totals."""
        self._sources.append(tunnels)

    def collect(self) -> Iterator[Metric]:
        up = down = 0
        for tunnels in self._sources:
            source_up, source_down = tunnels.bytes_copied()
            up += source_up
            down += source_down
        family = CounterMetricFamily(
            "apimgw_upgraded_bytes",
            "Bytes copied by upgraded connections (WebSocket after the backend's 101), open ones "
            "included: to_backend (from clients) and to_client (from backends).",
            labels=["direction"],
        )
        family.add_metric(["to_backend"], up)
        family.add_metric(["to_client"], down)
        yield family


class IngressSourceStatus(_SourceCollector):
    """
    The Kubernetes Ingress source's state, read at scrape time (nothing is
    exported while no Ingress source is attached):

    * ``apimgw_ingress_served``: Ingresses of our class being served;
    * ``apimgw_ingress_problems``: problems found in them (each also logged
      and written as an Event);
    * ``apimgw_ingress_translations_total``: translations of the watched
      objects (one per burst of changes);
    * ``apimgw_ingress_leader``: 1 on the replica writing status and Events;
    * ``apimgw_ingress_status_updates_total``: Ingress status writes;
    * ``apimgw_kubernetes_synced{kind}``: 1 once the informer listed once;
    * ``apimgw_kubernetes_lists_total{kind}``, ``..._watches_total{kind}``,
      ``..._failures_total{kind}``: API traffic per informer; relists
      beyond the first mean ``410 Gone`` (history expired during an outage),
      failures an unreachable or refusing API server.
    """

    def __init__(self) -> None:
        super().__init__()
        self._writer: Any = None

    def attach_status(self, writer: Any) -> None:
        """Count the status writes of ``writer`` (it has ``updates``)."""
        self._writer = writer

    def collect_from(self, source: Any) -> Iterator[Metric]:
        translation = source.translation
        yield GaugeMetricFamily(
            "apimgw_ingress_served",
            "Ingresses of this gateway's class being served.",
            value=len(translation.served) if translation is not None else 0,
        )
        yield GaugeMetricFamily(
            "apimgw_ingress_problems",
            "Problems in the served Ingresses (invalid parts left out).",
            value=len(translation.problems) if translation is not None else 0,
        )
        yield CounterMetricFamily(
            "apimgw_ingress_translations",
            "Translations of the watched Kubernetes objects.",
            value=source.translations,
        )
        yield GaugeMetricFamily(
            "apimgw_ingress_leader",
            "1 on the replica that writes Ingress status and Events, else 0.",
            value=1 if source.leading and source.running else 0,
        )
        yield CounterMetricFamily(
            "apimgw_ingress_status_updates",
            "Ingress status writes.",
            value=self._writer.updates if self._writer is not None else 0,
        )
        families = {
            "synced": GaugeMetricFamily(
                "apimgw_kubernetes_synced", "1 once the informer has listed once.", labels=["kind"]
            ),
            "lists": CounterMetricFamily(
                "apimgw_kubernetes_lists", "Lists (first and after 410 Gone).", labels=["kind"]
            ),
            "watches": CounterMetricFamily(
                "apimgw_kubernetes_watches", "Watch requests.", labels=["kind"]
            ),
            "failures": CounterMetricFamily(
                "apimgw_kubernetes_failures",
                "Failed list or watch requests (retried with backoff).",
                labels=["kind"],
            ),
        }
        for informer in source.informers.values():
            kind = [informer.kind.kind]
            families["synced"].add_metric(kind, 1 if informer.synced else 0)
            families["lists"].add_metric(kind, informer.lists)
            families["watches"].add_metric(kind, informer.watches)
            families["failures"].add_metric(kind, informer.failures)
        yield from families.values()


class _Latency:
    """Bucket counts (non-cumulative), sum and count of one route's latencies."""

    __slots__ = ("buckets", "total", "count")

    def __init__(self) -> None:
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.total = 0.0
        self.count = 0

    def cumulative(self) -> list[tuple[str, int]]:
        """The buckets as Prometheus wants them: (``le`` bound, cumulative count)."""
        running, buckets = 0, []
        for bound, count in zip(_BOUNDS, self.buckets):
            running += count
            buckets.append((bound, running))
        return buckets


class RequestStats:
    """
    ``apimgw_requests_total`` (route, method, status_class) and
    ``apimgw_request_duration_seconds`` (route), as a custom collector.
    """

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str, int], int] = {}
        self.latency: dict[str, _Latency] = {}

    def observe(
        self, route: str, method: str, status: int, seconds: float, bucket: int | None = None
    ) -> None:
        """
        :param bucket: ``bisect_left(LATENCY_BUCKETS, seconds)`` when the
            caller has it already.
        """
        key = (route, method, status // 100)
        counts = self.counts
        counts[key] = counts.get(key, 0) + 1
        latency = self.latency.get(route)
        if latency is None:
            latency = self.latency[route] = _Latency()
        if bucket is None:
            bucket = bisect_left(LATENCY_BUCKETS, seconds)
        latency.buckets[bucket] += 1
        latency.total += seconds
        latency.count += 1

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "apimgw_requests",
            "Requests answered, by route (API or route label; - when none matched), "
            "method and status class.",
            labels=["route", "method", "status_class"],
        )
        for (route, method, klass), count in sorted(self.counts.items()):
            requests.add_metric([route, method, _STATUS_CLASSES.get(klass, "other")], count)
        yield requests
        duration = HistogramMetricFamily(
            "apimgw_request_duration_seconds",
            "Time from the complete request to the end of the response, by route.",
            labels=["route"],
        )
        for route, latency in sorted(self.latency.items()):
            duration.add_metric([route], latency.cumulative(), latency.total)
        yield duration


class _ApiSeries:
    """
    The counts of one (api, operation, product, subscription), by status
    code, and the latency of its (api, operation), bound once so that a
    request makes one lookup for both.
    """

    __slots__ = ("codes", "latency")

    def __init__(self, latency: _Latency) -> None:
        self.codes: dict[int, int] = {}
        self.latency = latency


class ApiCallStats:
    """
    ``apimgw_api_requests_total`` (api, operation, product, subscription,
    code) and ``apimgw_api_request_duration_seconds`` (api, operation): the
    APIM API calls the subscription check admitted, as a custom collector.

    Every label value but ``code`` is an id from the configuration (the
    proxy's :class:`gateway.translate.ApiCall`), never something the client
    sent, so the series are bounded by the configuration: a client cannot
    mint a series. ``code`` is the status answered, not its class: within
    a class the per-subscription distinctions are the ones operators need
    (429 from a rate limit or quota against 401/403/404; 502 against 504).
    Absent parts are ``-`` (no operation, no product context, no
    subscription). Series stay once seen, like every counter: a removed
    API's counts remain until the process restarts.
    """

    def __init__(self) -> None:
        self.series: dict[tuple[str, str, str, str], _ApiSeries] = {}
        self.latency: dict[tuple[str, str], _Latency] = {}

    def observe(self, call: Any, status: int, seconds: float, bucket: int | None = None) -> None:
        """
        Count one admitted API call (a :class:`gateway.translate.ApiCall`).

        :param bucket: ``bisect_left(LATENCY_BUCKETS, seconds)`` when the
            caller has it already.
        """
        # The label tuple, not the ApiCall: a frozen dataclass hashes by
        # building this very tuple, a new one per request, at twice the cost.
        key = (call.api, call.operation, call.product, call.subscription)
        series = self.series.get(key)
        if series is None:
            series = self._bind(key)
        codes = series.codes
        codes[status] = codes.get(status, 0) + 1
        latency = series.latency
        if bucket is None:
            bucket = bisect_left(LATENCY_BUCKETS, seconds)
        latency.buckets[bucket] += 1
        latency.total += seconds
        latency.count += 1

    def _bind(self, key: tuple[Any, Any, Any, Any]) -> _ApiSeries:
        """The series of a label tuple seen for the first time (once per tuple)."""
        api, operation = key[0], key[1] or "-"
        latency = self.latency.get((api, operation))
        if latency is None:
            latency = self.latency[(api, operation)] = _Latency()
        series = self.series[key] = _ApiSeries(latency)
        return series

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "apimgw_api_requests",
            "APIM API calls (refused subscription checks included, with no product or "
            "subscription), by API, operation, product context and subscription id (- when "
            "none; ids from the configuration, never a key) and status code.",
            labels=["api", "operation", "product", "subscription", "code"],
        )
        # Summed by label values: an id spelled "-" and an absent part are one series.
        rows: dict[tuple[str, ...], int] = {}
        for (api, operation, product, subscription), series in self.series.items():
            labels = (api, operation or "-", product or "-", subscription or "-")
            for code, count in series.codes.items():
                row: tuple[str, ...] = (*labels, str(code))
                rows[row] = rows.get(row, 0) + count
        for row, count in sorted(rows.items()):
            requests.add_metric(list(row), count)
        yield requests
        duration = HistogramMetricFamily(
            "apimgw_api_request_duration_seconds",
            "Time from the complete request to the end of the response of APIM API calls, "
            "by API and operation (- when none).",
            labels=["api", "operation"],
        )
        for (api, operation), latency in sorted(self.latency.items()):
            duration.add_metric([api, operation], latency.cumulative(), latency.total)
        yield duration
