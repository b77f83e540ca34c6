"""
Subscription keys enforced by the real gateway, on real sockets, with a real
backend: APIM's key rules, where the key is read, and that it never reaches
the backend (issue 9).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import inlineCallbacks

from .harness import GatewayTestCase

KEYED = """\
apis:
  - name: orders
    path: orders
    serviceUrl: {backend}/api
    subscriptionRequired: true
  - name: catalog
    path: catalog
    serviceUrl: {backend}/api
    subscriptionRequired: true
    subscriptionKeyParameterNames: {{header: X-Catalog-Key, query: catalog-key}}
  - name: public
    path: public
    serviceUrl: {backend}/api
  - name: broken
    path: broken
    serviceUrl: {backend}/api
products:
  - {{name: starter, apis: [orders, catalog]}}
subscriptions:
  - {{name: contoso, scope: /products/starter, primaryKey: primary-key-0001, secondaryKey: second-key-0002}}
  - {{name: orders-only, scope: /apis/orders, primaryKey: orders-key-0003}}
  - {{name: paused, scope: /apis, primaryKey: paused-key-0004, state: suspended}}
policies:
  - scope: api
    apiId: broken
    xml: "<policies><inbound><no-such-policy/></inbound></policies>"
"""

MISSING = (
    "Access denied due to missing subscription key. Make sure to include subscription key when "
    "making requests to an API."
)
INVALID = (
    "Access denied due to invalid subscription key. Make sure to provide a valid key for an "
    "active subscription."
)


class SubscriptionKeyTests(GatewayTestCase):
    """APIs that require a subscription are served only with a valid key."""

    @inlineCallbacks
    def setUp(self) -> Any:
        yield super().setUp()
        self.write_config(KEYED.format(backend=self.backend_url))
        yield self.wait_for(
            lambda: len(self.gateway.reconciler.current.config.subscriptions) > 0
        )

    @inlineCallbacks
    def test_no_key_is_401_missing(self) -> Any:
        """No key for an API that requires one: 401 with APIM's 'missing' message."""
        r = yield self.get("/orders/x")
        self.assertEqual((r.status, r.json()), (401, {"statusCode": 401, "message": MISSING}))

    @inlineCallbacks
    def test_valid_keys_admitted_and_removed(self) -> Any:
        """Primary and secondary keys of a product subscription, in the header, are admitted and not forwarded."""
        for key in ("primary-key-0001", "second-key-0002"):
            r = yield self.get("/orders/x", headers=[("Ocp-Apim-Subscription-Key", key)])
            self.assertEqual(r.status, 200)
            names = [k.lower() for k, _ in r.json()["headers"]]
            self.assertNotIn("ocp-apim-subscription-key", names)
            self.assertNotIn(key, str(r.json()))

    @inlineCallbacks
    def test_query_key_admitted_and_removed(self) -> Any:
        """A key in the query (no header) is admitted; the backend sees the rest of the query only."""
        r = yield self.get("/orders/x?a=1&subscription-key=orders-key-0003&b=2")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()["query"], "a=1&b=2")

    @inlineCallbacks
    def test_header_wins_over_query(self) -> Any:
        """With a header, the query is not consulted: a bad header key is refused even with a good query key."""
        r = yield self.get(
            "/orders/x?subscription-key=orders-key-0003", headers=[("Ocp-Apim-Subscription-Key", "nope")]
        )
        self.assertEqual((r.status, r.json()["message"]), (401, INVALID))

    @inlineCallbacks
    def test_invalid_foreign_and_suspended_keys(self) -> Any:
        """An unknown key, a key scoped to another API and a suspended subscription's key are 401 'invalid'."""
        for path, key in [
            ("/orders/x", "unknown-key"),
            ("/catalog/x", "orders-key-0003"),
            ("/orders/x", "paused-key-0004"),
        ]:
            header = "X-Catalog-Key" if path.startswith("/catalog") else "Ocp-Apim-Subscription-Key"
            r = yield self.get(path, headers=[(header, key)])
            self.assertEqual((path, key, r.status, r.json()["message"]), (path, key, 401, INVALID))

    @inlineCallbacks
    def test_api_specific_key_names(self) -> Any:
        """An API's own key header and query names are used, and stripped."""
        r = yield self.get("/catalog/x", headers=[("X-Catalog-Key", "primary-key-0001")])
        self.assertEqual(r.status, 200)
        self.assertNotIn("x-catalog-key", [k.lower() for k, _ in r.json()["headers"]])
        r = yield self.get("/catalog/x?catalog-key=primary-key-0001")
        self.assertEqual((r.status, r.json()["query"]), (200, ""))
        r = yield self.get("/catalog/x", headers=[("Ocp-Apim-Subscription-Key", "primary-key-0001")])
        self.assertEqual(r.status, 401)

    @inlineCallbacks
    def test_api_without_subscription_is_open(self) -> Any:
        """An API that requires no subscription is served without a key."""
        r = yield self.get("/public/x")
        self.assertEqual(r.status, 200)

    @inlineCallbacks
    def test_policy_problem_is_500_not_a_partial_pipeline(self) -> Any:
        """An API whose policy does not compile answers 500 with the envelope and an activityId."""
        r = yield self.get("/broken/x")
        body = r.json()
        self.assertEqual((r.status, body["statusCode"], body["message"]), (500, 500, "Internal server error"))
        self.assertTrue(self.logged(f"activityId {body['activityId']}"))
        self.assertEqual(self.backend_site.connections, 0)

    @inlineCallbacks
    def test_api_key_query_name_redacted_in_the_access_log(self) -> Any:
        """An API's own key query parameter is redacted in the access line like subscription-key."""
        r = yield self.get(
            "/catalog/x?catalog-key=primary-key-0001&page=2", headers=[("x-request-id", "cat-1")]
        )
        self.assertEqual(r.status, 200)
        (line,) = [e["access_line"] for e in self.logged("request_id=cat-1") if "access_line" in e]
        self.assertIn("/catalog/x?catalog-key=REDACTED&page=2 ", line)
        self.assertEqual(self.logged("primary-key-0001"), [])

    @inlineCallbacks
    def test_access_log_and_metrics_carry_ids_never_the_key(self) -> Any:
        """
        An admitted call's access line and /metrics carry the api, operation,
        product and subscription ids; the key, sent in the header or the
        query, shows in neither. A refused request carries its api (no
        product, no subscription) and is counted per API with its 401.
        """
        r = yield self.get(
            "/orders/x?page=1",
            headers=[("Ocp-Apim-Subscription-Key", "primary-key-0001"), ("x-request-id", "ids-1")],
        )
        self.assertEqual(r.status, 200)
        r = yield self.get(
            "/orders/x?subscription-key=orders-key-0003", headers=[("x-request-id", "ids-2")]
        )
        self.assertEqual(r.status, 200)
        r = yield self.get("/public/x", headers=[("x-request-id", "ids-3")])
        self.assertEqual(r.status, 200)
        r = yield self.get("/orders/x")
        self.assertEqual(r.status, 401)  # refused: the api only

        def line(request_id: str) -> str:
            (found,) = [
                e["access_line"] for e in self.logged(f"request_id={request_id}") if "access_line" in e
            ]
            return found

        self.assertTrue(
            line("ids-1").endswith(
                " api=orders operation=- product=starter subscription=contoso"
            ),
            line("ids-1"),
        )
        self.assertTrue(
            line("ids-2").endswith(" api=orders operation=- product=- subscription=orders-only"),
            line("ids-2"),
        )
        self.assertIn("/orders/x?subscription-key=REDACTED ", line("ids-2"))
        self.assertTrue(
            line("ids-3").endswith(" api=public operation=- product=- subscription=-"),
            line("ids-3"),
        )
        (refused,) = [
            e["access_line"]
            for e in self.logged('"GET /orders/x HTTP/1.1" 401 ')
            if "access_line" in e
        ]
        self.assertTrue(refused.endswith(" api=orders operation=- product=- subscription=-"), refused)
        for key in ("primary-key-0001", "orders-key-0003"):
            self.assertEqual(self.logged(key), [])

        metrics = yield self.admin("/metrics")
        text = metrics.body.decode()
        series = sorted(x for x in text.splitlines() if x.startswith("apimgw_api_requests_total{"))
        self.assertEqual(
            series,
            [
                (
                    'apimgw_api_requests_total{api="orders",code="200",operation="-",product="-",'
                    'subscription="orders-only"} 1.0'
                ),
                (
                    'apimgw_api_requests_total{api="orders",code="200",operation="-",'
                    'product="starter",subscription="contoso"} 1.0'
                ),
                (
                    'apimgw_api_requests_total{api="orders",code="401",operation="-",product="-",'
                    'subscription="-"} 1.0'
                ),
                (
                    'apimgw_api_requests_total{api="public",code="200",operation="-",product="-",'
                    'subscription="-"} 1.0'
                ),
            ],
        )
        self.assertIn(
            'apimgw_api_request_duration_seconds_count{api="orders",operation="-"} 3.0', text
        )
        for key in ("primary-key-0001", "orders-key-0003"):
            self.assertNotIn(key, text)
