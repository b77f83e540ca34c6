"""
The subscription key rules of :meth:`gateway.translate.SubscriptionIndex.check`,
row by row (APIM's "How API Management handles requests with or without
subscription keys"; the module docstring of
``gateway/translate/_subscriptions.py`` cites each rule).
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from gateway.model import ObjectRef, Product, SourceObject, Subscription, SubscriptionScope
from gateway.translate import INVALID_KEY, MISSING_KEY, Access, ApiAccess, Denial
from gateway.translate._subscriptions import build_index

_PRODUCTS = {
    "gold": Product("gold", api_ids=("orders",)),
    "free": Product("free", api_ids=("status",), subscription_required=False),
}


def _sub(name: str, scope: str, key: str, state: str = "active",
         secondary: str | None = None) -> SourceObject:
    body = Subscription(name, SubscriptionScope.parse(scope), key, secondary, state=state)
    return SourceObject(ObjectRef("cloud", "subscription", name), 1.0, body)


def _index(*subs: SourceObject) -> tuple[object, list[object]]:
    problems: list[object] = []
    return build_index(subs, _PRODUCTS, frozenset({"orders", "status", "other"}), problems), problems  # type: ignore[arg-type]


ORDERS = ApiAccess("orders", subscription_required=True, products=("gold",))
OPEN = ApiAccess("status", subscription_required=True, products=("free",), open_product="free")
ANONYMOUS = ApiAccess("other", subscription_required=False)

MISSING = Denial(401, MISSING_KEY)
INVALID = Denial(401, INVALID_KEY)


class CheckTests(SynchronousTestCase):
    """Each row of the rules table."""

    def setUp(self) -> None:
        self.index, self.problems = _index(
            _sub("all", "/apis", "k-all"),
            _sub("api", "/apis/orders", "k-api", secondary="k-api-2"),
            _sub("gold", "/products/gold", "k-gold"),
            _sub("suspended", "/apis", "k-suspended", state="suspended"),
            _sub("cancelled", "/products/gold", "k-cancelled", state="cancelled"),
            _sub("expired", "/apis/orders", "k-expired", state="expired"),
            _sub("elsewhere", "/apis/other", "k-elsewhere"),
        )

    def check(self, access: ApiAccess, key: str | None) -> object:
        return self.index.check(access, key)  # type: ignore[attr-defined]

    def test_no_key_required(self) -> None:
        """No key to an API that requires one and is in no open product: 401 missing."""
        self.assertEqual(self.check(ORDERS, None), MISSING)

    def test_no_key_not_required(self) -> None:
        """No key to an API that does not require one: admitted, no product."""
        self.assertEqual(self.check(ANONYMOUS, None), Access(None, None))

    def test_no_key_open_product(self) -> None:
        """No key to an API in an open product: admitted in that product's context."""
        self.assertEqual(self.check(OPEN, None), Access(None, "free"))

    def test_all_apis_key(self) -> None:
        """An all-APIs key opens every API, without a product context."""
        self.assertEqual(self.check(ORDERS, "k-all"), Access("all", None))
        self.assertEqual(self.check(ANONYMOUS, "k-all"), Access("all", None))

    def test_api_key_primary_and_secondary(self) -> None:
        """An API-scoped subscription's primary and secondary keys open its API, no product."""
        self.assertEqual(self.check(ORDERS, "k-api"), Access("api", None))
        self.assertEqual(self.check(ORDERS, "k-api-2"), Access("api", None))

    def test_product_key(self) -> None:
        """A product-scoped key opens the product's APIs in the product's context."""
        self.assertEqual(self.check(ORDERS, "k-gold"), Access("gold", "gold"))

    def test_key_for_another_api(self) -> None:
        """A valid key scoped elsewhere is 401 invalid."""
        self.assertEqual(self.check(ORDERS, "k-elsewhere"), INVALID)
        self.assertEqual(self.check(ANONYMOUS, "k-gold"), INVALID)

    def test_unknown_key(self) -> None:
        """An unknown key is 401 invalid, even where no key is required."""
        self.assertEqual(self.check(ORDERS, "nope"), INVALID)
        self.assertEqual(self.check(ANONYMOUS, "nope"), INVALID)

    def test_unknown_key_with_open_product_is_ignored(self) -> None:
        """With an open product, a key that opens nothing is ignored (open product context)."""
        self.assertEqual(self.check(OPEN, "nope"), Access(None, "free"))

    def test_inactive_states(self) -> None:
        """Suspended, cancelled and expired subscriptions' keys are 401 invalid."""
        for key in ("k-suspended", "k-cancelled", "k-expired"):
            self.assertEqual(self.check(ORDERS, key), INVALID, key)

    def test_no_problems(self) -> None:
        """Distinct keys with existing targets report nothing."""
        self.assertEqual(self.problems, [])


class IndexTests(SynchronousTestCase):
    """Building the index."""

    def test_duplicate_key_admitted_for_neither(self) -> None:
        """A key of two subscriptions opens nothing and is a problem on both, without the key."""
        index, problems = _index(_sub("a", "/apis", "same"), _sub("b", "/apis/orders", "x", secondary="same"))
        self.assertEqual(index.check(ORDERS, "same"), INVALID)  # type: ignore[attr-defined]
        self.assertEqual(index.check(ORDERS, "x"), Access("b", None))  # type: ignore[attr-defined]
        self.assertEqual(sorted(str(p.ref) for p in problems), [  # type: ignore[attr-defined]
            "cloud:subscription/a", "cloud:subscription/b"])
        self.assertFalse(any("same" in p.message for p in problems))  # type: ignore[attr-defined]

    def test_missing_targets(self) -> None:
        """A scope naming a missing API or product is a problem; its keys open nothing."""
        index, problems = _index(_sub("p", "/products/none", "kp"), _sub("a", "/apis/none", "ka"))
        self.assertEqual(len(problems), 2)
        self.assertEqual(index.check(ORDERS, "kp"), INVALID)  # type: ignore[attr-defined]

    def test_repr_has_no_key(self) -> None:
        """Neither the index nor its entries show a key."""
        index, _ = _index(_sub("a", "/apis", "very-secret-key"))
        self.assertNotIn("very-secret-key", repr(index))
