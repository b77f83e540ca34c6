"""
End-to-end tests of the proxy: a real gateway on loopback sockets, a real
backend, real HTTP.
"""

from __future__ import annotations

import datetime
import email.utils
import http.client
import socket
import time
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from gateway.model import Api, Route, RouteSet

from .harness import GatewayTestCase, raw_exchange, request_sync


class ForwardingTests(GatewayTestCase):
    @inlineCallbacks
    def test_api_strips_path_and_appends_to_service_url(self) -> Any:
        """GET /echo/resource?x reaches <serviceUrl>/resource?x at the backend."""
        r = yield self.get("/echo/resource?param1=sample&param1=two")
        self.assertEqual(r.status, 200)
        echo = r.json()
        self.assertEqual((echo["method"], echo["path"], echo["query"]),
                         ("GET", "/api/resource", "param1=sample&param1=two"))

    @inlineCallbacks
    def test_url_template_operation(self) -> Any:
        """An operation with a {param} template matches, and the rest of the path is forwarded."""
        r = yield self.get("/echo/users/42")
        self.assertEqual((r.status, r.json()["path"]), (200, "/api/users/42"))

    @inlineCallbacks
    def test_wrong_method_or_unknown_operation_is_404_envelope(self) -> Any:
        """A method or path the API does not list is 404 with the APIM envelope."""
        for method, path in (("DELETE", "/echo/resource"), ("GET", "/echo/nothing")):
            r = yield self.request(method, path)
            self.assertEqual(r.status, 404)
            self.assertEqual(r.json(), {"statusCode": 404, "message": "Resource not found"})

    @inlineCallbacks
    def test_no_route_is_404_envelope(self) -> Any:
        """A path no route matches answers 404 Resource not found in JSON."""
        r = yield self.get("/nowhere")
        self.assertEqual(r.status, 404)
        self.assertEqual(r.header("content-type"), "application/json")
        self.assertEqual(r.json(), {"statusCode": 404, "message": "Resource not found"})

    @inlineCallbacks
    def test_plain_route_keeps_path_and_rewrites_host(self) -> Any:
        """A plain route sends the path unchanged and the backend's authority as Host."""
        r = yield self.get("/app/x/y?q=1", headers=[("Host", "client.example.com")])
        echo = r.json()
        self.assertEqual((echo["path"], echo["query"]), ("/app/x/y", "q=1"))
        headers = {k.lower(): v for k, v in echo["headers"]}
        self.assertEqual(headers["host"], self.backend_url.removeprefix("http://"))
        self.assertEqual(headers["x-forwarded-host"], "client.example.com")

    @inlineCallbacks
    def test_preserve_host(self) -> Any:
        """A route with preserveHost sends the client's Host to the backend."""
        r = yield self.get("/keep", headers=[("Host", "preserved.example.com")])
        headers = {k.lower(): v for k, v in r.json()["headers"]}
        self.assertEqual(headers["host"], "preserved.example.com")

    @inlineCallbacks
    def test_absolute_form_request_target(self) -> Any:
        """GET http://host/path (absolute form) is routed by its path, its authority replacing Host."""
        r = yield self.get("http://preserved.example.com/keep/x", headers=[("Host", "other")])
        self.assertEqual(r.status, 200)
        echo = r.json()
        self.assertEqual(echo["path"], "/keep/x")
        self.assertEqual({k.lower(): v for k, v in echo["headers"]}["host"], "preserved.example.com")

    @inlineCallbacks
    def test_headers_forwarded(self) -> Any:
        """Repeated headers arrive in order, hop-by-hop ones are dropped, X-Forwarded-* and x-request-id added."""
        r = yield self.get(
            "/app/h",
            headers=[
                ("X-Multi", "one"),
                ("X-Multi", "two"),
                ("Connection", "keep-alive, X-Conn-Named"),
                ("X-Conn-Named", "secret"),
                ("Keep-Alive", "timeout=5"),
                ("TE", "trailers"),
                ("Proxy-Authorization", "Basic eA=="),
                ("X-Forwarded-For", "10.1.2.3"),
                ("Upgrade", "websocket"),
            ],
        )
        pairs = [(k.lower(), v) for k, v in r.json()["headers"]]
        names = [k for k, _ in pairs]
        self.assertEqual([v for k, v in pairs if k == "x-multi"], ["one", "two"])
        for dropped in ("x-conn-named", "keep-alive", "te", "proxy-authorization", "upgrade"):
            self.assertNotIn(dropped, names)
        self.assertNotIn("connection", names)
        headers = dict(pairs)
        self.assertEqual(headers["x-forwarded-for"], "10.1.2.3, 127.0.0.1")
        self.assertEqual(headers["x-forwarded-proto"], "http")
        self.assertEqual(len(headers["x-request-id"]), 36)
        self.assertEqual(r.header("x-request-id"), headers["x-request-id"])

    @inlineCallbacks
    def test_request_id_kept(self) -> Any:
        """A client's x-request-id is forwarded unchanged and appears in the access log."""
        r = yield self.get("/app/id", headers=[("x-request-id", "abc-123")])
        headers = {k.lower(): v for k, v in r.json()["headers"]}
        self.assertEqual(headers["x-request-id"], "abc-123")
        self.assertTrue(self.logged("request_id=abc-123"))

    @inlineCallbacks
    def test_response_headers_filtered(self) -> Any:
        """Repeated response headers reach the client; hop-by-hop and Connection-named ones do not."""
        r = yield self.get("/app/r?headers=1")
        cookies = [v for k, v in r.headers if k.lower() == "set-cookie"]
        self.assertEqual(cookies, ["a=1", "b=2"])
        names = {k.lower() for k, _ in r.headers}
        self.assertNotIn("x-secret", names)
        self.assertNotIn("keep-alive", names)

    @inlineCallbacks
    def test_post_body_forwarded(self) -> Any:
        """A request body reaches the backend with its length."""
        r = yield self.request("POST", "/echo/resource", body=b"hello body")
        echo = r.json()
        self.assertEqual((echo["body"], echo["bodyLength"]), ("hello body", 10))

    @inlineCallbacks
    def test_head_204_304_have_no_body(self) -> Any:
        """HEAD, 204 and 304 responses come back without a body and the connection stays usable."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        self.addCleanup(conn.close)
        r = yield deferToThread(request_sync, self.port, "HEAD", "/app/x", conn=conn)
        self.assertEqual((r.status, r.body), (200, b""))
        self.assertTrue(int(r.header("content-length")) > 0)
        r = yield deferToThread(request_sync, self.port, "GET", "/app/x?status=204", conn=conn)
        self.assertEqual((r.status, r.body), (204, b""))
        r = yield deferToThread(request_sync, self.port, "GET", "/app/x?status=304", conn=conn)
        self.assertEqual((r.status, r.body), (304, b""))
        r = yield deferToThread(request_sync, self.port, "GET", "/app/x?status=418", conn=conn)
        self.assertEqual((r.status, r.json()["path"]), (418, "/app/x"))

    @inlineCallbacks
    def test_backend_keep_alive_reused(self) -> Any:
        """Sequential requests reuse one pooled backend connection."""
        before = self.backend_site.connections
        for _ in range(5):
            r = yield self.get("/app/k")
            self.assertEqual(r.status, 200)
        self.assertEqual(self.backend_site.connections - before, 1)


class DateTests(GatewayTestCase):
    @inlineCallbacks
    def test_every_answer_has_one_date(self) -> Any:
        """
        The gateway's own answers (404, a 400 refusal) carry a ``Date`` of
        its clock; a proxied response keeps the backend's, alone
        (RFC 9110 §6.6.1).
        """
        missing = yield self.get("/nowhere")
        proxied = yield self.get("/app/dated")
        refused = yield deferToThread(raw_exchange, self.port, b"GET /app/x HTTP/1.1\r\n\r\n")
        for response in (missing, proxied):
            dates = [v for k, v in response.headers if k.lower() == "date"]
            self.assertEqual(len(dates), 1, response.headers)
            parsed = email.utils.parsedate_to_datetime(dates[0])
            self.assertEqual(parsed.tzinfo, datetime.timezone.utc)
            # The clock's day, not a fixed or stale value.
            self.assertLess(abs(parsed.timestamp() - time.time()), 3600)
        self.assertEqual(refused.lower().count(b"\r\ndate: "), 1)


class DisconnectTests(GatewayTestCase):
    @inlineCallbacks
    def test_client_disconnect_aborts_backend_exchange(self) -> Any:
        """A client that goes away mid-request makes the gateway drop the backend request (the backend sees it go)."""
        sock = socket.create_connection(("127.0.0.1", self.port))
        sock.sendall(b"GET /app/slow?sleep=5000 HTTP/1.1\r\nHost: x\r\n\r\n")
        yield deferLater(reactor, 0.3, lambda: None)
        resource = self.gateway.listeners["http"].resource
        self.assertEqual(resource.in_flight, 1)
        sock.close()
        for _ in range(50):
            if resource.in_flight == 0:
                break
            yield deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(resource.in_flight, 0)
        self.assertTrue(self.logged('"GET /app/slow?sleep=5000 HTTP/1.1" 499'))
        backend = self.backend_site.resource
        for _ in range(50):
            if backend.aborted:
                break
            yield deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(backend.aborted, 1)


class FailureTests(GatewayTestCase):
    extra_args = ["--backend-timeout", "0.3", "--max-body", "1000"]

    @inlineCallbacks
    def test_dead_backend_is_500_with_activity_id_logged(self) -> Any:
        """Connection refused: 500 Internal server error with an activityId that is also in the log."""
        r = yield self.get("/dead/x")
        self.assertEqual(r.status, 500)
        body = r.json()
        self.assertEqual((body["statusCode"], body["message"]), (500, "Internal server error"))
        activity = body["activityId"]
        self.assertTrue(self.logged(f"activityId {activity}"))
        self.assertTrue(self.logged(f"request_id={activity}"))

    @inlineCallbacks
    def test_backend_timeout_is_500(self) -> Any:
        """A backend slower than the response timeout is answered 500 with an activityId."""
        r = yield self.get("/app/slow?sleep=2000")
        self.assertEqual(r.status, 500)
        self.assertIn("activityId", r.json())

    @inlineCallbacks
    def test_body_over_limit_is_413(self) -> Any:
        """A body above --max-body is refused with 413 and never reaches the backend."""
        before = self.backend_site.connections
        r = yield self.request("POST", "/echo/resource", body=b"x" * 5000)
        self.assertEqual(r.status, 413)
        self.assertEqual(r.json()["statusCode"], 413)
        self.assertEqual(self.backend_site.connections, before)
        ok = yield self.request("POST", "/echo/resource", body=b"x" * 999)
        self.assertEqual(ok.status, 200)

    @inlineCallbacks
    def test_malformed_request_is_400(self) -> Any:
        """A malformed request line gets a 400 and the gateway keeps serving."""
        data = yield deferToThread(raw_exchange, self.port, b"GARBAGE\r\n\r\n")
        self.assertIn(b"400", data.split(b"\r\n", 1)[0])
        r = yield self.get("/app/after")
        self.assertEqual(r.status, 200)
        # The strict HTTP/1.1 server answered it itself: counted by status.
        metrics = yield self.admin("/metrics")
        self.assertIn('apimgw_http_refused_total{status="400"} 1.0', metrics.body.decode())


class LargeResponseTests(GatewayTestCase):
    @inlineCallbacks
    def test_large_response_streams_complete(self) -> Any:
        """A 64 MB response arrives complete with its Content-Length."""
        size = 64 * 1024 * 1024

        def fetch() -> int:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            conn.request("GET", f"/app/big?size={size}")
            response = conn.getresponse()
            total = 0
            while chunk := response.read(1 << 20):
                total += len(chunk)
            conn.close()
            return total

        total = yield deferToThread(fetch)
        self.assertEqual(total, size)


class ReloadTests(GatewayTestCase):
    @inlineCallbacks
    def test_reload_under_keep_alive_traffic_drops_nothing(self) -> Any:
        """Config changes (file edits and a second source) under continuous keep-alive traffic fail no request."""
        stop = []
        results: list[int] = []

        def traffic() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            while not stop:
                conn.request("GET", "/app/loop")
                response = conn.getresponse()
                response.read()
                results.append(response.status)
            conn.close()

        workers = [deferToThread(traffic) for _ in range(4)]
        base = open(self.config_path).read()
        for i in range(10):
            self.write_config(base + f"\n# edit {i}\n")
            self.memory.put(f"api{i}", Api(f"m{i}", f"m{i}", self.backend_url), float(i))
            yield deferLater(reactor, 0.1, lambda: None)
        stop.append(True)
        for w in workers:
            yield w
        generation = self.gateway.reconciler.current.number
        self.assertGreater(generation, 5)
        self.assertGreater(len(results), 50)
        self.assertEqual(set(results), {200})

    @inlineCallbacks
    def test_invalid_file_keeps_previous_configuration(self) -> Any:
        """A broken edit is logged with its line and the old routes keep serving; a fix applies."""
        self.write_config("routes:\n  - path: /app\n    backend: [1, 2]\n")
        yield self.wait_for(lambda: self.logged("gateway.yaml:3"))
        r = yield self.get("/app/still")
        self.assertEqual(r.status, 200)
        self.write_config(f"routes:\n  - path: /new\n    backend: {self.backend_url}\n")
        yield self.wait_for(lambda: self.get("/new/x").addCallback(lambda r: r.status == 200))
        r = yield self.get("/app/still")
        self.assertEqual(r.status, 404)

    @inlineCallbacks
    def test_second_source_merge_last_one_wins(self) -> Any:
        """A newer memory-source route for /app wins over the file's; /config shows winner and loser."""
        self.memory.put("override", RouteSet((Route("/app", self.backend_url + "/ignored"),)),
                        time.time() + 3600)

        def app_routes() -> Any:
            return self.admin("/config").addCallback(
                lambda r: [x for x in r.json()["routes"] if x["path"] == "/app"
                           and x["source"] == "memory:routes/override"]
            )

        (route,) = yield self.wait_for(app_routes)
        self.assertEqual(route["shadows"], ["file:routes/routes"])
        r = yield self.admin("/config")
        self.assertEqual(len([x for x in r.json()["routes"] if x["path"] == "/app"]), 1)


