"""
Tests for :class:`gateway.observability.RequestObserver`: what one answered
request adds to the access log (text and JSON) and to ``/metrics``, for a
plain route and for an admitted APIM API call (``request.api_call``).
"""

from __future__ import annotations

import json
from typing import Any

from prometheus_client import generate_latest
from twisted.internet.address import IPv4Address
from twisted.logger import formatEvent
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers
from twisted.web.test.requesthelper import DummyRequest

from gateway.observability import AccessLog, GatewayMetrics, RequestObserver
from gateway.translate import ApiCall

from .test_metrics import samples

KEY = "s3cret-subscription-key-0001"


class FakeRequest:
    """The attributes of a proxied request the observer reads."""

    method = b"GET"
    clientproto = b"HTTP/1.1"
    api_call: ApiCall | None = None

    def __init__(
        self,
        uri: bytes,
        api_call: ApiCall | None = None,
        headers: dict[bytes, list[bytes]] | None = None,
    ) -> None:
        self.uri = uri
        self.requestHeaders = Headers({b"host": [b"gw.example"], **(headers or {})})
        if api_call is not None:
            self.api_call = api_call

    def getClientAddress(self) -> IPv4Address:
        return IPv4Address("TCP", "10.0.0.1", 5555)


class ObserverTests(SynchronousTestCase):
    """One call per request feeds the access log and the metrics."""

    def observe(
        self, fmt: str, request: Any, status: int = 200, metrics: GatewayMetrics | None = None
    ) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        observer = RequestObserver(
            metrics if metrics is not None else GatewayMetrics(),
            AccessLog(fmt, observer=events.append),
        )
        observer.request_done(request, status, 12, 0.0015, "api:orders", "http://b:1/api", "rid-1")
        return events

    def text(self, request: Any) -> str:
        (event,) = self.observe("text", request)
        return formatEvent(event)

    def json(self, request: Any) -> tuple[str, dict[str, Any]]:
        (event,) = self.observe("json", request)
        line = formatEvent(event)
        return line, json.loads(line)

    def test_text_api_call_fields_appended(self) -> None:
        """The text line keeps its fields in place and ends with api, operation, product, subscription."""
        call = ApiCall("orders", "get-order", "starter", "contoso")
        self.assertEqual(
            self.text(FakeRequest(b"/orders/x", call)),
            '10.0.0.1 "GET /orders/x HTTP/1.1" 200 12 1.500ms host=gw.example route=api:orders '
            "backend=http://b:1/api request_id=rid-1 "
            "api=orders operation=get-order product=starter subscription=contoso",
        )

    def test_text_absent_parts_are_dashes(self) -> None:
        """A plain route shows ``-`` for all four; an API call ``-`` for the parts it lacks."""
        self.assertTrue(
            self.text(FakeRequest(b"/echo")).endswith(
                " request_id=rid-1 api=- operation=- product=- subscription=-"
            )
        )
        self.assertTrue(
            self.text(FakeRequest(b"/public/x", ApiCall("public", None, None, None))).endswith(
                " api=public operation=- product=- subscription=-"
            )
        )

    def test_json_api_call_fields(self) -> None:
        """The JSON object carries the four ids beside the other fields."""
        _, record = self.json(FakeRequest(b"/orders/x", ApiCall("orders", "get-order", "starter", "contoso")))
        self.assertEqual(
            {k: record[k] for k in ("api", "operation", "product", "subscription", "requestId")},
            {"api": "orders", "operation": "get-order", "product": "starter",
             "subscription": "contoso", "requestId": "rid-1"},
        )

    def test_json_absent_parts_are_null(self) -> None:
        """A plain route has null for all four; an API call null for the parts it lacks."""
        _, record = self.json(FakeRequest(b"/echo"))
        self.assertEqual(
            [record[k] for k in ("api", "operation", "product", "subscription")], [None] * 4
        )
        _, record = self.json(FakeRequest(b"/orders/x", ApiCall("orders", None, None, "orders-only")))
        self.assertEqual(
            [record[k] for k in ("api", "operation", "product", "subscription")],
            ["orders", None, None, "orders-only"],
        )

    def test_request_without_api_call_attribute(self) -> None:
        """A request object that has no ``api_call`` at all (twisted's own fake) is a plain request."""
        request = DummyRequest([b"echo"])
        self.assertFalse(hasattr(request, "api_call"))
        self.assertTrue(self.text(request).endswith(" api=- operation=- product=- subscription=-"))

    def test_subscription_key_never_logged(self) -> None:
        """
        A key in the query or in a header never shows in either format: the
        line holds the subscription id, and the query value is redacted.
        """
        call = ApiCall("orders", "get-order", "starter", "contoso")
        requests = [
            FakeRequest(f"/orders/x?subscription-key={KEY}&a=1".encode(), call),
            FakeRequest(b"/orders/x?a=1", call, {b"ocp-apim-subscription-key": [KEY.encode()]}),
        ]
        for request in requests:
            line = self.text(request)
            self.assertNotIn(KEY, line)
            self.assertIn(" subscription=contoso", line)
            line, record = self.json(request)
            self.assertNotIn(KEY, line)
            self.assertEqual(record["subscription"], "contoso")
        self.assertIn("/orders/x?subscription-key=REDACTED&a=1 ", self.text(requests[0]))


