"""Tests for ``/metrics`` merged over several processes."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.trial.unittest import SynchronousTestCase

from gateway.observability import GatewayMetrics
from gateway.workers import merge_expositions
from gateway.workers._merge import cumulative, fold


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


class MergeTests(SynchronousTestCase):
    def test_counters_histograms_and_gauges_add_up(self) -> None:
        """Requests, latency buckets, labelled counters and gauges of two registries are summed per label set."""
        one, two = GatewayMetrics(), GatewayMetrics()
        one.observe_request("echo", "GET", 200, 0.001)
        two.observe_request("echo", "GET", 200, 0.003)
        two.observe_request("echo", "GET", 404, 0.003)
        one.reload_failures.labels("file").inc()
        two.reload_failures.labels("file").inc(2)
        one.in_flight.inc()
        two.in_flight.inc(2)
        merged = samples(merge_expositions([generate_latest(one.registry), generate_latest(two.registry)]))
        ok = ("apimgw_requests_total", (("method", "GET"), ("route", "echo"), ("status_class", "2xx")))
        self.assertEqual(merged[ok], 2.0)
        self.assertEqual(
            merged[("apimgw_requests_total", (("method", "GET"), ("route", "echo"), ("status_class", "4xx")))],
            1.0,
        )
        self.assertEqual(merged[("apimgw_request_duration_seconds_count", (("route", "echo"),))], 3.0)
        self.assertEqual(
            merged[("apimgw_request_duration_seconds_bucket", (("le", "0.001"), ("route", "echo")))], 1.0
        )
        self.assertAlmostEqual(merged[("apimgw_request_duration_seconds_sum", (("route", "echo"),))], 0.007)
        self.assertEqual(merged[("apimgw_config_reload_failures_total", (("source", "file"),))], 3.0)
        self.assertEqual(merged[("apimgw_requests_in_flight", ())], 3.0)

    def test_created_is_the_earliest(self) -> None:
        """A ``*_created`` timestamp is not a count: the merge keeps the earliest."""
        text_a = b"# TYPE x counter\nx_total 1.0\nx_created 200.0\n"
        text_b = b"# TYPE x counter\nx_total 2.0\nx_created 100.0\n"
        merged = samples(merge_expositions([text_a, text_b]))
        self.assertEqual(merged[("x_total", ())], 3.0)
        self.assertEqual(merged[("x_created", ())], 100.0)

    def test_one_exposition_round_trips(self) -> None:
        """Merging a single exposition changes no sample (the supervisor alone, before workers answer)."""
        metrics = GatewayMetrics()
        metrics.observe_request("r", "POST", 500, 0.2)
        text = generate_latest(metrics.registry)
        self.assertEqual(samples(merge_expositions([text])), samples(text))


class OffsetTests(SynchronousTestCase):
    def test_a_dead_workers_counts_are_kept_and_its_gauges_dropped(self) -> None:
        """
        What a dead worker leaves its slot: its counters, histogram buckets,
        counts and sums (added to an earlier offset), not its gauges.
        """
        dead = GatewayMetrics()
        dead.observe_request("echo", "GET", 200, 0.001)
        dead.in_flight.inc(3)
        text = generate_latest(dead.registry)
        kept = samples(cumulative(text))
        self.assertNotIn(("apimgw_requests_in_flight", ()), kept)
        ok = ("apimgw_requests_total", (("method", "GET"), ("route", "echo"), ("status_class", "2xx")))
        count = ("apimgw_request_duration_seconds_count", (("route", "echo"),))
        self.assertEqual((kept[ok], kept[count]), (1.0, 1.0))
        twice = samples(fold(cumulative(text), text))
        self.assertEqual((twice[ok], twice[count]), (2.0, 2.0))
        self.assertEqual(samples(fold(b"", b"")), {})
