"""
Tests for :mod:`gateway.proxy._policies`, the policy executor: pipelines
compiled from APIM policy XML, run on request and response views.
"""

from __future__ import annotations

from collections.abc import Mapping

from twisted.internet.address import IPv4Address
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers

from gateway.proxy._policies import (
    PROCEED,
    BackendPlan,
    Failure,
    PolicyExecutionError,
    PolicyRequest,
    PolicyResponse,
    policy_request,
    retry_delay,
    run_backend,
    run_inbound,
    run_on_error,
    run_outbound,
)
from gateway.translate.policy import (
    Pipeline,
    RateLimit,
    ValidateJwt,
    compile_document,
    compile_scopes,
)


def pipeline(inbound: str = "<base/>", backend: str = "<base/>", outbound: str = "<base/>",
             on_error: str = "<base/>", product: str | None = None) -> Pipeline:
    """An operation's pipeline from an API-scope document (global: APIM's default)."""
    document = (f"<policies><inbound>{inbound}</inbound><backend>{backend}</backend>"
                f"<outbound>{outbound}</outbound><on-error>{on_error}</on-error></policies>")
    compiled, problems = compile_scopes({"api": document, "product": product})
    assert not problems, problems
    return compiled


def request(method: str = "GET", path: str = "/items/7", query: str = "",
            headers: list[tuple[str, str]] | None = None, ip: str = "10.0.0.5",
            params: Mapping[str, str] | None = None) -> PolicyRequest:
    return PolicyRequest(method, path, query, list(headers or []), ip, params or {"id": "7"},
                         "sub-1", "starter")


class FakeJwt:
    """A validator that accepts one token."""

    def __init__(self, good: str = "good-token") -> None:
        self.good = good
        self.seen: list[str] = []

    def validate(self, token: str, step: ValidateJwt, request: PolicyRequest) -> Mapping[str, object] | str:
        self.seen.append(token)
        return {"sub": "alice"} if token == self.good else "Signature validation failed."


class SetHeaderTests(SynchronousTestCase):
    def test_override_replaces_every_value(self) -> None:
        """override removes the header's values (any case) and sets the new ones."""
        p = pipeline('<set-header name="X-Env" exists-action="override"><value>prod</value></set-header>')
        ctx = request(headers=[("x-env", "a"), ("accept", "*/*"), ("x-env", "b")])
        self.assertIs(run_inbound(p.inbound, ctx), PROCEED)
        self.assertEqual(ctx.headers, [("accept", "*/*"), ("x-env", "prod")])

    def test_skip_keeps_existing(self) -> None:
        """skip leaves a present header alone and adds a missing one."""
        p = pipeline('<set-header name="X-A" exists-action="skip"><value>new</value></set-header>'
                     '<set-header name="X-B" exists-action="skip"><value>new</value></set-header>')
        ctx = request(headers=[("x-a", "old")])
        run_inbound(p.inbound, ctx)
        self.assertEqual(ctx.headers, [("x-a", "old"), ("x-b", "new")])

    def test_append_and_delete(self) -> None:
        """append adds values after the existing ones; delete removes every value."""
        p = pipeline('<set-header name="X-A" exists-action="append"><value>2</value><value>3</value></set-header>'
                     '<set-header name="Cookie" exists-action="delete"/>')
        ctx = request(headers=[("x-a", "1"), ("cookie", "c=1")])
        run_inbound(p.inbound, ctx)
        self.assertEqual(ctx.headers, [("x-a", "1"), ("x-a", "2"), ("x-a", "3")])
        self.assertEqual(ctx.header("X-A"), "1,2,3")

    def test_expression_value(self) -> None:
        """A value expression reads the request (headers, subscription)."""
        p = pipeline('<set-header name="X-Who" exists-action="override">'
                     '<value>@(context.Subscription.Id + "/" + context.Request.Headers.GetValueOrDefault("User-Agent", "?"))</value>'
                     '</set-header>')
        ctx = request(headers=[("user-agent", "curl")])
        run_inbound(p.inbound, ctx)
        self.assertEqual(ctx.header("x-who"), "sub-1/curl")

    def test_outbound_sets_response_header(self) -> None:
        """In outbound, set-header changes the response, not the request."""
        p = pipeline(outbound='<set-header name="Server" exists-action="delete"/>'
                              '<set-header name="X-Served-By" exists-action="override"><value>apimgw</value></set-header>')
        ctx = request()
        response = PolicyResponse(200, "OK", [("server", "nginx"), ("content-type", "text/plain")])
        self.assertIs(run_outbound(p.outbound, ctx, response), PROCEED)
        self.assertEqual(response.headers, [("content-type", "text/plain"), ("x-served-by", "apimgw")])
        self.assertEqual(ctx.headers, [])


