"""
Golden-file tests of the whole translation, :func:`gateway.translate.translate`.

One test method per ``testdata/translate/<case>.in.yaml``, generated on the
class (trial does not report ``subTest`` cases separately): the case's
source objects are translated and the canonical YAML of the resulting
:class:`~gateway.translate.GatewayConfig` is compared with
``<case>.out.yaml``. This is the style of Envoy Gateway's
``internal/gatewayapi/translator_test.go``: the merge, precedence,
shadowing, certificate and problem rules are shown by example, in files a
reviewer reads, and a change of behaviour shows up as a diff of them.

Set ``APIMGW_REGENERATE_GOLDEN=1`` to rewrite the ``.out.yaml`` files, then
review the diff: a golden file is a claim about behaviour, not a snapshot
to accept blindly. ``testdata/translate/README.md`` describes the input
format.

Certificates are generated at test time by
:mod:`gateway.testing.certs` from a description in the case (committed PEM
files would expire and rot). Their keys, serial numbers and so their
fingerprints change on every run, so the output names a certificate by
the ``id`` it was built under instead of its fingerprint (also inside
problem messages); everything else shown about it (subject, names,
validity, hosts) is fixed by the case and so is stable.
"""

from __future__ import annotations

import random
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml
from twisted.trial.unittest import SynchronousTestCase

from gateway.model import (
    Api,
    Body,
    Certificate,
    NamedValue,
    ObjectRef,
    Operation,
    Policy,
    PolicyScope,
    Problem,
    Product,
    Route,
    RouteSet,
    SourceObject,
    Subscription,
    SubscriptionScope,
)
from gateway.testing.certs import IssuedCertificate, private_key_pem, self_signed
from gateway.translate import Backend, GatewayConfig, describe_pipeline, translate
from gateway.translate.policy import Pipeline
from tests import golden

TESTDATA = Path(__file__).parent / "testdata" / "translate"

#: Set to a non-empty value to rewrite the ``.out.yaml`` files.

#: Validity of a built certificate unless its case says otherwise: fixed
#: dates, so the output is the same on every run (translation never reads
#: the clock; only a case's ``now`` checks expiry).
DEFAULT_NOT_BEFORE = "2025-01-01T00:00:00Z"
DEFAULT_NOT_AFTER = "2035-01-01T00:00:00Z"

#: Fields whose float value is a time, shown as ISO 8601 UTC.
_TIME_FIELDS = frozenset({"modified", "not_before", "not_after"})


# --- input ---------------------------------------------------------------


@dataclass
class GoldenCase:
    """
    One case, loaded: what :func:`translate` is given.

    :ivar objects: the source objects, in the order the file lists them.
    :ivar problems: the decoders' problems, passed through ``problems=``.
    :ivar now: the time certificates are checked against (``None``: no
        expiry check).
    :ivar previous: objects translated first; their result is passed as
        ``previous=``. ``None``: no previous configuration.
    :ivar previous_now: the ``now`` of that earlier translation (the
        configuration being served was built a while ago: a certificate
        valid then may have expired by ``now``).
    :ivar built: the certificates built for the case, by ``id``; the output
        shows a certificate's ``id`` instead of its (per-run) fingerprint.
    """

    objects: tuple[SourceObject, ...]
    problems: tuple[Problem, ...] = ()
    now: float | None = None
    previous: tuple[SourceObject, ...] | None = None
    previous_now: float | None = None
    built: dict[str, IssuedCertificate] = field(default_factory=dict)

    def translate(self, objects: tuple[SourceObject, ...] | None = None) -> GatewayConfig:
        """
        Translate the case (``objects`` in place of the case's own, for
        the order-independence checks).
        """
        previous = None
        if self.previous is not None:
            previous = translate(self.previous, now=self.previous_now)
        return translate(
            self.objects if objects is None else objects,
            problems=self.problems,
            now=self.now,
            previous=previous,
        )


