"""
The endpoints gateways call: snapshot, change feed (long poll), heartbeat.

Every call carries ``Authorization: GatewayKey <id>&<expiry>&<signature>``.
A missing, malformed, forged (no key of its gateway signs it) or expired
token is refused with 401; a valid token of another gateway with 403. Each
refusal is logged with the reason, the gateway ids, the expiry and the
client address, never with the signature.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger
from twisted.web.server import Request

from . import _queries as queries
from ._errors import ApiError
from ._feed import ChangeFeed
from ._http import Call, Router, client_address
from ._instances import Instances
from ._store import ConfigStore
from ._tokens import SCHEME, TokenError, check_lifetime, parse_token, verify

__all__ = ["GatewayApi"]

_CHALLENGE = {"WWW-Authenticate": f'{SCHEME} realm="apimgw-config"'}


def _integer(call: Call, name: str, default: int | None) -> int:
    text = call.arg(name)
    if text is None:
        if default is None:
            raise ApiError.invalid(name, "is required")
        return default
    try:
        value = int(text)
    except ValueError:
        raise ApiError.invalid(name, "must be a whole number") from None
    if value < 0:
        raise ApiError.invalid(name, "must not be negative")
    return value


class GatewayApi:
    """
    :param max_wait: the longest a long poll is held, in seconds (a larger
        ``wait`` is capped to it).
    :param page: the most events one answer carries.
    """

    _log = Logger()

    def __init__(self, store: ConfigStore, feed: ChangeFeed, instances: Instances, clock: Any,
                 *, max_wait: float = 60.0, page: int = 1000) -> None:
        self._store = store
        self._feed = feed
        self._instances = instances
        self._clock = clock
        self._max_wait = max_wait
        self._page = page

    def router(self) -> Router:
        r = Router()
        r.add("GET", "/gateways/{gatewayId}/configuration", self._configuration)
        r.add("GET", "/gateways/{gatewayId}/events", self._events)
        r.add("POST", "/gateways/{gatewayId}/heartbeat", self._heartbeat)
        return r

    def _refuse(self, request: Request, status: int, reason: str, gateway_id: str,
                token: Any = None) -> ApiError:
        self._log.warn(
            "Gateway request refused ({status}): {reason} (path gateway {gateway}, token gateway "
            "{token_gateway}, token expiry {expiry}, {method} {path} from {client})",
            status=status, reason=reason, gateway=gateway_id,
            token_gateway=token.gateway_id if token else "-",
            expiry=token.stamp if token else "-",
            method=request.method.decode("ascii", "replace"),
            path=request.path.decode("ascii", "replace"), client=client_address(request),
        )
        return ApiError(status, reason, headers=_CHALLENGE if status == 401 else None)

    async def authenticate(self, request: Request, params: dict[str, str]) -> None:
        gateway_id = params["gatewayId"]
        header = request.getHeader(b"authorization")
        try:
            token = parse_token(header.decode("utf-8", "replace") if header else None)
        except TokenError as e:
            raise self._refuse(request, 401, str(e), gateway_id) from None
        keys = await self._store.read(queries.gateway_keys, token.gateway_id)
        if keys is None:
            raise self._refuse(request, 401, f"unknown gateway {token.gateway_id!r} in the token",
                               gateway_id, token)
        if not verify(token, keys):
            raise self._refuse(
                request, 401,
                "invalid token: its signature matches neither key of the gateway (forged, or "
                "made with a key that has since been regenerated)",
                gateway_id, token,
            )
        try:
            # The lifetime rule (expiry, 30 days plus clock skew) is
            # cloudproto's, the one the gateway applies too.
            check_lifetime(token, self._clock.seconds())
        except TokenError as e:
            raise self._refuse(request, 401, f"{e}: generate a new one", gateway_id,
                               token) from None
        if token.gateway_id != gateway_id:
            raise self._refuse(
                request, 403, f"the token is for gateway {token.gateway_id!r}, not {gateway_id!r}",
                gateway_id, token,
            )

    async def _configuration(self, call: Call) -> tuple[int, Any]:
        return 200, await self._store.read(queries.snapshot, call.params["gatewayId"])

    async def _events(self, call: Call) -> tuple[int, Any]:
        """
        Long poll: read the events after ``after``; if there are none, wait
        for a commit that concerns this gateway (or the end of ``wait``)
        and read again from where the last read ended.
        """
        gateway_id = call.params["gatewayId"]
        after = _integer(call, "after", None)
        wait_text = call.arg("wait")
        try:
            wait = float(wait_text) if wait_text is not None else 0.0
        except ValueError:
            raise ApiError.invalid("wait", "must be a number of seconds") from None
        if not wait >= 0:
            raise ApiError.invalid("wait", "must not be negative")
        deadline = self._clock.seconds() + min(wait, self._max_wait)
        while True:
            page = await self._store.read(
                queries.events_after, gateway_id, after, self._page
            )
            remaining = deadline - self._clock.seconds()
            if page["events"] or remaining <= 0:
                return 200, page
            after = page["revision"]
            if not await self._feed.wait(gateway_id, after, remaining):
                return 200, {"revision": after, "events": []}

    async def _heartbeat(self, call: Call) -> tuple[int, Any]:
        body = call.body
        if not isinstance(body, dict):
            raise ApiError.invalid("body", "must be a JSON object")
        for key in body:
            if key not in ("instanceId", "hostname", "version", "revision"):
                raise ApiError.invalid(key, "unknown field")
        instance_id = body.get("instanceId")
        if not isinstance(instance_id, str) or not 0 < len(instance_id) <= 200:
            raise ApiError.invalid("instanceId", "is required: a string of 1-200 characters")
        texts = {}
        for key in ("hostname", "version"):
            value = body.get(key, "")
            if not isinstance(value, str) or len(value) > 253:
                raise ApiError.invalid(key, "must be a string of at most 253 characters")
            texts[key] = value
        revision = body.get("revision", 0)
        if isinstance(revision, bool) or not isinstance(revision, int) or revision < 0:
            raise ApiError.invalid("revision", "must be a whole number, not negative")
        gateway_id = call.params["gatewayId"]
        known = {i["instanceId"] for i in self._instances.alive(gateway_id)}
        alive = self._instances.heartbeat(
            gateway_id, instance_id, texts["hostname"], texts["version"], revision
        )
        if instance_id not in known:
            self._log.info(
                "Gateway {gateway}: instance {instance} ({hostname}, version {version}) is alive; "
                "{alive} instance(s) now", gateway=gateway_id, instance=instance_id,
                hostname=texts["hostname"], version=texts["version"], alive=alive,
            )
        return 200, {"instances": alive, "heartbeatInterval": self._instances.interval}
