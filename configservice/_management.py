"""
The management REST API: CRUD of the entities, gateway assignments, host
names, tokens and keys, live instances. ``Authorization: Bearer <admin
key>`` on every call; lists answer ``{"value": [...]}``; a write answers
the stored entity with its revision (201 when it created it, 200 when it
replaced it; 204 for a delete).

Validation of bodies runs here, in the reactor (pure and quick); checks
against the stored state run in the write transaction (:mod:`._writes`).
"""

from __future__ import annotations

import hmac
from typing import Any, Callable

from twisted.logger import Logger
from twisted.web.server import Request

from . import _queries as queries
from . import _writes as writes
from ._entities import check_hostname, check_id, validate
from ._errors import ApiError
from ._http import Call, Router, client_address
from ._instances import Instances
from ._rows import Reader
from ._store import ConfigStore
from ._times import iso, parse_expiry
from ._tokens import KEY_TYPES, issue, token_expiry
from ._writes import PolicyScope

__all__ = ["ManagementApi"]

_SIMPLE = (
    # path collection, kind, path parameter, what
    ("certificates", "certificate", "certId", "certificate"),
    ("namedValues", "namedValue", "namedValueId", "named value"),
)


class ManagementApi:
    """
    :param admin_key: the bearer key; compared in constant time, never logged.
    """

    _log = Logger()

    def __init__(self, store: ConfigStore, instances: Instances, clock: Any,
                 admin_key: str) -> None:
        self._store = store
        self._instances = instances
        self._clock = clock
        self._admin_key = admin_key.encode("utf-8")

    async def authenticate(self, request: Request, params: dict[str, str]) -> None:
        header = (request.getHeader(b"authorization") or b"").strip()
        scheme, _, given = header.partition(b" ")
        if scheme.lower() != b"bearer" or not given.strip():
            reason = "missing Authorization: Bearer <admin key>"
        elif not hmac.compare_digest(given.strip(), self._admin_key):
            reason = "invalid admin key"
        else:
            return
        self._log.warn(
            "Management request refused: {reason} ({method} {path} from {client})",
            reason=reason, method=request.method.decode("ascii", "replace"),
            path=request.path.decode("ascii", "replace"), client=client_address(request),
        )
        raise ApiError(401, reason, headers={"WWW-Authenticate": 'Bearer realm="apimgw-config"'})

    def router(self) -> Router:
        r = Router()
        add = r.add
        add("GET", "/", self._status)
        add("GET", "/apis", self._list("api"))
        add("GET", "/apis/{apiId}", self._get("api", "apiId", "API"))
        add("PUT", "/apis/{apiId}", self._put_api)
        add("DELETE", "/apis/{apiId}", self._delete(writes.delete_api, "apiId"))
        add("GET", "/apis/{apiId}/operations", self._read(queries.list_operations, "apiId"))
        for method, handler in (("GET", self._get_operation), ("PUT", self._put_operation),
                                ("DELETE", self._delete_operation)):
            add(method, "/apis/{apiId}/operations/{operationId}", handler)
        for template in ("/policy", "/apis/{apiId}/policy",
                         "/apis/{apiId}/operations/{operationId}/policy",
                         "/products/{productId}/policy"):
            add("GET", template, self._get_policy)
            add("PUT", template, self._put_policy)
            add("DELETE", template, self._delete_policy)
        add("GET", "/policies", self._list("policy"))
        add("GET", "/products", self._list("product"))
        add("GET", "/products/{productId}", self._get("product", "productId", "product"))
        add("PUT", "/products/{productId}", self._put_product)
        add("DELETE", "/products/{productId}", self._delete(writes.delete_product, "productId"))
        add("GET", "/products/{productId}/apis", self._read(queries.list_product_apis, "productId"))
        add("PUT", "/products/{productId}/apis/{apiId}", self._put_product_api)
        add("DELETE", "/products/{productId}/apis/{apiId}",
            self._delete(writes.delete_product_api, "productId", "apiId"))
        add("GET", "/subscriptions", self._list("subscription"))
        add("GET", "/subscriptions/{sid}", self._get("subscription", "sid", "subscription"))
        add("PUT", "/subscriptions/{sid}", self._put_subscription)
        add("DELETE", "/subscriptions/{sid}",
            self._delete_simple("subscription", "sid", "subscription"))
        for collection, kind, param, what in _SIMPLE:
            add("GET", f"/{collection}", self._list(kind))
            add("GET", f"/{collection}/{{{param}}}", self._get(kind, param, what))
            add("PUT", f"/{collection}/{{{param}}}", self._put_simple(kind, param))
            add("DELETE", f"/{collection}/{{{param}}}", self._delete_simple(kind, param, what))
        add("GET", "/gateways", self._list("gateway"))
        add("GET", "/gateways/{gatewayId}", self._get("gateway", "gatewayId", "gateway"))
        add("PUT", "/gateways/{gatewayId}", self._put_gateway)
        add("DELETE", "/gateways/{gatewayId}", self._delete_gateway)
        add("GET", "/gateways/{gatewayId}/apis", self._read(queries.list_gateway_apis, "gatewayId"))
        add("GET", "/gateways/{gatewayId}/apis/{apiId}",
            self._read(queries.get_gateway_api, "gatewayId", "apiId"))
        add("PUT", "/gateways/{gatewayId}/apis/{apiId}", self._put_gateway_api)
        add("DELETE", "/gateways/{gatewayId}/apis/{apiId}",
            self._delete(writes.delete_gateway_api, "gatewayId", "apiId"))
        add("GET", "/gateways/{gatewayId}/hostnames",
            self._read(queries.list_hostnames, "gatewayId"))
        add("GET", "/gateways/{gatewayId}/hostnames/{hostname}", self._get_hostname)
        add("PUT", "/gateways/{gatewayId}/hostnames/{hostname}", self._put_hostname)
        add("DELETE", "/gateways/{gatewayId}/hostnames/{hostname}", self._delete_hostname)
        add("POST", "/gateways/{gatewayId}/generateToken", self._generate_token)
        add("POST", "/gateways/{gatewayId}/regenerateKey", self._regenerate_key)
        add("GET", "/gateways/{gatewayId}/instances", self._list_instances)
        return r

    # generic handlers

    async def _write(self, planner: Callable[..., writes.Plan], *args: Any) -> tuple[int, Any]:
        plan, answer = await self._store.write(planner, *args)
        if answer is None:
            return 204, None
        return (201 if plan.created else 200), answer

    def _list(self, kind: str) -> Any:
        async def handler(call: Call) -> tuple[int, Any]:
            return 200, await self._store.read(queries.list_all, kind)

        return handler

    def _get(self, kind: str, param: str, what: str) -> Any:
        async def handler(call: Call) -> tuple[int, Any]:
            return 200, await self._store.read(queries.get_one, kind, call.params[param], what)

        return handler

    def _read(self, query: Callable[..., Any], *params: str) -> Any:
        async def handler(call: Call) -> tuple[int, Any]:
            return 200, await self._store.read(query, *(call.params[p] for p in params))

        return handler

    def _delete(self, planner: Callable[..., writes.Plan], *params: str) -> Any:
        async def handler(call: Call) -> tuple[int, Any]:
            return await self._write(planner, *(call.params[p] for p in params))

        return handler

    def _put_simple(self, kind: str, param: str) -> Any:
        async def handler(call: Call) -> tuple[int, Any]:
            entity_id = check_id(call.params[param], param)
            return await self._write(writes.put_simple, kind, entity_id, validate(kind, call.body))

        return handler

    def _delete_simple(self, kind: str, param: str, what: str) -> Any:
        async def handler(call: Call) -> tuple[int, Any]:
            return await self._write(writes.delete_simple, kind, call.params[param], what)

        return handler

    # specific handlers

    async def _status(self, call: Call) -> tuple[int, Any]:
        def status(reader: Reader) -> dict[str, Any]:
            return {"revision": reader.revision(), "oldestRetained": reader.meta("pruned_through")}

        return 200, await self._store.read(status)

    async def _put_api(self, call: Call) -> tuple[int, Any]:
        api_id = check_id(call.params["apiId"], "apiId")
        return await self._write(writes.put_api, api_id, validate("api", call.body))

    async def _get_operation(self, call: Call) -> tuple[int, Any]:
        return 200, await self._store.read(
            queries.get_operation, call.params["apiId"], call.params["operationId"]
        )

    async def _put_operation(self, call: Call) -> tuple[int, Any]:
        op_id = check_id(call.params["operationId"], "operationId")
        return await self._write(
            writes.put_operation, call.params["apiId"], op_id, validate("operation", call.body)
        )

    async def _delete_operation(self, call: Call) -> tuple[int, Any]:
        return await self._write(
            writes.delete_operation, call.params["apiId"], call.params["operationId"]
        )

    @staticmethod
    def _scope(params: dict[str, str]) -> PolicyScope:
        if "operationId" in params:
            return PolicyScope("operation", api_id=params["apiId"],
                               operation_id=params["operationId"])
        if "apiId" in params:
            return PolicyScope("api", api_id=params["apiId"])
        if "productId" in params:
            return PolicyScope("product", product_id=params["productId"])
        return PolicyScope("global")

    async def _get_policy(self, call: Call) -> tuple[int, Any]:
        return 200, await self._store.read(queries.get_policy, self._scope(call.params))

    async def _put_policy(self, call: Call) -> tuple[int, Any]:
        fields = validate("policy", call.body)
        return await self._write(writes.put_policy, self._scope(call.params), fields)

    async def _delete_policy(self, call: Call) -> tuple[int, Any]:
        return await self._write(writes.delete_policy, self._scope(call.params))

    async def _put_product(self, call: Call) -> tuple[int, Any]:
        product_id = check_id(call.params["productId"], "productId")
        return await self._write(writes.put_product, product_id, validate("product", call.body))

    async def _put_product_api(self, call: Call) -> tuple[int, Any]:
        return await self._write(
            writes.put_product_api, call.params["productId"], call.params["apiId"]
        )

    async def _put_subscription(self, call: Call) -> tuple[int, Any]:
        sid = check_id(call.params["sid"], "sid")
        return await self._write(writes.put_subscription, sid, validate("subscription", call.body))

    async def _put_gateway(self, call: Call) -> tuple[int, Any]:
        gateway_id = check_id(call.params["gatewayId"], "gatewayId")
        status, answer = await self._write(
            writes.put_gateway, gateway_id, validate("gateway", call.body)
        )
        if status == 201:
            self._log.info("Gateway {gateway} created (with new primary and secondary keys)",
                           gateway=gateway_id)
        return status, answer

    async def _delete_gateway(self, call: Call) -> tuple[int, Any]:
        gateway_id = call.params["gatewayId"]
        result = await self._write(writes.delete_gateway, gateway_id)
        self._instances.forget(gateway_id)
        self._log.info("Gateway {gateway} deleted (its tokens no longer verify)",
                       gateway=gateway_id)
        return result

    async def _put_gateway_api(self, call: Call) -> tuple[int, Any]:
        validate("gatewayApi", call.body)
        return await self._write(
            writes.put_gateway_api, call.params["gatewayId"], call.params["apiId"]
        )

    @staticmethod
    def _hostname(params: dict[str, str], strict: bool) -> str:
        try:
            return check_hostname(params["hostname"], "hostname")
        except ApiError:
            if strict:
                raise
            raise ApiError.not_found(f"host name {params['hostname']!r}") from None

    async def _get_hostname(self, call: Call) -> tuple[int, Any]:
        hostname = self._hostname(call.params, strict=False)
        return 200, await self._store.read(queries.get_hostname, call.params["gatewayId"], hostname)

    async def _put_hostname(self, call: Call) -> tuple[int, Any]:
        hostname = self._hostname(call.params, strict=True)
        fields = validate("hostname", call.body)
        return await self._write(writes.put_hostname, call.params["gatewayId"], hostname, fields)

    async def _delete_hostname(self, call: Call) -> tuple[int, Any]:
        hostname = self._hostname(call.params, strict=False)
        return await self._write(writes.delete_hostname, call.params["gatewayId"], hostname)

    @staticmethod
    def _key_type(body: Any, required: bool) -> str:
        if not isinstance(body, dict):
            if required or body is not None:
                raise ApiError.invalid("body", "must be a JSON object")
            body = {}
        value = body.get("keyType")
        if value is None and not required:
            return "primary"
        if value not in KEY_TYPES:
            raise ApiError.invalid("keyType", "must be primary or secondary")
        return str(value)

    async def _generate_token(self, call: Call) -> tuple[int, Any]:
        gateway_id = call.params["gatewayId"]
        key_type = self._key_type(call.body, required=False)
        for key in call.body or {}:
            if key not in ("keyType", "expiry"):
                raise ApiError.invalid(key, "unknown field")
        expiry = (call.body or {}).get("expiry")
        if not isinstance(expiry, str) or not expiry.strip():
            raise ApiError.invalid(
                "expiry", "is required: an ISO 8601 date-time or duration (e.g. P29D)"
            )
        now = self._clock.seconds()
        try:
            stamp = token_expiry(parse_expiry(expiry, now), now)
        except ValueError as e:
            raise ApiError.invalid("expiry", str(e)) from None
        keys = await self._store.read(queries.gateway_keys, gateway_id)
        if keys is None:
            raise ApiError.not_found(f"gateway {gateway_id!r}")
        token = issue(gateway_id, keys[0] if key_type == "primary" else keys[1], stamp)
        self._log.info(
            "Issued a token for gateway {gateway} with its {key_type} key, expiring {expiry} UTC",
            gateway=gateway_id, key_type=key_type, expiry=stamp,
        )
        return 200, {"value": token}

    async def _regenerate_key(self, call: Call) -> tuple[int, Any]:
        gateway_id = call.params["gatewayId"]
        key_type = self._key_type(call.body, required=True)
        result = await self._write(writes.regenerate_key, gateway_id, key_type)
        self._log.info(
            "Regenerated the {key_type} key of gateway {gateway}: tokens made with the old one "
            "no longer verify", key_type=key_type, gateway=gateway_id,
        )
        return result

    async def _list_instances(self, call: Call) -> tuple[int, Any]:
        gateway_id = call.params["gatewayId"]
        if not await self._store.read(queries.gateway_exists, gateway_id):
            raise ApiError.not_found(f"gateway {gateway_id!r}")
        alive = self._instances.alive(gateway_id)
        return 200, {
            "value": alive,
            "count": len(alive),
            "heartbeatInterval": self._instances.interval,
            "asOf": iso(self._clock.seconds()),
        }