def parse_ref(text: str) -> ObjectRef:
    """
    ``source:kind/name`` (what ``str(ObjectRef)`` gives) back into a ref;
    the name may itself hold ``/`` (``ingress:routes/default/web``).
    """
    source, colon, rest = text.partition(":")
    kind, slash, name = rest.partition("/")
    if not (source and colon and kind and slash and name):
        raise ValueError(f"{text!r} is not a ref like source:kind/name")
    return ObjectRef(source, kind, name)


def parse_time(value: object) -> float:
    """
    Seconds since the epoch from a number, an ISO 8601 string, or the
    ``datetime`` YAML makes of an unquoted timestamp (naive means UTC).
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a time")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.timestamp()
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=timezone.utc).timestamp()
    raise ValueError(f"{value!r} is not a time")


class _CertificateBuilder:
    """
    Builds the certificates a case describes, once per ``id``: the same
    ``id`` in ``previous`` and in ``objects`` is the very same certificate.
    """

    _OPTIONAL = {"sans", "commonName", "notBefore", "notAfter", "key"}

    def __init__(self) -> None:
        self.built: dict[str, IssuedCertificate] = {}
        self._specs: dict[str, dict[str, Any]] = {}

    def build(self, spec: Mapping[str, Any], where: str) -> IssuedCertificate:
        golden.keys(spec, where, {"id"}, self._OPTIONAL)
        ident = str(spec["id"])
        rest = {k: v for k, v in spec.items() if k != "id"}
        if ident in self.built:
            if rest and rest != self._specs[ident]:
                raise ValueError(f"{where}: certificate {ident!r} was built differently before")
            return self.built[ident]
        sans = tuple(spec.get("sans", ()))
        issued = self_signed(
            *sans,
            common_name=spec.get("commonName"),
            not_before=parse_time(spec.get("notBefore", DEFAULT_NOT_BEFORE)),
            not_after=parse_time(spec.get("notAfter", DEFAULT_NOT_AFTER)),
        )
        key = spec.get("key", "own")
        if key == "other":
            # A key that belongs to no certificate: "the key does not match".
            issued = IssuedCertificate(
                issued.cert_pem, issued.chain_pem, private_key_pem(), issued.certificate
            )
        elif key != "own":
            raise ValueError(f"{where}: key must be 'own' or 'other', not {key!r}")
        self.built[ident] = issued
        self._specs[ident] = rest
        return issued


def _api(doc: Mapping[str, Any], ref: ObjectRef, where: str) -> Api:
    golden.keys(doc, where, {"path", "serviceUrl"},
          {"name", "hostnames", "subscriptionRequired", "operations", "displayName", "protocols"})
    operations = []
    for index, op in enumerate(doc.get("operations", ())):
        golden.keys(op, f"{where} operation {index}", {"method", "urlTemplate"}, {"name"})
        operations.append(
            Operation(str(op.get("name", f"op{index}")), str(op["method"]), str(op["urlTemplate"]))
        )
    extra: dict[str, Any] = {}
    if "protocols" in doc:
        extra["protocols"] = tuple(doc["protocols"])
    return Api(
        name=str(doc.get("name", ref.name)),
        path=str(doc["path"]),
        service_url=str(doc["serviceUrl"]),
        hostnames=tuple(doc.get("hostnames", ())),
        subscription_required=bool(doc.get("subscriptionRequired", False)),
        operations=tuple(operations),
        display_name=str(doc.get("displayName", "")),
        **extra,
    )


def _routes(items: list[Mapping[str, Any]], where: str) -> RouteSet:
    routes = []
    for index, doc in enumerate(items):
        golden.keys(doc, f"{where} route {index}", {"path", "backend"},
              {"host", "pathType", "preserveHost", "httpsRedirect", "endpoints"})
        endpoints = doc.get("endpoints")
        routes.append(
            Route(
                path=str(doc["path"]),
                backend=str(doc["backend"]),
                host=doc.get("host"),
                path_type=str(doc.get("pathType", "Prefix")),
                preserve_host=bool(doc.get("preserveHost", False)),
                https_redirect=bool(doc.get("httpsRedirect", False)),
                endpoints=None if endpoints is None else tuple(endpoints),
            )
        )
    return RouteSet(tuple(routes))


def _certificate(doc: Mapping[str, Any], builder: _CertificateBuilder, where: str) -> Certificate:
    golden.keys(doc, where, set(), {"hosts", "default", "build", "certPem", "keyPem"})
    if "build" in doc:
        if "certPem" in doc or "keyPem" in doc:
            raise ValueError(f"{where}: give build or certPem/keyPem, not both")
        issued = builder.build(doc["build"], f"{where} build")
        cert_pem, key_pem = issued.chain_pem, issued.key_pem
    else:
        cert_pem, key_pem = str(doc.get("certPem", "")), str(doc.get("keyPem", ""))
    return Certificate(
        hosts=tuple(doc.get("hosts", ())),
        cert_pem=cert_pem,
        key_pem=key_pem,
        is_default=bool(doc.get("default", False)),
    )


def _product(doc: Mapping[str, Any], ref: ObjectRef, where: str) -> Product:
    golden.keys(doc, where, set(), {"name", "apis", "subscriptionRequired", "state"})
    return Product(
        name=str(doc.get("name", ref.name)),
        api_ids=tuple(doc.get("apis", ())),
        subscription_required=bool(doc.get("subscriptionRequired", True)),
        state=str(doc.get("state", "published")),
    )


def _subscription(doc: Mapping[str, Any], ref: ObjectRef, where: str) -> Subscription:
    golden.keys(doc, where, {"scope", "primaryKey"}, {"name", "secondaryKey", "state"})
    return Subscription(
        name=str(doc.get("name", ref.name)),
        scope=SubscriptionScope.parse(str(doc["scope"])),
        primary_key=str(doc["primaryKey"]),
        secondary_key=None if doc.get("secondaryKey") is None else str(doc["secondaryKey"]),
        state=str(doc.get("state", "active")),
    )


def _named_value(doc: Mapping[str, Any], ref: ObjectRef, where: str) -> NamedValue:
    golden.keys(doc, where, {"value"}, {"name", "secret"})
    return NamedValue(str(doc.get("name", ref.name)), str(doc["value"]),
                      secret=bool(doc.get("secret", False)))


def _policy(doc: Mapping[str, Any], where: str) -> Policy:
    golden.keys(doc, where, {"xml"}, {"product", "api", "operation"})
    product, api, operation = (str(doc.get(k, "")) for k in ("product", "api", "operation"))
    scope = "operation" if operation else "api" if api else "product" if product else "global"
    return Policy(PolicyScope(scope, product_id=product, api_id=api, operation_id=operation),
                  str(doc["xml"]))


_BODIES = ("api", "routes", "certificate", "product", "subscription", "namedValue", "policy")


def _object(doc: Mapping[str, Any], builder: _CertificateBuilder, where: str) -> SourceObject:
    golden.keys(doc, where, {"ref", "modified"}, set(_BODIES))
    bodies = [k for k in _BODIES if k in doc]
    if len(bodies) != 1:
        raise ValueError(f"{where}: give exactly one of {', '.join(_BODIES)}")
    ref = parse_ref(doc["ref"])
    where = f"{where} ({ref})"
    body: Body
    if bodies[0] == "api":
        body = _api(doc["api"], ref, where)
    elif bodies[0] == "routes":
        body = _routes(doc["routes"], where)
    elif bodies[0] == "product":
        body = _product(doc["product"], ref, where)
    elif bodies[0] == "subscription":
        body = _subscription(doc["subscription"], ref, where)
    elif bodies[0] == "namedValue":
        body = _named_value(doc["namedValue"], ref, where)
    elif bodies[0] == "policy":
        body = _policy(doc["policy"], where)
    else:
        body = _certificate(doc["certificate"], builder, where)
    return SourceObject(ref, parse_time(doc["modified"]), body)


def load_case(path: Path) -> GoldenCase:
    """
    Read one ``.in.yaml`` (format: ``testdata/translate/README.md``).
    Unknown keys are refused, so a misspelt field cannot pass unnoticed.
    """
    doc = yaml.safe_load(path.read_text()) or {}
    golden.keys(doc, path.name, {"objects"}, {"problems", "now", "previous", "previousNow"})
    builder = _CertificateBuilder()
    previous = None
    if "previous" in doc:
        # Built first: a certificate id they share with ``objects`` is the
        # same certificate.
        previous = tuple(
            _object(o, builder, f"previous[{i}]") for i, o in enumerate(doc["previous"] or ())
        )
    objects = tuple(_object(o, builder, f"objects[{i}]") for i, o in enumerate(doc["objects"] or ()))
    problems = []
    for index, p in enumerate(doc.get("problems") or ()):
        golden.keys(p, f"problems[{index}]", {"ref", "message"}, set())
        problems.append(Problem(parse_ref(p["ref"]), str(p["message"])))
    now = parse_time(doc["now"]) if doc.get("now") is not None else None
    previous_now = parse_time(doc["previousNow"]) if doc.get("previousNow") is not None else now
    return GoldenCase(objects, tuple(problems), now, previous, previous_now, builder.built)


# --- output --------------------------------------------------------------


def _iso(seconds: float) -> str:
    shown = datetime.fromtimestamp(seconds, timezone.utc).isoformat()
    return shown.replace("+00:00", "Z")


class _Renderer:
    """
    Turns a :class:`GatewayConfig` into plain data for YAML.

    Every dataclass field that ``repr`` shows is rendered (so a field added
    to the output shows up in the golden files), except that a field equal
    to its default is left out to keep the files short: a route shows
    ``https_redirect: true`` only where it is set. Fields hidden from
    ``repr`` (PEM chains, private keys, derived keys) never appear.
    """

    def __init__(self, built: Mapping[str, IssuedCertificate],
                 secrets: frozenset[str] = frozenset()) -> None:
        #: Fingerprint → the id the certificate was built under.
        self._names = {issued.fingerprint: ident for ident, issued in built.items()}
        #: Secret named values, masked wherever a pipeline is shown.
        self._secrets = secrets

    def certificate_name(self, fingerprint: str) -> str:
        """The per-run fingerprint of a built certificate as ``<id>``."""
        ident = self._names.get(fingerprint)
        return fingerprint if ident is None else f"<{ident}>"

    def message(self, text: str) -> str:
        """A problem message with built certificates' (partial) fingerprints named."""
        for fingerprint, ident in self._names.items():
            text = text.replace(fingerprint, f"<{ident}>")
            text = text.replace(fingerprint[:23] + "...", f"<{ident}>")
        return text

    def plain(self, value: Any, name: str = "") -> Any:
        if isinstance(value, ObjectRef):
            return str(value)
        if isinstance(value, Pipeline):
            return _Block(describe_pipeline(value, self._secrets))
        if isinstance(value, Mapping):
            # Pipelines by product context; ``None`` (no product) first.
            return {
                "(no product)" if k is None else str(k): self.plain(v)
                for k, v in sorted(value.items(), key=lambda kv: (kv[0] is not None, kv[0] or ""))
            }
        if isinstance(value, Backend):
            return value.url
        if isinstance(value, bytes):
            return value.decode("ascii")
        if isinstance(value, str):
            if name == "fingerprint":
                return self.certificate_name(value)
            if name == "message":
                return self.message(value)
            return value
        if isinstance(value, float) and name in _TIME_FIELDS:
            return _iso(value)
        if isinstance(value, (set, frozenset)):
            return sorted(self.plain(v) for v in value)
        if isinstance(value, (tuple, list)):
            return [self.plain(v) for v in value]
        if is_dataclass(value) and not isinstance(value, type):
            return self.fields(value)
        return value

    def fields(self, obj: Any, *, keep_defaults: bool = False) -> dict[str, Any]:
        out = {}
        for f in fields(obj):
            if not f.repr:
                continue
            value = getattr(obj, f.name)
            if not keep_defaults and _is_default(f, value):
                continue
            out[f.name] = self.plain(value, f.name)
        return out


