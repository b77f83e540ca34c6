"""
Which gateways see an entity: the visibility rules of the configuration
service, in one place.

A gateway receives only what concerns it:

* the APIs assigned to it (with their operations), their API and operation
  policies;
* the products holding at least one of those APIs, and their policies;
* the subscriptions scoped to all APIs (``/apis``), to one of its APIs, or
  to one of its products;
* the global policy and every named value (policies may refer to any);
* its host names, and the certificates they name.

:func:`audience` answers "who sees this row now"; :func:`dependents`
answers "whose visibility may change when this row changes", so a write can
tell the gateways what they gained and lost (see :mod:`._changes`).
"""

from __future__ import annotations

from dataclasses import dataclass

from ._rows import Reader, Row

__all__ = ["EVERYONE", "NOBODY", "Audience", "audience", "dependents"]


@dataclass(frozen=True)
class Audience:
    """Every gateway, or a set of gateway ids."""

    everyone: bool = False
    gateways: frozenset[str] = frozenset()

    def __bool__(self) -> bool:
        return self.everyone or bool(self.gateways)

    def __or__(self, other: "Audience") -> "Audience":
        if self.everyone or other.everyone:
            return EVERYONE
        return Audience(gateways=self.gateways | other.gateways)

    def without(self, other: "Audience") -> "Audience":
        """
        Those in ``self`` and not in ``other``. "Everyone but some" cannot
        be expressed: ``EVERYONE.without(some)`` is everyone, and the caller
        re-sends to ``other`` afterwards (see :func:`gained_after`).
        """
        if other.everyone:
            return NOBODY
        if self.everyone:
            return EVERYONE
        return Audience(gateways=self.gateways - other.gateways)


EVERYONE = Audience(everyone=True)
NOBODY = Audience()


def gained_after(before: Audience, after: Audience) -> Audience:
    """Who must receive an upsert once ``before.without(after)`` got a delete."""
    if before.everyone and not after.everyone:
        return after
    return after.without(before)


def _gateways_of_api(reader: Reader, api_id: str) -> Audience:
    return Audience(gateways=frozenset(r.parent for r in reader.referencing("gatewayApi", api_id)))


def _product_audience(reader: Reader, product: Row | None) -> Audience:
    result = NOBODY
    if product is not None:
        for api_id in product.body.get("apis", ()):
            result = result | _gateways_of_api(reader, api_id)
    return result


def _scope_audience(reader: Reader, ref: str) -> Audience:
    """
    The audience of a policy's or subscription's ``ref``: ``""`` (global,
    all APIs), ``apis/X`` or ``products/X``.
    """
    if ref == "":
        return EVERYONE
    kind, _, entity_id = ref.partition("/")
    if kind == "apis":
        return _gateways_of_api(reader, entity_id)
    if kind == "products":
        return _product_audience(reader, reader.get("product", entity_id))
    return NOBODY


def audience(reader: Reader, row: Row | None) -> Audience:
    """The gateways that see ``row`` in the current state (nobody for ``None``)."""
    if row is None:
        return NOBODY
    if row.kind == "api":
        return _gateways_of_api(reader, row.id)
    if row.kind == "product":
        return _product_audience(reader, row)
    if row.kind in ("policy", "subscription"):
        return _scope_audience(reader, row.ref)
    if row.kind == "namedValue":
        return EVERYONE
    if row.kind == "certificate":
        return Audience(
            gateways=frozenset(r.parent for r in reader.referencing("hostname", row.id))
        )
    if row.kind == "hostname":
        return Audience(gateways=frozenset([row.parent]))
    return NOBODY  # gateways and assignments are never delivered


def _scoped(reader: Reader, ref: str) -> list[tuple[str, str]]:
    return [
        (kind, r.id) for kind in ("policy", "subscription") for r in reader.referencing(kind, ref)
    ]


def _api_dependents(reader: Reader, api_id: str) -> list[tuple[str, str]]:
    """What a gateway sees because it has the API ``api_id``."""
    found = [("api", api_id), *_scoped(reader, f"apis/{api_id}")]
    for product in reader.all("product"):
        if api_id in product.body.get("apis", ()):
            found.append(("product", product.id))
            found.extend(_scoped(reader, f"products/{product.id}"))
    return found


def dependents(reader: Reader, before: Row | None, after_ref: str | None, kind: str,
               entity_id: str) -> list[tuple[str, str]]:
    """
    The entities whose audience may change when ``(kind, entity_id)``
    changes from ``before`` to a row with ``after_ref`` (``None``: deleted).
    Read in the state before the change.
    """
    refs = {r for r in (before.ref if before else None, after_ref) if r is not None}
    if kind == "gatewayApi":
        return [key for ref in sorted(refs) for key in _api_dependents(reader, ref)]
    if kind == "product":
        return _scoped(reader, f"products/{entity_id}")
    if kind == "hostname":
        return [("certificate", ref) for ref in sorted(refs) if ref]
    return []
