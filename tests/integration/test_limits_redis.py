"""
Rate limits shared through a real Redis by two real gateway processes
(issue 10): exactly N admitted between them; Redis killed while they serve
(no request fails because of it, the limit becomes per replica and
``apimgw_ratelimit_fallback_total`` counts it); Redis back, empty: each
gateway replays its admissions of the open window, so nothing more is
admitted than the limit allows (no burst after recovery).
"""

from __future__ import annotations

import os
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from gateway.testing.backends import scenario_site
from gateway.testing.process import GatewayProcess
from gateway.testing.redis import RedisServer

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

LIMIT = 12

CONFIG = """\
apis:
  - name: shared
    path: shared
    serviceUrl: {backend}/api
policies:
  - scope: api
    apiId: shared
    xml: |
      <policies>
        <inbound>
          <rate-limit-by-key calls="{limit}" renewal-period="300" counter-key="everyone" />
        </inbound>
        <backend><forward-request /></backend>
        <outbound />
      </policies>
"""


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        e.read()
        return e.code


def _text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()


def _fallbacks(gw: GatewayProcess) -> float:
    for line in _text(gw.admin_url + "/metrics").splitlines():
        if line.startswith("apimgw_ratelimit_fallback_total "):
            return float(line.split()[1])
    raise AssertionError("apimgw_ratelimit_fallback_total not in /metrics")


class SharedRedisTests(TestCase):
    timeout = 120

    @inlineCallbacks
    def setUp(self) -> Any:
        self.redis = RedisServer()
        yield deferToThread(self.redis.start)
        self.addCleanup(self.redis.cleanup)
        site = scenario_site(reactor)
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site)
        self.addCleanup(port.stopListening)
        backend = f"http://127.0.0.1:{port.getHost().port}"
        fd, config = tempfile.mkstemp(suffix=".yaml")
        with os.fdopen(fd, "w") as f:
            f.write(CONFIG.format(backend=backend, limit=LIMIT))
        self.addCleanup(os.unlink, config)
        self.gateways: list[GatewayProcess] = []
        self.logs: list[str] = []
        for _ in range(2):
            log = tempfile.mktemp(suffix=".log")
            # A generous Redis timeout: these tests count exactly, and a
            # loaded machine must not turn a slow answer into a fallback (a
            # killed Redis refuses connections at once anyway).
            env = dict(os.environ, TELEMETRY_LOGS_STD="none", RATE_LIMIT_REDIS_TIMEOUT="5",
                       RATE_LIMIT_REDIS_URL=self.redis.url, GATEWAY_SHUTDOWN_DELAY="0")
            gw = GatewayProcess(["--config", config], env=env, cwd=_REPO, logfile=log)
            self.addCleanup(gw.kill)
            yield deferToThread(gw.start)
            self.gateways.append(gw)
            self.logs.append(log)

    def log(self, index: int) -> str:
        with open(self.logs[index]) as f:
            return f.read()

    def statuses(self, per_gateway: int) -> Any:
        """``per_gateway`` concurrent requests to each gateway; their statuses."""
        urls = [gw.url + "/shared/x" for gw in self.gateways for _ in range(per_gateway)]

        def run() -> list[int]:
            with ThreadPoolExecutor(max_workers=16) as pool:
                return list(pool.map(_status, urls))

        return deferToThread(run)

    def wait_for_log(self, index: int, text: str, timeout: float = 20.0) -> Any:
        def poll() -> None:
            deadline = time.monotonic() + timeout
            while text not in self.log(index):
                if time.monotonic() > deadline:
                    raise AssertionError(f"{text!r} not logged by gateway {index}:\n{self.log(index)}")
                time.sleep(0.05)

        return deferToThread(poll)

    @inlineCallbacks
    def test_two_gateways_admit_exactly_the_limit(self) -> Any:
        """40 concurrent requests over two gateways: exactly LIMIT admitted, the rest 429, no fallback."""
        statuses = yield self.statuses(20)
        self.assertEqual((statuses.count(200), statuses.count(429)), (LIMIT, 40 - LIMIT))
        for gw in self.gateways:
            self.assertEqual((yield deferToThread(_fallbacks, gw)), 0.0)

    @inlineCallbacks
    def test_redis_killed_and_restarted(self) -> Any:
        """
        Redis away: every request is answered (200 or 429, never 5xx), each
        gateway counting alone; Redis back empty: the replay restores the
        count, and nothing more is admitted.
        """
        statuses = yield self.statuses(3)
        self.assertEqual(statuses, [200] * 6)
        self.redis.kill()
        during = yield self.statuses(5)
        self.assertEqual(sorted(set(during)), [200])  # each gateway: 3 + 5 <= LIMIT alone
        for index, gw in enumerate(self.gateways):
            self.assertGreaterEqual((yield deferToThread(_fallbacks, gw)), 1.0)
            self.assertEqual(self.log(index).count("Redis unavailable"), 1, "logged once")
        yield deferToThread(self.redis.start)
        for index in range(2):
            yield self.wait_for_log(index, "Redis is back")
        # 6 + 10 admitted in the window: both replayed theirs (Redis had lost
        # its data), so Redis counts 16 >= LIMIT and admits nothing more.
        after = yield self.statuses(4)
        self.assertEqual(after, [429] * 8)
