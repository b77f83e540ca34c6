"""
The cloud source: the configuration service (``config.service.endpoint``)
as a live source of APIs and certificates.

Protocol (``docs/config-service.md``): fetch the gateway's snapshot, then
follow the change feed with long polls from the snapshot's revision; a
``410 Gone`` means the feed no longer reaches back that far, so the snapshot
is fetched again and the store diffs it (``Store.replace_source``), never a
retry of the stale revision. A heartbeat reports the instance. Any failure
reconnects with jittered exponential backoff while the store keeps what was
last applied, so the gateway keeps serving.

The source keeps the service's raw entities (APIs with operations,
products, subscriptions, policies, named values, certificates, host names),
applies every event to them in order, and derives model objects from them:
each API becomes an :class:`~gateway.model.Api`, each certificate named by
one of the gateway's host names a :class:`~gateway.model.Certificate` for
those names. Products, subscriptions, policies and named values have no
model objects yet; they are kept (and backed up) as delivered. Each model
object carries the entity's own ``modified`` time from the service, so
"last one wins" against other sources does not depend on load order, and a
gateway restarted from its backup or from the service resolves a conflict
as it did before.

The raw entities and their revision are backed up (atomically, coalesced)
to ``config.backup.path`` and loaded at boot when the service cannot be
reached or refuses the token.
"""

from __future__ import annotations

import json
import random as _random_module
import socket
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

import treq
from treq.client import HTTPClient
from twisted.application.internet import backoffPolicy
from twisted.application.service import Service
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredList,
    inlineCallbacks,
    succeed,
)
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall, deferLater
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.web.client import Agent, HTTPConnectionPool

from gateway.model import Api, Certificate, ObjectRef, Operation, SourceObject, Store

from ._backup import (
    BACKUP_FORMAT,
    BackupError,
    BackupLocationNotFound,
    backup_file,
    load_backup,
    write_backup,
)
from ._cloudtoken import GatewayToken, TokenError, TokenProvider, parse_token

__all__ = ["ENTITY_LISTS", "CloudSource", "GatewayToken", "TokenError", "parse_modified", "parse_token"]

#: Event kinds and the snapshot list each lives in.
ENTITY_LISTS = {
    "api": "apis",
    "product": "products",
    "subscription": "subscriptions",
    "policy": "policies",
    "namedValue": "namedValues",
    "certificate": "certificates",
    "hostname": "hostnames",
}

#: A token is warned about (daily) from this many seconds before it expires.
TOKEN_WARNING = 7 * 86400.0
_DAY = 86400.0


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("apimgw")
    except Exception:
        return "0.1.0"


def parse_modified(text: Any) -> float:
    """
    An entity's ``modified`` (ISO 8601 UTC, ``2025-01-02T03:04:05.678901Z``)
    as seconds since the epoch; ``0.0`` (loses every conflict) when absent
    or malformed.
    """
    if not isinstance(text, str):
        return 0.0
    value = text.strip()
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return 0.0
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


class _Gone(Exception):
    """The change feed answered 410: the snapshot must be fetched again."""


class _Refused(Exception):
    """The service refused the token (401/403)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class _Unexpected(Exception):
    """Any other answer than the protocol's."""