class QueryAndUriTests(SynchronousTestCase):
    def test_set_query_parameter(self) -> None:
        """set-query-parameter overrides (the new value goes last), appends and deletes; the target is re-encoded."""
        p = pipeline('<set-query-parameter name="api-version" exists-action="override"><value>2024-01-01</value></set-query-parameter>'
                     '<set-query-parameter name="tag" exists-action="append"><value>a b</value></set-query-parameter>'
                     '<set-query-parameter name="debug" exists-action="delete"/>')
        ctx = request(query="api-version=1&debug=1&tag=x")
        run_inbound(p.inbound, ctx)
        self.assertEqual(ctx.query, [("tag", "x"), ("api-version", "2024-01-01"), ("tag", "a b")])
        self.assertEqual(ctx.target(), "/items/7?tag=x&api-version=2024-01-01&tag=a%20b")

    def test_untouched_query_keeps_its_bytes(self) -> None:
        """A query no policy touches is forwarded as received, never parsed."""
        ctx = request(query="a=%7e&b")
        run_inbound(pipeline('<set-header name="x" exists-action="delete"/>').inbound, ctx)
        self.assertEqual(ctx.target(), "/items/7?a=%7e&b")
        self.assertIsNone(ctx._query)

    def test_rewrite_uri_with_captured_parameters(self) -> None:
        """rewrite-uri fills {id} from the operation's parameters and keeps the query."""
        p = pipeline('<rewrite-uri template="/v2/things/{id}/detail"/>')
        ctx = request(query="fmt=json")
        run_inbound(p.inbound, ctx)
        self.assertEqual(ctx.target(), "/v2/things/7/detail?fmt=json")

    def test_rewrite_uri_template_query_and_unmatched(self) -> None:
        """The template's query comes first; unmatched request parameters follow it."""
        p = pipeline('<rewrite-uri template="/search?item={id}&amp;v=2"/>')
        ctx = request(query="v=1&page=3")
        run_inbound(p.inbound, ctx)
        self.assertEqual(ctx.target(), "/search?item=7&v=2&page=3")

    def test_rewrite_uri_without_copying(self) -> None:
        """copy-unmatched-params="false" drops the request's query parameters."""
        p = pipeline('<rewrite-uri template="/v2/{id}" copy-unmatched-params="false"/>')
        ctx = request(query="page=3")
        run_inbound(p.inbound, ctx)
        self.assertEqual(ctx.target(), "/v2/7")

    def test_backend_service_and_method(self) -> None:
        """set-backend-service and set-method change where and how the request goes."""
        p = pipeline('<set-backend-service base-url="https://other.example/api"/><set-method>post</set-method>')
        ctx = request()
        run_inbound(p.inbound, ctx)
        self.assertEqual((ctx.backend_url, ctx.method), ("https://other.example/api", "POST"))


