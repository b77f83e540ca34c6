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
those names. Products, subscriptions, policies and named values have no
model objects yet. Each object carries the entity's own ``modified`` time
(:func:`cloudproto.parse_time`), so "last one wins" against other sources
does not depend on load order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from cloudproto import parse_time
from gateway.model import Api, Certificate, ObjectRef, Operation, Problem, SourceObject

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


class Decoder:
    """
    Decodes entities, remembering each API's result by the identity of its
    raw entity: after a change event only the changed API is decoded again
    (an event replaces the entity object, so identity means "unchanged").
    """

    def __init__(self, source: str) -> None:
        self._source = source
        self._apis: dict[str, tuple[dict[str, Any], SourceObject | Problem]] = {}

    def decode(self, entities: Mapping[str, Mapping[str, dict[str, Any]]]) -> Decoded:
        """Decode every API and every certificate served under a host name."""
        result = Decoded()
        apis = entities.get("apis", {})
        for api_id in [a for a in self._apis if a not in apis]:
            del self._apis[api_id]
        for api_id, raw in apis.items():
            cached = self._apis.get(api_id)
            if cached is None or cached[0] is not raw:
                cached = (raw, self.api(api_id, raw))
                self._apis[api_id] = cached
            decoded = cached[1]
            if isinstance(decoded, Problem):
                result.problems[decoded.ref] = (decoded,)
            else:
                result.objects[decoded.ref] = decoded
        self._certificates(entities, result)
        return result

    def api(self, api_id: str, raw: Mapping[str, Any]) -> SourceObject | Problem:
        """One API entity as an object, or the problem that keeps it out."""
        ref = ObjectRef(self._source, "api", api_id)
        try:
            operations = tuple(
                Operation(
                    name=_text(op.get("id") or op.get("name"), "operations[].id"),
                    method=_text(op["method"], "operations[].method"),
                    url_template=_text(op["urlTemplate"], "operations[].urlTemplate"),
                )
                for op in _list(raw.get("operations"), "operations")
            )
            body = Api(
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
            )
        except KeyError as e:
            return Problem(ref, f"the cloud API is left out: it lacks {e.args[0]}")
        except (_Malformed, TypeError, AttributeError) as e:
            return Problem(ref, f"the cloud API is left out: {e}")
        return SourceObject(ref, parse_modified(raw.get("modified")), body)

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
            ref = ObjectRef(self._source, "certificate", cert_id)
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
