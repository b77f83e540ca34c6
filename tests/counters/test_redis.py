"""
:class:`RedisCounters` against a real ``redis-server`` (started per test on
a loopback port): the semantics tables, sharing between gateways,
pipelining, passwords and TLS.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Generator
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from gateway.counters import RedisAuthError, RedisCounters, RedisUnavailable
from gateway.testing.certs import CertificateAuthority
from gateway.testing.redis import RedisServer, RedisTLS, redis_supports_tls
from gateway.testing.waiting import wait_for

from ._semantics import SemanticsMixin, add_cases


class RedisTestCase(TestCase):
    """Starts a redis-server for each test and stops it (by PID) afterwards."""

    def start_server(self, **kwargs: Any) -> RedisServer:
        server = RedisServer(**kwargs)
        server.start()
        self.addCleanup(server.cleanup)
        return server

    def counters(self, server: RedisServer, **kwargs: Any) -> RedisCounters:
        kwargs.setdefault("namespace", self.id().rsplit(".", 1)[-1])
        # These tests are about what Redis counts, not how fast: a loaded CI
        # machine must not turn a slow answer into a timeout.
        kwargs.setdefault("command_timeout", 10.0)
        counters = RedisCounters(reactor, kwargs.pop("url", server.url), **kwargs)
        counters.start()
        self.addCleanup(counters.stop)
        return counters


@add_cases
class RedisSemanticsTests(SemanticsMixin, RedisTestCase):
    """Redis's scripts follow the same tables as the local counters (its time taken from a fake clock)."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.server = self.start_server()

    def make(self) -> RedisCounters:
        store = self.counters(self.server, time_source=self.clock.seconds)
        pending: list[Deferred[None]] = []
        original = store.add_at

        def add_at(*args: Any, **kwargs: Any) -> Deferred[None]:
            d = original(*args, **kwargs)
            pending.append(d)
            return d

        store.add_at = add_at  # type: ignore[method-assign]
        store.settled = lambda: gatherResults(pending)  # type: ignore[attr-defined]
        return store