class ControlFlowTests(SynchronousTestCase):
    DOC = ('<set-variable name="tier" value="@(context.Request.Headers.GetValueOrDefault(&quot;X-Tier&quot;, &quot;free&quot;))"/>'
           '<choose>'
           '<when condition="@((string)context.Variables[&quot;tier&quot;] == &quot;gold&quot;)">'
           '<set-header name="X-Lane" exists-action="override"><value>fast</value></set-header></when>'
           '<when condition="@(context.Request.Method == &quot;DELETE&quot;)">'
           '<return-response><set-status code="405" reason="Not Allowed"/></return-response></when>'
           '<otherwise><set-header name="X-Lane" exists-action="override"><value>slow</value></set-header></otherwise>'
           '</choose>')

    def test_first_true_when_runs(self) -> None:
        """choose runs the first when whose condition holds, with a variable set before."""
        ctx = request(headers=[("x-tier", "gold")])
        run_inbound(pipeline(self.DOC).inbound, ctx)
        self.assertEqual((ctx.header("x-lane"), ctx.variables), ("fast", {"tier": "gold"}))

    def test_otherwise(self) -> None:
        """Without a true when, otherwise runs."""
        ctx = request()
        run_inbound(pipeline(self.DOC).inbound, ctx)
        self.assertEqual(ctx.header("x-lane"), "slow")

    def test_return_response_inside_choose_ends_pipeline(self) -> None:
        """return-response in a when ends the whole pipeline with its status."""
        outcome = run_inbound(pipeline(self.DOC + '<set-header name="after" exists-action="override"><value>x</value></set-header>').inbound,
                              request(method="DELETE"))
        self.assertEqual(outcome, PolicyResponse(405, "Not Allowed", [], b""))

    def test_return_response_parts(self) -> None:
        """return-response answers with its status, headers and literal body."""
        p = pipeline('<return-response><set-status code="418" reason="Teapot"/>'
                     '<set-header name="Content-Type" exists-action="override"><value>text/plain</value></set-header>'
                     '<set-body>short and stout</set-body></return-response>')
        outcome = run_inbound(p.inbound, request())
        self.assertEqual(outcome, PolicyResponse(418, "Teapot", [("content-type", "text/plain")], b"short and stout"))

    def test_mock_response(self) -> None:
        """mock-response answers with its status and content type, no body."""
        outcome = run_inbound(pipeline('<mock-response status-code="201" content-type="application/json"/>').inbound, request())
        self.assertEqual(outcome, PolicyResponse(201, "Created", [("content-type", "application/json")], b""))

    def test_outbound_status_and_body(self) -> None:
        """set-status and set-body in outbound replace the backend's status and body."""
        p = pipeline(outbound='<set-status code="202" reason="Taken"/><set-body>{"ok":true}</set-body>')
        response = PolicyResponse(200, "OK", [])
        run_outbound(p.outbound, request(), response)
        self.assertEqual((response.status, response.reason, response.body), (202, "Taken", b'{"ok":true}'))

    def test_rate_limit_never_runs(self) -> None:
        """A rate-limit step is an internal error, never skipped."""
        with self.assertRaises(PolicyExecutionError):
            run_inbound((RateLimit(calls=5, renewal_period=60),), request())


class CheckHeaderTests(SynchronousTestCase):
    DOC = ('<check-header name="X-Key" failed-check-httpcode="401" failed-check-error-message="Not authorized" ignore-case="true">'
           '<value>Alpha</value><value>beta</value></check-header>')

    def test_allowed_value_passes(self) -> None:
        """A value among the allowed ones (case ignored) passes."""
        self.assertIs(run_inbound(pipeline(self.DOC).inbound, request(headers=[("x-key", "ALPHA")])), PROCEED)

    def test_missing_header(self) -> None:
        """A missing header fails with the configured status and message, LastError HeaderNotFound."""
        outcome = run_inbound(pipeline(self.DOC).inbound, request())
        assert isinstance(outcome, Failure)
        self.assertEqual((outcome.source, outcome.reason, outcome.section), ("check-header", "HeaderNotFound", "inbound"))
        self.assertEqual((outcome.response.status, outcome.response.message), (401, "Not authorized"))
        answer = run_on_error((), request(), outcome)
        self.assertEqual((answer.status, answer.message, answer.body), (401, "Not authorized", None))

    def test_wrong_value(self) -> None:
        """A value outside the list fails with HeaderValueNotAllowed."""
        outcome = run_inbound(pipeline(self.DOC).inbound, request(headers=[("x-key", "gamma")]))
        assert isinstance(outcome, Failure)
        self.assertEqual(outcome.reason, "HeaderValueNotAllowed")
        self.assertEqual(outcome.message, "Header X-Key value of gamma is not allowed. Access denied.")


