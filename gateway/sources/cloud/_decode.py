"""
The cloud decoder: the service's raw entities → model objects, and a
:class:`~gateway.model.Problem` for each entity that cannot become one.

Pure: no logging, no clock, no I/O. The problems go to the store with the
objects (``Store.replace_source``/``upsert``/``report``), so an API the
service sent in a shape the gateway cannot serve shows in
``GatewayConfig.problems``, ``/config`` and the problems metric, while the
rest is served.

Each API becomes an :class:`~gateway.model.Api`; each certificate named by
one of the gateway's host names a :class:`~gateway.model.Certificate` for
those names; each product, subscription, named value and policy its model
object (:class:`~gateway.model.Product`, ...). Each object carries the
entity's own ``modified`` time (:func:`cloudproto.parse_time`), so "last one
wins" against other sources does not depend on load order.

The field names are those :mod:`configservice` delivers (its
``gateway_view``, after APIM's REST API):

* product ``{displayName, subscriptionRequired, state, apis: [apiId]}``;
* subscription ``{scope: "/apis" | "/apis/{apiId}" | "/products/{productId}",
  state, primaryKey, secondaryKey, displayName}``;
* namedValue ``{value, secret, displayName, tags}``;
* policy ``{scope: global|product|api|operation, productId, apiId,
  operationId, format, value}``, its id the scope's (``apis/a/operations/o``);
* API ``subscriptionKeyParameterNames: {header, query}`` (optional, as is
  each of the two; APIM's defaults otherwise), each name by the rules of
  :func:`cloudproto.key_name_error`, which the service applies too.

A field of the wrong type, an unknown state or scope, or a policy whose
scope does not match its id keeps the entity out with a problem naming the
entity (its ref) and the field. Types are checked strictly (a
``subscriptionRequired`` of ``"false"`` is refused, not read as true): for
these entities a lenient reading fails open.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from cloudproto import KEY_NAME_PARTS, key_name_error, parse_time
from gateway.model import (
    POLICY_FORMATS,
    PRODUCT_STATES,
    SUBSCRIPTION_STATES,
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
    SourceObject,
    Subscription,
    SubscriptionKeyNames,
    SubscriptionScope,
    kind_of,
)

__all__ = ["Decoded", "Decoder", "parse_modified"]


def parse_modified(text: Any) -> float:
    """
    An entity's ``modified`` (the wire's time format) as seconds since the
    epoch; ``0.0`` (loses every conflict) when absent or malformed.
    """
    try:
        return parse_time(text)
    except ValueError:
        return 0.0


@dataclass
class Decoded:
    """
    The result of decoding all entities.

    :ivar objects: the model objects, by ref.
    :ivar problems: per ref, what is wrong with it; a ref with problems and
        no object is an entity that could not be decoded at all.
    """

    objects: dict[ObjectRef, SourceObject] = field(default_factory=dict)
    problems: dict[ObjectRef, tuple[Problem, ...]] = field(default_factory=dict)

    def all_problems(self) -> list[Problem]:
        """Every problem, flat."""
        return [p for ps in self.problems.values() for p in ps]


_Result = SourceObject | Problem


class Decoder:
    """
    Decodes entities, remembering each one's result by the identity of its
    raw entity: after a change event only the changed entity is decoded
    again (an event replaces the entity object, so identity means
    "unchanged").
    """

    def __init__(self, source: str) -> None:
        self._source = source
        #: Snapshot list name → entity id → (raw entity, its result).
        self._cache: dict[str, dict[str, tuple[dict[str, Any], _Result]]] = {}
        #: Snapshot list name → how one of its entities is decoded.
        self._kinds: dict[str, Callable[[str, Mapping[str, Any]], _Result]] = {
            "apis": self.api,
            "products": self.product,
            "subscriptions": self.subscription,
            "namedValues": self.named_value,
            "policies": self.policy,
        }

    def decode(self, entities: Mapping[str, Mapping[str, dict[str, Any]]]) -> Decoded:
        """
        Decode every API, product, subscription, named value and policy,
        and every certificate served under a host name.
        """
        result = Decoded()
        for list_name, decode in self._kinds.items():
            raws = entities.get(list_name, {})
            cache = self._cache.setdefault(list_name, {})
            for entity_id in [e for e in cache if e not in raws]:
                del cache[entity_id]
            for entity_id, raw in raws.items():
                cached = cache.get(entity_id)
                if cached is None or cached[0] is not raw:
                    cached = (raw, decode(entity_id, raw))
                    cache[entity_id] = cached
                decoded = cached[1]
                if isinstance(decoded, Problem):
                    result.problems[decoded.ref] = (decoded,)
                else:
                    result.objects[decoded.ref] = decoded
        self._certificates(entities, result)
        return result

    def _entity(self, kind: type, what: str, entity_id: str, raw: Mapping[str, Any],
                build: Callable[[Mapping[str, Any]], Body]) -> _Result:
        """
        ``build(raw)`` as an object of ``entity_id``, or the problem (naming
        the entity, by its ref, and the field) that keeps it out.
        """
        ref = ObjectRef(self._source, kind_of(kind), entity_id)
        try:
            body = build(raw)
        except KeyError as e:
            return Problem(ref, f"the cloud {what} is left out: it lacks {e.args[0]}")
        except (ValueError, TypeError, AttributeError) as e:
            return Problem(ref, f"the cloud {what} is left out: {e}")
        return SourceObject(ref, parse_modified(raw.get("modified")), body)

    def api(self, api_id: str, raw: Mapping[str, Any]) -> _Result:
        """One API entity as an object, or the problem that keeps it out."""

        def build(raw: Mapping[str, Any]) -> Api:
            operations = tuple(
                Operation(
                    name=_text(op.get("id") or op.get("name"), "operations[].id"),
                    method=_text(op["method"], "operations[].method"),
                    url_template=_text(op["urlTemplate"], "operations[].urlTemplate"),
                )
                for op in _list(raw.get("operations"), "operations")
            )
            return Api(
                name=api_id,
                path=_text(raw["path"], "path", empty=True),
                service_url=_text(raw["serviceUrl"], "serviceUrl"),
                hostnames=tuple(_text(h, "hostnames[]") for h in _list(raw.get("hostnames"),
                                                                        "hostnames")),
                subscription_required=bool(raw.get("subscriptionRequired", False)),
                operations=operations,
                display_name=str(raw.get("displayName") or ""),
                protocols=tuple(_text(p, "protocols[]") for p in (
                    _list(raw.get("protocols"), "protocols") or ("http", "https"))),
                subscription_key_parameter_names=_key_names(
                    raw.get("subscriptionKeyParameterNames")),
            )

        return self._entity(Api, "API", api_id, raw, build)

    def product(self, product_id: str, raw: Mapping[str, Any]) -> _Result:
        """One product entity as an object, or the problem that keeps it out."""
        return self._entity(Product, "product", product_id, raw, lambda raw: Product(
            name=product_id,
            display_name=_text(raw.get("displayName", ""), "displayName", empty=True),
            api_ids=tuple(_text(a, "apis[]") for a in _list(raw.get("apis"), "apis")),
            subscription_required=_bool(raw.get("subscriptionRequired"),
                                        "subscriptionRequired", True),
            state=_choice(raw.get("state"), PRODUCT_STATES, "state", "published"),
        ))

    def subscription(self, sid: str, raw: Mapping[str, Any]) -> _Result:
        """One subscription entity as an object, or the problem that keeps it out."""

        def build(raw: Mapping[str, Any]) -> Subscription:
            scope_text = _text(raw["scope"], "scope")
            try:
                scope = SubscriptionScope.parse(scope_text)
            except ValueError as e:
                raise _Malformed(f"scope: {e}") from None
            secondary = raw.get("secondaryKey")
            return Subscription(
                name=sid,
                scope=scope,
                primary_key=_text(raw["primaryKey"], "primaryKey"),
                secondary_key=None if secondary is None else _text(secondary, "secondaryKey"),
                state=_choice(raw.get("state"), SUBSCRIPTION_STATES, "state", "active"),
                display_name=_text(raw.get("displayName", ""), "displayName", empty=True),
            )

        return self._entity(Subscription, "subscription", sid, raw, build)

    def named_value(self, name: str, raw: Mapping[str, Any]) -> _Result:
        """One named value entity as an object, or the problem that keeps it out."""
        return self._entity(NamedValue, "named value", name, raw, lambda raw: NamedValue(
            name=name,
            value=_text(raw["value"], "value", empty=True),
            secret=_bool(raw.get("secret"), "secret", False),
            display_name=_text(raw.get("displayName", ""), "displayName", empty=True),
            tags=tuple(_text(t, "tags[]") for t in _list(raw.get("tags"), "tags")),
        ))

    def policy(self, policy_id: str, raw: Mapping[str, Any]) -> _Result:
        """
        One policy entity as an object, or the problem that keeps it out.
        Its scope fields must give back its id (``apis/a/operations/o``):
        the id is what a later delete event names.
        """

        def build(raw: Mapping[str, Any]) -> Policy:
            try:
                scope = PolicyScope(
                    scope=_text(raw["scope"], "scope"),
                    product_id=_text(raw.get("productId", ""), "productId", empty=True),
                    api_id=_text(raw.get("apiId", ""), "apiId", empty=True),
                    operation_id=_text(raw.get("operationId", ""), "operationId", empty=True),
                )
            except _Malformed:
                raise
            except ValueError as e:
                raise _Malformed(f"scope: {e}") from None
            if scope.id != policy_id:
                raise _Malformed(f"scope: {scope.id!r} does not match the policy's id")
            return Policy(
                scope=scope,
                xml=_text(raw["value"], "value"),
                format=_choice(raw.get("format"), POLICY_FORMATS, "format", "xml"),
            )

        return self._entity(Policy, "policy", policy_id, raw, build)

    def _certificates(self, entities: Mapping[str, Mapping[str, dict[str, Any]]],
                      result: Decoded) -> None:
        certificates = entities.get("certificates", {})
        served: dict[str, list[dict[str, Any]]] = {}
        for host in entities.get("hostnames", {}).values():
            cert_id = host.get("certificateId")
            if isinstance(cert_id, str) and cert_id in certificates and isinstance(
                host.get("hostname"), str
            ):
                served.setdefault(cert_id, []).append(host)
        for cert_id, hosts in served.items():
            raw = certificates[cert_id]
            ref = ObjectRef(self._source, kind_of(Certificate), cert_id)
            modified = max(parse_modified(e.get("modified")) for e in [raw, *hosts])
            body = Certificate(
                hosts=tuple(sorted(h["hostname"] for h in hosts)),
                cert_pem=str(raw.get("pem", "")),
                key_pem=str(raw.get("key", "")),
            )
            result.objects[ref] = SourceObject(ref, modified, body)


class _Malformed(ValueError):
    """A field of the wrong type."""


def _text(value: Any, name: str, *, empty: bool = False) -> str:
    if not isinstance(value, str):
        raise _Malformed(f"{name} must be a string, not {type(value).__name__}")
    if not empty and not value:
        raise _Malformed(f"{name} must not be empty")
    return value


def _list(value: Any, name: str) -> list[Any] | tuple[Any, ...]:
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)):
        raise _Malformed(f"{name} must be a list, not {type(value).__name__}")
    return value


def _bool(value: Any, name: str, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _Malformed(f"{name} must be true or false, not {type(value).__name__}")
    return value


def _choice(value: Any, choices: tuple[str, ...], name: str, default: str) -> str:
    """One of ``choices``, matched without regard to case (APIM's enums are not)."""
    if value is None:
        return default
    text = _text(value, name)
    for choice in choices:
        if text.lower() == choice.lower():
            return choice
    raise _Malformed(f"{name} must be one of {', '.join(choices)}, not {text!r}")


def _key_names(value: Any) -> SubscriptionKeyNames:
    """
    An API's ``subscriptionKeyParameterNames``; absent parts keep APIM's
    defaults. The rules for a name are the wire protocol's
    (:func:`cloudproto.key_name_error`), which the service applies before
    storing; a name breaking them arriving anyway (an older or broken
    service) keeps the API out rather than have it look for its key where
    no request can put one.
    """
    if value is None:
        return SubscriptionKeyNames()
    if not isinstance(value, dict):
        raise _Malformed(
            f"subscriptionKeyParameterNames must be an object, not {type(value).__name__}")
    defaults = SubscriptionKeyNames()
    names = {}
    for key in KEY_NAME_PARTS:
        name = f"subscriptionKeyParameterNames.{key}"
        given = value.get(key)
        if given is None:
            names[key] = getattr(defaults, key)
            continue
        text = _text(given, name)
        error = key_name_error(key, text)
        if error is not None:
            raise _Malformed(f"{name} {error}")
        names[key] = text
    return SubscriptionKeyNames(**names)