class RedisCountersTests(RedisTestCase):
    """Real Redis, real time."""

    @inlineCallbacks
    def test_two_gateways_admit_exactly_the_limit(self) -> Generator[Any, Any, None]:
        """Two clients (two gateways) racing on one key admit exactly `limit` calls between them."""
        server = self.start_server()
        a = self.counters(server, namespace="shared")
        b = self.counters(server, namespace="shared")
        yield gatherResults([a.client.when_connected(), b.client.when_connected()])
        calls = [(a if i % 2 else b).take("sub-1", 50, 60.0) for i in range(400)]
        verdicts = yield gatherResults(calls)
        self.assertEqual(sum(v.admitted for v in verdicts), 50)
        self.assertEqual(max(v.count for v in verdicts), 50)
        fixed = [(a if i % 2 else b).take("q", 30, 3600.0, sliding=False) for i in range(100)]
        verdicts = yield gatherResults(fixed)
        self.assertEqual(sum(v.admitted for v in verdicts), 30)

    @inlineCallbacks
    def test_pipelined_in_order_on_one_connection(self) -> Generator[Any, Any, None]:
        """1,000 takes are written at once on one connection and resolve in order."""
        server = self.start_server()
        store = self.counters(server)
        protocol = yield store.client.when_connected()
        calls = [store.take("k", 600, 60.0) for _ in range(1000)]
        self.assertEqual(protocol.pending, 1000)
        verdicts = yield gatherResults(calls)
        self.assertEqual([v.count for v in verdicts[:600]], list(range(1, 601)))
        self.assertTrue(all(v.admitted for v in verdicts[:600]))
        self.assertFalse(any(v.admitted for v in verdicts[600:]))
        self.assertIs(store.client._protocol, protocol)

    @inlineCallbacks
    def test_keys_are_namespaced_and_expire(self) -> Generator[Any, Any, None]:
        """Keys live under apimgw:<namespace>: and carry a TTL of about one window."""
        server = self.start_server()
        store = self.counters(server, namespace="ns1")
        yield store.take("k", 5, 30.0)
        yield store.take("q", 5, 60.0, sliding=False)
        yield store.take("forever", 5, 0.0, sliding=False)
        keys = yield store.client.execute(b"KEYS", b"*")
        self.assertEqual(
            sorted(keys), [b"apimgw:ns1:f:0:forever", b"apimgw:ns1:f:60:q", b"apimgw:ns1:s:30:k"]
        )
        ttl = yield store.client.execute(b"PTTL", b"apimgw:ns1:s:30:k")
        self.assertTrue(29_000 < ttl <= 30_001, ttl)
        ttl = yield store.client.execute(b"PTTL", b"apimgw:ns1:f:60:q")
        self.assertTrue(0 < ttl <= 60_001, ttl)
        ttl = yield store.client.execute(b"PTTL", b"apimgw:ns1:f:0:forever")
        self.assertEqual(ttl, -1)

    @inlineCallbacks
    def test_script_cache_flushed(self) -> Generator[Any, Any, None]:
        """After SCRIPT FLUSH, EVALSHA's NOSCRIPT is answered by one EVAL: the take still counts."""
        server = self.start_server()
        store = self.counters(server)
        yield store.take("k", 5, 60.0)
        yield store.client.execute(b"SCRIPT", b"FLUSH")
        verdict = yield store.take("k", 5, 60.0)
        self.assertEqual((verdict.admitted, verdict.count), (True, 2))

    @inlineCallbacks
    def test_password(self) -> Generator[Any, Any, None]:
        """requirepass: the URL's password, or the separate parameter, authenticates."""
        server = self.start_server(password="s3cret/:@")
        in_url = self.counters(server, url=f"redis://:s3cret%2F%3A%40@127.0.0.1:{server.port}/2")
        apart = self.counters(server, password="s3cret/:@")
        v1 = yield in_url.take("k", 5, 60.0)
        v2 = yield apart.take("k", 5, 60.0)
        self.assertEqual((v1.count, v2.count), (1, 1))  # db 2 and db 0

    @inlineCallbacks
    def test_wrong_password_is_a_clear_error(self) -> Generator[Any, Any, None]:
        """A wrong password fails the connection with an error that says so; takes fail at once."""
        server = self.start_server(password="right")
        store = self.counters(server, password="wrong")
        yield wait_for(lambda: store.client.last_error is not None, what="a refused AUTH")
        self.assertIsInstance(store.client.last_error, RedisAuthError)
        self.assertIn("refused the password", str(store.client.last_error))
        self.assertIn("WRONGPASS", str(store.client.last_error))
        failure = yield self.assertFailure(store.take("k", 5, 60.0), RedisUnavailable)
        self.assertIn("refused the password", str(failure))
        self.flushLoggedErrors()

    @inlineCallbacks
    def test_no_server_fails_fast(self) -> Generator[Any, Any, None]:
        """Nothing listening: a take fails with RedisUnavailable, not a hang."""
        server = self.start_server()
        server.stop()
        store = self.counters(server)
        failure = yield self.assertFailure(store.take("k", 5, 60.0), RedisUnavailable)
        self.assertIn(str(server.port), str(failure))

    def _tls_files(self) -> RedisTLS:
        if not redis_supports_tls():
            self.skipTest("this redis-server was built without TLS (ldd shows no libssl)")
        ca = CertificateAuthority()
        leaf = ca.issue("localhost")
        directory = tempfile.mkdtemp(prefix="apimgw-redis-tls-")
        files = {"cert": leaf.chain_pem, "key": leaf.key_pem, "ca": ca.cert_pem}
        paths = {}
        for name, pem in files.items():
            paths[name] = os.path.join(directory, f"{name}.pem")
            with open(paths[name], "w") as f:
                f.write(pem)
        return RedisTLS(paths["cert"], paths["key"], paths["ca"])

    @inlineCallbacks
    def test_tls_verified_with_a_ca_file(self) -> Generator[Any, Any, None]:
        """rediss:// with the CA that signed Redis's certificate works."""
        tls = self._tls_files()
        server = self.start_server(tls=tls, password="pw")
        store = self.counters(server, password="pw", ca_file=tls.ca_file, connect_timeout=5.0)
        yield store.client.when_connected()
        verdict = yield store.take("k", 5, 60.0)
        self.assertEqual(verdict.count, 1)

    @inlineCallbacks
    def test_tls_verifies_by_default(self) -> Generator[Any, Any, None]:
        """rediss:// without the CA: the unknown issuer is refused (verification is on by default)."""
        tls = self._tls_files()
        server = self.start_server(tls=tls)
        store = self.counters(server, connect_timeout=5.0)
        yield wait_for(lambda: store.client.last_error is not None, what="a refused handshake")
        self.assertFalse(store.client.connected)
        self.flushLoggedErrors()