def _is_default(f: Any, value: Any) -> bool:
    if f.default is not MISSING:
        return bool(value == f.default)
    if f.default_factory is not MISSING:
        return bool(value == f.default_factory())
    return False


class _Dumper(yaml.SafeDumper):
    """Block mappings; lists of scalars on one line (``[a, b]``), which reads best."""


def _represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    flow = all(not isinstance(item, (dict, list)) for item in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


class _Block(list):  # type: ignore[type-arg]
    """A pipeline's lines: one per line, however short."""


_Dumper.add_representer(list, _represent_list)
_Dumper.add_representer(
    _Block, lambda d, data: d.represent_sequence("tag:yaml.org,2002:seq", list(data), flow_style=False)
)


def canonical(config: GatewayConfig, built: Mapping[str, IssuedCertificate] = {}) -> str:
    """
    The configuration as stable, reviewable YAML: sorted keys, the
    translation's own (deterministic) order of routes, problems, shadowings
    and certificates, times as ISO 8601 UTC, refs as ``source:kind/name``,
    backends as URLs, certificates without PEM or key and named by the
    ``id`` they were built under. Top-level keys are always present.
    """
    doc = _Renderer(built, config.secrets).fields(config, keep_defaults=True)
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=True, width=1000, allow_unicode=True)


