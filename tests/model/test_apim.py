"""Tests of the API management model objects and the one table of object kinds."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from gateway.model import (
    OBJECT_KINDS,
    Api,
    Certificate,
    NamedValue,
    ObjectRef,
    Policy,
    PolicyScope,
    Product,
    RouteSet,
    Subscription,
    SubscriptionKeyNames,
    SubscriptionScope,
    kind_of,
)


class KindTests(SynchronousTestCase):
    """Every body type has one ref kind, named in one table."""

    def test_kinds(self) -> None:
        """The kinds are the documented names, one per body type, all distinct."""
        self.assertEqual(
            {t.__name__: k for t, k in OBJECT_KINDS.items()},
            {"Api": "api", "RouteSet": "routes", "Certificate": "certificate",
             "Product": "product", "Subscription": "subscription",
             "NamedValue": "namedvalue", "Policy": "policy", "GatewayRoutes": "gatewayroutes"},
        )
        self.assertEqual(len(set(OBJECT_KINDS.values())), len(OBJECT_KINDS))

    def test_kindOfBodyOrType(self) -> None:
        """kind_of takes a body or its type (for the ref of an undecodable entity)."""
        self.assertEqual(kind_of(Product("p")), "product")
        self.assertEqual(kind_of(Policy), "policy")
        self.assertEqual(kind_of(RouteSet(())), "routes")
        self.assertEqual(kind_of(Certificate((), "c", "k")), "certificate")
        self.assertRaises(KeyError, kind_of, ObjectRef)


class SubscriptionScopeTests(SynchronousTestCase):
    """APIM's scope paths, parsed into a small typed value and back."""

    def test_parse(self) -> None:
        """The three forms parse and print back the same; a trailing slash is ignored."""
        for text, kind, target in [("/apis", "all", ""), ("/apis/", "all", ""),
                                   ("/apis/orders", "api", "orders"),
                                   ("/products/starter", "product", "starter"),
                                   ("/products/apis", "product", "apis")]:
            scope = SubscriptionScope.parse(text)
            self.assertEqual((scope.kind, scope.target), (kind, target), text)
            self.assertEqual(str(scope), text.rstrip("/") or "/apis")

    def test_parseResourceId(self) -> None:
        """A full APIM resource id is read from what follows the service name."""
        base = "/subscriptions/s/resourceGroups/g/providers/Microsoft.ApiManagement/service/apis"
        self.assertEqual(SubscriptionScope.parse(base + "/apis"), SubscriptionScope("all"))
        self.assertEqual(SubscriptionScope.parse(base + "/products/p"),
                         SubscriptionScope("product", "p"))

    def test_parseRefuses(self) -> None:
        """Anything else is refused with a message giving the accepted forms."""
        for text in ("", "/", "apis/a/b", "/users/u", "/apis/a/operations/o", "/x/apis"):
            error = self.assertRaises(ValueError, SubscriptionScope.parse, text)
            self.assertIn("/apis, /apis/{apiId} or /products/{productId}", str(error))

    def test_targetRequired(self) -> None:
        """An API or product scope names its target; the all-APIs scope has none."""
        self.assertRaises(ValueError, SubscriptionScope, "api")
        self.assertRaises(ValueError, SubscriptionScope, "all", "x")
        self.assertRaises(ValueError, SubscriptionScope, "tenant", "x")

    def test_covers(self) -> None:
        """A key opens its API, the APIs of its product, or every API."""
        self.assertTrue(SubscriptionScope("all").covers("a"))
        self.assertTrue(SubscriptionScope("api", "a").covers("a"))
        self.assertFalse(SubscriptionScope("api", "a").covers("b", ("a",)))
        self.assertTrue(SubscriptionScope("product", "p").covers("a", ("q", "p")))
        self.assertFalse(SubscriptionScope("product", "p").covers("a", ("q",)))


