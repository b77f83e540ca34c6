"""Tests for the round-robin balancing over a route's endpoints."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from gateway.translate import FAILURE_HOLD, Endpoints, parse_backend


def _endpoints(*ports: int) -> Endpoints:
    return Endpoints(tuple(parse_backend(f"http://10.0.0.1:{p}") for p in ports))


class EndpointsTests(SynchronousTestCase):
    def test_round_robin(self) -> None:
        """Each endpoint in turn, then from the start again."""
        endpoints = _endpoints(1, 2, 3)
        picked = [endpoints.pick(0.0).port for _ in range(7)]  # type: ignore[union-attr]
        self.assertEqual(picked, [1, 2, 3, 1, 2, 3, 1])

    def test_failed_endpoint_is_skipped_until_its_hold_ends(self) -> None:
        """After a failure an endpoint is skipped for FAILURE_HOLD seconds, then used again."""
        endpoints = _endpoints(1, 2, 3)
        two = endpoints.backends[1]
        endpoints.failed(two, 100.0)
        picked = [endpoints.pick(101.0).port for _ in range(4)]  # type: ignore[union-attr]
        self.assertEqual(picked, [1, 3, 1, 3])
        self.assertEqual(endpoints.held(101.0), (two,))
        later = 100.0 + FAILURE_HOLD + 0.1
        self.assertEqual(endpoints.held(later), ())
        self.assertIn(2, [endpoints.pick(later).port for _ in range(3)])  # type: ignore[union-attr]

    def test_all_held_still_answers(self) -> None:
        """When every endpoint is on hold, round robin over all of them rather than refusing."""
        endpoints = _endpoints(1, 2)
        for backend in endpoints.backends:
            endpoints.failed(backend, 0.0)
        self.assertEqual({endpoints.pick(1.0).port for _ in range(4)}, {1, 2})  # type: ignore[union-attr]

    def test_avoid_for_a_retry(self) -> None:
        """A retry never goes back to the endpoint it comes from; a single endpoint gives none."""
        endpoints = _endpoints(1, 2)
        one = endpoints.backends[0]
        endpoints.failed(one, 0.0)
        self.assertEqual(endpoints.pick(0.0, avoid=one).port, 2)  # type: ignore[union-attr]
        single = _endpoints(1)
        self.assertIsNone(single.pick(0.0, avoid=single.backends[0]))

    def test_none_ready(self) -> None:
        self.assertIsNone(_endpoints().pick(0.0))