# --- tests ---------------------------------------------------------------


class TranslateGoldenTests(SynchronousTestCase):
    """Generated below: one ``test_<case>`` per ``testdata/translate/*.in.yaml``."""

    def test_cases_found(self) -> None:
        """
        The testdata folder holds cases, each described by its first line,
        and every ``.out.yaml`` belongs to an ``.in.yaml`` (a renamed case
        leaves no stale golden file behind).
        """
        golden.check_cases(self, TESTDATA)

    def test_same_set_other_order(self) -> None:
        """
        Two case files that list the same objects in a different order
        have identical golden files.
        """
        first = golden.out_path(TESTDATA / "last-one-wins-across-sources.in.yaml").read_text()
        second = golden.out_path(TESTDATA / "same-set-other-order.in.yaml").read_text()
        self.assertEqual(first, second)

    def test_loader_refuses_unknown_keys(self) -> None:
        """A misspelt key in a case is an error, not a silently ignored field."""
        builder = _CertificateBuilder()
        doc = {"ref": "file:routes/x", "modified": 1,
               "routes": [{"path": "/", "backend": "http://b", "pathtype": "Exact"}]}
        self.assertRaises(ValueError, _object, doc, builder, "test")

    def test_parse_ref_round_trips(self) -> None:
        """``parse_ref`` reads back what ``str(ObjectRef)`` writes, slashes in names included."""
        ref = ObjectRef("ingress", "routes", "default/web")
        self.assertEqual(parse_ref(str(ref)), ref)
        self.assertRaises(ValueError, parse_ref, "ingress/routes")


def _golden_test(case: Path) -> Callable[[TranslateGoldenTests], None]:
    def test(self: TranslateGoldenTests) -> None:
        loaded = load_case(case)
        config = loaded.translate()
        golden.compare(self, case, canonical(config, loaded.built))
        # The order the objects arrive in never matters (DESIGN.md: the
        # same inputs give the same config, whatever order they came in).
        shuffled = list(loaded.objects)
        random.Random(case.name).shuffle(shuffled)
        for order in (tuple(reversed(loaded.objects)), tuple(shuffled)):
            self.assertEqual(loaded.translate(order), config)

    test.__doc__ = f"{golden.description(case)} (golden file {golden.out_path(case).name}; any input order)."
    return test


for _case in golden.cases(TESTDATA):
    setattr(TranslateGoldenTests, golden.test_name(_case), _golden_test(_case))
