"""
APIM's ``cors`` policy end to end, the way a browser exercises it: the real
gateway on a loopback socket, the real echo backend, and the request sets a
browser sends (a simple cross-origin ``GET``, a preflight ``OPTIONS`` with
``Origin``, ``Access-Control-Request-Method`` and
``Access-Control-Request-Headers``, then the actual request). Every CORS
response header is checked, and so is whether the backend was called.

The reference is APIM's cors policy page
(learn.microsoft.com/azure/api-management/cors-policy). Where apimgw
answers differently from it the test says so in its docstring and is
marked ``todo`` (the expected value is APIM's).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import inlineCallbacks

from .harness import GatewayTestCase, Response

_CORS_HEADERS = (
    "access-control-allow-origin",
    "access-control-allow-credentials",
    "access-control-allow-methods",
    "access-control-allow-headers",
    "access-control-expose-headers",
    "access-control-max-age",
)

#: APIM's own example (cors-policy reference), trailing slashes included.
APP = """
<policies>
  <inbound>
    <cors allow-credentials="true">
      <allowed-origins>
        <origin>http://localhost:8080/</origin>
        <origin>https://app.contoso.com/</origin>
      </allowed-origins>
      <allowed-methods preflight-result-max-age="300">
        <method>GET</method>
        <method>POST</method>
        <method>PATCH</method>
        <method>DELETE</method>
      </allowed-methods>
      <allowed-headers>
        <header>x-zumo-auth</header>
        <header>content-type</header>
        <header>accept</header>
      </allowed-headers>
      <expose-headers>
        <header>x-zumo-installation-id</header>
        <header>x-request-id</header>
      </expose-headers>
    </cors>
    <base />
  </inbound>
  <backend><base /></backend>
  <outbound><base /></outbound>
  <on-error><base /></on-error>
</policies>
"""

STRICT = """
<policies>
  <inbound>
    <cors terminate-unmatched-request="true">
      <allowed-origins><origin>https://app.contoso.com</origin></allowed-origins>
      <allowed-methods><method>GET</method><method>PUT</method></allowed-methods>
      <allowed-headers><header>content-type</header></allowed-headers>
    </cors>
  </inbound>
  <backend><forward-request /></backend>
  <outbound />
</policies>
"""

ANY = """
<policies>
  <inbound>
    <cors>
      <allowed-origins><origin>*</origin></allowed-origins>
      <allowed-methods><method>*</method></allowed-methods>
      <allowed-headers><header>*</header></allowed-headers>
      <expose-headers><header>x-total-count</header></expose-headers>
    </cors>
  </inbound>
  <backend><forward-request /></backend>
  <outbound />
</policies>
"""

ANY_WITH_CREDENTIALS = """
<policies>
  <inbound>
    <cors allow-credentials="true">
      <allowed-origins><origin>*</origin></allowed-origins>
      <allowed-headers><header>*</header></allowed-headers>
    </cors>
  </inbound>
  <backend><forward-request /></backend>
  <outbound />
</policies>
"""

CHECKED = """
<policies>
  <inbound>
    <cors>
      <allowed-origins><origin>https://app.contoso.com</origin></allowed-origins>
      <allowed-headers><header>x-tenant</header></allowed-headers>
    </cors>
    <check-header name="X-Tenant" failed-check-httpcode="403" failed-check-error-message="Tenant not allowed" ignore-case="true">
      <value>contoso</value>
    </check-header>
  </inbound>
  <backend><forward-request /></backend>
  <outbound />
</policies>
"""

#: The same small document for the APIs that only differ in routing or keys.
SIMPLE = """
<policies>
  <inbound>
    <cors>
      <allowed-origins><origin>https://app.contoso.com</origin></allowed-origins>
      <allowed-methods><method>GET</method><method>POST</method><method>DELETE</method></allowed-methods>
      <allowed-headers><header>content-type</header></allowed-headers>
    </cors>
  </inbound>
  <backend><forward-request /></backend>
  <outbound />
