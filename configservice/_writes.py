"""
The management writes, planned: each function checks the request against
the current state (404 for an unknown id in the path, 400 for an unknown id
in the body, 409 for a conflict) and returns a :class:`Plan` of row
changes for :func:`._changes.apply`. Synchronous, in the database thread,
inside the write transaction, so the checks and the change are atomic.

Ownership rules: operations live inside their API; an API's policies, its
gateway assignments and its place in products go with it; a product's
policy goes with it; a gateway's assignments, host names and keys go with
it. Subscriptions and host names are entities of their own that refer to
others: deleting what they refer to is refused with 409, naming them.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any, Callable

from ._changes import Change, Commit, Delete, Put
from ._entities import management_view, operation_view
from ._errors import ApiError
from ._rows import Reader, Row
from ._tokens import new_key

__all__ = ["Plan", "PolicyScope"]

Respond = Callable[[Reader, Commit], Any]


@dataclass
class Plan:
    """
    The row changes of one write, what to answer once applied, and any
    write outside the entity table (gateway keys).
    """

    changes: list[Change]
    respond: Respond
    created: bool = False
    extra: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)


def _view(kind: str) -> Respond:
    def respond(reader: Reader, commit: Commit) -> Any:
        row = next(r for (k, _), r in commit.rows.items() if k == kind and r is not None)
        return management_view(row.kind, row.id, row.body, row.revision, row.modified)

    return respond


def _deleted(reader: Reader, commit: Commit) -> Any:
    return None


def _require(reader: Reader, kind: str, entity_id: str, what: str) -> Row:
    row = reader.get(kind, entity_id)
    if row is None:
        raise ApiError.not_found(f"{what} {entity_id!r}")
    return row


def _in_use(what: str, users: list[str]) -> ApiError:
    listed = ", ".join(users[:10]) + (" ..." if len(users) > 10 else "")
    return ApiError(409, f"{what} is in use by {listed}: delete or change those first")


# APIs and operations


def _overlap(a: list[str], b: list[str]) -> bool:
    """Two APIs' host names collide: both serve any host, or they share a name."""
    return (not a and not b) or bool(set(a) & set(b))


def put_api(reader: Reader, api_id: str, fields: dict[str, Any]) -> Plan:
    existing = reader.get("api", api_id)
    path_key = fields["path"].lower()
    for other in reader.referencing("api", path_key):
        if other.id != api_id and _overlap(other.body["hostnames"], fields["hostnames"]):
            raise ApiError(
                409,
                f"path {fields['path']!r} is already used by API {other.id!r} "
                f"for the same host names",
                field="path",
            )
    body = dict(fields, operations=existing.body.get("operations", {}) if existing else {})
    # An API's ref is its path, lower-cased: the conflict check is an index lookup.
    return Plan([Put("api", api_id, body, ref=path_key)], _view("api"), created=existing is None)


def delete_api(reader: Reader, api_id: str) -> Plan:
    _require(reader, "api", api_id, "API")
    users = [r.id for r in reader.referencing("subscription", f"apis/{api_id}")]
    if users:
        raise _in_use(f"API {api_id!r}", [f"subscription {u}" for u in users])
    changes: list[Change] = [
        Delete("policy", r.id) for r in reader.referencing("policy", f"apis/{api_id}")
    ]
    changes += [Delete("gatewayApi", r.id) for r in reader.referencing("gatewayApi", api_id)]
    for product in reader.all("product"):
        if api_id in product.body["apis"]:
            apis = [a for a in product.body["apis"] if a != api_id]
            changes.append(Put("product", product.id, dict(product.body, apis=apis)))
    changes.append(Delete("api", api_id))
    return Plan(changes, _deleted)


def _operation_respond(api_id: str, op_id: str) -> Respond:
    def respond(reader: Reader, commit: Commit) -> Any:
        row = commit.rows[("api", api_id)]
        assert row is not None
        return operation_view(api_id, op_id, row.body["operations"][op_id], row.revision,
                              row.modified)

    return respond


def put_operation(reader: Reader, api_id: str, op_id: str, fields: dict[str, Any]) -> Plan:
    api = _require(reader, "api", api_id, "API")
    operations = dict(api.body["operations"])
    created = op_id not in operations
    operations[op_id] = fields
    return Plan(
        [Put("api", api_id, dict(api.body, operations=operations), ref=api.ref)],
        _operation_respond(api_id, op_id),
        created=created,
    )


def delete_operation(reader: Reader, api_id: str, op_id: str) -> Plan:
    api = _require(reader, "api", api_id, "API")
    if op_id not in api.body["operations"]:
        raise ApiError.not_found(f"operation {op_id!r} of API {api_id!r}")
    operations = {k: v for k, v in api.body["operations"].items() if k != op_id}
    changes: list[Change] = [Put("api", api_id, dict(api.body, operations=operations), ref=api.ref)]
    policy_id = f"apis/{api_id}/operations/{op_id}"
    if reader.get("policy", policy_id) is not None:
        changes.insert(0, Delete("policy", policy_id))
    return Plan(changes, _deleted)