class IpFilterTests(SynchronousTestCase):
    DOC = ('<ip-filter action="allow"><address>13.66.201.169</address>'
           '<address-range from="10.0.0.0" to="10.0.0.255"/></ip-filter>')

    def test_allowed_range(self) -> None:
        """An address in an allowed range passes, IPv4-mapped IPv6 included."""
        self.assertIs(run_inbound(pipeline(self.DOC).inbound, request(ip="10.0.0.9")), PROCEED)
        self.assertIs(run_inbound(pipeline(self.DOC).inbound, request(ip="::ffff:13.66.201.169")), PROCEED)

    def test_refused_with_403(self) -> None:
        """An address outside an allow list gets 403 Forbidden, LastError CallerIpNotAllowed."""
        outcome = run_inbound(pipeline(self.DOC).inbound, request(ip="192.0.2.1"))
        assert isinstance(outcome, Failure)
        self.assertEqual((outcome.source, outcome.reason), ("ip-filter", "CallerIpNotAllowed"))
        self.assertEqual((outcome.response.status, outcome.response.message), (403, "Forbidden"))

    def test_forbid(self) -> None:
        """forbid refuses the listed addresses and lets others through."""
        doc = '<ip-filter action="forbid"><address>2001:db8::1</address></ip-filter>'
        self.assertIsInstance(run_inbound(pipeline(doc).inbound, request(ip="2001:db8::1")), Failure)
        self.assertIs(run_inbound(pipeline(doc).inbound, request(ip="2001:db8::2")), PROCEED)


class CorsTests(SynchronousTestCase):
    DOC = ('<cors allow-credentials="true"><allowed-origins><origin>https://app.example</origin></allowed-origins>'
           '<allowed-methods preflight-result-max-age="300"><method>GET</method><method>PUT</method></allowed-methods>'
           '<allowed-headers><header>Content-Type</header><header>X-Req</header></allowed-headers>'
           '<expose-headers><header>X-Trace</header></expose-headers></cors>')

    def test_preflight_answered(self) -> None:
        """A matching preflight is answered by the gateway with the CORS headers."""
        ctx = request(method="OPTIONS", headers=[
            ("origin", "https://app.example"), ("access-control-request-method", "PUT"),
            ("access-control-request-headers", "content-type, x-req")])
        outcome = run_inbound(pipeline(self.DOC).inbound, ctx)
        self.assertEqual(outcome, PolicyResponse(200, "OK", [
            ("access-control-allow-origin", "https://app.example"),
            ("access-control-allow-credentials", "true"),
            ("access-control-allow-methods", "GET, PUT"),
            ("access-control-allow-headers", "content-type, x-req"),
            ("access-control-max-age", "300"),
            ("vary", "Origin"),
        ], b""))

    def test_unmatched_preflight_empty_200(self) -> None:
        """A preflight from another origin ends with an empty 200 and no CORS header."""
        ctx = request(method="OPTIONS", headers=[("origin", "https://evil.example"),
                                                 ("access-control-request-method", "GET")])
        self.assertEqual(run_inbound(pipeline(self.DOC).inbound, ctx), PolicyResponse(200, "OK", [], b""))

    def test_actual_request_headers_on_response(self) -> None:
        """An allowed cross-origin request goes on; its response carries the CORS headers."""
        ctx = request(headers=[("origin", "https://app.example")])
        self.assertIs(run_inbound(pipeline(self.DOC).inbound, ctx), PROCEED)
        response = PolicyResponse(200, "OK", [])
        run_outbound((), ctx, response)
        self.assertEqual(response.headers, [
            ("access-control-allow-origin", "https://app.example"),
            ("access-control-allow-credentials", "true"),
            ("access-control-expose-headers", "X-Trace"),
            ("vary", "Origin"),
        ])

    def test_unmatched_actual_request(self) -> None:
        """Unmatched: on without CORS headers; with terminate-unmatched-request, an empty 200."""
        ctx = request(headers=[("origin", "https://evil.example")])
        self.assertIs(run_inbound(pipeline(self.DOC).inbound, ctx), PROCEED)
        self.assertIsNone(ctx.response_headers)
        terminating = self.DOC.replace('<cors ', '<cors terminate-unmatched-request="true" ')
        self.assertEqual(run_inbound(pipeline(terminating).inbound, request(headers=[("origin", "https://evil.example")])),
                         PolicyResponse(200, "OK", [], b""))