class ObservabilityTests(GatewayTestCase):
    @inlineCallbacks
    def test_status_probe(self) -> Any:
        """The Helm probe path answers 200 once a configuration is live."""
        r = yield self.get("/status-0123456789abcdef")
        self.assertEqual(r.status, 200)

    @inlineCallbacks
    def test_admin_endpoints(self) -> Any:
        """/healthz and /readyz are 200; /config lists routes with their sources and no keys."""
        self.assertEqual((yield self.admin("/healthz")).status, 200)
        self.assertEqual((yield self.admin("/readyz")).status, 200)
        config = (yield self.admin("/config")).json()
        sources = {(r["path"], r["source"]) for r in config["routes"]}
        self.assertIn(("/echo", "file:api/echo"), sources)
        self.assertIn(("/app", "file:routes/routes"), sources)

    @inlineCallbacks
    def test_metrics(self) -> Any:
        """/metrics counts requests by route, method and status class, latency, backend errors and generation."""
        yield self.get("/echo/resource")
        yield self.get("/nowhere")
        yield self.get("/dead/x")
        text = (yield self.admin("/metrics")).body.decode()
        self.assertIn('apimgw_requests_total{method="GET",route="api:echo",status_class="2xx"} 1.0', text)
        self.assertIn('apimgw_requests_total{method="GET",route="-",status_class="4xx"} 1.0', text)
        self.assertIn('apimgw_request_duration_seconds_count{route="api:echo"} 1.0', text)
        self.assertRegex(text, r'apimgw_backend_errors_total\{backend="http://127.0.0.1:\d+",kind="error"\} 1.0')
        self.assertIn("apimgw_config_generation 1.0", text)


