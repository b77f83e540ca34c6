"""
``rate-limit``, ``rate-limit-by-key`` and ``quota`` enforced by the real
gateway with its local counters (no Redis configured), on real sockets
(issue 10). The tables with a fake clock are in tests/proxy/test_limits.py;
the shared Redis in tests/integration/test_limits_redis.py.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import inlineCallbacks

from .harness import GatewayTestCase

CONFIG = """\
apis:
  - name: orders
    path: orders
    serviceUrl: {backend}/api
    subscriptionRequired: true
    operations:
      - {{name: list, method: GET, urlTemplate: /}}
      - {{name: get, method: GET, urlTemplate: "/{{id}}"}}
  - name: search
    path: search
    serviceUrl: {backend}/api
  - name: files
    path: files
    serviceUrl: {backend}/api
    subscriptionRequired: true
products:
  - {{name: starter, apis: [orders, files]}}
subscriptions:
  - {{name: alice, scope: /products/starter, primaryKey: alice-key-0001}}
  - {{name: bob, scope: /products/starter, primaryKey: bob-key-0002}}
policies:
  - scope: product
    productId: starter
    xml: |
      <policies>
        <inbound>
          <base />
          <rate-limit calls="5" renewal-period="60" remaining-calls-header-name="X-Remaining"
                      total-calls-header-name="X-Limit" retry-after-header-name="X-Retry-In">
            <api name="orders" calls="4" renewal-period="60">
              <operation name="get" calls="2" renewal-period="60" />
            </api>
          </rate-limit>
          <quota bandwidth="20" renewal-period="3600">
            <api name="files" calls="3" />
          </quota>
        </inbound>
        <backend><base /></backend>
        <outbound><base /></outbound>
        <on-error><base /></on-error>
      </policies>
  - scope: api
    apiId: search
    xml: |
      <policies>
        <inbound>
          <rate-limit-by-key calls="2" renewal-period="60" counter-key="@(context.Request.IpAddress)"
                             increment-condition="@(context.Response.StatusCode == 200)"
                             remaining-calls-variable-name="left" />
        </inbound>
        <backend><forward-request /></backend>
        <outbound>
          <set-header name="X-Left" exists-action="override"><value>@("" + context.Variables.GetValueOrDefault&lt;int&gt;("left"))</value></set-header>
        </outbound>
        <on-error>
          <set-header name="X-Reason" exists-action="override"><value>@(context.LastError.Source + "/" + context.LastError.Reason)</value></set-header>
        </on-error>
      </policies>
"""

ALICE = [("Ocp-Apim-Subscription-Key", "alice-key-0001")]
BOB = [("Ocp-Apim-Subscription-Key", "bob-key-0002")]


class LocalLimitTests(GatewayTestCase):
    """Each replica counts alone without Redis; the semantics are APIM's."""

    @inlineCallbacks
    def setUp(self) -> Any:
        yield super().setUp()
        self.write_config(CONFIG.format(backend=self.backend_url))
        yield self.wait_for(
            lambda: any(
                e.access is not None and e.access.api_id == "search"
                for e in self.gateway.reconciler.current.config.routes
            )
        )

    @inlineCallbacks
    def test_nested_operation_limit_then_429(self) -> Any:
        """The operation's own limit (2) refuses the third call with 429, Retry-After and APIM's message."""
        statuses = []
        for _ in range(3):
            r = yield self.get("/orders/7", headers=ALICE)
            statuses.append(r.status)
        self.assertEqual(statuses, [200, 200, 429])
        self.assertEqual(r.json(), {"statusCode": 429,
                                    "message": "Rate limit is exceeded. Try again in 60 seconds."})
        self.assertEqual(r.header("x-retry-in"), "60")
        # The product limit counted 3 (the refused call was counted by the
        # outer limits first): 2 left, shown on the next call of another
        # operation, which its API limit (4) still admits.
        r = yield self.get("/orders/", headers=ALICE)
        self.assertEqual((r.status, r.header("x-remaining"), r.header("x-limit")), (200, "1", "5"))

    @inlineCallbacks
    def test_counted_per_subscription(self) -> Any:
        """Alice's calls do not use Bob's allowance."""
        for _ in range(2):
            r = yield self.get("/orders/7", headers=ALICE)
            self.assertEqual(r.status, 200)
        r = yield self.get("/orders/7", headers=ALICE)
        self.assertEqual(r.status, 429)
        r = yield self.get("/orders/7", headers=BOB)
        self.assertEqual((r.status, r.header("x-remaining")), (200, "4"))

    @inlineCallbacks
    def test_rate_limit_by_key_counts_only_successes(self) -> Any:
        """increment-condition on the response: 500s are not counted; the third 200 is refused (one call late, as APIM)."""
        for _ in range(3):
            r = yield self.get("/search/x?status=500")
            self.assertEqual(r.status, 500)
        r = yield self.get("/search/x")
        self.assertEqual((r.status, r.header("x-left")), (200, "2"))
        r = yield self.get("/search/x")
        self.assertEqual((r.status, r.header("x-left")), (200, "1"))
        r = yield self.get("/search/x")
        self.assertEqual(r.status, 429)
        self.assertEqual(r.header("x-reason"), "rate-limit-by-key/RateLimitExceeded")
        self.assertEqual(r.header("retry-after"), "60")

    @inlineCallbacks
    def test_quota_calls_and_bandwidth(self) -> Any:
        """The nested calls quota (3) answers 403 with APIM's message; the bandwidth quota (20 KB) counts bodies after the response."""
        for _ in range(3):
            r = yield self.get("/files/x", headers=BOB)
            self.assertEqual(r.status, 200)
        r = yield self.get("/files/x", headers=BOB)
        self.assertEqual(r.status, 403)
        self.assertRegex(r.json()["message"],
                         r"^Out of call volume quota\. Quota will be replenished in \d\d:\d\d:\d\d\.$")
        self.assertGreater(int(r.header("retry-after") or 0), 0)
        # Alice: a 25 KB response uses up the 20 KB bandwidth quota; the
        # next call is refused before it reaches the backend.
        r = yield self.get("/orders/?size=25000", headers=ALICE)
        self.assertEqual((r.status, len(r.body)), (200, 25000))
        before = self.backend_site.connections
        r = yield self.get("/orders/", headers=ALICE)
        self.assertEqual(r.status, 403)
        self.assertTrue(r.json()["message"].startswith("Out of bandwidth quota."))
        self.assertEqual(self.backend_site.connections, before)

    @inlineCallbacks
    def test_local_counters_never_fall_back(self) -> Any:
        """Without Redis the local counters decide every check: apimgw_ratelimit_fallback_total stays 0."""
        for _ in range(3):
            r = yield self.get("/orders/7", headers=ALICE)
        self.assertEqual(r.status, 429)
        r = yield self.admin("/metrics")
        self.assertIn("apimgw_ratelimit_fallback_total 0.0", r.body.decode())