class JwtTests(SynchronousTestCase):
    DOC = ('<validate-jwt header-name="Authorization" failed-validation-httpcode="401" '
           'failed-validation-error-message="Unauthorized. Access token is missing or invalid." '
           'output-token-variable-name="jwt"><issuer-signing-keys><key>c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0</key></issuer-signing-keys></validate-jwt>')

    def test_valid_token(self) -> None:
        """The bearer token goes to the validator; its claims land in the output variable."""
        jwt = FakeJwt()
        ctx = request(headers=[("authorization", "Bearer good-token")])
        self.assertIs(run_inbound(pipeline(self.DOC).inbound, ctx, jwt), PROCEED)
        self.assertEqual((jwt.seen, ctx.variables["jwt"]), (["good-token"], {"sub": "alice"}))

    def test_missing_and_invalid(self) -> None:
        """No token or a refused one: the configured status and message."""
        for headers in ([], [("authorization", "Bearer bad")]):
            outcome = run_inbound(pipeline(self.DOC).inbound, request(headers=headers), FakeJwt())
            assert isinstance(outcome, Failure)
            self.assertEqual((outcome.source, outcome.response.status, outcome.response.message),
                             ("validate-jwt", 401, "Unauthorized. Access token is missing or invalid."))

    def test_without_validator(self) -> None:
        """validate-jwt without a validator is an internal error, never skipped."""
        with self.assertRaises(PolicyExecutionError):
            run_inbound(pipeline(self.DOC).inbound, request(headers=[("authorization", "Bearer x")]))