</policies>
"""

CONFIG = """\
apis:
  - {{name: app, path: app, serviceUrl: "{backend}/api"}}
  - {{name: strict, path: strict, serviceUrl: "{backend}/api"}}
  - {{name: any, path: any, serviceUrl: "{backend}/api"}}
  - {{name: anycred, path: anycred, serviceUrl: "{backend}/api"}}
  - {{name: checked, path: checked, serviceUrl: "{backend}/api"}}
  - name: ops
    path: ops
    serviceUrl: "{backend}/api"
    operations:
      - {{name: list-items, method: GET, urlTemplate: /items}}
      - {{name: create-item, method: POST, urlTemplate: /items}}
      - {{name: delete-item, method: DELETE, urlTemplate: "/items/{{id}}"}}
  - name: custom
    path: custom
    serviceUrl: "{backend}/api"
    operations:
      - {{name: list-items, method: GET, urlTemplate: /items}}
      - {{name: preflight-items, method: OPTIONS, urlTemplate: /items}}
  - {{name: keyed, path: keyed, serviceUrl: "{backend}/api", subscriptionRequired: true}}
  - {{name: keyednocors, path: keyednocors, serviceUrl: "{backend}/api", subscriptionRequired: true}}
  - name: keyedoptions
    path: keyedoptions
    serviceUrl: "{backend}/api"
    subscriptionRequired: true
    operations:
      - {{name: preflight-items, method: OPTIONS, urlTemplate: /items}}
subscriptions:
  - {{name: web, scope: /apis/keyed, primaryKey: web-key-0001}}
policies:
{policies}"""

DOCUMENTS = {
    "app": APP,
    "strict": STRICT,
    "any": ANY,
    "anycred": ANY_WITH_CREDENTIALS,
    "checked": CHECKED,
    "ops": SIMPLE,
    "custom": SIMPLE,
    "keyed": SIMPLE,
    "keyedoptions": """
<policies>
  <inbound>
    <return-response><set-body>private-data</set-body></return-response>
  </inbound>
  <backend><forward-request /></backend>
  <outbound />
</policies>
""",
    "keyednocors": """
<policies>
  <inbound>
    <choose>
      <when condition="@(context.Request.Headers.GetValueOrDefault(&quot;X-Never&quot;, &quot;&quot;) == &quot;1&quot;)">
        <cors><allowed-origins><origin>*</origin></allowed-origins></cors>
      </when>
    </choose>
  </inbound>
  <backend><forward-request /></backend>
  <outbound />
</policies>
""",
}


def _config(backend: str) -> str:
    policies = "".join(
        f"  - scope: api\n    apiId: {api}\n    xml: |\n"
        + "".join(f"      {line}\n" for line in xml.strip().splitlines())
        for api, xml in DOCUMENTS.items()
    )
    return CONFIG.format(backend=backend, policies=policies)


def cors_headers(r: Response) -> dict[str, str]:
    """The response's CORS headers (lower-case names); each must appear at most once."""
    found: dict[str, str] = {}
    for name, value in r.headers:
        key = name.lower()
        if key in _CORS_HEADERS:
            if key in found:
                raise AssertionError(f"{key} sent twice: {found[key]!r}, {value!r}")
            found[key] = value
    return found


def values(r: Response, name: str) -> list[str]:
    return [v for k, v in r.headers if k.lower() == name.lower()]


def preflight(origin: str, method: str, headers: str | None = None) -> list[tuple[str, str]]:
    """What a browser sends before a non-simple request (Chrome's header order)."""
    sent = [
        ("Host", "api.contoso.com"),
        ("Accept", "*/*"),
        ("Access-Control-Request-Method", method),
    ]
    if headers is not None:
        sent.append(("Access-Control-Request-Headers", headers))
    sent += [
        ("Origin", origin),
        ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0"),
        ("Sec-Fetch-Mode", "cors"),
        ("Sec-Fetch-Site", "cross-site"),
        ("Sec-Fetch-Dest", "empty"),
        ("Referer", origin + "/"),
    ]
    return sent


def actual(origin: str | None, *extra: tuple[str, str]) -> list[tuple[str, str]]:
    """The request a page's ``fetch`` sends (``Origin`` only when cross-origin)."""
    sent = [("Host", "api.contoso.com"), ("Accept", "application/json")]
    if origin is not None:
        sent += [("Origin", origin), ("Sec-Fetch-Mode", "cors"), ("Referer", origin + "/")]
    return sent + list(extra)


