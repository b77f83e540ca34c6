"""Tests for the ``/config`` dump: certificates, APIM access, pipelines and subscriptions."""

from __future__ import annotations

import json
import time

from twisted.trial.unittest import SynchronousTestCase

from gateway.model import (
    Api,
    Body,
    Certificate,
    GatewayBackend,
    GatewayClaim,
    GatewayHeaderEdits,
    GatewayRoutes,
    GatewayRule,
    GatewayValueMatch,
    NamedValue,
    ObjectRef,
    Operation,
    Policy,
    PolicyScope,
    Product,
    Route,
    RouteSet,
    SourceObject,
    Subscription,
    SubscriptionScope,
    kind_of,
)
from gateway.observability import describe_generation
from gateway.reconcile import Generation
from gateway.routing import RouteTable
from gateway.testing.certs import CertificateAuthority
from gateway.translate import translate


class CertificateDumpTests(SynchronousTestCase):
    def test_certificates_described_without_keys(self) -> None:
        """
        Each certificate is listed with subject, issuer, SANs, validity,
        fingerprint, served hosts and default flag; no PEM or key appears,
        and a route's httpsRedirect is shown.
        """
        now = time.time()
        issued = CertificateAuthority().issue("www.example.com")
        objects = [
            SourceObject(
                ObjectRef("file", "certificate", "www"), now,
                Certificate(("www.example.com",), issued.chain_pem, issued.key_pem, True),
            ),
            SourceObject(
                ObjectRef("file", "routes", "routes"), now,
                RouteSet((Route("/", "http://127.0.0.1:1", https_redirect=True),)),
            ),
        ]
        config = translate(objects, now=now)
        generation = Generation(3, config, RouteTable.build(config.routes), now)
        dump = describe_generation(generation)
        [certificate] = dump["certificates"]
        self.assertEqual(
            {k: certificate[k] for k in ("object", "hosts", "default", "subject", "sans")},
            {"object": "file:certificate/www", "hosts": ["www.example.com"], "default": True,
             "subject": "CN=www.example.com", "sans": ["www.example.com"]},
        )
        self.assertEqual(certificate["fingerprintSha256"], issued.fingerprint)
        self.assertEqual(certificate["issuer"], "CN=apimgw test CA")
        self.assertTrue(certificate["notAfter"].endswith("Z"))
        self.assertIs(certificate["keptLastValid"], False)
        self.assertEqual(dump["defaultCertificate"], {"object": "file:certificate/www"})
        self.assertIs(dump["routes"][0]["httpsRedirect"], True)
        text = json.dumps(dump)
        self.assertNotIn("BEGIN", text)
        self.assertNotIn("PRIVATE", text)


_SECRET = "s3cr3t-backend-token"
_KEYS = ("primary-key-0123456789", "secondary-key-9876543210")
_API_XML = (
    '<policies><inbound><base/><set-header name="X-Token" exists-action="override">'
    "<value>{{token}}</value></set-header></inbound></policies>"
)
_OP_XML = (
    '<policies><inbound><base/><set-header name="X-Op" exists-action="override">'
    "<value>get</value></set-header></inbound></policies>"
)


def _dump(bodies: list[Body]) -> dict:  # type: ignore[type-arg]
    """Translate the bodies (each as one cloud object) and describe the generation."""
    now = time.time()
    objects = [
        SourceObject(ObjectRef("cloud", kind_of(b), f"n{i}"), now, b) for i, b in enumerate(bodies)
    ]
    config = translate(objects, now=now)
    return describe_generation(Generation(1, config, RouteTable.build(config.routes), now))


def _route(dump: dict, label: str) -> dict:  # type: ignore[type-arg]
    route: dict = next(r for r in dump["routes"] if r["label"] == label)  # type: ignore[type-arg]
    return route


