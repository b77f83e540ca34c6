"""
APIM policies run by the real gateway on real sockets, with a real backend
(issue 9): each policy's effect is seen by the backend (the echo) or by the
client, and failures end in ``on-error`` or APIM's envelope.
"""

from __future__ import annotations

from typing import Any

import http.client
import socket

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater

from .harness import GatewayTestCase


def _api(name: str, backend: str, xml: str, operations: str = "") -> tuple[str, str]:
    ops = f"\n    operations:\n{operations}" if operations else ""
    return (
        f"  - name: {name}\n    path: {name}\n    serviceUrl: {backend}/api{ops}\n",
        f"  - scope: api\n    apiId: {name}\n    xml: |\n"
        + "".join(f"      {line}\n" for line in xml.strip().splitlines()),
    )


POLICIES: dict[str, tuple[str, str]] = {
    "headers": (
        "",
        """
<policies>
  <inbound>
    <set-header name="X-Added" exists-action="override"><value>one</value></set-header>
    <set-header name="X-Appended" exists-action="append"><value>two</value></set-header>
    <set-header name="X-Kept" exists-action="skip"><value>not-used</value></set-header>
    <set-header name="X-Removed" exists-action="delete" />
    <set-query-parameter name="page" exists-action="override"><value>9</value></set-query-parameter>
    <set-query-parameter name="api-version" exists-action="skip"><value>2024-01-01</value></set-query-parameter>
  </inbound>
  <backend><forward-request /></backend>
  <outbound>
    <set-header name="Cache-Control" exists-action="delete" />
    <set-header name="X-Out" exists-action="override"><value>@(context.Request.Method + "-out")</value></set-header>
  </outbound>
</policies>
""",
    ),
    "rewrite": (
        "      - {name: get-item, method: GET, urlTemplate: '/items/{id}'}\n",
        """
<policies>
  <inbound>
    <rewrite-uri template="/v2/things/{id}?view=full" copy-unmatched-params="true" />
    <set-method>POST</set-method>
    <set-body>rewritten body</set-body>
  </inbound>
  <backend><forward-request /></backend>
  <outbound />
</policies>
""",
    ),
    "answer": (
        "",
        """
<policies>
  <inbound>
    <choose>
      <when condition="@(context.Request.Headers.GetValueOrDefault(&quot;X-Mode&quot;, &quot;&quot;) == &quot;mock&quot;)">
        <mock-response status-code="204" />
      </when>
    </choose>
    <return-response>
      <set-status code="418" reason="I'm a teapot" />
      <set-header name="Content-Type" exists-action="override"><value>text/plain</value></set-header>
      <set-body>short and stout</set-body>
    </return-response>
  </inbound>
  <backend><forward-request /></backend>
  <outbound />
</policies>
""",
    ),
    "checked": (
        "",
        """
<policies>
  <inbound>
    <check-header name="X-Tenant" failed-check-httpcode="403" failed-check-error-message="Tenant not allowed" ignore-case="true">
      <value>contoso</value>
    </check-header>
  </inbound>
  <backend><forward-request /></backend>
  <outbound />
  <on-error>
    <set-header name="X-Error-Reason" exists-action="override"><value>@(context.LastError.Reason)</value></set-header>
  </on-error>
</policies>
""",
    ),
    "outbound": (
        "",
        """
<policies>
  <inbound />
  <backend><forward-request /></backend>
  <outbound>
    <set-status code="202" reason="Accepted Later" />
    <set-body>replaced by the gateway</set-body>
  </outbound>
</policies>
""",
    ),
    "denied": (
        "",
        """
<policies>
  <inbound>
    <ip-filter action="forbid"><address>127.0.0.1</address></ip-filter>
  </inbound>
  <backend><forward-request /></backend>
  <outbound />
</policies>
""",
    ),
    "failing": (
        "",
        """
<policies>
  <inbound>
    <set-variable name="tries" value="0" />
  </inbound>
  <backend>
    <retry condition="@(context.LastError.Reason == &quot;BackendError&quot;)" count="2" interval="0">
      <forward-request fail-on-error-status-code="true" />
    </retry>
  </backend>
  <outbound />
  <on-error>
    <return-response>
      <set-status code="503" reason="Try Later" />
      <set-header name="X-Last-Error" exists-action="override"><value>@(context.LastError.Source + "/" + context.LastError.Reason)</value></set-header>
      <set-body>backend unhappy</set-body>
    </return-response>
  </on-error>
</policies>
""",
    ),
    "unreachable": (
        "",
        """
<policies>
  <inbound>
    <set-backend-service base-url="http://127.0.0.1:{dead_port}/nowhere" />
  </inbound>
  <backend>
    <retry condition="@(context.LastError.Reason == &quot;BackendConnectionFailure&quot;)" count="2" interval="0">
      <forward-request />
    </retry>
  </backend>
  <outbound />
</policies>
""",
    ),
    "waiting": (
        "",
        """
<policies>
  <inbound />
  <backend>
    <retry condition="@(context.LastError.Reason == &quot;BackendError&quot;)" count="3" interval="30">
      <forward-request fail-on-error-status-code="true" />
    </retry>
  </backend>
  <outbound />
</policies>
""",
    ),
    "slow": (
        "",
        """
<policies>
  <inbound />
  <backend><forward-request timeout="1" /></backend>
  <outbound>
    <set-header name="X-Seen" exists-action="override"><value>yes</value></set-header>
  </outbound>
  <on-error>
    <set-header name="X-Reason" exists-action="override"><value>@(context.LastError.Reason)</value></set-header>
  </on-error>
</policies>
""",
    ),
    "splitting": (
        "",
        """
<policies>
  <inbound>
    <set-header name="X-Injected" exists-action="override"><value>a&#13;&#10;X-Evil: 1</value></set-header>
  </inbound>
  <backend><forward-request /></backend>
  <outbound />
</policies>
""",
    ),
    "framing": (
        "",
        """
<policies>
  <inbound />
  <backend><forward-request /></backend>
  <outbound>
    <set-header name="Content-Length" exists-action="override"><value>2</value></set-header>
    <set-header name="Transfer-Encoding" exists-action="override"><value>chunked</value></set-header>
    <set-header name="X-Seen" exists-action="override"><value>yes</value></set-header>
  </outbound>
</policies>
""",
    ),
    "badreason": (
        "",
        """
<policies>
  <inbound>
    <return-response><set-status code="200" reason="OK&#13;&#10;X-Evil: 1" /></return-response>
  </inbound>
  <backend><forward-request /></backend>
  <outbound />
</policies>
""",
    ),
    "moved": (
        "",
        """
<policies>
  <inbound>
    <set-backend-service base-url="{backend}/elsewhere" />
  </inbound>
  <backend><forward-request timeout="5" /></backend>
  <outbound />
</policies>
""",
    ),
}