class OnErrorTests(SynchronousTestCase):
    def test_expression_error_goes_to_on_error_with_last_error(self) -> None:
        """An unset variable fails the section; on-error reads LastError and shapes the answer."""
        p = pipeline(
            '<set-header name="X-A" exists-action="override"><value>@((string)context.Variables["missing"])</value></set-header>',
            on_error='<set-status code="503" reason="Later"/>'
                     '<set-header name="X-Error" exists-action="override"><value>@(context.LastError.Source + ":" + context.LastError.Reason + ":" + context.LastError.Section)</value></set-header>'
                     '<set-body>@(context.LastError.Message)</set-body>')
        ctx = request()
        outcome = run_inbound(p.inbound, ctx)
        assert isinstance(outcome, Failure)
        answer = run_on_error(p.on_error, ctx, outcome)
        self.assertEqual((answer.status, answer.reason), (503, "Later"))
        self.assertEqual(answer.header("x-error"), "set-header:ExpressionValueEvaluationFailure:inbound")
        self.assertEqual(answer.body, b"Expression evaluation failed. the variable 'missing' is not set")

    def test_without_on_error_apim_500(self) -> None:
        """Without on-error the answer is APIM's 500 envelope."""
        p = pipeline('<set-variable name="x" value="@((int)context.Variables[&quot;nope&quot;])"/>')
        ctx = request()
        outcome = run_inbound(p.inbound, ctx)
        assert isinstance(outcome, Failure)
        answer = run_on_error(p.on_error, ctx, outcome)
        self.assertEqual((answer.status, answer.body, answer.message), (500, None, "Internal server error"))

    def test_error_inside_on_error(self) -> None:
        """An expression failing inside on-error ends with the 500 envelope."""
        p = pipeline('<check-header name="X" failed-check-httpcode="400" failed-check-error-message="x" ignore-case="false"/>',
                     on_error='<set-body>@((string)context.Variables["gone"])</set-body>')
        ctx = request()
        outcome = run_inbound(p.inbound, ctx)
        assert isinstance(outcome, Failure)
        self.assertEqual(run_on_error(p.on_error, ctx, outcome).status, 500)

    def test_on_error_return_response(self) -> None:
        """return-response in on-error replaces the failure's answer."""
        p = pipeline('<ip-filter action="forbid"><address>10.0.0.5</address></ip-filter>',
                     on_error='<return-response><set-status code="404" reason="Not Found"/></return-response>')
        ctx = request()
        outcome = run_inbound(p.inbound, ctx)
        assert isinstance(outcome, Failure)
        self.assertEqual(run_on_error(p.on_error, ctx, outcome), PolicyResponse(404, "Not Found", [], b""))


class BackendTests(SynchronousTestCase):
    def test_default_forward(self) -> None:
        """APIM's default global policy forwards with its defaults."""
        plan = run_backend(pipeline().backend, request())
        assert isinstance(plan, BackendPlan)
        self.assertEqual((plan.forward.timeout, plan.forward.fail_on_error_status_code, plan.retry),  # type: ignore[union-attr]
                         (300, False, None))

    def test_retry_around_forward(self) -> None:
        """A retry around forward-request is described; its waits follow APIM's formulas."""
        p = pipeline(backend='<retry condition="@(true)" count="3" interval="10" delta="10" max-interval="100">'
                             '<forward-request timeout="20" fail-on-error-status-code="true"/></retry>')
        plan = run_backend(p.backend, request())
        assert isinstance(plan, BackendPlan) and plan.retry is not None
        self.assertEqual((plan.forward.timeout, plan.forward.fail_on_error_status_code), (20, True))  # type: ignore[union-attr]
        fixed = lambda low, high: (low + high) / 2  # noqa: E731
        self.assertEqual([retry_delay(plan.retry, request(), n, fixed) for n in range(4)], [10.0, 20.0, 40.0, None])

    def test_no_forward(self) -> None:
        """A backend section without forward-request forwards nothing."""
        self.assertEqual(run_backend(pipeline(backend="").backend, request()), BackendPlan(None))


class ViewTests(SynchronousTestCase):
    def test_from_twisted_request(self) -> None:
        """The view lower-cases header names once, keeps repeats, and drops the key header."""

        class Fake:
            method = b"GET"
            requestHeaders = Headers({b"X-Multi": [b"1", b"2"], b"Ocp-Apim-Subscription-Key": [b"k"]})

            def getClientAddress(self) -> IPv4Address:
                return IPv4Address("TCP", "192.0.2.7", 1234)

        ctx = policy_request(Fake(), "/a", b"q=1", {}, "s", "p", drop=b"ocp-apim-subscription-key")
        self.assertEqual((ctx.headers, ctx.ip_address, ctx.target()), ([("x-multi", "1"), ("x-multi", "2")], "192.0.2.7", "/a?q=1"))

    def test_compile_document_steps_run(self) -> None:
        """A document compiled alone runs the same way (no base needed)."""
        document = compile_document('<policies><inbound><set-method>PUT</set-method></inbound></policies>')
        ctx = request()
        run_inbound(document.inbound, ctx)  # type: ignore[arg-type]
        self.assertEqual(ctx.method, "PUT")
