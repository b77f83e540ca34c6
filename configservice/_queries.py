"""
The reads of the service: management lookups, a gateway's snapshot, a
gateway's events. Synchronous, in the database thread, each inside one read
transaction (so a snapshot's revision matches its content).
"""

from __future__ import annotations

import json
from typing import Any

from ._entities import DELIVERED, gateway_view, management_view, operation_view
from ._errors import ApiError
from ._rows import Reader, Row

__all__ = ["events_after", "gateway_keys", "snapshot"]


def _manage(row: Row) -> dict[str, Any]:
    return management_view(row.kind, row.id, row.body, row.revision, row.modified)


def _deliver(row: Row) -> dict[str, Any]:
    return gateway_view(row.kind, row.id, row.body, row.revision, row.modified)


def get_one(reader: Reader, kind: str, entity_id: str, what: str) -> dict[str, Any]:
    row = reader.get(kind, entity_id)
    if row is None:
        raise ApiError.not_found(f"{what} {entity_id!r}")
    return _manage(row)


def list_all(reader: Reader, kind: str) -> dict[str, Any]:
    return {"value": [_manage(row) for row in reader.all(kind)]}


def _api(reader: Reader, api_id: str) -> Row:
    row = reader.get("api", api_id)
    if row is None:
        raise ApiError.not_found(f"API {api_id!r}")
    return row


def list_operations(reader: Reader, api_id: str) -> dict[str, Any]:
    api = _api(reader, api_id)
    return {
        "value": [
            operation_view(api_id, op_id, fields, api.revision, api.modified)
            for op_id, fields in sorted(api.body["operations"].items())
        ]
    }


def get_operation(reader: Reader, api_id: str, op_id: str) -> dict[str, Any]:
    api = _api(reader, api_id)
    if op_id not in api.body["operations"]:
        raise ApiError.not_found(f"operation {op_id!r} of API {api_id!r}")
    return operation_view(api_id, op_id, api.body["operations"][op_id], api.revision, api.modified)


def get_policy(reader: Reader, scope: Any) -> dict[str, Any]:
    scope.check(reader)
    return get_one(reader, "policy", scope.id, f"{scope.scope} policy")


def _gateway(reader: Reader, gateway_id: str) -> Row:
    row = reader.get("gateway", gateway_id)
    if row is None:
        raise ApiError.not_found(f"gateway {gateway_id!r}")
    return row


def list_product_apis(reader: Reader, product_id: str) -> dict[str, Any]:
    product = reader.get("product", product_id)
    if product is None:
        raise ApiError.not_found(f"product {product_id!r}")
    rows = [reader.get("api", api_id) for api_id in product.body["apis"]]
    return {"value": [_manage(row) for row in rows if row is not None]}


def list_gateway_apis(reader: Reader, gateway_id: str) -> dict[str, Any]:
    _gateway(reader, gateway_id)
    rows = [reader.get("api", link.ref) for link in reader.children("gatewayApi", gateway_id)]
    return {"value": [_manage(row) for row in rows if row is not None]}


def get_gateway_api(reader: Reader, gateway_id: str, api_id: str) -> dict[str, Any]:
    _gateway(reader, gateway_id)
    return get_one(reader, "gatewayApi", f"{gateway_id}/{api_id}", f"API {api_id!r} on gateway")


def list_hostnames(reader: Reader, gateway_id: str) -> dict[str, Any]:
    _gateway(reader, gateway_id)
    return {"value": [_manage(row) for row in reader.children("hostname", gateway_id)]}


def get_hostname(reader: Reader, gateway_id: str, hostname: str) -> dict[str, Any]:
    _gateway(reader, gateway_id)
    return get_one(reader, "hostname", f"{gateway_id}/{hostname}", f"host name {hostname!r}")


def gateway_exists(reader: Reader, gateway_id: str) -> bool:
    return reader.get("gateway", gateway_id) is not None


def gateway_keys(reader: Reader, gateway_id: str) -> tuple[str, str] | None:
    """The primary and secondary key of a gateway, or ``None`` if it does not exist."""
    found = reader.connection.execute(
        "SELECT primary_key, secondary_key FROM gateway_keys WHERE gateway_id = ?", (gateway_id,)
    ).fetchone()
    return None if found is None else (found[0], found[1])


def snapshot(reader: Reader, gateway_id: str) -> dict[str, Any]:
    """
    Everything a gateway sees (the rules of :mod:`._audience`), at one
    revision. Lists are sorted by id, so two snapshots at the same revision
    are byte-identical.
    """
    _gateway(reader, gateway_id)
    assigned = sorted(link.ref for link in reader.children("gatewayApi", gateway_id))
    apis = [row for row in (reader.get("api", a) for a in assigned) if row is not None]
    products = [p for p in reader.all("product") if set(p.body["apis"]) & set(assigned)]
    scopes = {""} | {f"apis/{a}" for a in assigned} | {f"products/{p.id}" for p in products}
    hostnames = reader.children("hostname", gateway_id)
    certificates = [
        row for row in (reader.get("certificate", c) for c in sorted({h.ref for h in hostnames}))
        if row is not None
    ]
    found: dict[str, list[Row]] = {
        "api": apis,
        "product": products,
        "subscription": [s for s in reader.all("subscription") if s.ref in scopes],
        "policy": [p for p in reader.all("policy") if p.ref in scopes],
        "namedValue": reader.all("namedValue"),
        "certificate": certificates,
        "hostname": hostnames,
    }
    result: dict[str, Any] = {"gatewayId": gateway_id, "revision": reader.revision()}
    for kind, key in DELIVERED.items():
        result[key] = [_deliver(row) for row in found[kind]]
    return result


def events_after(reader: Reader, gateway_id: str, after: int, limit: int) -> dict[str, Any]:
    """
    The events for ``gateway_id`` after revision ``after``, at most
    ``limit``. ``revision`` in the answer is where to continue from: the
    service's current revision when everything was returned (events for
    other gateways are skipped over), else the last event's.

    :raises ApiError: 410 when ``after`` is older than the retained log or
        newer than the service's revision (a gateway that outlived a
        restored database): in both cases only a new snapshot is right.
    """
    current = reader.revision()
    floor = reader.meta("pruned_through")
    if after > current:
        raise ApiError(
            410,
            f"revision {after} is newer than the service's revision {current}: "
            f"fetch the configuration again",
        )
    if after < floor:
        raise ApiError(
            410,
            f"revision {after} is older than the retained change log (it starts after "
            f"{floor}): fetch the configuration again",
        )
    cursor = reader.connection.execute(
        "SELECT revision, kind, id, operation, body, modified FROM events"
        " WHERE revision > ? AND (everyone = 1 OR revision IN ("
        "   SELECT revision FROM event_gateways WHERE gateway_id = ? AND revision > ?))"
        " ORDER BY revision LIMIT ?",
        (after, gateway_id, after, limit),
    )
    events = []
    for revision, kind, entity_id, operation, body, modified in cursor:
        event: dict[str, Any] = {
            "revision": revision,
            "kind": kind,
            "id": entity_id,
            "operation": operation,
            "modified": modified,
        }
        if operation == "upsert":
            event["body"] = json.loads(body)
        events.append(event)
    position = events[-1]["revision"] if len(events) >= limit else current
    return {"revision": position, "events": events}