# Policies


@dataclass(frozen=True)
class PolicyScope:
    """
    Where a policy document applies. ``id`` is also its entity id
    (``global``, ``apis/a``, ``apis/a/operations/o``, ``products/p``);
    ``ref`` is what its visibility follows.
    """

    scope: str
    api_id: str = ""
    operation_id: str = ""
    product_id: str = ""

    @property
    def id(self) -> str:
        if self.scope == "global":
            return "global"
        if self.scope == "product":
            return f"products/{self.product_id}"
        if self.scope == "operation":
            return f"apis/{self.api_id}/operations/{self.operation_id}"
        return f"apis/{self.api_id}"

    @property
    def ref(self) -> str:
        if self.scope == "global":
            return ""
        if self.scope == "product":
            return f"products/{self.product_id}"
        return f"apis/{self.api_id}"

    def fields(self) -> dict[str, str]:
        found = {"scope": self.scope}
        for key, value in (("apiId", self.api_id), ("operationId", self.operation_id),
                           ("productId", self.product_id)):
            if value:
                found[key] = value
        return found

    def check(self, reader: Reader) -> None:
        """404 when what the policy belongs to does not exist."""
        if self.scope == "product":
            _require(reader, "product", self.product_id, "product")
        elif self.scope in ("api", "operation"):
            api = _require(reader, "api", self.api_id, "API")
            if self.scope == "operation" and self.operation_id not in api.body["operations"]:
                raise ApiError.not_found(f"operation {self.operation_id!r} of API {self.api_id!r}")


def put_policy(reader: Reader, scope: PolicyScope, fields: dict[str, Any]) -> Plan:
    scope.check(reader)
    existing = reader.get("policy", scope.id)
    body = dict(scope.fields(), **fields)
    return Plan([Put("policy", scope.id, body, ref=scope.ref)], _view("policy"),
                created=existing is None)


def delete_policy(reader: Reader, scope: PolicyScope) -> Plan:
    scope.check(reader)
    _require(reader, "policy", scope.id, f"{scope.scope} policy")
    return Plan([Delete("policy", scope.id)], _deleted)


# Products


def put_product(reader: Reader, product_id: str, fields: dict[str, Any]) -> Plan:
    existing = reader.get("product", product_id)
    body = dict(fields, apis=existing.body["apis"] if existing else [])
    return Plan([Put("product", product_id, body)], _view("product"), created=existing is None)


def delete_product(reader: Reader, product_id: str) -> Plan:
    _require(reader, "product", product_id, "product")
    users = [r.id for r in reader.referencing("subscription", f"products/{product_id}")]
    if users:
        raise _in_use(f"product {product_id!r}", [f"subscription {u}" for u in users])
    changes: list[Change] = [
        Delete("policy", r.id) for r in reader.referencing("policy", f"products/{product_id}")
    ]
    changes.append(Delete("product", product_id))
    return Plan(changes, _deleted)


def put_product_api(reader: Reader, product_id: str, api_id: str) -> Plan:
    product = _require(reader, "product", product_id, "product")
    _require(reader, "api", api_id, "API")
    created = api_id not in product.body["apis"]
    apis = sorted(set(product.body["apis"]) | {api_id})
    return Plan([Put("product", product_id, dict(product.body, apis=apis))], _view("product"),
                created=created)


def delete_product_api(reader: Reader, product_id: str, api_id: str) -> Plan:
    product = _require(reader, "product", product_id, "product")
    if api_id not in product.body["apis"]:
        raise ApiError.not_found(f"API {api_id!r} in product {product_id!r}")
    apis = [a for a in product.body["apis"] if a != api_id]
    return Plan([Put("product", product_id, dict(product.body, apis=apis))], _deleted)


# Subscriptions, named values, certificates


def put_subscription(reader: Reader, sid: str, fields: dict[str, Any]) -> Plan:
    existing = reader.get("subscription", sid)
    scope = fields["scope"]
    ref = scope.lstrip("/") if scope != "/apis" else ""
    if ref:
        kind, _, target = ref.partition("/")
        if reader.get("api" if kind == "apis" else "product", target) is None:
            what = "API" if kind == "apis" else "product"
            raise ApiError.invalid("scope", f"{what} {target!r} does not exist")
    body = dict(fields)
    for key in ("primaryKey", "secondaryKey"):
        if key not in body:
            body[key] = existing.body[key] if existing else secrets.token_hex(16)
    for other in reader.all("subscription"):
        if other.id == sid:
            continue
        for key in ("primaryKey", "secondaryKey"):
            if body[key] in (other.body["primaryKey"], other.body["secondaryKey"]):
                raise ApiError(409, f"{key} is already used by another subscription", field=key)
    if body["primaryKey"] == body["secondaryKey"]:
        raise ApiError.invalid("secondaryKey", "must differ from primaryKey")
    return Plan([Put("subscription", sid, body, ref=ref)], _view("subscription"),
                created=existing is None)


