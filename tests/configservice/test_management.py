"""
Tests of the management REST API over real HTTP on loopback: CRUD of every
entity, validation (400 naming the field), 404, 409, the admin key.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import inlineCallbacks

from .harness import ADMIN_KEY, ServiceTestCase, self_signed

POLICY = "<policies><inbound><base /></inbound><backend><base /></backend></policies>"


class AdminKeyTests(ServiceTestCase):
    @inlineCallbacks
    def test_missing_key(self) -> Any:
        """A call without Authorization is answered 401 with a JSON error and a Bearer challenge."""
        response = yield self.manage("GET", "/apis", key=None)
        self.assertEqual(response.status, 401)
        self.assertEqual(response.json()["statusCode"], 401)
        self.assertIn("Bearer", response.json()["message"])
        self.assertIn("Bearer", response.headers["www-authenticate"])

    @inlineCallbacks
    def test_wrong_key_logged_without_it(self) -> Any:
        """A wrong admin key is 401 and logged with the path, never with the key given or the real one."""
        response = yield self.manage("PUT", "/apis/a", {"path": "a"}, key="guessed-key-1234567890")
        self.assertEqual((response.status, response.json()["message"]), (401, "invalid admin key"))
        lines = self.logged("Management request refused")
        self.assertEqual(len(lines), 1)
        self.assertIn("PUT /apis/a", lines[0])
        everything = " ".join(self.logged(""))
        self.assertNotIn("guessed-key", everything)
        self.assertNotIn(ADMIN_KEY, everything)

    @inlineCallbacks
    def test_gateway_token_is_not_an_admin_key(self) -> Any:
        """A gateway token does not open the management API."""
        yield self.ok("PUT", "/gateways/gw", {})
        token = yield self.token("gw")
        response = yield self.manage("GET", "/apis", key=None, headers={"Authorization": token})
        self.assertEqual(response.status, 401)

    @inlineCallbacks
    def test_unknown_path_and_method(self) -> Any:
        """An unknown path is 404; a known path with a wrong method is 405 with Allow."""
        response = yield self.manage("GET", "/nothing/here")
        self.assertEqual(response.status, 404)
        response = yield self.manage("POST", "/apis/a")
        self.assertEqual(response.status, 405)
        self.assertEqual(response.headers["allow"], "DELETE, GET, PUT")


class ApiTests(ServiceTestCase):
    @inlineCallbacks
    def test_crud(self) -> Any:
        """An API is created (201), read, listed, replaced (200), deleted (204), then is 404."""
        body = {"path": "/users/", "serviceUrl": "http://backend:8080/v1", "displayName": "Users",
                "protocols": ["https"], "subscriptionRequired": True,
                "hostnames": ["API.example.com"]}
        created = yield self.manage("PUT", "/apis/users", body)
        self.assertEqual(created.status, 201)
        api = created.json()
        self.assertEqual(
            {k: api[k] for k in ("id", "name", "path", "serviceUrl", "displayName", "protocols",
                                 "subscriptionRequired", "hostnames")},
            {"id": "users", "name": "users", "path": "users", "serviceUrl": "http://backend:8080/v1",
             "displayName": "Users", "protocols": ["https"], "subscriptionRequired": True,
             "hostnames": ["api.example.com"]},
        )
        self.assertTrue(api["modified"].endswith("Z"))
        fetched = yield self.ok("GET", "/apis/users")
        self.assertEqual(fetched, api)
        listed = yield self.ok("GET", "/apis")
        self.assertEqual(listed, {"value": [api]})
        replaced = yield self.manage("PUT", "/apis/users", dict(body, displayName="People"))
        self.assertEqual(replaced.status, 200)
        self.assertEqual(replaced.json()["displayName"], "People")
        self.assertGreater(replaced.json()["revision"], api["revision"])
        deleted = yield self.manage("DELETE", "/apis/users")
        self.assertEqual((deleted.status, deleted.body), (204, b""))
        for method in ("GET", "DELETE"):
            gone = yield self.manage(method, "/apis/users")
            self.assertEqual(gone.status, 404)
            self.assertEqual(gone.json(), {"statusCode": 404, "message": "API 'users' not found"})

    @inlineCallbacks
    def test_validation_names_the_field(self) -> Any:
        """Each invalid API field is answered 400 with a message naming it."""
        good = {"path": "a", "serviceUrl": "http://b"}
        for change, field in [
            ({"path": None}, "path"),
            ({"path": "a b"}, "path"),
            ({"serviceUrl": "ftp://b"}, "serviceUrl"),
            ({"serviceUrl": 7}, "serviceUrl"),
            ({"protocols": ["gopher"]}, "protocols"),
            ({"subscriptionRequired": "yes"}, "subscriptionRequired"),
            ({"hostnames": ["bad host"]}, "hostnames[0]"),
            ({"subscriptonRequired": True}, "subscriptonRequired"),
        ]:
            body = {k: v for k, v in {**good, **change}.items() if v is not None}
            response = yield self.manage("PUT", "/apis/a", body)
            self.assertEqual(response.status, 400, (change, response.body))
            self.assertEqual(response.json()["field"], field)
            self.assertTrue(response.json()["message"].startswith(field), response.json())
        response = yield self.manage("PUT", "/apis/a", b"{not json")
        self.assertEqual((response.status, response.json()["field"]), (400, "body"))
        response = yield self.manage("PUT", "/apis/a%20b", good)
        self.assertEqual((response.status, response.json()["field"]), (400, "apiId"))

    @inlineCallbacks
    def test_subscription_key_names(self) -> Any:
        """
        subscriptionKeyParameterNames is stored as given and answered by the
        management API and in the gateway's snapshot; without it, or for
        the part not given, APIM's defaults are stored, so GET always shows
        both names and a GET → PUT round trip keeps them.
        """
        names = {"header": "X-Catalog-Key", "query": "catalog_key"}
        api = yield self.ok("PUT", "/apis/custom", {
            "path": "custom", "serviceUrl": "http://b", "subscriptionKeyParameterNames": names})
        self.assertEqual(api["subscriptionKeyParameterNames"], names)
        fetched = yield self.ok("GET", "/apis/custom")
        self.assertEqual(fetched["subscriptionKeyParameterNames"], names)
        again = yield self.ok("PUT", "/apis/custom", fetched)
        self.assertEqual(again["subscriptionKeyParameterNames"], names)

        plain = yield self.ok("PUT", "/apis/plain", {"path": "plain", "serviceUrl": "http://b"})
        defaults = {"header": "Ocp-Apim-Subscription-Key", "query": "subscription-key"}
        self.assertEqual(plain["subscriptionKeyParameterNames"], defaults)
        null = yield self.ok("PUT", "/apis/plain", {"path": "plain", "serviceUrl": "http://b",
                                                    "subscriptionKeyParameterNames": None})
        self.assertEqual(null["subscriptionKeyParameterNames"], defaults)
        half = yield self.ok("PUT", "/apis/half", {
            "path": "half", "serviceUrl": "http://b",
            "subscriptionKeyParameterNames": {"query": "k"}})
        self.assertEqual(half["subscriptionKeyParameterNames"],
                         {"header": "Ocp-Apim-Subscription-Key", "query": "k"})

        yield self.ok("PUT", "/gateways/g", {})
        yield self.ok("PUT", "/gateways/g/apis/custom")
        token = yield self.token("g")
        response = yield self.call("GET", "/gateways/g/configuration", token)
        (delivered,) = response.json()["apis"]
        self.assertEqual(delivered["subscriptionKeyParameterNames"], names)

    @inlineCallbacks
    def test_subscription_key_names_validated(self) -> Any:
        """
        A key header that is not an HTTP token, a query name outside the
        unreserved URI characters, an empty or non-string name, an unknown
        part or a non-object is answered 400 naming the part; nothing is
        stored.
        """
        good = {"path": "a", "serviceUrl": "http://b"}
        field = "subscriptionKeyParameterNames"
        for names, named in [
            ({"header": "X Key"}, field + ".header"),
            ({"header": "X-Key:"}, field + ".header"),
            ({"header": ""}, field + ".header"),
            ({"header": "   "}, field + ".header"),
            ({"header": "X-Kéy"}, field + ".header"),
            ({"header": 7}, field + ".header"),
            ({"header": "X" * 101}, field + ".header"),
            ({"query": "a&b"}, field + ".query"),
            ({"query": "a=b"}, field + ".query"),
            ({"query": "my key"}, field + ".query"),
            ({"query": "a+b"}, field + ".query"),
            ({"query": "schlüssel"}, field + ".query"),
            ({"query": ""}, field + ".query"),
            ({"query": ["k"]}, field + ".query"),
            ({"cookie": "k"}, field + ".cookie"),
            ("X-Key", field),
            (["X-Key", "k"], field),
        ]:
            response = yield self.manage("PUT", "/apis/a", {**good, field: names})
            self.assertEqual(response.status, 400, (names, response.body))
            self.assertEqual(response.json()["field"], named, names)
            self.assertTrue(response.json()["message"].startswith(named), response.json())
        self.assertEqual((yield self.manage("GET", "/apis/a")).status, 404)
        response = yield self.manage("PUT", "/apis/a", {**good, field: {"header": "X-Key"}})
        self.assertEqual(response.status, 201, response.body)
        message = (yield self.manage("PUT", "/apis/a", {**good, field: {"header": "X Key"}})
                   ).json()["message"]
        self.assertIn("'X Key'", message)
        self.assertEqual((yield self.ok("GET", "/apis/a"))[field]["header"], "X-Key")

    @inlineCallbacks
    def test_path_conflict(self) -> Any:
        """Two APIs on the same path with overlapping host names conflict (409); disjoint hosts do not."""
        yield self.api("one", "shop", hostnames=["a.example.com", "b.example.com"])
        response = yield self.manage("PUT", "/apis/two",
                                     {"path": "/shop", "serviceUrl": "http://x",
                                      "hostnames": ["b.example.com"]})
        self.assertEqual(response.status, 409)
        self.assertIn("'one'", response.json()["message"])
        yield self.api("three", "shop", hostnames=["c.example.com"])
        yield self.api("any-host", "shop")
        response = yield self.manage("PUT", "/apis/four", {"path": "shop", "serviceUrl": "http://x"})
        self.assertEqual(response.status, 409)
        yield self.api("one", "shop", hostnames=["a.example.com"])  # itself: no conflict

    @inlineCallbacks
    def test_operations(self) -> Any:
        """Operations are created, read, listed, validated and deleted under their API."""
        yield self.api("a")
        created = yield self.manage("PUT", "/apis/a/operations/get-user",
                                    {"method": "get", "urlTemplate": "/users/{id}"})
        self.assertEqual(created.status, 201)
        self.assertEqual(
            {k: created.json()[k] for k in ("id", "apiId", "method", "urlTemplate")},
            {"id": "get-user", "apiId": "a", "method": "GET", "urlTemplate": "/users/{id}"},
        )
        fetched = yield self.ok("GET", "/apis/a/operations/get-user")
        self.assertEqual(fetched, created.json())
        listed = yield self.ok("GET", "/apis/a/operations")
        self.assertEqual([o["id"] for o in listed["value"]], ["get-user"])
        for body, field in [({"method": "GE T", "urlTemplate": "/"}, "method"),
                            ({"method": "GET", "urlTemplate": "users"}, "urlTemplate"),
                            ({"method": "GET", "urlTemplate": "/a{b}"}, "urlTemplate"),
                            ({"method": "GET"}, "urlTemplate")]:
            response = yield self.manage("PUT", "/apis/a/operations/bad", body)
            self.assertEqual((response.status, response.json().get("field")), (400, field))
        response = yield self.manage("PUT", "/apis/nope/operations/x",
                                     {"method": "GET", "urlTemplate": "/"})
        self.assertEqual(response.status, 404)
        yield self.ok("DELETE", "/apis/a/operations/get-user")
        response = yield self.manage("GET", "/apis/a/operations/get-user")
        self.assertEqual(response.status, 404)

    @inlineCallbacks
    def test_api_put_keeps_operations(self) -> Any:
        """Replacing an API keeps its operations (they are sub-resources)."""
        yield self.api("a")
        yield self.ok("PUT", "/apis/a/operations/o", {"method": "GET", "urlTemplate": "/"})
        yield self.api("a", displayName="again")
        listed = yield self.ok("GET", "/apis/a/operations")
        self.assertEqual([o["id"] for o in listed["value"]], ["o"])

    @inlineCallbacks
    def test_revisions_strictly_increase(self) -> Any:
        """Each write returns a revision greater than the one before, across entity kinds."""
        revisions = []
        for path, body in [("/apis/a", {"path": "a", "serviceUrl": "http://x"}),
                           ("/apis/a/operations/o", {"method": "GET", "urlTemplate": "/"}),
                           ("/products/p", {}), ("/namedValues/n", {"value": "v"}),
                           ("/apis/a", {"path": "a", "serviceUrl": "http://y"}),
                           ("/gateways/g", {}), ("/gateways/g/apis/a", None)]:
            written = yield self.ok("PUT", path, body)
            revisions.append(written["revision"])
        self.assertEqual(revisions, sorted(set(revisions)))
        status = yield self.ok("GET", "/")
        self.assertGreaterEqual(status["revision"], revisions[-1])


class PolicyTests(ServiceTestCase):
    @inlineCallbacks
    def test_every_scope(self) -> Any:
        """Policies are stored and read back at global, API, operation and product scope."""
        yield self.api("a")
        yield self.ok("PUT", "/apis/a/operations/o", {"method": "GET", "urlTemplate": "/"})
        yield self.ok("PUT", "/products/p", {})
        scopes = {"/policy": "global", "/apis/a/policy": "api",
                  "/apis/a/operations/o/policy": "operation", "/products/p/policy": "product"}
        for path, scope in scopes.items():
            written = yield self.manage("PUT", path, {"format": "xml", "value": POLICY})
            self.assertEqual(written.status, 201, written.body)
            self.assertEqual((written.json()["scope"], written.json()["value"]), (scope, POLICY))
            read = yield self.ok("GET", path)
            self.assertEqual(read, written.json())
        listed = yield self.ok("GET", "/policies")
        self.assertEqual(len(listed["value"]), 4)
        yield self.ok("DELETE", "/apis/a/operations/o/policy")
        response = yield self.manage("GET", "/apis/a/operations/o/policy")
        self.assertEqual(response.status, 404)

    @inlineCallbacks
    def test_validation(self) -> Any:
        """A policy must be well-formed XML with a <policies> root, in format xml (400 naming value/format)."""
        for body, field in [({"value": "<policies>"}, "value"),
                            ({"value": "<inbound/>"}, "value"),
                            ({"format": "json", "value": POLICY}, "format"),
                            ({}, "value")]:
            response = yield self.manage("PUT", "/policy", body)
            self.assertEqual((response.status, response.json().get("field")), (400, field))

    @inlineCallbacks
    def test_unknown_owner(self) -> Any:
        """A policy of an unknown API, operation or product is 404."""
        yield self.api("a")
        for path in ("/apis/x/policy", "/apis/a/operations/x/policy", "/products/x/policy"):
            response = yield self.manage("PUT", path, {"value": POLICY})
            self.assertEqual(response.status, 404, path)

    @inlineCallbacks
    def test_deleted_with_owner(self) -> Any:
        """Deleting an API deletes its API and operation policies."""
        yield self.api("a")
        yield self.ok("PUT", "/apis/a/operations/o", {"method": "GET", "urlTemplate": "/"})
        yield self.ok("PUT", "/apis/a/policy", {"value": POLICY})
        yield self.ok("PUT", "/apis/a/operations/o/policy", {"value": POLICY})
        yield self.ok("DELETE", "/apis/a")
        listed = yield self.ok("GET", "/policies")
        self.assertEqual(listed["value"], [])


class ProductTests(ServiceTestCase):
    @inlineCallbacks
    def test_crud_and_apis(self) -> Any:
        """A product is created, gets APIs added and removed, and is deleted."""
        yield self.api("a")
        yield self.api("b")
        created = yield self.manage("PUT", "/products/starter",
                                    {"displayName": "Starter", "subscriptionRequired": False})
        self.assertEqual(created.status, 201)
        self.assertEqual((created.json()["apis"], created.json()["state"]), ([], "published"))
        yield self.ok("PUT", "/products/starter/apis/b")
        product = yield self.ok("PUT", "/products/starter/apis/a")
        self.assertEqual(product["apis"], ["a", "b"])
        listed = yield self.ok("GET", "/products/starter/apis")
        self.assertEqual([a["id"] for a in listed["value"]], ["a", "b"])
        yield self.ok("DELETE", "/products/starter/apis/b")
        product = yield self.ok("GET", "/products/starter")
        self.assertEqual((product["apis"], product["subscriptionRequired"]), (["a"], False))
        response = yield self.manage("DELETE", "/products/starter/apis/b")
        self.assertEqual(response.status, 404)
        response = yield self.manage("PUT", "/products/starter/apis/nope")
        self.assertEqual(response.status, 404)
        yield self.ok("DELETE", "/apis/a")
        product = yield self.ok("GET", "/products/starter")
        self.assertEqual(product["apis"], [])
        yield self.ok("DELETE", "/products/starter")
        response = yield self.manage("GET", "/products/starter")
        self.assertEqual(response.status, 404)

    @inlineCallbacks
    def test_validation(self) -> Any:
        """Product fields are validated (400 naming subscriptionRequired / state)."""
        for body, field in [({"subscriptionRequired": 1}, "subscriptionRequired"),
                            ({"state": "draft"}, "state")]:
            response = yield self.manage("PUT", "/products/p", body)
            self.assertEqual((response.status, response.json().get("field")), (400, field))


class SubscriptionTests(ServiceTestCase):
    @inlineCallbacks
    def test_crud(self) -> Any:
        """A subscription is created with generated keys, keeps them on update, and is deleted."""
        yield self.api("a")
        created = yield self.manage("PUT", "/subscriptions/s1", {"scope": "/apis/a"})
        self.assertEqual(created.status, 201)
        sub = created.json()
        self.assertEqual((sub["scope"], sub["state"]), ("/apis/a", "active"))
        self.assertEqual(len(sub["primaryKey"]), 32)
        self.assertNotEqual(sub["primaryKey"], sub["secondaryKey"])
        updated = yield self.ok("PUT", "/subscriptions/s1", {"scope": "/apis", "state": "suspended"})
        self.assertEqual((updated["primaryKey"], updated["state"]), (sub["primaryKey"], "suspended"))
        explicit = yield self.ok("PUT", "/subscriptions/s2",
                                 {"scope": "/apis", "primaryKey": "k-primary-1",
                                  "secondaryKey": "k-secondary-1"})
        self.assertEqual(explicit["primaryKey"], "k-primary-1")
        listed = yield self.ok("GET", "/subscriptions")
        self.assertEqual([s["id"] for s in listed["value"]], ["s1", "s2"])
        yield self.ok("DELETE", "/subscriptions/s1")
        response = yield self.manage("GET", "/subscriptions/s1")
        self.assertEqual(response.status, 404)

    @inlineCallbacks
    def test_validation_and_conflicts(self) -> Any:
        """Bad scopes and states are 400 naming the field; a reused key is 409."""
        yield self.ok("PUT", "/subscriptions/s1", {"scope": "/apis", "primaryKey": "same-key-1"})
        for body, field, status in [
            ({"scope": "/everything"}, "scope", 400),
            ({"scope": "x/apis/a"}, "scope", 400),
            ({"scope": "/apis/missing"}, "scope", 400),
            ({"scope": "/apis", "state": "paused"}, "state", 400),
            ({"scope": "/apis", "primaryKey": "short"}, "primaryKey", 400),
            ({"scope": "/apis", "secondaryKey": "same-key-1"}, "secondaryKey", 409),
        ]:
            response = yield self.manage("PUT", "/subscriptions/s2", body)
            self.assertEqual((response.status, response.json().get("field")), (status, field))

    @inlineCallbacks
    def test_referenced_api_and_product_cannot_go(self) -> Any:
        """Deleting an API or product a subscription is scoped to is 409, naming the subscription."""
        yield self.api("a")
        yield self.ok("PUT", "/products/p", {})
        yield self.ok("PUT", "/subscriptions/sa", {"scope": "/apis/a"})
        yield self.ok("PUT", "/subscriptions/sp", {"scope": "/products/p"})
        for path, name in (("/apis/a", "sa"), ("/products/p", "sp")):
            response = yield self.manage("DELETE", path)
            self.assertEqual(response.status, 409)
            self.assertIn(name, response.json()["message"])


class NamedValueTests(ServiceTestCase):
    @inlineCallbacks
    def test_crud_and_secret(self) -> Any:
        """Named values are stored; a secret one is never returned by the management API."""
        plain = yield self.ok("PUT", "/namedValues/region", {"value": "eu", "tags": ["b", "a"]})
        self.assertEqual((plain["value"], plain["secret"], plain["tags"]), ("eu", False, ["a", "b"]))
        secret = yield self.ok("PUT", "/namedValues/password", {"value": "hunter2", "secret": True})
        self.assertNotIn("value", secret)
        fetched = yield self.ok("GET", "/namedValues/password")
        self.assertNotIn("value", fetched)
        listed = yield self.manage("GET", "/namedValues")
        self.assertNotIn(b"hunter2", listed.body)
        response = yield self.manage("PUT", "/namedValues/x", {"value": 3})
        self.assertEqual((response.status, response.json()["field"]), (400, "value"))
        yield self.ok("DELETE", "/namedValues/region")
        response = yield self.manage("DELETE", "/namedValues/region")
        self.assertEqual(response.status, 404)


class CertificateTests(ServiceTestCase):
    @inlineCallbacks
    def test_get_never_returns_the_key(self) -> Any:
        """A certificate is stored from PEM with its key; no management answer contains the key."""
        cert, key = self_signed("www.example.com")
        created = yield self.manage("PUT", "/certificates/www", {"pem": cert + key})
        self.assertEqual(created.status, 201, created.body)
        for response in (created, (yield self.manage("GET", "/certificates/www")),
                         (yield self.manage("GET", "/certificates"))):
            self.assertNotIn(b"PRIVATE KEY", response.body)
        answer = created.json()
        self.assertEqual(answer["subject"], "CN=www.example.com")
        self.assertTrue(answer["hasPrivateKey"])
        self.assertIn("BEGIN CERTIFICATE", answer["pem"])
        self.assertEqual(len(answer["thumbprint"]), 40)

    @inlineCallbacks
    def test_key_in_its_own_field(self) -> Any:
        """The key may be given in ``key`` instead of inside ``pem``."""
        cert, key = self_signed()
        response = yield self.manage("PUT", "/certificates/c", {"pem": cert, "key": key})
        self.assertEqual(response.status, 201, response.body)

    @inlineCallbacks
    def test_validation(self) -> Any:
        """No certificate, no key, or a key of another certificate is 400 naming pem or key."""
        cert, key = self_signed()
        _, other_key = self_signed()
        for body, field in [({"pem": "nothing"}, "pem"), ({"pem": cert}, "pem"),
                            ({"pem": cert + other_key}, "pem"),
                            ({"pem": cert, "key": "junk"}, "key")]:
            response = yield self.manage("PUT", "/certificates/c", body)
            self.assertEqual((response.status, response.json().get("field")), (400, field))

    @inlineCallbacks
    def test_in_use_by_hostname(self) -> Any:
        """A certificate named by a gateway host name cannot be deleted (409), and can once that goes."""
        cert, key = self_signed()
        yield self.ok("PUT", "/certificates/c", {"pem": cert + key})
        yield self.ok("PUT", "/gateways/g", {})
        yield self.ok("PUT", "/gateways/g/hostnames/www.example.com", {"certificateId": "c"})
        response = yield self.manage("DELETE", "/certificates/c")
        self.assertEqual(response.status, 409)
        self.assertIn("g/www.example.com", response.json()["message"])
        yield self.ok("DELETE", "/gateways/g/hostnames/www.example.com")
        yield self.ok("DELETE", "/certificates/c")


class GatewayTests(ServiceTestCase):
    @inlineCallbacks
    def test_crud(self) -> Any:
        """A gateway is created, read, listed, updated and deleted; its answers hold no key."""
        created = yield self.manage("PUT", "/gateways/edge",
                                    {"description": "Edge", "locationData": {"name": "Berlin"}})
        self.assertEqual(created.status, 201)
        self.assertEqual(created.json()["locationData"], {"name": "Berlin"})
        self.assertNotIn(b"Key", created.body)
        listed = yield self.ok("GET", "/gateways")
        self.assertEqual([g["id"] for g in listed["value"]], ["edge"])
        response = yield self.manage("PUT", "/gateways/edge", {"locationData": {"planet": "x"}})
        self.assertEqual((response.status, response.json()["field"]), (400, "locationData.planet"))
        yield self.ok("DELETE", "/gateways/edge")
        response = yield self.manage("GET", "/gateways/edge")
        self.assertEqual(response.status, 404)

    @inlineCallbacks
    def test_api_assignment(self) -> Any:
        """APIs are assigned to a gateway and unassigned; unknown ids are 404."""
        yield self.api("a")
        yield self.api("b")
        yield self.ok("PUT", "/gateways/g", {})
        assigned = yield self.manage("PUT", "/gateways/g/apis/a")
        self.assertEqual(assigned.status, 201)
        self.assertEqual((assigned.json()["gatewayId"], assigned.json()["apiId"]), ("g", "a"))
        listed = yield self.ok("GET", "/gateways/g/apis")
        self.assertEqual([a["id"] for a in listed["value"]], ["a"])
        for path in ("/gateways/x/apis/a", "/gateways/g/apis/x"):
            response = yield self.manage("PUT", path)
            self.assertEqual(response.status, 404, path)
        response = yield self.manage("DELETE", "/gateways/g/apis/b")
        self.assertEqual(response.status, 404)
        yield self.ok("DELETE", "/gateways/g/apis/a")
        listed = yield self.ok("GET", "/gateways/g/apis")
        self.assertEqual(listed["value"], [])

    @inlineCallbacks
    def test_hostnames(self) -> Any:
        """Gateway host names name a certificate; unknown certificates are 400, bad names 400."""
        cert, key = self_signed()
        yield self.ok("PUT", "/certificates/c", {"pem": cert + key})
        yield self.ok("PUT", "/gateways/g", {})
        created = yield self.manage("PUT", "/gateways/g/hostnames/WWW.Example.com",
                                    {"certificateId": "c"})
        self.assertEqual(created.status, 201)
        self.assertEqual((created.json()["hostname"], created.json()["certificateId"]),
                         ("www.example.com", "c"))
        listed = yield self.ok("GET", "/gateways/g/hostnames")
        self.assertEqual([h["hostname"] for h in listed["value"]], ["www.example.com"])
        response = yield self.manage("PUT", "/gateways/g/hostnames/a.example.com",
                                     {"certificateId": "nope"})
        self.assertEqual((response.status, response.json()["field"]), (400, "certificateId"))
        response = yield self.manage("PUT", "/gateways/g/hostnames/bad_name!", {"certificateId": "c"})
        self.assertEqual((response.status, response.json()["field"]), (400, "hostname"))
        yield self.ok("DELETE", "/gateways/g/hostnames/www.example.com")
        response = yield self.manage("GET", "/gateways/g/hostnames/www.example.com")
        self.assertEqual(response.status, 404)

    @inlineCallbacks
    def test_instances_of_unknown_gateway(self) -> Any:
        """Listing the instances of an unknown gateway is 404."""
        response = yield self.manage("GET", "/gateways/nope/instances")
        self.assertEqual(response.status, 404)
