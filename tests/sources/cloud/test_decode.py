"""Tests of the pure cloud decoder and of the mirror of raw entities."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from cloudproto import DEFAULT_KEY_NAMES
from gateway.model import ObjectRef, Problem, SubscriptionKeyNames
from gateway.sources.cloud._decode import Decoder, parse_modified
from gateway.sources.cloud._mirror import Mirror

MODIFIED = "2025-01-02T03:04:05.000000Z"


def _api(**fields: object) -> dict[str, object]:
    return {"id": "x", "path": "x", "serviceUrl": "http://b", "modified": MODIFIED, **fields}


class DecoderTests(TestCase):
    """Entities → objects and problems."""

    def test_api(self) -> None:
        """An API becomes an Api object with its operations and its own modification time."""
        decoded = Decoder("cloud").decode({"apis": {"x": _api(operations=[
            {"id": "get", "method": "GET", "urlTemplate": "/r"}])}})
        (obj,) = decoded.objects.values()
        self.assertEqual(obj.ref, ObjectRef("cloud", "api", "x"))
        self.assertEqual(obj.body.operations[0].url_template, "/r")
        self.assertEqual(obj.modified, parse_modified(MODIFIED))
        self.assertEqual(decoded.problems, {})

    def test_malformedApiIsAProblem(self) -> None:
        """
        An API lacking a field or with one of the wrong type is no object
        but a problem naming the field; the other APIs decode.
        """
        decoded = Decoder("cloud").decode({"apis": {
            "good": _api(id="good"),
            "nourl": {"id": "nourl", "path": "n"},
            "badops": _api(id="badops", operations="GET /"),
            "badhost": _api(id="badhost", hostnames=[3]),
        }})
        self.assertEqual([r.name for r in decoded.objects], ["good"])
        messages = {ref.name: ps[0].message for ref, ps in decoded.problems.items()}
        self.assertIn("serviceUrl", messages["nourl"])
        self.assertIn("operations must be a list", messages["badops"])
        self.assertIn("hostnames[] must be a string", messages["badhost"])
        for ref, (problem,) in decoded.problems.items():
            self.assertIsInstance(problem, Problem)
            self.assertEqual(problem.ref, ref)

    def test_unchangedApiReused(self) -> None:
        """An API entity that did not change decodes to the very same object."""
        decoder = Decoder("cloud")
        entities = {"apis": {"x": _api()}}
        first = decoder.decode(entities).objects
        second = decoder.decode(entities).objects
        (ref,) = first
        self.assertIs(first[ref], second[ref])

    def test_certificateNamedByHostname(self) -> None:
        """A certificate becomes an object only when a host name names it."""
        entities = {
            "certificates": {"c": {"id": "c", "pem": "CERT", "key": "KEY"},
                             "unused": {"id": "unused", "pem": "P"}},
            "hostnames": {"h": {"id": "h", "hostname": "www.example.com", "certificateId": "c"}},
        }
        (obj,) = Decoder("cloud").decode(entities).objects.values()
        self.assertEqual(obj.body.hosts, ("www.example.com",))
        self.assertEqual(obj.body.key_pem, "KEY")

    def test_modifiedMalformed(self) -> None:
        """A missing or malformed modification time is 0 (it loses every conflict)."""
        self.assertEqual(parse_modified(None), 0.0)
        self.assertEqual(parse_modified("yesterday"), 0.0)
        self.assertEqual(parse_modified("2025-01-02T03:04:05"), 0.0)


class MirrorTests(TestCase):
    """Snapshots and events on the raw entities."""

    def test_snapshotThenEvents(self) -> None:
        """A snapshot replaces everything; events upsert and delete in order; unknown kinds are skipped."""
        mirror = Mirror()
        self.assertFalse(mirror.loaded)
        mirror.apply_snapshot({"revision": 3, "apis": [_api(), "junk", {"no": "id"}]}, "gw")
        self.assertEqual(list(mirror.entities["apis"]), ["x"])
        self.assertTrue(mirror.apply_event({"kind": "api", "id": "y", "operation": "upsert",
                                            "body": _api(id="y")}))
        self.assertTrue(mirror.apply_event({"kind": "api", "id": "x", "operation": "delete"}))
        self.assertFalse(mirror.apply_event({"kind": "gadget", "id": "z"}))
        self.assertEqual(mirror.snapshot()["apis"], [_api(id="y")])
        self.assertEqual((mirror.snapshot()["revision"], mirror.gateway_id), (3, "gw"))


def _delivered(kind: str, entity_id: str, body: dict[str, object],
               **extra: object) -> dict[str, object]:
    """
    An entity exactly as the configuration service delivers it to a
    gateway: its management validation, then its gateway view (plus
    ``extra`` fields the service keeps, such as a product's ``apis``).
    """
    from configservice._entities import gateway_view, validate

    return gateway_view(kind, entity_id, {**validate(kind, body), **extra}, 3, MODIFIED)


POLICY_XML = "<policies><inbound><base /></inbound></policies>"


class ManagementEntityTests(TestCase):
    """Products, subscriptions, named values and policies, as the service sends them."""

    def decode(self, **entities: dict[str, dict[str, object]]) -> object:
        """Decode ``entities`` (by snapshot list) with a fresh decoder."""
        return Decoder("cloud").decode(entities)

    def test_product(self) -> None:
        """A product keeps its APIs, subscriptionRequired, state and its own time."""
        from gateway.model import Product

        raw = _delivered("product", "starter", {"displayName": "Starter",
                                                "state": "notPublished"}, apis=["b", "a"])
        decoded = self.decode(products={"starter": raw})
        obj = decoded.objects[ObjectRef("cloud", "product", "starter")]
        self.assertEqual(obj.body, Product("starter", "Starter", ("a", "b"), True, "notPublished"))
        self.assertEqual(obj.modified, parse_modified(MODIFIED))

    def test_subscriptions(self) -> None:
        """Each scope form and state the service accepts decodes, with both keys."""
        from gateway.model import SubscriptionScope

        subscriptions = {
            "all": _delivered("subscription", "all", {"scope": "/apis", "primaryKey": "p" * 8,
                                                      "secondaryKey": "s" * 8}),
            "one": _delivered("subscription", "one", {"scope": "/apis/a", "state": "suspended",
                                                      "primaryKey": "q" * 8,
                                                      "secondaryKey": "t" * 8}),
            "prod": _delivered("subscription", "prod", {"scope": "/products/p",
                                                        "state": "cancelled",
                                                        "primaryKey": "r" * 8,
                                                        "secondaryKey": "u" * 8}),
        }
        decoded = self.decode(subscriptions=subscriptions)
        self.assertEqual(decoded.problems, {})
        bodies = {ref.name: obj.body for ref, obj in decoded.objects.items()}
        self.assertEqual(
            {n: (b.scope, b.state, b.keys) for n, b in bodies.items()},
            {"all": (SubscriptionScope("all"), "active", ("p" * 8, "s" * 8)),
             "one": (SubscriptionScope("api", "a"), "suspended", ("q" * 8, "t" * 8)),
             "prod": (SubscriptionScope("product", "p"), "cancelled", ("r" * 8, "u" * 8))},
        )

    def test_namedValues(self) -> None:
        """A named value keeps its value, secret flag and tags."""
        decoded = self.decode(namedValues={
            "pw": _delivered("namedValue", "pw", {"value": "hunter2", "secret": True,
                                                  "tags": ["b", "a"]}),
            "region": _delivered("namedValue", "region", {"value": ""}),
        })
        pw = decoded.objects[ObjectRef("cloud", "namedvalue", "pw")].body
        self.assertEqual((pw.value, pw.secret, pw.tags), ("hunter2", True, ("a", "b")))
        region = decoded.objects[ObjectRef("cloud", "namedvalue", "region")].body
        self.assertEqual((region.value, region.secret), ("", False))

    def test_policies(self) -> None:
        """A policy at each scope decodes under its entity id, with its document."""
        from gateway.model import PolicyScope

        scopes = {
            "global": {"scope": "global"},
            "products/p": {"scope": "product", "productId": "p"},
            "apis/a": {"scope": "api", "apiId": "a"},
            "apis/a/operations/o": {"scope": "operation", "apiId": "a", "operationId": "o"},
        }
        decoded = self.decode(policies={
            pid: _delivered("policy", pid, {"value": POLICY_XML}, **fields)
            for pid, fields in scopes.items()
        })
        self.assertEqual(decoded.problems, {})
        for pid in scopes:
            policy = decoded.objects[ObjectRef("cloud", "policy", pid)].body
            self.assertIsInstance(policy.scope, PolicyScope)
            self.assertEqual((policy.scope.id, policy.xml, policy.format),
                             (pid, POLICY_XML, "xml"))

    def test_subscriptionKeyParameterNames(self) -> None:
        """An API's key names default to APIM's; given ones (even one of them) are kept."""
        decoded = self.decode(apis={
            "plain": _api(id="plain"),
            "named": _api(id="named", subscriptionKeyParameterNames={"header": "X-Key"}),
        })
        names = {ref.name: obj.body.subscription_key_parameter_names
                 for ref, obj in decoded.objects.items()}
        self.assertEqual((names["plain"].header, names["plain"].query),
                         ("Ocp-Apim-Subscription-Key", "subscription-key"))
        self.assertEqual((names["named"].header, names["named"].query),
                         ("X-Key", "subscription-key"))

    def test_subscriptionKeyParameterNamesDelivered(self) -> None:
        """
        Key names as the service stores and delivers them (its own
        validation fills in the default of a part not given) reach the
        model; an API delivered without them keeps APIM's defaults.
        """
        custom = _delivered("api", "custom", {
            "path": "c", "serviceUrl": "http://b",
            "subscriptionKeyParameterNames": {"header": "X-Catalog-Key", "query": "catalog_key"}})
        half = _delivered("api", "half", {"path": "h", "serviceUrl": "http://b",
                                          "subscriptionKeyParameterNames": {"query": "k"}})
        older = _delivered("api", "older", {"path": "o", "serviceUrl": "http://b"})
        del older["subscriptionKeyParameterNames"]
        decoded = self.decode(apis={"custom": custom, "half": half, "older": older})
        self.assertEqual(decoded.problems, {})
        names = {ref.name: obj.body.subscription_key_parameter_names
                 for ref, obj in decoded.objects.items()}
        self.assertEqual(names["custom"], SubscriptionKeyNames("X-Catalog-Key", "catalog_key"))
        self.assertEqual(names["half"], SubscriptionKeyNames(query="k"))
        self.assertEqual(names["older"], SubscriptionKeyNames())

    def test_badSubscriptionKeyParameterNames(self) -> None:
        """
        Key names the service would refuse (a header that is not an HTTP
        token, a query name needing percent-encoding or splitting the
        query, an empty one, a non-object) keep that API out with a problem
        naming the API and the part; the other APIs decode.
        """
        bad = {
            "space": {"header": "X Key"},
            "colon": {"header": "X-Key:"},
            "latin": {"header": "X-Kéy"},
            "snowman": {"header": "\u2603"},
            "emptyheader": {"header": ""},
            "amp": {"query": "a&b"},
            "equals": {"query": "a=b"},
            "plus": {"query": "a+b"},
            "emptyquery": {"query": ""},
            "longquery": {"query": "k" * 101},
            "notobject": "X-Key",
        }
        apis = {api_id: _api(id=api_id, subscriptionKeyParameterNames=names)
                for api_id, names in bad.items()}
        apis["good"] = _api(id="good", subscriptionKeyParameterNames={"header": "X-Key"})
        decoded = self.decode(apis=apis)
        self.assertEqual([ref.name for ref in decoded.objects], ["good"])
        messages = {ref.name: ps[0].message for ref, ps in decoded.problems.items()}
        self.assertEqual(set(messages), set(bad))
        for message in messages.values():
            self.assertTrue(message.startswith("the cloud API is left out: "
                                               "subscriptionKeyParameterNames"), message)
        self.assertEqual(messages["space"], "the cloud API is left out: "
                         "subscriptionKeyParameterNames.header must be an HTTP header name "
                         "(letters, digits and !#$%&'*+.^_`|~-), not 'X Key'")
        self.assertIn("subscriptionKeyParameterNames.query must be letters, digits",
                      messages["amp"])
        self.assertIn("must not be empty", messages["emptyquery"])
        self.assertIn("must be an object, not str", messages["notobject"])
        self.assertIn("query must be at most 100 characters", messages["longquery"])

    def test_keyNameDefaultsAgree(self) -> None:
        """
        The model's default key names (what an API without them gets) are
        the wire protocol's, which the service stores for a part not given.
        """
        self.assertEqual(dict(DEFAULT_KEY_NAMES),
                         {"header": SubscriptionKeyNames().header,
                          "query": SubscriptionKeyNames().query})

    def test_malformed(self) -> None:
        """
        A malformed management entity is no object but one problem that
        names the entity (its ref) and the field; the good ones decode.
        """
        good_sub = {"scope": "/apis", "primaryKey": "k" * 8}
        decoded = self.decode(
            apis={"keys": _api(id="keys", subscriptionKeyParameterNames={"query": 3})},
            products={
                "good": {"id": "good", "apis": ["a"]},
                "apis": {"id": "apis", "apis": "a"},
                "req": {"id": "req", "subscriptionRequired": "false"},
                "state": {"id": "state", "state": "draft"},
            },
            subscriptions={
                "good": {"id": "good", **good_sub},
                "scope": {"id": "scope", **good_sub, "scope": "/users/u"},
                "nokey": {"id": "nokey", "scope": "/apis"},
                "state": {"id": "state", **good_sub, "state": "paused"},
                "key": {"id": "key", **good_sub, "secondaryKey": 5},
            },
            namedValues={
                "novalue": {"id": "novalue", "secret": True},
                "secret": {"id": "secret", "value": "v", "secret": "yes"},
            },
            policies={
                "global": {"id": "global", "scope": "global", "value": POLICY_XML},
                "apis/x": {"id": "apis/x", "scope": "api", "value": POLICY_XML},
                "apis/y": {"id": "apis/y", "scope": "api", "apiId": "z", "value": POLICY_XML},
                "apis/f": {"id": "apis/f", "scope": "api", "apiId": "f", "value": POLICY_XML,
                           "format": "xml-link"},
                "apis/v": {"id": "apis/v", "scope": "api", "apiId": "v"},
                "products/s": {"id": "products/s", "scope": "tenant", "value": POLICY_XML},
            },
        )
        self.assertEqual(sorted(str(r) for r in decoded.objects),
                         ["cloud:policy/global", "cloud:product/good",
                          "cloud:subscription/good"])
        messages = {str(ref): ps[0].message for ref, ps in decoded.problems.items()}
        expected = {
            "cloud:api/keys": "the cloud API is left out: subscriptionKeyParameterNames.query "
                              "must be a string, not int",
            "cloud:product/apis": "the cloud product is left out: apis must be a list, not str",
            "cloud:product/req": "the cloud product is left out: subscriptionRequired must be "
                                 "true or false, not str",
            "cloud:product/state": "the cloud product is left out: state must be one of "
                                   "published, notPublished, not 'draft'",
            "cloud:subscription/scope": "scope: a subscription's scope must be /apis",
            "cloud:subscription/nokey": "the cloud subscription is left out: it lacks primaryKey",
            "cloud:subscription/state": "state must be one of active, suspended",
            "cloud:subscription/key": "secondaryKey must be a string, not int",
            "cloud:namedvalue/novalue": "the cloud named value is left out: it lacks value",
            "cloud:namedvalue/secret": "secret must be true or false, not str",
            "cloud:policy/apis/x": "scope: a policy at api scope names api_id and no other",
            "cloud:policy/apis/y": "scope: 'apis/z' does not match the policy's id",
            "cloud:policy/apis/f": "format must be one of xml, rawxml, not 'xml-link'",
            "cloud:policy/apis/v": "the cloud policy is left out: it lacks value",
            "cloud:policy/products/s": "scope: a policy's scope must be one of global",
        }
        self.assertEqual(sorted(messages), sorted(expected))
        for ref, part in expected.items():
            self.assertIn(part, messages[ref])
        for ref, (problem,) in decoded.problems.items():
            self.assertEqual(problem.ref, ref)

    def test_changedEntityDecodedAgain(self) -> None:
        """
        An unchanged management entity decodes to the very same object; a
        replaced one is decoded again and a removed one disappears.
        """
        decoder = Decoder("cloud")
        first_raw = {"id": "p", "apis": ["a"]}
        first = decoder.decode({"products": {"p": first_raw}}).objects
        again = decoder.decode({"products": {"p": first_raw}}).objects
        (ref,) = first
        self.assertIs(first[ref], again[ref])
        changed = decoder.decode({"products": {"p": {"id": "p", "apis": ["b"]}}}).objects
        self.assertEqual(changed[ref].body.api_ids, ("b",))
        self.assertEqual(decoder.decode({"products": {}}).objects, {})

    def test_secretFieldsAsDelivered(self) -> None:
        """
        The fields the backup seals (cloudproto.secret_fields) are the ones
        the delivered entities actually carry: both subscription keys and a
        secret named value's value, and not a plain named value's.
        """
        from cloudproto import secret_fields

        subscription = _delivered("subscription", "s", {"scope": "/apis",
                                                        "primaryKey": "p" * 8,
                                                        "secondaryKey": "s" * 8})
        self.assertEqual(set(secret_fields("subscriptions", subscription)),
                         {"primaryKey", "secondaryKey"})
        secret = _delivered("namedValue", "n", {"value": "v", "secret": True})
        self.assertEqual(secret_fields("namedValues", secret), ("value",))
        plain = _delivered("namedValue", "n", {"value": "v"})
        self.assertEqual(secret_fields("namedValues", plain), ())
