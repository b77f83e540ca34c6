"""
Tests for :mod:`gateway.upstream._balancer`: round robin over a route's
endpoints with failure holds, and the registry that keeps that state across
generations.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from gateway.translate import Backend, parse_backend
from gateway.upstream import FAILURE_HOLD, Balancer, Balancers


def _endpoints(*ports: int, host: str = "10.0.0.1") -> tuple[Backend, ...]:
    """A route's endpoints as translation gives them: a fresh tuple each call."""
    return tuple(parse_backend(f"http://{host}:{p}") for p in ports)


def _ports(balancer: Balancer, now: float, count: int) -> list[int]:
    picked = []
    for _ in range(count):
        backend = balancer.pick(now)
        assert backend is not None
        picked.append(backend.port)
    return picked


class BalancerTests(SynchronousTestCase):
    """One endpoint set: round robin, holds, the all-held fallback, retries."""

    def test_round_robin(self) -> None:
        """Each endpoint in turn, then from the start again."""
        balancer = Balancer(_endpoints(1, 2, 3))
        self.assertEqual(_ports(balancer, 0.0, 7), [1, 2, 3, 1, 2, 3, 1])

    def test_failed_endpoint_is_skipped_until_its_hold_ends(self) -> None:
        """After a failure an endpoint is skipped for FAILURE_HOLD seconds, then used again."""
        balancer = Balancer(_endpoints(1, 2, 3))
        two = balancer.backends[1]
        balancer.failed(two, 100.0)
        self.assertEqual(_ports(balancer, 101.0, 4), [1, 3, 1, 3])
        self.assertEqual(balancer.held(101.0), (two,))
        later = 100.0 + FAILURE_HOLD + 0.1
        self.assertEqual(balancer.held(later), ())
        self.assertIn(2, _ports(balancer, later, 3))

    def test_all_held_still_answers(self) -> None:
        """When every endpoint is on hold, round robin over all of them rather than refusing."""
        balancer = Balancer(_endpoints(1, 2))
        for backend in balancer.backends:
            balancer.failed(backend, 0.0)
        self.assertEqual(set(_ports(balancer, 1.0, 4)), {1, 2})

    def test_avoid_for_a_retry(self) -> None:
        """A retry never goes back to the endpoint it comes from; a single endpoint gives none."""
        balancer = Balancer(_endpoints(1, 2))
        one = balancer.backends[0]
        balancer.failed(one, 0.0)
        self.assertEqual(balancer.pick(0.0, avoid=one).port, 2)  # type: ignore[union-attr]
        single = Balancer(_endpoints(1))
        self.assertIsNone(single.pick(0.0, avoid=single.backends[0]))

    def test_avoid_when_all_are_held(self) -> None:
        """With every endpoint on hold, a retry still goes to another endpoint than the failed one."""
        balancer = Balancer(_endpoints(1, 2, 3))
        for backend in balancer.backends:
            balancer.failed(backend, 0.0)
        for _ in range(6):
            failed = balancer.backends[balancer._next]
            picked = balancer.pick(1.0, avoid=failed)
            assert picked is not None
            self.assertNotEqual(picked.port, failed.port)

    def test_avoid_matches_an_equal_endpoint(self) -> None:
        """The endpoint to avoid is recognised by address, even from an older generation's tuple."""
        balancer = Balancer(_endpoints(1, 2))
        older = _endpoints(1)[0]
        self.assertEqual(_ports(balancer, 0.0, 1), [1])
        self.assertEqual(balancer.pick(0.0, avoid=older).port, 2)  # type: ignore[union-attr]
        self.assertEqual(balancer.pick(0.0, avoid=older).port, 2)  # type: ignore[union-attr]

    def test_none_ready(self) -> None:
        """An endpoint set with no ready endpoint picks nothing."""
        self.assertIsNone(Balancer(()).pick(0.0))


class BalancersTests(SynchronousTestCase):
    """The registry: state per endpoint set and per address, across generations."""

    def test_same_tuple_same_balancer(self) -> None:
        """Within a generation, a route's endpoints always get the same balancer."""
        balancers = Balancers()
        endpoints = _endpoints(1, 2)
        first = balancers.of(endpoints, 1)
        self.assertIs(balancers.of(endpoints, 1), first)
        self.assertEqual(first.backends, endpoints)

    def test_rotation_continues_across_a_swap(self) -> None:
        """A new generation with the same endpoints continues the rotation where it stood."""
        balancers = Balancers()
        self.assertEqual(_ports(balancers.of(_endpoints(1, 2, 3), 1), 0.0, 2), [1, 2])
        self.assertEqual(_ports(balancers.of(_endpoints(1, 2, 3), 2), 0.0, 2), [3, 1])

    def test_changed_set_starts_a_new_rotation(self) -> None:
        """Endpoints that changed get a balancer of their own, starting at the first."""
        balancers = Balancers()
        _ports(balancers.of(_endpoints(1, 2, 3), 1), 0.0, 2)
        self.assertEqual(_ports(balancers.of(_endpoints(1, 2, 4), 2), 0.0, 2), [1, 2])

    def test_hold_survives_a_swap_and_a_changed_set(self) -> None:
        """A held endpoint stays held in the next generation, even in a set that changed."""
        balancers = Balancers()
        first = balancers.of(_endpoints(1, 2), 1)
        first.failed(first.backends[0], 100.0)
        second = balancers.of(_endpoints(1, 2, 3), 2)
        self.assertEqual(_ports(second, 101.0, 4), [2, 3, 2, 3])
        self.assertEqual(balancers.held(101.0), (("http", "10.0.0.1", 1),))

    def test_hold_is_shared_by_routes(self) -> None:
        """An endpoint that refused for one route is skipped by every route using its address."""
        balancers = Balancers()
        web = balancers.of(_endpoints(1, 2), 1)
        api = balancers.of(_endpoints(1, 3), 1)
        web.failed(web.backends[0], 0.0)
        self.assertEqual(_ports(api, 1.0, 2), [3, 3])
        self.assertEqual(api.held(1.0), (api.backends[0],))

    def test_expired_holds_are_dropped(self) -> None:
        """A hold ends after FAILURE_HOLD seconds and leaves nothing behind."""
        balancers = Balancers()
        balancer = balancers.of(_endpoints(1, 2), 1)
        balancer.failed(balancer.backends[0], 0.0)
        later = FAILURE_HOLD + 1.0
        self.assertEqual(balancers.held(later), ())
        self.assertEqual(_ports(balancer, later, 2), [1, 2])
        self.assertEqual(balancers._held_until, {})

    def test_unused_sets_are_forgotten(self) -> None:
        """Only the sets of the current and the previous generation are kept."""
        balancers = Balancers()
        balancers.of(_endpoints(1), 1)
        balancers.of(_endpoints(2), 2)
        balancers.of(_endpoints(3), 3)
        self.assertEqual(
            [set(b.port for t in d for b in t) for d in (balancers._previous, balancers._current)],
            [{2}, {3}],
        )
        self.assertEqual(len(balancers._by_id), 1)