def put_simple(reader: Reader, kind: str, entity_id: str, fields: dict[str, Any]) -> Plan:
    """Named values and certificates: no references to check."""
    existing = reader.get(kind, entity_id)
    return Plan([Put(kind, entity_id, fields)], _view(kind), created=existing is None)


def delete_simple(reader: Reader, kind: str, entity_id: str, what: str) -> Plan:
    _require(reader, kind, entity_id, what)
    if kind == "certificate":
        users = [r.id for r in reader.referencing("hostname", entity_id)]
        if users:
            raise _in_use(f"certificate {entity_id!r}", [f"gateway host name {u}" for u in users])
    return Plan([Delete(kind, entity_id)], _deleted)


# Gateways


def put_gateway(reader: Reader, gateway_id: str, fields: dict[str, Any]) -> Plan:
    existing = reader.get("gateway", gateway_id)
    plan = Plan([Put("gateway", gateway_id, fields)], _view("gateway"), created=existing is None)
    if existing is None:
        plan.extra.append((
            "INSERT OR REPLACE INTO gateway_keys (gateway_id, primary_key, secondary_key)"
            " VALUES (?, ?, ?)",
            (gateway_id, new_key(), new_key()),
        ))
    return plan


def delete_gateway(reader: Reader, gateway_id: str) -> Plan:
    _require(reader, "gateway", gateway_id, "gateway")
    changes: list[Change] = [
        Delete("gatewayApi", r.id) for r in reader.children("gatewayApi", gateway_id)
    ]
    changes += [Delete("hostname", r.id) for r in reader.children("hostname", gateway_id)]
    changes.append(Delete("gateway", gateway_id))
    plan = Plan(changes, _deleted)
    plan.extra.append(("DELETE FROM gateway_keys WHERE gateway_id = ?", (gateway_id,)))
    return plan


def put_gateway_api(reader: Reader, gateway_id: str, api_id: str) -> Plan:
    _require(reader, "gateway", gateway_id, "gateway")
    _require(reader, "api", api_id, "API")
    link = f"{gateway_id}/{api_id}"
    existing = reader.get("gatewayApi", link)
    body = {"gatewayId": gateway_id, "apiId": api_id}
    return Plan([Put("gatewayApi", link, body, parent=gateway_id, ref=api_id)],
                _view("gatewayApi"), created=existing is None)


def delete_gateway_api(reader: Reader, gateway_id: str, api_id: str) -> Plan:
    _require(reader, "gateway", gateway_id, "gateway")
    _require(reader, "gatewayApi", f"{gateway_id}/{api_id}", f"API {api_id!r} on gateway")
    return Plan([Delete("gatewayApi", f"{gateway_id}/{api_id}")], _deleted)


def put_hostname(reader: Reader, gateway_id: str, hostname: str, fields: dict[str, Any]) -> Plan:
    _require(reader, "gateway", gateway_id, "gateway")
    if reader.get("certificate", fields["certificateId"]) is None:
        raise ApiError.invalid(
            "certificateId", f"certificate {fields['certificateId']!r} does not exist"
        )
    entity_id = f"{gateway_id}/{hostname}"
    existing = reader.get("hostname", entity_id)
    body = dict(fields, gatewayId=gateway_id, hostname=hostname)
    return Plan(
        [Put("hostname", entity_id, body, parent=gateway_id, ref=fields["certificateId"])],
        _view("hostname"),
        created=existing is None,
    )


def delete_hostname(reader: Reader, gateway_id: str, hostname: str) -> Plan:
    _require(reader, "gateway", gateway_id, "gateway")
    _require(reader, "hostname", f"{gateway_id}/{hostname}", f"host name {hostname!r} of gateway")
    return Plan([Delete("hostname", f"{gateway_id}/{hostname}")], _deleted)


def regenerate_key(reader: Reader, gateway_id: str, key_type: str) -> Plan:
    """
    Replace one key of a gateway. Not a configuration change (keys never
    reach a gateway): no revision, no event.
    """
    _require(reader, "gateway", gateway_id, "gateway")
    column = "primary_key" if key_type == "primary" else "secondary_key"
    plan = Plan([], _deleted)
    plan.extra.append(
        (f"UPDATE gateway_keys SET {column} = ? WHERE gateway_id = ?", (new_key(), gateway_id))
    )
    return plan