class ApiManagementDumpTests(SynchronousTestCase):
    """What ``/config`` shows of access rules, pipelines and subscriptions."""

    def setUp(self) -> None:
        self.dump = _dump([
            Api("orders", "orders", "http://127.0.0.1:1", subscription_required=True,
                operations=(Operation("get", "GET", "/{id}"), Operation("list", "GET", "/"))),
            Api("plain", "plain", "http://127.0.0.1:2"),
            Product("starter", api_ids=("orders",)),
            Subscription("sub-1", SubscriptionScope("product", "starter"), *_KEYS),
            Subscription("sub-2", SubscriptionScope("all"), "other-key-abcdef",
                         state="suspended"),
            NamedValue("token", _SECRET, secret=True),
            Policy(PolicyScope("api", api_id="orders"), _API_XML),
            Policy(PolicyScope("operation", api_id="orders", operation_id="get"), _OP_XML),
        ])
        self.text = json.dumps(self.dump)

    def test_pipeline_lines_per_operation_and_product(self) -> None:
        """
        Each operation shows its effective pipeline per product context
        (``null`` first) as readable lines: the API's policy, then the
        operation's own where ``<base/>`` stands, and the default backend.
        """
        route = _route(self.dump, "api:orders")
        # The API level (for CORS preflights no operation accepts): no
        # operation's policy in it.
        api_level = route["pipelines"][0]["policies"]
        self.assertNotIn("X-Op", str(api_level))
        self.assertIn("X-Token", str(api_level))
        operations = {op["name"]: op for op in route["operations"]}
        get = operations["get"]["pipelines"]
        self.assertEqual([p["product"] for p in get], [None, "starter"])
        self.assertEqual(get[0]["policies"], get[1]["policies"])
        lines = get[0]["policies"]
        self.assertEqual(len(lines), 3, lines)
        self.assertTrue(lines[0].startswith("inbound: set-header("), lines)
        self.assertIn('name="X-Token"', lines[0])
        self.assertIn('values=["***"]', lines[0])
        self.assertIn('name="X-Op"', lines[1])
        self.assertEqual(lines[2], "backend: forward-request")
        listing = operations["list"]["pipelines"][0]["policies"]
        self.assertEqual(listing, [lines[0], lines[2]])

    def test_secret_named_value_never_shown(self) -> None:
        """The secret named value's text appears nowhere in the dump."""
        self.assertNotIn(_SECRET, self.text)
        self.assertIn("***", self.text)

    def test_access(self) -> None:
        """An API shows its id, subscriptionRequired, key names and products."""
        self.assertEqual(_route(self.dump, "api:orders")["access"], {
            "api": "orders",
            "subscriptionRequired": True,
            "keyHeader": "Ocp-Apim-Subscription-Key",
            "keyQuery": "subscription-key",
            "products": ["starter"],
            "openProduct": None,
        })

    def test_subscriptions_show_fingerprints_never_keys(self) -> None:
        """Subscriptions list id, state, scope, products and key fingerprints, never a key."""
        subscriptions = {s["id"]: s for s in self.dump["subscriptions"]}
        self.assertEqual(sorted(subscriptions), ["sub-1", "sub-2"])
        sub1 = subscriptions["sub-1"]
        self.assertEqual(
            {k: sub1[k] for k in ("state", "scope", "products", "admittedKeys")},
            {"state": "active", "scope": "/products/starter", "products": ["starter"],
             "admittedKeys": 2},
        )
        self.assertEqual(len(sub1["keyFingerprints"]), 2)
        self.assertEqual(subscriptions["sub-2"]["state"], "suspended")
        self.assertEqual(subscriptions["sub-2"]["scope"], "/apis")
        for key in (*_KEYS, "other-key-abcdef"):
            self.assertNotIn(key, self.text)

    def test_api_without_policies_has_no_pipeline(self) -> None:
        """An API no policy applies to shows its access but no pipeline and no error."""
        route = _route(self.dump, "api:plain")
        self.assertEqual(route["access"]["api"], "plain")
        self.assertIs(route["access"]["subscriptionRequired"], False)
        self.assertNotIn("pipelines", route)
        self.assertNotIn("policyError", route)
        self.assertNotIn("policyError", _route(self.dump, "api:orders"))

    def test_policy_error_shown(self) -> None:
        """A policy document with a problem makes the API show ``policyError``."""
        dump = _dump([
            Api("broken", "broken", "http://127.0.0.1:1"),
            Policy(PolicyScope("api", api_id="broken"),
                   "<policies><inbound><no-such-policy/></inbound></policies>"),
        ])
        route = _route(dump, "api:broken")
        self.assertIsInstance(route["policyError"], str)
        self.assertTrue(route["policyError"])

    def test_plain_route_has_no_access(self) -> None:
        """A file route is no APIM API: no access, no pipeline; empty generation lists no subscriptions."""
        dump = _dump([RouteSet((Route("/", "http://127.0.0.1:1"),))])
        (route,) = dump["routes"]
        self.assertNotIn("access", route)
        self.assertNotIn("pipelines", route)
        self.assertEqual(dump["subscriptions"], [])
        # Before the first generation the admin resource has none.
        self.assertEqual(describe_generation(None)["subscriptions"], [])


class GatewayApiDumpTests(SynchronousTestCase):
    def test_variants_and_claims(self) -> None:
        """
        A Gateway API entry lists its variants in the order they are tried
        (conditions, filters, weighted backends with the invalid one's
        reason), and the listeners' claims are listed per scheme.
        """
        url = "http://v1.ns.svc.cluster.local:8080"
        rules = (
            GatewayRule(
                listener="*.example.com", protocol="HTTP", host="a.example.com",
                path_type="PathPrefix", path="/api", route="ns/r", rule=0, match_index=0,
                order=(0,), method="GET",
                headers=(GatewayValueMatch("X-Canary", "yes"),),
                request_headers=GatewayHeaderEdits(add=(("x-gw", "apimgw"),)),
                backends=(GatewayBackend("ns/v1:8080", url, 3),
                          GatewayBackend("other/v2:8080", None, 1, "RefNotPermitted")),
            ),
        )
        body = GatewayRoutes(rules, (GatewayClaim("*.example.com", "HTTP"),))
        now = time.time()
        config = translate([SourceObject(ObjectRef("gatewayapi", kind_of(body), "ns/gw"), now, body)])
        generation = Generation(1, config, RouteTable.build(config.routes, None, config.claims), now)
        dump = json.loads(json.dumps(describe_generation(generation)))
        [route] = dump["routes"]
        self.assertEqual(route["path"], "/api")
        [variant] = route["variants"]
        self.assertEqual(variant["label"], "ns/r rule 0 match 0")
        self.assertEqual(variant["protocols"], ["http"])
        self.assertEqual(variant["method"], "GET")
        self.assertEqual(variant["headers"], [{"name": "x-canary", "value": "yes", "regex": False}])
        self.assertEqual(variant["requestHeaders"]["add"], [["x-gw", "apimgw"]])
        self.assertEqual(
            variant["backends"],
            [{"url": url, "weight": 3}, {"url": None, "weight": 1, "problem": "RefNotPermitted"}],
        )
        self.assertEqual(dump["listenerClaims"], [{"host": "*.example.com", "scheme": "http"}])
