"""Tests for the gateway's Prometheus metrics and access log."""

from __future__ import annotations

import json

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from gateway.observability import AccessLog, GatewayMetrics


def samples(metrics: GatewayMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


class RequestStatsTests(SynchronousTestCase):
    def test_counts_by_route_method_and_status_class(self) -> None:
        """Requests are counted per route, method and status class (2xx, 4xx, 5xx)."""
        m = GatewayMetrics()
        for status in (200, 201, 404, 503):
            m.observe_request("api:echo", "GET", status, 0.001)
        m.observe_request("api:echo", "POST", 200, 0.001)
        got = samples(m)
        key = lambda method, klass: ("apimgw_requests_total", (("method", method), ("route", "api:echo"), ("status_class", klass)))  # noqa: E731
        self.assertEqual(got[key("GET", "2xx")], 2)
        self.assertEqual(got[key("GET", "4xx")], 1)
        self.assertEqual(got[key("GET", "5xx")], 1)
        self.assertEqual(got[key("POST", "2xx")], 1)

    def test_latency_histogram_is_cumulative_with_le_bounds(self) -> None:
        """Durations land in the first bucket whose bound is >= the value; buckets are cumulative; sum and count match."""
        m = GatewayMetrics()
        for seconds in (0.0005, 0.0007, 0.02, 100.0):
            m.observe_request("r", "GET", 200, seconds)
        got = samples(m)
        bucket = lambda le: got[("apimgw_request_duration_seconds_bucket", (("le", le), ("route", "r")))]  # noqa: E731
        self.assertEqual(bucket("0.0005"), 1)
        self.assertEqual(bucket("0.001"), 2)
        self.assertEqual(bucket("0.025"), 3)
        self.assertEqual(bucket("30.0"), 3)
        self.assertEqual(bucket("+Inf"), 4)
        self.assertEqual(got[("apimgw_request_duration_seconds_count", (("route", "r"),))], 4)
        self.assertAlmostEqual(got[("apimgw_request_duration_seconds_sum", (("route", "r"),))], 100.0212)

    def test_registries_are_per_gateway(self) -> None:
        """Two gateways in one process keep separate counts."""
        a, b = GatewayMetrics(), GatewayMetrics()
        a.observe_request("r", "GET", 200, 0.1)
        self.assertNotIn("apimgw_requests_total", str(samples(b)))


class TLSMetricsTests(SynchronousTestCase):
    def test_certificate_expiry_computed_at_scrape(self) -> None:
        """
        The expiry gauge is not-after minus the clock at scrape time, per
        served host and source; an update replaces the list.
        """
        now = [1000.0]
        m = GatewayMetrics(clock=lambda: now[0])
        served = type("S", (), {"host": "www.example.com", "source": "file:certificate/a",
                                "not_after": 5000.0})
        m.certificates.update([served])
        key = ("apimgw_tls_certificate_expiry_seconds",
               (("host", "www.example.com"), ("source", "file:certificate/a")))
        self.assertEqual(samples(m)[key], 4000.0)
        now[0] = 6000.0
        self.assertEqual(samples(m)[key], -1000.0)
        m.certificates.update([])
        self.assertNotIn(key, samples(m))

    def test_handshakes_by_outcome(self) -> None:
        """Handshakes are counted by outcome; every outcome is exported from the start."""
        m = GatewayMetrics()
        m.handshake("exact")
        m.handshake("exact")
        m.handshake("failed")
        got = samples(m)
        count = lambda outcome: got[("apimgw_tls_handshakes_total", (("outcome", outcome),))]  # noqa: E731
        self.assertEqual(
            [count(o) for o in ("exact", "wildcard", "default", "failed")], [2.0, 0.0, 0.0, 1.0]
        )


class AccessLogTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.events: list[dict] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def emit(self, fmt: str) -> None:
        AccessLog(fmt).emit(
            client="10.0.0.1", method="GET", path="/echo/x?y=1", protocol="HTTP/1.1",
            status=200, bytes=12, duration=0.0015, host="h", route="api:echo",
            backend="http://b:1", request_id="rid-1",
        )

    def access_events(self) -> list[dict]:
        return [e for e in self.events if e.get("log_namespace") == "apimgw.access"]

    def test_text_line(self) -> None:
        """
        The text format is one info line with method, path, status, bytes,
        duration, route, backend, request id, then the API call's ids (``-``
        when not an API call).
        """
        self.emit("text")
        (event,) = self.access_events()
        self.assertEqual(event["log_level"], LogLevel.info)
        self.assertEqual(
            formatEvent(event),
            '10.0.0.1 "GET /echo/x?y=1 HTTP/1.1" 200 12 1.500ms host=h route=api:echo '
            "backend=http://b:1 request_id=rid-1 api=- operation=- product=- subscription=-",
        )

    def test_json_line(self) -> None:
        """The json format renders one JSON object with the same fields."""
        self.emit("json")
        (event,) = self.access_events()
        record = json.loads(formatEvent(event))
        self.assertEqual(record["status"], 200)
        self.assertEqual(record["requestId"], "rid-1")
        self.assertEqual(record["durationMs"], 1.5)

    def test_none_emits_nothing(self) -> None:
        """The none format logs nothing."""
        self.emit("none")
        self.assertEqual(self.access_events(), [])

    def test_unknown_format_refused(self) -> None:
        """An unknown format is a ValueError naming the setting."""
        self.assertRaises(ValueError, AccessLog, "xml")


class IngressStatusMetricsTests(SynchronousTestCase):
    """The Ingress collector reads the source and, separately, its status writer."""

    def test_status_writes_come_from_the_writer(self) -> None:
        """apimgw_ingress_status_updates_total counts the attached writer's writes (0 without one)."""

        class Source:
            translation = None
            translations = 3
            leading = True
            running = True
            informers: dict[str, object] = {}

        class Writer:
            updates = 7

        metrics = GatewayMetrics(clock=lambda: 0.0)
        metrics.ingress.attach(Source())

        def scraped() -> dict[str, float]:
            text = generate_latest(metrics.registry).decode()
            return {
                s.name: s.value
                for family in text_string_to_metric_families(text)
                for s in family.samples
                if s.name.startswith("apimgw_ingress_")
            }

        self.assertEqual(scraped()["apimgw_ingress_status_updates_total"], 0)
        metrics.ingress.attach_status(Writer())
        self.assertEqual(scraped()["apimgw_ingress_status_updates_total"], 7)
        self.assertEqual(scraped()["apimgw_ingress_translations_total"], 3)