class ApiCallMetricsTests(SynchronousTestCase):
    """``apimgw_api_requests_total`` and ``apimgw_api_request_duration_seconds``."""

    def request_done(self, m: GatewayMetrics, call: ApiCall | None, status: int, seconds: float = 0.001) -> None:
        RequestObserver(m, AccessLog("none")).request_done(
            FakeRequest(b"/orders/x", call), status, 0, seconds, "api:orders", "-", "-"
        )

    def test_counted_by_ids_and_code(self) -> None:
        """API calls are counted per api, operation, product, subscription and status code."""
        m = GatewayMetrics()
        call = ApiCall("orders", "get-order", "starter", "contoso")
        for status in (200, 200, 429, 502):
            self.request_done(m, call, status)
        self.request_done(m, ApiCall("orders", "get-order", None, None), 200)
        got = samples(m)

        def count(product: str, subscription: str, code: str) -> float:
            labels = {"api": "orders", "operation": "get-order", "product": product,
                      "subscription": subscription, "code": code}
            return got.get(("apimgw_api_requests_total", tuple(sorted(labels.items()))), 0.0)

        self.assertEqual(
            [count("starter", "contoso", c) for c in ("200", "429", "502", "404")], [2, 1, 1, 0]
        )
        self.assertEqual(count("-", "-", "200"), 1)

    def test_duration_by_api_and_operation(self) -> None:
        """Durations are a histogram per api and operation (every product and subscription together)."""
        m = GatewayMetrics()
        self.request_done(m, ApiCall("orders", "get-order", "starter", "contoso"), 200, 0.0007)
        self.request_done(m, ApiCall("orders", "get-order", None, "orders-only"), 200, 0.02)
        self.request_done(m, ApiCall("orders", None, None, None), 200, 0.02)
        got = samples(m)
        op = (("api", "orders"), ("operation", "get-order"))

        def bucket(le: str) -> float:
            return got[("apimgw_api_request_duration_seconds_bucket", (op[0], ("le", le), op[1]))]

        self.assertEqual((bucket("0.001"), bucket("0.025"), bucket("+Inf")), (1, 2, 2))
        self.assertEqual(got[("apimgw_api_request_duration_seconds_count", op)], 2)
        self.assertAlmostEqual(got[("apimgw_api_request_duration_seconds_sum", op)], 0.0207)
        self.assertEqual(
            got[("apimgw_api_request_duration_seconds_count", (("api", "orders"), ("operation", "-")))], 1
        )

    def test_plain_routes_not_counted(self) -> None:
        """A request without an API call counts in apimgw_requests_total only."""
        m = GatewayMetrics()
        self.request_done(m, None, 200)
        names = {name for name, _ in samples(m)}
        self.assertIn("apimgw_requests_total", names)
        self.assertFalse([n for n in names if n.startswith("apimgw_api_")])
        # the route metrics count API calls as before
        self.request_done(m, ApiCall("orders", None, None, None), 200)
        got = samples(m)
        key = ("apimgw_requests_total", (("method", "GET"), ("route", "api:orders"), ("status_class", "2xx")))
        self.assertEqual(got[key], 2)

    def test_dash_id_and_absent_part_are_one_series(self) -> None:
        """An operation named ``-`` and no operation export one summed sample, not two."""
        m = GatewayMetrics()
        self.request_done(m, ApiCall("a", None, None, None), 200)
        self.request_done(m, ApiCall("a", "-", None, None), 200)
        text = generate_latest(m.registry).decode()
        lines = [line for line in text.splitlines() if line.startswith("apimgw_api_requests_total{")]
        self.assertEqual(
            lines,
            ['apimgw_api_requests_total{api="a",code="200",operation="-",product="-",subscription="-"} 2.0'],
        )

    def test_no_key_in_metrics(self) -> None:
        """The exposition holds the subscription id and never the key the request carried."""
        m = GatewayMetrics()
        RequestObserver(m, AccessLog("none")).request_done(
            FakeRequest(f"/orders/x?subscription-key={KEY}".encode(),
                        ApiCall("orders", None, "starter", "contoso"),
                        {b"ocp-apim-subscription-key": [KEY.encode()]}),
            200, 0, 0.001, "api:orders", "-", "-",
        )
        text = generate_latest(m.registry).decode()
        self.assertIn('subscription="contoso"', text)
        self.assertNotIn(KEY, text)