def config(backend: str, dead_port: int) -> str:
    apis, policies = [], []
    for name, (operations, xml) in POLICIES.items():
        xml = xml.replace("{dead_port}", str(dead_port)).replace("{backend}", backend)
        api, policy = _api(name, backend, xml, operations)
        apis.append(api)
        policies.append(policy)
    return "apis:\n" + "".join(apis) + "policies:\n" + "".join(policies)


class PolicyTests(GatewayTestCase):
    """Each supported policy changes the request or response as APIM's does."""

    @inlineCallbacks
    def setUp(self) -> Any:
        yield super().setUp()
        self.write_config(config(self.backend_url, self.dead_port))
        yield self.wait_for(
            lambda: any(
                e.access is not None and e.access.api_id == "moved"
                for e in self.gateway.reconciler.current.config.routes
            )
        )

    @inlineCallbacks
    def test_headers_and_query(self) -> Any:
        """set-header (override/append/skip/delete) and set-query-parameter reach the backend; outbound headers reach the client."""
        r = yield self.get(
            "/headers/x?page=1&api-version=2020",
            headers=[("X-Added", "zero"), ("X-Appended", "one"), ("X-Kept", "mine"), ("X-Removed", "gone")],
        )
        self.assertEqual(r.status, 200)
        seen = r.json()
        headers = [(k.lower(), v) for k, v in seen["headers"]]
        self.assertEqual([v for k, v in headers if k == "x-added"], ["one"])
        self.assertEqual([v for k, v in headers if k == "x-appended"], ["one", "two"])
        self.assertEqual([v for k, v in headers if k == "x-kept"], ["mine"])
        self.assertNotIn("x-removed", [k for k, _ in headers])
        self.assertEqual(seen["args"], {"page": ["9"], "api-version": ["2020"]})
        self.assertIsNone(r.header("cache-control"))
        self.assertEqual(r.header("x-out"), "GET-out")
        self.assertIsNotNone(r.header("x-request-id"))

    @inlineCallbacks
    def test_rewrite_method_and_body(self) -> Any:
        """rewrite-uri fills the template from the operation's parameters and keeps unmatched query parameters."""
        r = yield self.get("/rewrite/items/42?trace=on")
        self.assertEqual(r.status, 200)
        seen = r.json()
        self.assertEqual(seen["path"], "/api/v2/things/42")
        self.assertEqual(seen["args"], {"view": ["full"], "trace": ["on"]})
        self.assertEqual((seen["method"], seen["body"]), ("POST", "rewritten body"))

    @inlineCallbacks
    def test_return_and_mock_response(self) -> Any:
        """return-response answers from the gateway; mock-response inside choose too; the backend is not called."""
        r = yield self.get("/answer/x")
        self.assertEqual((r.status, r.body, r.header("content-type")), (418, b"short and stout", "text/plain"))
        r = yield self.get("/answer/x", headers=[("X-Mode", "mock")])
        self.assertEqual((r.status, r.body), (204, b""))
        self.assertEqual(self.backend_site.connections, 0)

    @inlineCallbacks
    def test_check_header_and_on_error(self) -> Any:
        """check-header refuses with its code and message; on-error sees LastError; a good value passes."""
        r = yield self.get("/checked/x")
        body = r.json()
        self.assertEqual((r.status, body["message"]), (403, "Tenant not allowed"))
        self.assertEqual(r.header("x-error-reason"), "HeaderNotFound")
        self.assertNotIn("activityId", body, "APIM's refusals carry none")
        r = yield self.get("/checked/x", headers=[("X-Tenant", "other")])
        self.assertEqual((r.status, r.header("x-error-reason")), (403, "HeaderValueNotAllowed"))
        r = yield self.get("/checked/x", headers=[("X-Tenant", "CONTOSO")])
        self.assertEqual(r.status, 200)

    @inlineCallbacks
    def test_outbound_status_and_body(self) -> Any:
        """Outbound set-status and set-body replace the backend's status and body, with a right Content-Length."""
        r = yield self.get("/outbound/x")
        self.assertEqual((r.status, r.body), (202, b"replaced by the gateway"))
        self.assertEqual(r.header("content-length"), str(len(b"replaced by the gateway")))

    @inlineCallbacks
    def test_ip_filter_forbid(self) -> Any:
        """ip-filter forbidding the caller's address answers 403 and never calls the backend."""
        r = yield self.get("/denied/x")
        self.assertEqual((r.status, r.json()["message"]), (403, "Forbidden"))
        self.assertEqual(self.backend_site.connections, 0)

    @inlineCallbacks
    def test_retry_on_error_status_then_on_error(self) -> Any:
        """fail-on-error-status-code makes a 500 a failure; retry re-sends twice; on-error answers with LastError."""
        r = yield self.get("/failing/x?status=500", headers=[("x-request-id", "retry-me")])
        self.assertEqual((r.status, r.body), (503, b"backend unhappy"))
        self.assertEqual(r.header("x-last-error"), "forward-request/BackendError")
        # Each refused attempt's connection is dropped (its body is not
        # wanted): one connection per attempt, 1 + 2 retries.
        self.assertEqual(self.backend_site.connections, 3)
        seen = [e for e in self.events if e.get("request_id") == "retry-me"]
        self.assertEqual(len(seen), 1, "one access line for the request")
        r = yield self.get("/failing/x")
        self.assertEqual(r.status, 200)

    @inlineCallbacks
    def test_unreachable_backend_retried_then_envelope(self) -> Any:
        """set-backend-service to a refusing port: tried 3 times, then APIM's 500 envelope."""
        r = yield self.get("/unreachable/x")
        body = r.json()
        self.assertEqual((r.status, body["message"]), (500, "Internal server error"))
        # Logged under the route's backend (a policy-chosen URL is not log text).
        attempts = self.logged("failed for GET /unreachable/x")
        self.assertEqual(len(attempts), 3)

    @inlineCallbacks
    def test_set_backend_service(self) -> Any:
        """set-backend-service sends the request to the new base URL."""
        r = yield self.get("/moved/x?q=1")
        self.assertEqual((r.status, r.json()["path"], r.json()["query"]), (200, "/elsewhere/x", "q=1"))

    @inlineCallbacks
    def test_retry_resends_the_request_body(self) -> Any:
        """
        Each attempt of a retried POST carries the whole client body again
        (a streamed body within the replay buffer, ``net.server.body-replay-bytes``:
        beyond it, see test_policy_upload).
        """
        body = b"x" * 50_000
        resource = self.backend_site.resource
        render = resource.render
        lengths = []

        def recording(request: Any) -> Any:
            request.content.seek(0)
            lengths.append(len(request.content.read()))
            request.content.seek(0)
            return render(request)

        self.patch(resource, "render", recording)
        r = yield self.request("POST", "/failing/x?status=500", body=body)
        self.assertEqual(r.status, 503)
        self.assertEqual(lengths, [len(body)] * 3)

    @inlineCallbacks
    def test_client_leaving_during_a_retry_wait(self) -> Any:
        """The client goes away while a retry waits: the wait is cancelled, nothing stays in flight, 499 is logged."""
        sock = socket.create_connection(("127.0.0.1", self.port))
        sock.sendall(b"GET /waiting/x?status=500 HTTP/1.1\r\nHost: x\r\nx-request-id: gone-1\r\n\r\n")
        resource = self.gateway.listeners["http"].resource
        yield self.wait_for(lambda: self.backend_site.connections >= 1 and resource.in_flight == 1)
        yield deferLater(reactor, 0.2, lambda: None)
        self.assertEqual(resource.in_flight, 1, "waiting 30 s before the retry")
        sock.close()
        yield self.wait_for(lambda: resource.in_flight == 0)
        self.assertTrue(self.logged('"GET /waiting/x?status=500 HTTP/1.1" 499'))
        self.assertEqual(self.backend_site.connections, 1, "no attempt after the client left")
        pending = [c for c in reactor.getDelayedCalls() if c.active() and c.getTime() - reactor.seconds() > 20]
        self.assertEqual([c for c in pending if "_forward" in repr(c.func)], [])

    @inlineCallbacks
    def test_forward_request_timeout(self) -> Any:
        """forward-request timeout="1" applies to that request: on-error sees Timeout; a quick answer passes outbound."""
        r = yield self.get("/slow/x?sleep=3000")
        self.assertEqual((r.status, r.header("x-reason")), (500, "Timeout"))
        self.assertEqual(r.json()["message"], "Internal server error")
        r = yield self.get("/slow/x?sleep=10")
        self.assertEqual((r.status, r.header("x-seen")), (200, "yes"))

    @inlineCallbacks
    def test_large_response_streams_through_outbound(self) -> Any:
        """A 5 MB response whose headers outbound changes streams whole, with the backend's length."""
        size = 5_000_000
        r = yield self.get(f"/slow/x?size={size}")
        self.assertEqual((r.status, len(r.body), r.header("x-seen")), (200, size, "yes"))
        self.assertEqual(r.header("content-length"), str(size))

    @inlineCallbacks
    def test_head_of_a_gateway_answer(self) -> Any:
        """HEAD on a return-response: the status and length of the body, and no body."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        self.addCleanup(conn.close)
        r = yield self.request("HEAD", "/answer/x", conn=conn)
        self.assertEqual((r.status, r.body, r.header("content-length")), (418, b"", "15"))
        r = yield self.get("/answer/x", conn=conn)
        self.assertEqual((r.status, r.body), (418, b"short and stout"), "same connection, in step")

    @inlineCallbacks
    def test_header_value_with_a_line_break_is_never_sent(self) -> Any:
        """A policy value holding CR LF answers 500 (logged); the backend gets nothing."""
        r = yield self.get("/splitting/x")
        self.assertEqual((r.status, r.json()["message"]), (500, "Internal server error"))
        self.assertEqual(self.backend_site.connections, 0)
        self.assertTrue(self.logged("a header holds a line break"))

    @inlineCallbacks
    def test_preflight_no_operation_accepts_is_never_forwarded(self) -> Any:
        """
        A preflight-shaped OPTIONS to a path an operation lists for GET only
        runs the API-level policies; none of them answers it (no cors), so it
        is 404, as without them, and the backend is not called.
        """
        r = yield self.request("OPTIONS", "/rewrite/items/42", headers=[
            ("Origin", "https://app.example"), ("Access-Control-Request-Method", "GET")])
        self.assertEqual((r.status, r.json()["message"]), (404, "Resource not found"))
        self.assertEqual(self.backend_site.connections, 0)

    @inlineCallbacks
    def test_outbound_cannot_change_a_streamed_body_framing(self) -> Any:
        """An outbound Content-Length or Transfer-Encoding is not sent: the backend's framing stays, the connection stays in step."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        self.addCleanup(conn.close)
        r = yield self.get("/framing/x", conn=conn)
        self.assertEqual((r.status, r.header("x-seen"), r.header("transfer-encoding")), (200, "yes", None))
        self.assertEqual(int(r.header("content-length") or 0), len(r.body))
        self.assertEqual(r.json()["path"], "/api/x")
        r = yield self.get("/framing/y", conn=conn)
        self.assertEqual(r.json()["path"], "/api/y")

    @inlineCallbacks
    def test_reason_phrase_with_a_line_break_is_never_sent(self) -> Any:
        """A reason phrase holding CR LF answers 500 instead of splitting the response."""
        r = yield self.get("/badreason/x")
        self.assertEqual(r.status, 500)
        self.assertIsNone(r.header("x-evil"))