class CloudSource(Service):
    """
    Keeps the configuration service's objects for this gateway in the store,
    under source ``cloud``.

    Status for metrics and tests (read, never written, from outside):

    :ivar revision: the revision applied (``None`` before any).
    :ivar gateway_id: the gateway id, from the token.
    :ivar token_expiry: when the current token expires (seconds since the
        epoch), ``None`` while there is no usable token.
    :ivar auth_failures: requests the service refused (401/403) plus
        attempts without a usable token.
    :ivar connected: whether the last request to the service succeeded.
    :ivar from_backup: whether what is served came from the backup (and not
        yet from the service).
    :ivar instances: the instance count the last heartbeat answered.
    :ivar instance_id: this process's random instance id.
    """

    _log = Logger()

    def __init__(
        self,
        store: Store,
        endpoint: str,
        auth: str,
        *,
        reactor: Any,
        clock: IReactorTime | None = None,
        random: _random_module.Random | None = None,
        backup_path: str | None = None,
        backup_interval: float = 10.0,
        heartbeat_interval: float = 60.0,
        poll_wait: float = 30.0,
        request_timeout: float = 30.0,
        initial_delay: float = 1.0,
        max_delay: float = 60.0,
        require_configuration: bool = True,
        hostname: str | None = None,
        version: str | None = None,
        source: str = "cloud",
    ) -> None:
        """
        :param store: where the objects go.
        :param endpoint: the service's base URL (``https://config.example.com``).
        :param auth: ``config.service.auth``: the token, or a file holding it.
        :param reactor: the reactor the HTTP client runs on.
        :param clock: schedules backoff, heartbeats, backups and timeouts
            (``reactor`` by default; tests pass a ``task.Clock``).
        :param random: jitter and the instance id (tests pass a seeded one).
        :param backup_path: the backup directory; ``None``: no backup.
        :param backup_interval: at most one backup write per this many seconds.
        :param heartbeat_interval: seconds between heartbeats.
        :param poll_wait: the ``wait`` of each long poll.
        :param request_timeout: the limit of a request (a long poll gets
            its ``wait`` on top).
        :param initial_delay: the first reconnect delay; it grows by 1.5
            per failed attempt up to ``max_delay``, plus up to 1 s jitter.
        :param require_configuration: ``True`` when the cloud is the
            gateway's only source: :meth:`when_synced` then waits for a
            configuration (snapshot or backup), so the gateway stays
            not-ready rather than serving nothing. ``False``: it also fires
            after the first failed attempt when no backup exists, so other
            sources are not held back by an unreachable service.
        """
        self._store = store
        self._endpoint = endpoint.rstrip("/")
        self._tokens = TokenProvider(auth)
        self._reactor = reactor
        self._clock: Any = reactor if clock is None else clock
        self._random = random if random is not None else _random_module.Random()
        self._backup_path = backup_path
        self._backup_interval = backup_interval
        self._heartbeat_interval = heartbeat_interval
        self._poll_wait = poll_wait
        self._request_timeout = request_timeout
        self._backoff = backoffPolicy(
            initialDelay=initial_delay, maxDelay=max_delay, jitter=self._random.random
        )
        self._require_configuration = require_configuration
        self._hostname = hostname if hostname is not None else socket.gethostname()
        self._version = version if version is not None else _version()
        self._source = source

        self.revision: int | None = None
        self.gateway_id: str | None = None
        self.token_expiry: float | None = None
        self.auth_failures = 0
        self.connected = False
        self.from_backup = False
        self.instances: int | None = None
        self.instance_id = f"{self._hostname}-{self._random.getrandbits(48):012x}"

        #: The raw entities, by snapshot list name, then id.
        self._entities: dict[str, dict[str, dict[str, Any]]] = {}
        self._derived: dict[ObjectRef, SourceObject] = {}
        self._api_cache: dict[str, tuple[dict[str, Any], SourceObject | None]] = {}
        self._has_configuration = False
        self._synced = False
        self._waiting: list[Deferred[None]] = []

        self._pool: HTTPConnectionPool | None = None
        self._http: HTTPClient | None = None
        self._loop: Deferred[None] | None = None
        self._heartbeats: LoopingCall | None = None
        self._heartbeat_request: Deferred[Any] | None = None
        self._warned_expiry_at: float | None = None

        self._backup_dirty = False
        self._backup_call: Any = None
        self._backup_writing: Deferred[Any] | None = None
        self._last_backup = float("-inf")
        self._location_reported = False

    # -- service

    def startService(self) -> None:
        """Connect: snapshot, then the change feed; heartbeats alongside."""
        super().startService()
        self._pool = HTTPConnectionPool(self._reactor, persistent=True)
        self._pool.retryAutomatically = False
        self._http = HTTPClient(Agent(self._reactor, pool=self._pool))
        self._loop = self._run()
        self._loop.addErrback(self._loop_failed)
        self._heartbeats = LoopingCall(self._heartbeat)
        self._heartbeats.clock = self._clock
        self._heartbeats.start(self._heartbeat_interval, now=False)

    def stopService(self) -> Deferred[Any]:
        """
        Stop following the service (the store keeps what was applied),
        write a pending backup, close the connections.
        """
        super().stopService()
        if self._loop is not None:
            self._loop.cancel()
            self._loop = None
        if self._heartbeats is not None and self._heartbeats.running:
            self._heartbeats.stop()
        if self._heartbeat_request is not None:
            self._heartbeat_request.cancel()
        waits: list[Deferred[Any]] = []
        if self._backup_call is not None and self._backup_call.active():
            self._backup_call.cancel()
            self._backup_call = None
        if self._backup_writing is not None:
            waits.append(self._backup_writing)
        elif self._backup_dirty:
            self._start_backup_write()
            if self._backup_writing is not None:
                waits.append(self._backup_writing)
        if self._pool is not None:
            waits.append(self._pool.closeCachedConnections())
        return DeferredList(waits, consumeErrors=True)

    def when_synced(self) -> Deferred[None]:
        """
        A new Deferred that fires once the first configuration is applied
        (from the service or the backup), or, with
        ``require_configuration=False``, once the first attempt failed with
        no backup to fall back on.
        """
        if self._synced:
            return succeed(None)
        waiting: Deferred[None] = Deferred(self._waiting.remove)
        self._waiting.append(waiting)
        return waiting

    def _fire_synced(self) -> None:
        if self._synced:
            return
        self._synced = True
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(None)

    def _loop_failed(self, failure: Any) -> None:
        if failure.check(CancelledError):
            return None
        self._log.failure("The cloud source stopped following the service", failure)
        return None

    # -- the main loop

    @inlineCallbacks
    def _run(self) -> Any:
        attempt = 0
        need_snapshot = True
        tried_backup = False
        while self.running:
            try:
                if need_snapshot:
                    yield self._fetch_snapshot()
                    need_snapshot = False
                else:
                    yield self._poll_events()
                attempt = 0
            except _Gone as gone:
                self._log.info(
                    "The change feed no longer reaches revision {revision} ({reason}): "
                    "fetching the snapshot again",
                    revision=self.revision,
                    reason=str(gone),
                )
                need_snapshot = True
            except CancelledError:
                if not self.running:
                    return
                # A request timed out: treated as any other failure.
                attempt = yield self._after_failure(
                    TimeoutError("the request timed out"), attempt, tried_backup
                )
                tried_backup = True
            except Exception as error:
                if not self.running:
                    return
                attempt = yield self._after_failure(error, attempt, tried_backup)
                tried_backup = True

    @inlineCallbacks
    def _after_failure(self, error: Exception, attempt: int, tried_backup: bool) -> Any:
        self.connected = False
        delay = self._backoff(attempt)
        if isinstance(error, _Refused):
            self.auth_failures += 1
            self._log.error(
                "The configuration service refused the gateway's token ({status}: {message}); "
                "{serving}; retrying in {delay:.1f} s",
                status=error.status,
                message=error.message,
                serving=self._serving(),
                delay=delay,
            )
        elif isinstance(error, TokenError):
            self.auth_failures += 1
            self.token_expiry = None
            self._log.error(
                "No usable token for the configuration service: {reason}; {serving}; "
                "retrying in {delay:.1f} s",
                reason=str(error),
                serving=self._serving(),
                delay=delay,
            )
        else:
            self._log.warn(
                "The configuration service {endpoint} cannot be reached ({reason}); {serving}; "
                "retrying in {delay:.1f} s",
                endpoint=self._endpoint,
                reason=_describe(error),
                serving=self._serving(),
                delay=delay,
            )
        if not tried_backup and not self._has_configuration:
            yield self._boot_fallback()
        yield deferLater(self._clock, delay, lambda: None)
        return attempt + 1

    def _serving(self) -> str:
        if self._has_configuration:
            return f"serving the last configuration (revision {self.revision})"
        return "no cloud configuration to serve yet"

    @inlineCallbacks
    def _boot_fallback(self) -> Any:
        """The first attempt failed and nothing is served: the backup, if any."""
        document = yield self._load_backup()
        if document is not None and self.running and not self._has_configuration:
            self._apply_snapshot(document["snapshot"], document["gatewayId"], backup=True)
            return
        if not self._require_configuration and not self._synced:
            self._log.warn(
                "No cloud configuration (the service cannot be reached and there is no "
                "backup): the gateway serves its other sources meanwhile, and the cloud's "
                "APIs as soon as the service answers"
            )
            self._fire_synced()

    @inlineCallbacks
    def _load_backup(self) -> Any:
        if self._backup_path is None:
            return None
        path = backup_file(self._backup_path)
        try:
            document = yield deferToThread(load_backup, self._backup_path)
        except BackupLocationNotFound as e:
            self._report_location(e)
            return None
        except BackupError as e:
            self._log.error(
                "The cloud configuration backup {path} is ignored: {reason}",
                path=path,
                reason=str(e),
            )
            return None
        if document is None:
            self._log.info("No cloud configuration backup at {path}", path=path)
            return None
        try:
            expected = self._tokens.current().gateway_id
        except TokenError:
            expected = None
        if expected is not None and document["gatewayId"] != expected:
            self._log.error(
                "The cloud configuration backup {path} is ignored: it is gateway {other}'s, "
                "and the token is gateway {gateway}'s",
                path=path,
                other=document["gatewayId"],
                gateway=expected,
            )
            return None
        return document

    def _report_location(self, error: BackupLocationNotFound) -> None:
        if self._location_reported:
            return
        self._location_reported = True
        self._log.warn(
            "LoadBackupLocationNotFound: {reason}; cloud configuration backups are skipped "
            "while it is missing (mount a volume at config.backup.path)",
            reason=str(error),
            path=self._backup_path,
        )

    # -- requests

    def _token(self) -> GatewayToken:
        token = self._tokens.current()
        self.token_expiry = token.expiry
        return token

    @inlineCallbacks
    def _request(self, method: str, path: str, token: GatewayToken, *, body: Any = None,
                 timeout: float) -> Any:
        assert self._http is not None
        headers = {b"Authorization": [token.value.encode("utf-8")], b"Accept": [b"application/json"]}
        kwargs: dict[str, Any] = {"headers": headers}
        if body is not None:
            kwargs["json"] = body
        d = self._http.request(method, self._endpoint + path, **kwargs)
        d.addCallback(lambda response: treq.content(response).addCallback(
            lambda content: (response.code, content)))
        d.addTimeout(timeout, self._clock)
        status, content = yield d
        if status in (401, 403):
            raise _Refused(status, _message(content))
        if status == 410:
            raise _Gone(_message(content))
        if status != 200:
            raise _Unexpected(f"HTTP {status}: {_message(content)}")
        try:
            return json.loads(content)
        except ValueError:
            raise _Unexpected("the answer is not JSON") from None

    def _gateway_path(self, token: GatewayToken, rest: str) -> str:
        return f"/gateways/{quote(token.gateway_id, safe='')}/{rest}"

    @inlineCallbacks
    def _fetch_snapshot(self) -> Any:
        token = self._token()
        snapshot = yield self._request(
            "GET", self._gateway_path(token, "configuration"), token,
            timeout=self._request_timeout,
        )
        if not isinstance(snapshot, dict) or not isinstance(snapshot.get("revision"), int):
            raise _Unexpected("the snapshot has no revision")
        self.connected = True
        self._check_expiry(token)
        self._apply_snapshot(snapshot, token.gateway_id, backup=False)

    @inlineCallbacks
    def _poll_events(self) -> Any:
        token = self._token()
        if token.gateway_id != self.gateway_id:
            raise _Gone(f"the token is now gateway {token.gateway_id}'s")
        answer = yield self._request(
            "GET",
            self._gateway_path(token, f"events?after={self.revision}&wait={self._poll_wait:g}"),
            token,
            timeout=self._poll_wait + self._request_timeout,
        )
        if not isinstance(answer, dict) or not isinstance(answer.get("revision"), int):
            raise _Unexpected("the change feed's answer has no revision")
        self.connected = True
        events = answer.get("events") or []
        for event in events:
            self._apply_event(event)
        previous, self.revision = self.revision, answer["revision"]
        if events:
            self._publish()
            self._log.info(
                "Applied {count} cloud configuration changes (revision {revision})",
                count=len(events),
                revision=self.revision,
            )
        if events or previous != self.revision:
            self._schedule_backup()

    # -- state

    def _apply_snapshot(self, snapshot: dict[str, Any], gateway_id: str, *, backup: bool) -> None:
        entities: dict[str, dict[str, dict[str, Any]]] = {}
        for name in ENTITY_LISTS.values():
            items = snapshot.get(name)
            entities[name] = {
                e["id"]: e
                for e in (items if isinstance(items, list) else [])
                if isinstance(e, dict) and isinstance(e.get("id"), str)
            }
        self._entities = entities
        self.revision = int(snapshot["revision"])
        self.gateway_id = gateway_id
        self.from_backup = backup
        derived = self._derive()
        self._store.replace_source(self._source, derived.values())
        self._derived = derived
        self._has_configuration = True
        if not backup:
            self._log.info(
                "Applied the cloud configuration snapshot of gateway {gateway} (revision "
                "{revision}): {apis} APIs, {certificates} certificates",
                gateway=gateway_id,
                revision=self.revision,
                apis=len(entities["apis"]),
                certificates=sum(1 for ref in derived if ref.kind == "certificate"),
            )
            self._schedule_backup()
        else:
            self._log.warn(
                "Serving the cloud configuration from the backup {path} (revision {revision}, "
                "{apis} APIs) until the configuration service answers",
                path=backup_file(self._backup_path or ""),
                revision=self.revision,
                apis=len(entities["apis"]),
            )
        self._fire_synced()

    def _apply_event(self, event: Any) -> None:
        if not isinstance(event, dict):
            return
        name = ENTITY_LISTS.get(event.get("kind"))  # type: ignore[arg-type]
        entity_id = event.get("id")
        if name is None or not isinstance(entity_id, str):
            self._log.debug("Ignored a change of unknown kind {kind}", kind=event.get("kind"))
            return
        table = self._entities.setdefault(name, {})
        if event.get("operation") == "delete":
            table.pop(entity_id, None)
        elif isinstance(event.get("body"), dict):
            table[entity_id] = event["body"]

    def _publish(self) -> None:
        """Write the model objects that changed (upserts and deletes) to the store."""
        derived = self._derive()
        old = self._derived
        for ref in old.keys() - derived.keys():
            self._store.delete(ref)
        for ref, obj in derived.items():
            if old.get(ref) != obj:
                self._store.upsert(obj)
        self._derived = derived

    def _derive(self) -> dict[ObjectRef, SourceObject]:
        objects: dict[ObjectRef, SourceObject] = {}
        apis = self._entities.get("apis", {})
        for api_id in list(self._api_cache):
            if api_id not in apis:
                del self._api_cache[api_id]
        for api_id, raw in apis.items():
            cached = self._api_cache.get(api_id)
            if cached is None or cached[0] is not raw:
                cached = (raw, self._convert_api(api_id, raw))
                self._api_cache[api_id] = cached
            if cached[1] is not None:
                objects[cached[1].ref] = cached[1]
        certificates = self._entities.get("certificates", {})
        served: dict[str, list[dict[str, Any]]] = {}
        for host in self._entities.get("hostnames", {}).values():
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
            objects[ref] = SourceObject(ref, modified, body)
        return objects

    def _convert_api(self, api_id: str, raw: dict[str, Any]) -> SourceObject | None:
        try:
            operations = tuple(
                Operation(
                    name=str(op.get("id") or op.get("name")),
                    method=str(op["method"]),
                    url_template=str(op["urlTemplate"]),
                )
                for op in raw.get("operations") or []
            )
            body = Api(
                name=api_id,
                path=str(raw["path"]),
                service_url=str(raw["serviceUrl"]),
                hostnames=tuple(str(h) for h in raw.get("hostnames") or ()),
                subscription_required=bool(raw.get("subscriptionRequired", False)),
                operations=operations,
                display_name=str(raw.get("displayName") or ""),
                protocols=tuple(str(p) for p in raw.get("protocols") or ("http", "https")),
            )
        except (KeyError, TypeError, AttributeError) as e:
            self._log.error(
                "Cloud API {api} is left out: it lacks {field}", api=api_id, field=str(e)
            )
            return None
        ref = ObjectRef(self._source, "api", api_id)
        return SourceObject(ref, parse_modified(raw.get("modified")), body)

    # -- backup

    def _backup_document(self) -> dict[str, Any]:
        snapshot: dict[str, Any] = {"gatewayId": self.gateway_id, "revision": self.revision}
        for name, table in self._entities.items():
            snapshot[name] = [table[k] for k in sorted(table)]
        return {
            "format": BACKUP_FORMAT,
            "gatewayId": self.gateway_id,
            "revision": self.revision,
            "savedAt": datetime.fromtimestamp(self._clock.seconds(), timezone.utc).isoformat(),
            "endpoint": self._endpoint,
            "snapshot": snapshot,
        }

    def _schedule_backup(self) -> None:
        if self._backup_path is None:
            return
        self._backup_dirty = True
        if self._backup_call is not None or self._backup_writing is not None or not self.running:
            return
        delay = max(0.0, self._last_backup + self._backup_interval - self._clock.seconds())
        self._backup_call = self._clock.callLater(delay, self._backup_due)

    def _backup_due(self) -> None:
        self._backup_call = None
        self._start_backup_write()

    def _start_backup_write(self) -> None:
        if not self._backup_dirty or self._backup_path is None or self.gateway_id is None:
            return
        self._backup_dirty = False
        document = self._backup_document()
        revision = document["revision"]
        d = deferToThread(write_backup, self._backup_path, document)

        def written(path: str) -> None:
            self._log.info(
                "Cloud configuration backup written: {path} (revision {revision})",
                path=path,
                revision=revision,
            )

        def failed(failure: Any) -> None:
            if failure.check(BackupLocationNotFound):
                self._report_location(failure.value)
                return
            self._log.error(
                "Writing the cloud configuration backup {path} failed: {reason}",
                path=backup_file(self._backup_path or ""),
                reason=str(failure.value),
            )

        def done(_: Any) -> None:
            self._backup_writing = None
            self._last_backup = self._clock.seconds()
            if self._backup_dirty and self.running:
                self._backup_dirty = False
                self._schedule_backup()

        d.addCallbacks(written, failed)
        d.addBoth(done)
        self._backup_writing = d if not d.called else None

    # -- heartbeat and token expiry

    def _heartbeat(self) -> None:
        try:
            token = self._token()
        except TokenError:
            return  # reported by the main loop
        self._check_expiry(token)
        if self._heartbeat_request is not None:
            return
        body = {
            "instanceId": self.instance_id,
            "hostname": self._hostname,
            "version": self._version,
            "revision": self.revision if self.revision is not None else 0,
        }
        d = self._request(
            "POST", self._gateway_path(token, "heartbeat"), token, body=body,
            timeout=self._request_timeout,
        )

        def answered(answer: Any) -> None:
            if isinstance(answer, dict) and isinstance(answer.get("instances"), int):
                self.instances = answer["instances"]

        def failed(failure: Any) -> None:
            if not failure.check(CancelledError):
                self._log.debug("Heartbeat failed: {reason}", reason=str(failure.value))

        def done(_: Any) -> None:
            self._heartbeat_request = None

        d.addCallbacks(answered, failed)
        d.addBoth(done)
        self._heartbeat_request = d if not d.called else None

    def send_heartbeat(self) -> None:
        """Send a heartbeat now (as the timer does every interval)."""
        self._heartbeat()

    def _check_expiry(self, token: GatewayToken) -> None:
        now = self._clock.seconds()
        left = token.expiry - now
        if left > TOKEN_WARNING:
            self._warned_expiry_at = None
            return
        if self._warned_expiry_at is not None and now - self._warned_expiry_at < _DAY:
            return
        self._warned_expiry_at = now
        expires = datetime.fromtimestamp(token.expiry, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        if left <= 0:
            self._log.error(
                "The configuration service token of gateway {gateway} expired at {expiry}: "
                "generate a new one (config.service.auth)",
                gateway=token.gateway_id,
                expiry=expires,
            )
        else:
            self._log.warn(
                "The configuration service token of gateway {gateway} expires in {days:.1f} "
                "days ({expiry}): generate a new one (config.service.auth)",
                gateway=token.gateway_id,
                days=left / _DAY,
                expiry=expires,
            )


def _message(content: bytes) -> str:
    try:
        body = json.loads(content)
    except ValueError:
        return content[:200].decode("utf-8", "replace")
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return body["message"]
    return content[:200].decode("utf-8", "replace")


def _describe(error: Exception) -> str:
    # ResponseNeverReceived and friends wrap the real reason in a list.
    reasons = getattr(error, "reasons", None)
    if reasons:
        return "; ".join(str(getattr(r, "value", r)) for r in reasons)
    return str(error) or type(error).__name__