class SubscriptionTests(SynchronousTestCase):
    """Subscriptions: states as APIM has them, keys never shown."""

    def test_keysHiddenFromRepr(self) -> None:
        """Neither key appears in repr; both are the subscription's keys."""
        sub = Subscription("s", SubscriptionScope("all"), "primary-secret", "secondary-secret")
        self.assertNotIn("secret", repr(sub))
        self.assertEqual(sub.keys, ("primary-secret", "secondary-secret"))
        self.assertEqual(Subscription("s", SubscriptionScope("all"), "k1").keys, ("k1",))

    def test_states(self) -> None:
        """Every APIM state is accepted; another one, or an empty key, is refused."""
        for state in ("active", "suspended", "submitted", "rejected", "cancelled", "expired"):
            Subscription("s", SubscriptionScope("all"), "k", state=state)
        self.assertRaises(ValueError, Subscription, "s", SubscriptionScope("all"), "k",
                          state="Active")
        self.assertRaises(ValueError, Subscription, "s", SubscriptionScope("all"), "")
        self.assertRaises(ValueError, Subscription, "s", SubscriptionScope("all"), "k", "")


class ProductTests(SynchronousTestCase):
    """Products: APIM's defaults and states."""

    def test_defaults(self) -> None:
        """A product requires a subscription and is published unless told otherwise."""
        product = Product("p")
        self.assertEqual((product.subscription_required, product.state), (True, "published"))

    def test_apiIdsAreASet(self) -> None:
        """API membership is a set: order and repetition do not make a different product."""
        self.assertEqual(Product("p", api_ids=("b", "a", "b")), Product("p", api_ids=("a", "b")))

    def test_state(self) -> None:
        """Only published and notPublished are states."""
        Product("p", state="notPublished")
        self.assertRaises(ValueError, Product, "p", state="draft")


class NamedValueTests(SynchronousTestCase):
    """Named values: a secret value never shows."""

    def test_secretHidden(self) -> None:
        """A secret value is not in repr; a plain one is."""
        self.assertNotIn("hunter2", repr(NamedValue("pw", "hunter2", secret=True)))
        self.assertIn("'region-1'", repr(NamedValue("region", "region-1")))


class PolicyTests(SynchronousTestCase):
    """Policy scopes and their ids."""

    def test_ids(self) -> None:
        """Each scope's id is the configuration service's policy entity id."""
        self.assertEqual(PolicyScope("global").id, "global")
        self.assertEqual(PolicyScope("product", product_id="p").id, "products/p")
        self.assertEqual(PolicyScope("api", api_id="a").id, "apis/a")
        self.assertEqual(PolicyScope("operation", api_id="a", operation_id="o").id,
                         "apis/a/operations/o")

    def test_targets(self) -> None:
        """A scope takes exactly the target ids it needs."""
        for kwargs in ({"scope": "global", "api_id": "a"}, {"scope": "product"},
                       {"scope": "api", "product_id": "p"},
                       {"scope": "operation", "api_id": "a"},
                       {"scope": "api", "api_id": "a", "operation_id": "o"},
                       {"scope": "tenant"}):
            self.assertRaises(ValueError, PolicyScope, **kwargs)

    def test_format(self) -> None:
        """xml and rawxml are inline formats; a link format is refused."""
        Policy(PolicyScope("global"), "<policies/>", "rawxml")
        self.assertRaises(ValueError, Policy, PolicyScope("global"), "<policies/>", "xml-link")


class ApiKeyNamesTests(SynchronousTestCase):
    """An API's subscription key parameter names."""

    def test_defaults(self) -> None:
        """Without names given, an API uses APIM's header and query names."""
        names = Api("a", "a", "http://b").subscription_key_parameter_names
        self.assertEqual((names.header, names.query),
                         ("Ocp-Apim-Subscription-Key", "subscription-key"))
        self.assertRaises(ValueError, SubscriptionKeyNames, header="")
