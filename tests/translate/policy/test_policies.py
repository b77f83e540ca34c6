"""
Each policy: its attributes, APIM's defaults, and bad values reported with
their element path; the XML reader's refusals; named values.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from gateway.translate.policy import (
    LimitTarget,
    NOT_ENFORCED,
    REQUEST,
    RESPONSE,
    UNSUPPORTED,
    CheckHeader,
    Choose,
    CompiledDocument,
    Cors,
    Expression,
    ForwardRequest,
    IpFilter,
    JwtClaim,
    JwtKey,
    MockResponse,
    Quota,
    RateLimit,
    RateLimitByKey,
    Retry,
    ReturnResponse,
    RewriteUri,
    SetBackendService,
    SetBody,
    SetHeader,
    SetMethod,
    SetQueryParameter,
    SetStatus,
    SetVariable,
    ValidateJwt,
    When,
    compile_document,
)


def compiled(section: str, body: str, named_values: dict[str, str] | None = None) -> CompiledDocument:
    return compile_document(f"<policies><{section}>{body}</{section}></policies>",
                            named_values or {})


class PolicyCase(SynchronousTestCase):
    """Helpers: one step without problems, or the problems of a document."""

    def step(self, body: str, section: str = "inbound", **named: str) -> object:
        document = compiled(section, body, named)
        self.assertEqual([str(p) for p in document.problems], [])
        steps = document.section(section)
        assert steps is not None
        self.assertEqual(len(steps), 1)
        return steps[0]

    def problems(self, body: str, section: str = "inbound", **named: str) -> list[str]:
        return [str(p) for p in compiled(section, body, named).problems]


class DocumentTests(PolicyCase):
    """The document and the XML reader."""

    def test_not_xml(self) -> None:
        """A document that does not parse is one problem with line and column."""
        self.assertEqual(self.problems("<set-header>"),
                         ["policies: not well-formed XML: mismatched tag (line 1, column 34)"])

    def test_dtd_refused(self) -> None:
        """A DOCTYPE (the only way to declare entities) is refused before it is read."""
        text = ('<!DOCTYPE p [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;">]>'
                "<policies><inbound>&b;</inbound></policies>")
        self.assertEqual([str(p) for p in compile_document(text).problems],
                         ["policies: a DOCTYPE (DTD) is not allowed in a policy document"])

    def test_external_entity_refused(self) -> None:
        """An undeclared entity reference is a parse error, never a file read."""
        problems = [str(p) for p in compile_document("<policies>&xxe;</policies>").problems]
        self.assertIn("undefined entity", problems[0])

    def test_root_and_sections(self) -> None:
        """A wrong root, an unknown section, a repeated section are problems."""
        self.assertEqual([str(p) for p in compile_document("<policy/>").problems],
                         ["policy: the root element must be policies"])
        text = "<policies><inbound/><inbound/><middle/></policies>"
        self.assertEqual([str(p) for p in compile_document(text).problems], [
            "policies/inbound[2]: inbound may appear only once",
            "policies/middle: unexpected element in policies "
            "(expected: inbound, backend, outbound, on-error)",
        ])

    def test_unknown_policy(self) -> None:
        """An element that is no known policy is an "unsupported policy" problem."""
        document = compiled("inbound", "<send-request/>")
        self.assertEqual([(str(p), p.kind) for p in document.problems],
                         [("policies/inbound/send-request: unsupported policy 'send-request'",
                           UNSUPPORTED)])

    def test_policy_in_wrong_section(self) -> None:
        """A policy outside the sections APIM allows it in is a problem."""
        self.assertEqual(self.problems("<forward-request/>"), [
            "policies/inbound/forward-request: forward-request is not allowed in inbound "
            "(allowed in: backend)"])

    def test_unknown_attribute(self) -> None:
        """An attribute APIM does not define is a problem on that attribute."""
        self.assertEqual(self.problems('<set-variable name="a" value="b" colour="red"/>'),
                         ["policies/inbound/set-variable/@colour: unknown attribute of set-variable"])

    def test_base_rules(self) -> None:
        """<base/> once per section, directly in it, without content."""
        self.assertEqual(self.problems("<base/><base/>"),
                         ["policies/inbound/base[2]: base may appear only once in a section"])
        self.assertEqual(self.problems('<choose><when condition="true"><base/></when></choose>'),
                         ["policies/inbound/choose/when/base: base may appear only directly in a "
                          "section"])

    def test_comments_are_ignored(self) -> None:
        """Comments (the portal's template is full of them) are not policies."""
        self.assertEqual(compiled("inbound", "<!-- note --><base/>").inbound, (compiled("inbound", "<base/>").inbound))


class NamedValueTests(PolicyCase):
    """{{named-value}} substitution at compile time."""

    def test_substituted_in_attributes_and_text(self) -> None:
        """A named value is replaced in attribute values and element text."""
        step = self.step('<set-header name="{{h}}"><value>k={{key}}</value></set-header>',
                         h="x-key", key="s3cr3t")
        self.assertEqual(step, SetHeader(REQUEST, "x-key", "override", ("k=s3cr3t",)))

    def test_named_value_holding_an_expression(self) -> None:
        """A named value may hold a policy expression (APIM allows it); it is compiled."""
        step = self.step('<set-variable name="m" value="{{expr}}"/>',
                         expr="@(context.Request.Method)")
        assert isinstance(step, SetVariable) and isinstance(step.value, Expression)
        self.assertEqual(step.value.source, "@(context.Request.Method)")

    def test_named_value_cannot_inject_markup(self) -> None:
        """Substitution happens after parsing: a value with markup stays text."""
        step = self.step("<set-body>{{b}}</set-body>", b="<x/>")
        self.assertEqual(step, SetBody("<x/>"))

    def test_unknown_named_value(self) -> None:
        """An unknown named value is a problem at the attribute or element using it."""
        self.assertEqual(self.problems('<set-header name="{{nope}}"><value>{{gone}}</value></set-header>'), [
            "policies/inbound/set-header/@name: unknown named value 'nope'",
            "policies/inbound/set-header/value: unknown named value 'gone'",
        ])


class HeaderTests(PolicyCase):
    """set-header and set-query-parameter."""

    def test_set_header_defaults_and_target(self) -> None:
        """exists-action defaults to override; inbound sets a request header, outbound a response one."""
        body = '<set-header name="x"><value>1</value><value>2</value></set-header>'
        self.assertEqual(self.step(body), SetHeader(REQUEST, "x", "override", ("1", "2")))
        self.assertEqual(self.step(body, "outbound"), SetHeader(RESPONSE, "x", "override", ("1", "2")))
        self.assertEqual(self.step(body, "on-error").target, RESPONSE)  # type: ignore[attr-defined]

    def test_set_header_delete_and_expression(self) -> None:
        """delete needs no value; a value may be an expression."""
        self.assertEqual(self.step('<set-header name="x" exists-action="delete"/>'),
                         SetHeader(REQUEST, "x", "delete", ()))
        step = self.step('<set-header name="ip"><value>@(context.Request.IpAddress)</value></set-header>')
        self.assertIsInstance(step.values[0], Expression)  # type: ignore[attr-defined]

    def test_set_header_bad_values(self) -> None:
        """A bad exists-action, a missing name, no value: each named by path."""
        self.assertEqual(self.problems(
            '<set-header name="a"><value>1</value></set-header>'
            '<set-header name="b" exists-action="replace"><value>1</value></set-header>'
            '<set-header><value>1</value></set-header><set-header name="c"/>'), [
            "policies/inbound/set-header[2]/@exists-action: must be one of override, skip, append, delete",
            "policies/inbound/set-header[3]/@name: is required",
            "policies/inbound/set-header[4]: needs at least one value element (or exists-action=\"delete\")",
        ])

    def test_set_header_name_must_be_a_token(self) -> None:
        """A header name that is not an HTTP token (a space, a line break) is refused, so none can split a message."""
        self.assertEqual(self.problems(
            '<set-header name="X Bad"><value>1</value></set-header>'
            '<set-header name="X-Ok&#13;&#10;Evil: 1"><value>1</value></set-header>', "outbound"), [
            "policies/outbound/set-header[1]/@name: must be an HTTP header name (a token), not 'X Bad'",
            "policies/outbound/set-header[2]/@name: must be an HTTP header name (a token), "
            "not 'X-Ok\\r\\nEvil: 1'",
        ])

    def test_set_query_parameter(self) -> None:
        """set-query-parameter has set-header's attributes; inbound and backend only."""
        self.assertEqual(self.step('<set-query-parameter name="v" exists-action="skip"><value>2</value></set-query-parameter>'),
                         SetQueryParameter("v", "skip", ("2",)))
        self.assertIn("not allowed in outbound", self.problems(
            '<set-query-parameter name="v"><value>2</value></set-query-parameter>', "outbound")[0])


class TransformTests(PolicyCase):
    """rewrite-uri, set-backend-service, set-method, set-status, set-body, set-variable."""

    def test_rewrite_uri(self) -> None:
        """copy-unmatched-params defaults to true; the template must be a path."""
        self.assertEqual(self.step('<rewrite-uri template="/v2/{id}?a=b"/>'),
                         RewriteUri("/v2/{id}?a=b", True))
        self.assertEqual(self.step('<rewrite-uri template="/x" copy-unmatched-params="false"/>'),
                         RewriteUri("/x", False))
        self.assertEqual(self.problems('<rewrite-uri template="x" copy-unmatched-params="no"/>'), [
            "policies/inbound/rewrite-uri/@copy-unmatched-params: must be true or false, not 'no'",
            "policies/inbound/rewrite-uri/@template: must start with /",
        ])

    def test_set_backend_service(self) -> None:
        """base-url is an http(s) URL; backend-id is not supported."""
        self.assertEqual(self.step('<set-backend-service base-url="https://b.example/api"/>'),
                         SetBackendService("https://b.example/api"))
        self.assertEqual(self.problems('<set-backend-service backend-id="b1"/>'),
                         ["policies/inbound/set-backend-service/@backend-id: is not supported by apimgw"])
        self.assertEqual(self.problems('<set-backend-service base-url="ftp://x"/>'),
                         ["policies/inbound/set-backend-service/@base-url: must be an http:// or https:// URL"])
        self.assertEqual(
            self.problems('<set-backend-service base-url="https://fn.example/api?code={{fn-key}}"/>',
                          **{"fn-key": "s3cr3t"}),
            ["policies/inbound/set-backend-service/@base-url: must not have a query or fragment "
             "(use set-query-parameter)"])
        self.assertEqual(self.problems('<set-backend-service base-url="https://:80/x"/>'),
                         ["policies/inbound/set-backend-service/@base-url: has no host"])

    def test_set_method(self) -> None:
        """The text is the method, upper-cased."""
        self.assertEqual(self.step("<set-method>post</set-method>"), SetMethod("POST"))
        self.assertEqual(self.problems("<set-method>PO ST</set-method>"),
                         ["policies/inbound/set-method: must be an HTTP method, not 'PO ST'"])

    def test_set_status(self) -> None:
        """code and reason are both required; code is an HTTP status."""
        self.assertEqual(self.step('<set-status code="418" reason="Teapot"/>', "outbound"),
                         SetStatus(418, "Teapot"))
        self.assertEqual(self.problems('<set-status code="99"/>', "outbound"), [
            "policies/outbound/set-status/@code: must be between 100 and 599, not 99",
            "policies/outbound/set-status/@reason: is required",
        ])

    def test_set_body(self) -> None:
        """A literal body (CDATA for markup); Liquid templates are unsupported."""
        self.assertEqual(self.step("<set-body><![CDATA[<a/>]]></set-body>", "outbound"),
                         SetBody("<a/>"))
        problems = compiled("outbound", '<set-body template="liquid">{{x}}</set-body>', {"x": "1"}).problems
        self.assertEqual([(str(p), p.kind) for p in problems],
                         [("policies/outbound/set-body/@template: is not supported by apimgw", UNSUPPORTED)])
        self.assertIn("markup inside set-body", " ".join(self.problems("<set-body><a/></set-body>")))

    def test_set_variable(self) -> None:
        """name and value are required; the value may be an expression."""
        self.assertEqual(self.step('<set-variable name="a" value="b"/>'), SetVariable("a", "b"))
        self.assertEqual(self.problems('<set-variable name="a" value="@(context.Nope)"/>'), [
            "policies/inbound/set-variable/@value: column 11: context.Nope is not in the "
            "supported expression subset"])


class ResponseTests(PolicyCase):
    """return-response and mock-response."""

    def test_return_response(self) -> None:
        """Children set-status, set-header (a response header) and set-body."""
        step = self.step('<return-response><set-status code="401" reason="No"/>'
                         '<set-header name="WWW-Authenticate"><value>Bearer</value></set-header>'
                         '<set-body>denied</set-body></return-response>')
        self.assertEqual(step, ReturnResponse(SetStatus(401, "No"),
                                              (SetHeader(RESPONSE, "WWW-Authenticate", "override", ("Bearer",)),),
                                              SetBody("denied")))

    def test_return_response_children(self) -> None:
        """Other children are refused with their path."""
        self.assertEqual(self.problems("<return-response><set-method>GET</set-method></return-response>"), [
            "policies/inbound/return-response/set-method: unexpected element in return-response "
            "(expected: set-status, set-header, set-body)"])

    def test_mock_response(self) -> None:
        """status-code defaults to 200, content-type to none."""
        self.assertEqual(self.step("<mock-response/>"), MockResponse(200, None))
        self.assertEqual(self.step('<mock-response status-code="201" content-type="application/json"/>'),
                         MockResponse(201, "application/json"))
        self.assertIn("not allowed in backend", self.problems("<mock-response/>", "backend")[0])


class AccessTests(PolicyCase):
    """check-header, ip-filter, cors, validate-jwt."""

    def test_check_header(self) -> None:
        """All four attributes are required; values are optional."""
        self.assertEqual(self.step('<check-header name="X-Key" failed-check-httpcode="401" '
                                   'failed-check-error-message="No" ignore-case="true">'
                                   "<value>a</value><value>b</value></check-header>"),
                         CheckHeader("X-Key", 401, "No", True, ("a", "b")))
        self.assertEqual(self.problems('<check-header name="X"/>'), [
            "policies/inbound/check-header/@failed-check-httpcode: is required",
            "policies/inbound/check-header/@failed-check-error-message: is required",
            "policies/inbound/check-header/@ignore-case: is required",
        ])

    def test_ip_filter(self) -> None:
        """Addresses and inclusive ranges become integer ranges; v4 and v6."""
        step = self.step('<ip-filter action="forbid"><address>10.0.0.1</address>'
                         '<address-range from="10.0.1.0" to="10.0.1.255"/><address>::1</address></ip-filter>')
        self.assertEqual(step, IpFilter("forbid", ((4, 0x0A000001, 0x0A000001),
                                                   (4, 0x0A000100, 0x0A0001FF), (6, 1, 1))))

    def test_ip_filter_bad(self) -> None:
        """Bad action, address, reversed or mixed ranges, no address: each with its path."""
        self.assertEqual(self.problems(
            '<ip-filter action="deny"><address>10.0.0.300</address>'
            '<address-range from="10.0.0.9" to="10.0.0.1"/>'
            '<address-range from="10.0.0.1" to="::1"/></ip-filter><ip-filter action="allow"/>'), [
            "policies/inbound/ip-filter[1]/@action: must be one of allow, forbid",
            "policies/inbound/ip-filter[1]/address: '10.0.0.300' is not an IP address",
            "policies/inbound/ip-filter[1]/address-range[1]: from must not be after to",
            "policies/inbound/ip-filter[1]/address-range[2]: from and to must be of the same IP version",
            "policies/inbound/ip-filter[2]: needs at least one address or address-range element",
        ])

    def test_cors(self) -> None:
        """Origins, methods with max-age, headers, expose-headers, credentials; APIM's defaults."""
        step = self.step('<cors allow-credentials="true"><allowed-origins><origin>https://a.example/</origin>'
                         '</allowed-origins><allowed-methods preflight-result-max-age="300"><method>get</method>'
                         "<method>PATCH</method></allowed-methods><allowed-headers><header>content-type</header>"
                         "</allowed-headers><expose-headers><header>x-id</header></expose-headers></cors>")
        self.assertEqual(step, Cors(("https://a.example",), ("GET", "PATCH"), ("content-type",),
                                    ("x-id",), True, 300, False))
        default = self.step("<cors><allowed-origins><origin>*</origin></allowed-origins></cors>")
        self.assertEqual(default, Cors(("*",)))
        self.assertEqual(default.allowed_methods, ("GET", "POST"))  # type: ignore[attr-defined]

    def test_cors_bad(self) -> None:
        """No origins, * with credentials, a scheme-less origin, an empty list."""
        self.assertEqual(self.problems("<cors/>"), ["policies/inbound/cors: needs an allowed-origins element"])
        self.assertEqual(self.problems('<cors allow-credentials="true"><allowed-origins><origin>*</origin>'
                                       "</allowed-origins></cors>"),
                         ["policies/inbound/cors: allow-credentials cannot be true with the * origin"])
        self.assertEqual(self.problems("<cors><allowed-origins><origin>a.example</origin></allowed-origins>"
                                       "<allowed-headers/></cors>"), [
            "policies/inbound/cors/allowed-headers: needs at least one header element",
            "policies/inbound/cors: allowed-origins: 'a.example' is not * or a URI with a scheme",
        ])

    def test_openid_config_must_be_https(self) -> None:
        """openid-config over http only on a loopback host: keys fetched in clear could be forged."""
        self.assertEqual(self.problems(
            '<validate-jwt header-name="Authorization">'
            '<openid-config url="http://idp.example/.well-known/openid-configuration"/></validate-jwt>'), [
            "policies/inbound/validate-jwt/openid-config/@url: must be an https:// URL "
            "(http:// only on a loopback host)"])
        self.assertEqual(self.problems(
            '<validate-jwt header-name="Authorization">'
            '<openid-config url="http://127.0.0.1:8000/.well-known/openid-configuration"/></validate-jwt>'), [])

    def test_validate_jwt(self) -> None:
        """Every attribute and child compiles into data; defaults are APIM's."""
        step = self.step(
            '<validate-jwt header-name="Authorization" require-scheme="Bearer" clock-skew="30" '
            'failed-validation-error-message="Unauthorized" output-token-variable-name="jwt">'
            '<openid-config url="https://idp.example/.well-known/openid-configuration"/>'
            '<issuer-signing-keys><key id="k1">c2VjcmV0</key><key n="AQAB-n" e="AQAB"/></issuer-signing-keys>'
            "<audiences><audience>api://x</audience></audiences><issuers><issuer>https://idp.example/</issuer></issuers>"
            '<required-claims><claim name="group" match="any" separator=","><value>a</value><value>b</value></claim>'
            "</required-claims></validate-jwt>")
        self.assertEqual(step, ValidateJwt(
            header_name="Authorization", failed_validation_error_message="Unauthorized",
            require_scheme="Bearer", clock_skew=30, output_token_variable_name="jwt",
            openid_config_urls=("https://idp.example/.well-known/openid-configuration",),
            issuer_signing_keys=(JwtKey("c2VjcmV0", "k1"), JwtKey(None, None, "AQAB-n", "AQAB")),
            audiences=("api://x",), issuers=("https://idp.example/",),
            required_claims=(JwtClaim("group", "any", ",", ("a", "b")),)))
        self.assertEqual((step.failed_validation_httpcode, step.require_expiration_time,  # type: ignore[attr-defined]
                          step.require_signed_tokens), (401, True, True))  # type: ignore[attr-defined]

    def test_validate_jwt_bad(self) -> None:
        """Token source, key shape, claim match, decryption keys: problems with paths."""
        self.assertEqual(self.problems(
            '<validate-jwt header-name="a" query-parameter-name="b" clock-skew="-1">'
            '<issuer-signing-keys><key n="x"/></issuer-signing-keys>'
            '<required-claims><claim name="c" match="some"/></required-claims>'
            "<decryption-keys/></validate-jwt>"), [
            "policies/inbound/validate-jwt: needs exactly one of header-name, query-parameter-name, "
            "token-value (found header-name, query-parameter-name)",
            "policies/inbound/validate-jwt/@clock-skew: must be at least 0, not -1",
            "policies/inbound/validate-jwt/issuer-signing-keys/key: n and e go together",
            "policies/inbound/validate-jwt/required-claims/claim/@match: must be one of all, any",
            "policies/inbound/validate-jwt/decryption-keys: encrypted tokens (decryption-keys) are not supported",
        ])

    def test_validate_jwt_token_value_expression(self) -> None:
        """token-value may be an expression."""
        step = self.step('<validate-jwt token-value="@(context.Request.Headers.GetValueOrDefault(&quot;X-T&quot;, &quot;&quot;))">'
                         '<issuer-signing-keys><key>c2VjcmV0</key></issuer-signing-keys></validate-jwt>')
        self.assertIsInstance(step.token_value, Expression)  # type: ignore[attr-defined]


class FlowTests(PolicyCase):
    """forward-request, retry, choose, and the limits not yet enforced."""

    def test_forward_request(self) -> None:
        """timeout defaults to 300 s, fail-on-error-status-code to false."""
        self.assertEqual(self.step("<forward-request/>", "backend"), ForwardRequest())
        self.assertEqual(self.step('<forward-request timeout="20" fail-on-error-status-code="true"/>', "backend"),
                         ForwardRequest(timeout=20, fail_on_error_status_code=True))
        self.assertEqual(self.problems('<forward-request follow-redirects="true"/>', "backend"),
                         ["policies/backend/forward-request/@follow-redirects: following redirects is not supported"])

    def test_retry(self) -> None:
        """condition, count 1..50, interval; optional max-interval, delta, first-fast-retry; children."""
        step = self.step('<retry condition="@(context.Variables.GetValueOrDefault&lt;int&gt;(&quot;s&quot;) &gt;= 500)" '
                         'count="3" interval="1" delta="2" max-interval="10" first-fast-retry="true">'
                         "<forward-request/></retry>", "backend")
        assert isinstance(step, Retry)
        self.assertEqual((step.count, step.interval, step.delta, step.max_interval, step.first_fast_retry,
                          step.steps), (3, 1, 2, 10, True, (ForwardRequest(),)))
        self.assertEqual(self.problems('<retry condition="maybe" count="51" interval="1"/>', "backend"), [
            "policies/backend/retry/@condition: must be true, false or a policy expression",
            "policies/backend/retry/@count: must be between 1 and 50, not 51",
        ])

    def test_choose(self) -> None:
        """when conditions compile to bool expressions; otherwise is optional and last."""
        step = self.step('<choose><when condition="@(context.Request.Method == &quot;GET&quot;)">'
                         '<set-variable name="a" value="1"/></when><otherwise>'
                         '<set-variable name="a" value="2"/></otherwise></choose>')
        assert isinstance(step, Choose)
        self.assertEqual(step.otherwise, (SetVariable("a", "2"),))
        self.assertEqual(step.branches[0].steps, (SetVariable("a", "1"),))
        self.assertEqual(self.step('<choose><when condition="true"/></choose>'),
                         Choose((When(True, ()),), ()))

    def test_choose_bad(self) -> None:
        """A non-bool condition, otherwise first, a nested bad policy: paths into the tree."""
        self.assertEqual(self.problems(
            '<choose><otherwise/><when condition="@(context.Request.Method)">'
            '<set-header name="x" exists-action="no"/></when></choose>'), [
            "policies/inbound/choose/when: when must come before otherwise",
            "policies/inbound/choose/when/@condition: must be a bool expression, not string",
            "policies/inbound/choose/when/set-header/@exists-action: must be one of override, skip, append, delete",
        ])

    def test_rate_limits_parsed(self) -> None:
        """rate-limit, rate-limit-by-key and quota compile into steps with APIM's defaults."""
        document = compile_document(
            "<policies><inbound>"
            '<rate-limit calls="10" renewal-period="60" remaining-calls-header-name="x-left"/>'
            '<rate-limit-by-key calls="5" renewal-period="30" counter-key="@(context.Request.IpAddress)"/>'
            '<quota calls="1000" renewal-period="3600"/>'
            "</inbound></policies>", scope="products/starter")
        self.assertEqual(document.problems, ())
        assert document.inbound is not None
        rate, by_key, quota = document.inbound
        self.assertEqual(rate, RateLimit(10, 60, remaining_calls_header_name="x-left",
                                         scope="products/starter"))
        assert isinstance(by_key, RateLimitByKey)
        self.assertEqual((by_key.calls, by_key.renewal_period, by_key.increment_count), (5, 30, 1))
        self.assertEqual(quota, Quota(3600, 1000, None, scope="products/starter"))

    def test_nested_api_and_operation_limits(self) -> None:
        """<api> and <operation> inside rate-limit and quota become targets (id wins over name)."""
        document = compile_document(
            "<policies><inbound>"
            '<rate-limit calls="20" renewal-period="90">'
            '<api name="Orders" id="orders" calls="10" renewal-period="60">'
            '<operation name="get-order" calls="5" renewal-period="30"/></api></rate-limit>'
            '<quota calls="100" renewal-period="0">'
            '<api name="orders" bandwidth="40"><operation id="list" calls="7"/></api></quota>'
            "</inbound></policies>", scope="products/starter")
        self.assertEqual(document.problems, ())
        assert document.inbound is not None
        rate, quota = document.inbound
        self.assertEqual(rate.targets, (  # type: ignore[union-attr]
            LimitTarget("orders", None, 10, 60), LimitTarget("orders", "get-order", 5, 30)))
        self.assertEqual(quota.targets, (  # type: ignore[union-attr]
            LimitTarget("orders", None, None, None, 40), LimitTarget("orders", "list", 7, None)))

    def test_limit_scopes(self) -> None:
        """As APIM: rate-limit not at global scope, quota at product scope only."""
        def problems(text: str, scope: str) -> list[str]:
            return [str(p) for p in compile_document(
                f"<policies><inbound>{text}</inbound></policies>", scope=scope).problems]

        self.assertEqual(problems('<rate-limit calls="1" renewal-period="1"/>', "global"), [
            "policies/inbound/rate-limit: rate-limit is allowed at product, api, operation scope "
            "only (APIM), not at global scope"])
        self.assertEqual(problems('<rate-limit calls="1" renewal-period="1"/>', "apis/a/operations/o"), [])
        self.assertEqual(problems('<quota calls="1" renewal-period="1"/>', "apis/a"), [
            "policies/inbound/quota: quota is allowed at product scope only (APIM), not at api scope"])
        self.assertEqual(problems('<rate-limit-by-key calls="1" renewal-period="1" counter-key="k"/>',
                                  "global"), [])

    def test_nested_limit_bad(self) -> None:
        """A nested api without id or name, or a rate limit without calls, is reported by path."""
        self.assertEqual(self.problems(
            '<rate-limit calls="5" renewal-period="10"><api calls="1" renewal-period="1"/>'
            '<api id="a" renewal-period="1"/></rate-limit>'), [
            "policies/inbound/rate-limit/api[1]: needs id or name",
            "policies/inbound/rate-limit/api[2]/@calls: is required",
        ])

    def test_limit_header_names_are_tokens(self) -> None:
        """The limit policies' header names must be HTTP tokens (no header injection from them)."""
        self.assertEqual(self.problems(
            '<rate-limit calls="1" renewal-period="1" remaining-calls-header-name="X-A: b"/>'), [
            "policies/inbound/rate-limit/@remaining-calls-header-name: must be an HTTP header name "
            "(a token), not 'X-A: b'"])

    def test_rate_limit_bad(self) -> None:
        """A bad limit is reported as invalid, by attribute."""
        self.assertEqual(self.problems('<rate-limit calls="0" renewal-period="301"/>'), [
            "policies/inbound/rate-limit/@calls: must be at least 1, not 0",
            "policies/inbound/rate-limit/@renewal-period: must be between 1 and 300, not 301",
        ])