class AccessLogRedactionTests(GatewayTestCase):
    """The access line of a real request carries no secret query value."""

    extra_args = ["--redact-query", "api-key"]

    @inlineCallbacks
    def test_secret_query_values_not_logged(self) -> Any:
        """
        Default and configured secret parameters are logged as REDACTED
        while the backend of a plain route (no subscription check, which
        would take the key out) still receives their values.
        """
        r = yield self.get(
            "/app/resource?subscription-key=k3y-value&x=1&API-KEY=ap1-value&sig=s1g-value",
            headers=[("x-request-id", "redact-1")],
        )
        self.assertEqual(r.json()["query"], "subscription-key=k3y-value&x=1&API-KEY=ap1-value&sig=s1g-value")
        (line,) = [e["access_line"] for e in self.logged("request_id=redact-1") if "access_line" in e]
        self.assertIn(
            "/app/resource?subscription-key=REDACTED&x=1&API-KEY=REDACTED&sig=REDACTED ", line
        )
        for secret in ("k3y-value", "ap1-value", "s1g-value"):
            self.assertEqual(self.logged(secret), [])

    @inlineCallbacks
    def test_backend_error_line_redacts_the_query(self) -> Any:
        """The error line of a failed backend call shows the target with secret values redacted."""
        r = yield self.get("/dead/x?subscription-key=d3ad-key&api-key=d3ad-api&page=2")
        self.assertEqual(r.status, 500)
        activity = r.json()["activityId"]
        (line,) = self.logged(f"activityId {activity}")
        self.assertEqual(line["path"], "/dead/x?subscription-key=REDACTED&api-key=REDACTED&page=2")
        self.assertEqual(self.logged("d3ad-key") + self.logged("d3ad-api"), [])