class CorsTests(GatewayTestCase):
    """Browser request sets against APIs carrying APIM ``cors`` policies."""

    @inlineCallbacks
    def setUp(self) -> Any:
        yield super().setUp()
        self.write_config(_config(self.backend_url))
        yield self.wait_for(
            lambda: any(
                e.access is not None and e.access.api_id == "keyed"
                for e in self.gateway.reconciler.current.config.routes
            )
        )

    def assertBackendNotCalled(self) -> None:
        self.assertEqual(self.backend_site.connections, 0, "the backend was called")

    # -- allowed ----------------------------------------------------------

    @inlineCallbacks
    def test_simple_get_allowed_origin(self) -> Any:
        """
        A simple GET from an allowed origin reaches the backend with its
        Origin; the response echoes the origin (never ``*`` with
        credentials), allows credentials, lists the expose-headers and
        says ``Vary: Origin``. No preflight-only header is added.
        """
        r = yield self.get("/app/orders?top=5", headers=actual("https://app.contoso.com"))
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()["path"], "/api/orders")
        self.assertIn(("origin", "https://app.contoso.com"),
                      [(k.lower(), v) for k, v in r.json()["headers"]])
        self.assertEqual(cors_headers(r), {
            "access-control-allow-origin": "https://app.contoso.com",
            "access-control-allow-credentials": "true",
            "access-control-expose-headers": "x-zumo-installation-id, x-request-id",
        })
        self.assertEqual(values(r, "vary"), ["Origin"])
        self.assertIsNotNone(r.header("x-request-id"))

    @inlineCallbacks
    def test_origin_match_ignores_trailing_slash_and_case(self) -> Any:
        """
        The configured ``http://localhost:8080/`` (APIM's example, with a
        slash) matches the browser's ``http://localhost:8080``; scheme and
        host compare case-insensitively, and the origin is echoed as sent.
        """
        r = yield self.get("/app/x", headers=actual("http://localhost:8080"))
        self.assertEqual(r.header("access-control-allow-origin"), "http://localhost:8080")
        r = yield self.get("/app/x", headers=actual("HTTPS://App.Contoso.com"))
        self.assertEqual(r.header("access-control-allow-origin"), "HTTPS://App.Contoso.com")

    @inlineCallbacks
    def test_preflight_allowed(self) -> Any:
        """
        A preflight for PATCH with mixed-case, space-separated request
        headers: 200 from the gateway with allow-origin (echoed),
        credentials, the allowed methods, the requested headers, the max
        age and ``Vary: Origin``, an empty body; the backend is never
        called.
        """
        r = yield self.request(
            "OPTIONS", "/app/orders/42",
            headers=preflight("https://app.contoso.com", "PATCH", "Content-Type, X-ZUMO-AUTH,accept"),
        )
        self.assertEqual((r.status, r.body), (200, b""))
        self.assertEqual(cors_headers(r), {
            "access-control-allow-origin": "https://app.contoso.com",
            "access-control-allow-credentials": "true",
            "access-control-allow-methods": "GET, POST, PATCH, DELETE",
            "access-control-allow-headers": "content-type, x-zumo-auth, accept",
            "access-control-max-age": "300",
        })
        self.assertEqual(values(r, "vary"), ["Origin"])
        self.assertBackendNotCalled()

    @inlineCallbacks
    def test_preflight_then_actual_request(self) -> Any:
        """The browser's pair: the preflight is answered, then the DELETE is forwarded with CORS headers."""
        r = yield self.request(
            "OPTIONS", "/app/orders/42",
            headers=preflight("https://app.contoso.com", "DELETE", "x-zumo-auth"),
        )
        self.assertEqual(r.status, 200)
        self.assertBackendNotCalled()
        r = yield self.request(
            "DELETE", "/app/orders/42",
            headers=actual("https://app.contoso.com", ("X-ZUMO-AUTH", "token")),
        )
        self.assertEqual((r.status, r.json()["method"]), (200, "DELETE"))
        self.assertEqual(r.header("access-control-allow-origin"), "https://app.contoso.com")
        self.assertEqual(r.header("access-control-allow-credentials"), "true")

    @inlineCallbacks
    def test_preflight_without_request_headers(self) -> Any:
        """A preflight without Access-Control-Request-Headers gets no allow-headers header."""
        r = yield self.request("OPTIONS", "/app/x", headers=preflight("https://app.contoso.com", "POST"))
        self.assertEqual(r.status, 200)
        self.assertNotIn("access-control-allow-headers", cors_headers(r))
        self.assertEqual(r.header("access-control-allow-methods"), "GET, POST, PATCH, DELETE")

    @inlineCallbacks
    def test_actual_request_error_status_keeps_cors_headers(self) -> Any:
        """The backend answers 500: the browser must still see the CORS headers to read the error."""
        r = yield self.request(
            "POST", "/app/orders?status=500",
            headers=actual("https://app.contoso.com", ("Content-Type", "application/json")),
            body=b'{"qty": 1}',
        )
        self.assertEqual(r.status, 500)
        self.assertEqual(r.json()["body"], '{"qty": 1}')
        self.assertEqual(r.header("access-control-allow-origin"), "https://app.contoso.com")
        self.assertEqual(r.header("access-control-allow-credentials"), "true")
        self.assertEqual(values(r, "vary"), ["Origin"])
        r = yield self.get("/app/orders?status=404", headers=actual("https://app.contoso.com"))
        self.assertEqual((r.status, r.header("access-control-allow-origin")),
                         (404, "https://app.contoso.com"))

    @inlineCallbacks
    def test_policy_error_keeps_cors_headers(self) -> Any:
        """A check-header after cors refuses the actual request: the 403 envelope carries the CORS headers."""
        r = yield self.get("/checked/x", headers=actual("https://app.contoso.com"))
        self.assertEqual((r.status, r.json()["message"]), (403, "Tenant not allowed"))
        self.assertEqual(r.header("access-control-allow-origin"), "https://app.contoso.com")
        self.assertBackendNotCalled()

    @inlineCallbacks
    def test_preflight_is_answered_before_later_policies(self) -> Any:
        """
        APIM: only ``cors`` runs on a preflight. A ``check-header`` after it
        would refuse a preflight (browsers never send custom headers on
        one), but the preflight is answered first.
        """
        r = yield self.request("OPTIONS", "/checked/x",
                               headers=preflight("https://app.contoso.com", "GET", "X-Tenant"))
        self.assertEqual(r.status, 200)
        self.assertEqual(r.header("access-control-allow-origin"), "https://app.contoso.com")
        self.assertEqual(r.header("access-control-allow-headers"), "x-tenant")

    # -- not a CORS request --------------------------------------------------

    @inlineCallbacks
    def test_no_origin_unchanged(self) -> Any:
        """A same-origin or non-browser request (no Origin) gets no CORS header and no Vary."""
        r = yield self.get("/app/x", headers=actual(None))
        self.assertEqual(r.status, 200)
        self.assertEqual(cors_headers(r), {})
        self.assertEqual(values(r, "vary"), [])
        r = yield self.request("OPTIONS", "/app/x", headers=actual(None))
        self.assertEqual((r.status, r.json()["method"]), (200, "OPTIONS"))
        self.assertEqual(cors_headers(r), {})

    @inlineCallbacks
    def test_options_with_origin_but_no_request_method_is_not_a_preflight(self) -> Any:
        """OPTIONS with Origin but no Access-Control-Request-Method is an actual request: OPTIONS is not allowed, so it is forwarded without CORS headers."""
        r = yield self.request("OPTIONS", "/app/x", headers=actual("https://app.contoso.com"))
        self.assertEqual((r.status, r.json()["method"]), (200, "OPTIONS"))
        self.assertEqual(cors_headers(r), {})

    # -- unmatched, terminate-unmatched-request="false" (default) ----------------

    @inlineCallbacks
    def test_default_unmatched_preflight_ends_with_empty_200(self) -> Any:
        """
        terminate-unmatched-request false, no other cors in inbound: a
        preflight from a disallowed origin, for a disallowed method or
        with a disallowed header ends with an empty 200 without any CORS
        header (APIM: "If no cors policies are found, terminate the
        request with an empty 200 OK response"); the backend is not called.
        """
        cases = [
            preflight("https://evil.example", "GET"),
            preflight("https://app.contoso.com", "PUT"),
            preflight("https://app.contoso.com", "POST", "content-type, X-Debug"),
            preflight("https://app.contoso.com.evil.example", "GET"),
            preflight("http://localhost:8081", "GET"),
        ]
        for headers in cases:
            r = yield self.request("OPTIONS", "/app/x", headers=headers)
            self.assertEqual((r.status, r.body, cors_headers(r)), (200, b"", {}), headers)
            self.assertEqual(values(r, "vary"), [])
        self.assertBackendNotCalled()

    @inlineCallbacks
    def test_default_unmatched_actual_request_goes_on_without_cors_headers(self) -> Any:
        """APIM: with false, an unmatched cross-origin request proceeds normally and gets no CORS header."""
        r = yield self.get("/app/x", headers=actual("https://evil.example"))
        self.assertEqual((r.status, r.json()["path"]), (200, "/api/x"))
        self.assertEqual(cors_headers(r), {})
        r = yield self.request("PUT", "/app/x", headers=actual("https://app.contoso.com"), body=b"x")
        self.assertEqual((r.status, r.json()["method"]), (200, "PUT"))
        self.assertEqual(cors_headers(r), {})

    # -- unmatched, terminate-unmatched-request="true" ---------------------

    @inlineCallbacks
    def test_terminate_unmatched_preflight(self) -> Any:
        """With true, each unmatched preflight ends at once with an empty 200, no CORS header; the matched one is answered."""
        for headers in (
            preflight("https://evil.example", "GET"),
            preflight("https://app.contoso.com", "DELETE"),
            preflight("https://app.contoso.com", "PUT", "Content-Type, Authorization"),
        ):
            r = yield self.request("OPTIONS", "/strict/x", headers=headers)
            self.assertEqual((r.status, r.body, cors_headers(r)), (200, b"", {}), headers)
        r = yield self.request("OPTIONS", "/strict/x",
                               headers=preflight("https://app.contoso.com", "PUT", "Content-Type"))
        self.assertEqual(cors_headers(r), {
            "access-control-allow-origin": "https://app.contoso.com",
            "access-control-allow-methods": "GET, PUT",
            "access-control-allow-headers": "content-type",
        })
        self.assertBackendNotCalled()

    @inlineCallbacks
    def test_terminate_unmatched_actual_request(self) -> Any:
        """With true, a GET from a disallowed origin ends with an empty 200 and never reaches the backend."""
        r = yield self.get("/strict/x", headers=actual("https://evil.example"))
        self.assertEqual((r.status, r.body, cors_headers(r)), (200, b"", {}))
        self.assertBackendNotCalled()
        r = yield self.get("/strict/x", headers=actual("https://app.contoso.com"))
        self.assertEqual((r.status, r.header("access-control-allow-origin")),
                         (200, "https://app.contoso.com"))
        self.assertIsNone(r.header("access-control-allow-credentials"))

    # -- wildcards -------------------------------------------------------

    @inlineCallbacks
    def test_wildcard_origin_without_credentials(self) -> Any:
        """
        ``*`` without credentials: ``Access-Control-Allow-Origin: *`` on
        the actual request and the preflight, no credentials header, no
        ``Vary: Origin`` (the answer does not depend on it); with ``*``
        methods and headers the preflight allows exactly what was asked.
        """
        r = yield self.get("/any/x", headers=actual("https://anyone.example"))
        self.assertEqual(cors_headers(r), {
            "access-control-allow-origin": "*",
            "access-control-expose-headers": "x-total-count",
        })
        self.assertEqual(values(r, "vary"), [])
        self.assertEqual(self.backend_site.connections, 1)
        r = yield self.request("OPTIONS", "/any/x",
                               headers=preflight("https://anyone.example", "purge", "X-Custom, Content-Type"))
        self.assertEqual((r.status, r.body), (200, b""))
        self.assertEqual(cors_headers(r), {
            "access-control-allow-origin": "*",
            "access-control-allow-methods": "PURGE",
            "access-control-allow-headers": "x-custom, content-type",
        })
        self.assertEqual(self.backend_site.connections, 1, "the preflight reached the backend")

    @inlineCallbacks
    def test_wildcard_origin_with_credentials_is_refused(self) -> Any:
        """
        ``*`` with allow-credentials="true" is refused when the policy
        compiles (a browser would reject ``*`` with credentials); the API
        is not served: 500 with the APIM envelope. (The executor would
        echo the origin, but never sees such a step.)
        """
        r = yield self.get("/anycred/x", headers=actual("https://anyone.example"))
        self.assertEqual((r.status, r.json()["message"]), (500, "Internal server error"))
        self.assertEqual(cors_headers(r), {})
        self.assertTrue(self.logged("api:anycred: not served, its policies have problems"))
        problem = "policies/inbound/cors: allow-credentials cannot be true with the * origin"
        self.assertTrue(any(problem in str(value) for e in self.events for value in e.values()))

    # -- routing and keys --------------------------------------------------

    @inlineCallbacks
    def test_api_with_operations_actual_requests(self) -> Any:
        """An API with operations: the listed operations get CORS headers on the actual request."""
        r = yield self.request("DELETE", "/ops/items/7", headers=actual("https://app.contoso.com"))
        self.assertEqual((r.status, r.json()["method"]), (200, "DELETE"))
        self.assertEqual(r.header("access-control-allow-origin"), "https://app.contoso.com")

    @inlineCallbacks
    def test_preflight_on_api_without_options_operation(self) -> Any:
        """
        APIM answers a CORS preflight at the API even when no OPTIONS
        operation exists (its cors page: the preflight logic runs unless
        an OPTIONS operation matches). apimgw matches operations by
        method first; a preflight no operation accepts is answered by the
        API-level policies (global, product, API scopes).
        """
        r = yield self.request("OPTIONS", "/ops/items/7",
                               headers=preflight("https://app.contoso.com", "DELETE", "Content-Type"))
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(cors_headers(r), {
            "access-control-allow-origin": "https://app.contoso.com",
            "access-control-allow-methods": "GET, POST, DELETE",
            "access-control-allow-headers": "content-type",
        })
        self.assertBackendNotCalled()


    @inlineCallbacks
    def test_preflight_on_path_no_operation_has(self) -> Any:
        """A preflight for a path no operation lists is 404 (no operation to answer for), as APIM does."""
        r = yield self.request("OPTIONS", "/ops/nowhere",
                               headers=preflight("https://app.contoso.com", "GET"))
        self.assertEqual(r.status, 404)

    @inlineCallbacks
    def test_options_operation_handles_its_own_preflight(self) -> Any:
        """
        APIM: "If a request matches an operation with an OPTIONS method
        defined in the API, preflight request processing logic associated
        with the cors policy will not be executed": the OPTIONS operation
        runs its pipeline and is forwarded.
        """
        r = yield self.request("OPTIONS", "/custom/items",
                               headers=preflight("https://app.contoso.com", "POST", "Content-Type"))
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()["method"], "OPTIONS")


    @inlineCallbacks
    def test_preflight_on_api_requiring_subscription(self) -> Any:
        """
        A browser never sends the subscription key header on a preflight
        (it cannot add headers to one). APIM answers the preflight of an
        API-scope cors policy without a key (its "common configuration
        issues" name only the product scope, where the key decides the
        product, as a case where cors does not work with a header key).
        apimgw defers the key check of a preflight: the policies of the
        no-product context answer it, and only if they let it through is
        the 401 sent.
        """
        # (The actual request would send the key header too; this API's
        # cors allows only content-type, which the preflight asks for.)
        r = yield self.request("OPTIONS", "/keyed/x",
                               headers=preflight("https://app.contoso.com", "POST", "Content-Type"))
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.header("access-control-allow-origin"), "https://app.contoso.com")


    @inlineCallbacks
    def test_keyless_preflight_no_policy_answers_is_refused(self) -> Any:
        """
        A keyless preflight to an API requiring a key whose policies do not
        answer it (its cors sits in a branch not taken) gets the 401 the key
        check deferred, and never reaches the backend.
        """
        r = yield self.request("OPTIONS", "/keyednocors/x",
                               headers=preflight("https://app.contoso.com", "POST", "Content-Type"))
        self.assertEqual(r.status, 401)
        self.assertIn("missing subscription key", r.json()["message"])
        self.assertBackendNotCalled()

    @inlineCallbacks
    def test_keyless_request_to_an_options_operation_is_refused(self) -> Any:
        """
        A request an OPTIONS operation accepts is not a preflight for cors:
        without a key it is 401 like any other, whatever its policies would
        answer.
        """
        r = yield self.request("OPTIONS", "/keyedoptions/items",
                               headers=preflight("https://app.contoso.com", "POST", "Content-Type"))
        self.assertEqual(r.status, 401)
        self.assertNotIn(b"private-data", r.body)

    @inlineCallbacks
    def test_actual_request_with_key_on_api_requiring_subscription(self) -> Any:
        """The actual request carries the key: admitted, the key not forwarded, CORS headers added."""
        r = yield self.get("/keyed/x", headers=actual("https://app.contoso.com",
                                                     ("Ocp-Apim-Subscription-Key", "web-key-0001")))
        self.assertEqual(r.status, 200)
        self.assertNotIn("ocp-apim-subscription-key", [k.lower() for k, _ in r.json()["headers"]])
        self.assertEqual(r.header("access-control-allow-origin"), "https://app.contoso.com")
        r = yield self.get("/keyed/x", headers=actual("https://app.contoso.com"))
        self.assertEqual(r.status, 401)
