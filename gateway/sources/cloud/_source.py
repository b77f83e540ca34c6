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

This module composes the parts: :mod:`._protocol` (the HTTP calls),
:mod:`._mirror` (the raw entities), :mod:`._decode` (entities → model
objects and problems), :mod:`._backup` (the backup file), :mod:`._heartbeat`
and :mod:`._token`.
"""

from __future__ import annotations

import random as _random_module
import socket
from datetime import datetime, timezone
from typing import Any

from twisted.application.internet import backoffPolicy
from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, DeferredList, inlineCallbacks
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall, deferLater
from twisted.internet.threads import deferToThread
from twisted.logger import Logger

from cloudproto import Token, TokenError
from gateway.model import ObjectRef, Problem, Store
from gateway.ready import OneShot

from ._backup import (
    BACKUP_FORMAT,
    BackupError,
    BackupKey,
    BackupLocationNotFound,
    backup_file,
    load_backup,
    read_key_setting,
    write_backup,
)
from ._decode import Decoded, Decoder
from ._heartbeat import Heartbeat, package_version
from ._mirror import Mirror
from ._protocol import CloudClient, Gone, Refused, cleartext_remote, describe
from ._token import ExpiryWarning, TokenProvider

__all__ = ["CloudSource"]


class CloudSource(Service):
    """
    Keeps the configuration service's objects for this gateway in the store,
    under source ``cloud``, with the problems of the entities that cannot
    be decoded.

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
        backup_key: str | None = None,
        heartbeat_interval: float = 60.0,
        poll_wait: float = 30.0,
        request_timeout: float = 30.0,
        initial_delay: float = 1.0,
        max_delay: float = 60.0,
        require_configuration: bool = True,
        hostname: str | None = None,
        version: str | None = None,
        ca: str | None = None,
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
        :param backup_key: ``config.backup.key``: the key (or a file holding
            it) the backup's secret fields are encrypted with; ``None``:
            derived from the token (see :mod:`._backup`).
        :param heartbeat_interval: seconds between heartbeats, and between
            checks of the token's expiry (those run from the start, service
            reached or not).
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
        :param version: the version the heartbeat reports (the package's by
            default).
        :param ca: ``config.service.ca``: the certificate authorities (PEM,
            or a file) the service's certificate is checked against;
            ``None``: the system's trust store.
        :raises TokenError: ``auth`` is a token, and a malformed one.
        :raises ValueError: ``ca`` holds no certificate, or ``backup_key``
            cannot be read or is too short.
        """
        self._store = store
        self._endpoint = endpoint.rstrip("/")
        self._tokens = TokenProvider(auth)
        self._reactor = reactor
        self._clock: Any = reactor if clock is None else clock
        self._random = random if random is not None else _random_module.Random()
        self._backup_path = backup_path
        self._backup_interval = backup_interval
        self._backup_key = read_key_setting(backup_key) if backup_key is not None else None
        self._token_signature: str | None = None
        self._poll_wait = poll_wait
        self._request_timeout = request_timeout
        self._ca = ca
        if ca is not None:
            from ._protocol import trust_policy

            trust_policy(ca)  # a bad CA fails the start, not the first request
        self._backoff = backoffPolicy(
            initialDelay=initial_delay, maxDelay=max_delay, jitter=self._random.random
        )
        self._require_configuration = require_configuration
        self._hostname = hostname if hostname is not None else socket.gethostname()
        self._version = version if version is not None else package_version()
        self._source = source

        self.token_expiry: float | None = None
        self.auth_failures = 0
        self.connected = False
        self.from_backup = False
        self.instance_id = f"{self._hostname}-{self._random.getrandbits(48):012x}"

        self._mirror = Mirror()
        self._decoder = Decoder(source)
        self._decoded = Decoded()
        self._synced: OneShot[None] = OneShot()
        self._expiry = ExpiryWarning()
        self._heartbeat = Heartbeat(
            lambda: self._client, self._token, self._heartbeat_body, self._clock,
            heartbeat_interval,
        )
        # The expiry check has its own timer, started with the service: a
        # gateway that never reaches the service (serving its backup, or
        # nothing) is the one that most needs to hear its token expires.
        self._expiry_interval = heartbeat_interval
        self._expiry_loop = LoopingCall(self._expiry_tick)
        self._expiry_loop.clock = self._clock

        self._client: CloudClient | None = None
        self._loop: Deferred[None] | None = None
        self._warned_cleartext = False
        self._warned_backup_key = False

        self._backup_dirty = False
        self._backup_call: Any = None
        self._backup_writing: Deferred[Any] | None = None
        self._last_backup = float("-inf")
        self._location_reported = False

    # -- status

    @property
    def revision(self) -> int | None:
        return self._mirror.revision

    @property
    def gateway_id(self) -> str | None:
        return self._mirror.gateway_id

    @property
    def instances(self) -> int | None:
        return self._heartbeat.instances

    # -- service

    def startService(self) -> None:
        """
        Connect: snapshot, then the change feed; heartbeats once the
        snapshot is applied. The token's expiry is checked at once and every
        heartbeat interval from now on, whether the service answers or not.
        """
        super().startService()
        self._warn_cleartext()
        self._warn_backup_key()
        self._expiry_loop.start(self._expiry_interval, now=True)
        self._client = CloudClient(
            self._reactor, self._clock, self._endpoint,
            request_timeout=self._request_timeout, ca=self._ca,
        )
        self._loop = self._run()
        self._loop.addErrback(self._loop_failed)

    def _warn_cleartext(self) -> None:
        if self._warned_cleartext or not cleartext_remote(self._endpoint):
            return
        self._warned_cleartext = True
        self._log.warn(
            "The configuration service {endpoint} is plain http:// to a host that is not "
            "loopback: the gateway's token and the configuration's secrets (subscription keys, "
            "certificate keys) cross the network in clear; use https:// (see docs/config-service.md)",
            endpoint=self._endpoint,
        )

    def _warn_backup_key(self) -> None:
        """
        Say once, at start, what a backup without ``config.backup.key``
        costs: the operator finds out at the worst moment otherwise (a
        restart with a new token while the service is down).
        """
        if self._warned_backup_key or self._backup_path is None or self._backup_key is not None:
            return
        self._warned_backup_key = True
        self._log.warn(
            "The cloud configuration backup in {path} has its secrets sealed with a key derived "
            "from the token (config.backup.key is not set): a backup sealed under one token "
            "cannot be read after the token is rotated while the gateway is down; to avoid "
            "it, configure config.backup.key with a random value kept apart from the backup "
            "(see docs/cloud.md)",
            path=self._backup_path,
        )

    def stopService(self) -> Deferred[Any]:
        """
        Stop following the service (the store keeps what was applied),
        write a pending backup, close the connections.
        """
        super().stopService()
        if self._loop is not None:
            self._loop.cancel()
            self._loop = None
        if self._expiry_loop.running:
            self._expiry_loop.stop()
        self._heartbeat.stop()
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
        if self._client is not None:
            waits.append(self._client.close())
            self._client = None
        return DeferredList(waits, consumeErrors=True)

    def when_synced(self) -> Deferred[None]:
        """
        A new Deferred that fires once the first configuration is applied
        (from the service or the backup), or, with
        ``require_configuration=False``, once the first attempt failed with
        no backup to fall back on.
        """
        return self._synced.when()

    def send_heartbeat(self) -> None:
        """Send a heartbeat now (as the timer does every interval)."""
        self._heartbeat.send()

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
            except Gone as gone:
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
        if isinstance(error, Refused):
            self.auth_failures += 1
            self._log.error(
                "The configuration service refused the gateway's token ({status}: {detail}); "
                "{serving}; retrying in {delay:.1f} s",
                status=error.status,
                detail=error.message,
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
                reason=describe(error),
                serving=self._serving(),
                delay=delay,
            )
        if not tried_backup and not self._mirror.loaded:
            yield self._boot_fallback()
        yield deferLater(self._clock, delay, lambda: None)
        return attempt + 1

    def _serving(self) -> str:
        if self._mirror.loaded:
            return f"serving the last configuration (revision {self.revision})"
        return "no cloud configuration to serve yet"

    @inlineCallbacks
    def _boot_fallback(self) -> Any:
        """The first attempt failed and nothing is served: the backup, if any."""
        document = yield self._load_backup()
        if document is not None and self.running and not self._mirror.loaded:
            self._apply_snapshot(document["snapshot"], document["gatewayId"], backup=True)
            return
        if not self._require_configuration and not self._synced.done:
            self._log.warn(
                "No cloud configuration (the service cannot be reached and there is no "
                "backup): the gateway serves its other sources meanwhile, and the cloud's "
                "APIs as soon as the service answers"
            )
            self._synced.fire(None)

    @inlineCallbacks
    def _load_backup(self) -> Any:
        if self._backup_path is None:
            return None
        path = backup_file(self._backup_path)
        try:
            token: Token | None = self._tokens.current()
        except TokenError:
            token = None
        try:
            document = yield deferToThread(
                load_backup, self._backup_path, lambda gid: self._backup_key_for(gid, token)
            )
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
        expected = token.gateway_id if token is not None else None
        if expected is not None and document["gatewayId"] != expected:
            self._log.error(
                "The cloud configuration backup {path} is ignored: it is gateway {other}'s, "
                "and the token is gateway {gateway}'s",
                path=path,
                other=document["gatewayId"],
                gateway=expected,
            )
            return None
        if document.get("format") == 1:
            self._log.warn(
                "The cloud configuration backup {path} is of format 1, from before encryption: "
                "its secrets are in clear and it is not authenticated (a change to it would "
                "go unnoticed); it is used until the service answers, and the next backup is "
                "written in format {new_format}, encrypted and with a MAC. If this gateway never ran "
                "a version writing format 1, treat the file as tampered with",
                path=path,
                new_format=BACKUP_FORMAT,
            )
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

    def _token(self) -> Token:
        token = self._tokens.current()
        self.token_expiry = token.expires
        if token.signature != self._token_signature:
            rotated = self._token_signature is not None
            self._token_signature = token.signature
            if rotated and self._backup_key is None and self._mirror.loaded:
                # The backup's key derives from the token: seal it anew
                # under the new one, so a restart with it can read it.
                self._schedule_backup()
        return token

    def _backup_key_for(self, gateway_id: str, token: Token | None) -> BackupKey | None:
        """
        The backup key of ``gateway_id``: the configured one, else the one
        derived from ``token`` (``None`` without a token of that gateway).
        Pure, so it may run in the backup's thread.
        """
        if self._backup_key is not None:
            return BackupKey.configured(self._backup_key, gateway_id)
        if token is None or token.gateway_id != gateway_id:
            return None
        return BackupKey.from_token(token)

    def _current_token(self) -> Token | None:
        try:
            return self._tokens.current()
        except TokenError:
            return None

    @inlineCallbacks
    def _fetch_snapshot(self) -> Any:
        token = self._token()
        assert self._client is not None
        snapshot = yield self._client.snapshot(token)
        self.connected = True
        self._check_expiry(token)
        self._apply_snapshot(snapshot, token.gateway_id, backup=False)

    @inlineCallbacks
    def _poll_events(self) -> Any:
        token = self._token()
        if token.gateway_id != self.gateway_id:
            raise Gone(f"the token is now gateway {token.gateway_id}'s")
        assert self._client is not None and self.revision is not None
        answer = yield self._client.events(token, self.revision, self._poll_wait)
        self.connected = True
        events = answer.get("events") or []
        for event in events:
            if not self._mirror.apply_event(event):
                self._log.debug(
                    "Ignored a change of unknown kind {kind}",
                    kind=event.get("kind") if isinstance(event, dict) else None,
                )
        previous, self._mirror.revision = self.revision, answer["revision"]
        if events:
            self._publish()
            self._log.info(
                "Applied {count} cloud configuration changes (revision {revision})",
                count=len(events),
                revision=self.revision,
            )
        if events or previous != self.revision:
            self._schedule_backup()

    def _expiry_tick(self) -> None:
        """Check the current token's expiry (a missing token is the main loop's to report)."""
        try:
            token = self._token()
        except TokenError:
            return
        self._check_expiry(token)

    def _check_expiry(self, token: Token) -> None:
        self._expiry.check(token, self._clock.seconds())

    def _heartbeat_body(self) -> dict[str, Any]:
        return {
            "instanceId": self.instance_id,
            "hostname": self._hostname,
            "version": self._version,
            "revision": self.revision if self.revision is not None else 0,
        }

    # -- state

    def _apply_snapshot(self, snapshot: dict[str, Any], gateway_id: str, *, backup: bool) -> None:
        self._mirror.apply_snapshot(snapshot, gateway_id)
        self.from_backup = backup
        decoded = self._decoder.decode(self._mirror.entities)
        self._store.replace_source(self._source, decoded.objects.values(), decoded.all_problems())
        self._decoded = decoded
        self._log_problems(decoded.problems, {})
        apis = len(self._mirror.entities.get("apis", {}))
        if not backup:
            self._log.info(
                "Applied the cloud configuration snapshot of gateway {gateway} (revision "
                "{revision}): {apis} APIs, {certificates} certificates",
                gateway=gateway_id,
                revision=self.revision,
                apis=apis,
                certificates=sum(1 for ref in decoded.objects if ref.kind == "certificate"),
            )
            self._schedule_backup()
            # The first heartbeat goes out now, with the revision just
            # applied (before the waiters run: they may move the clock).
            self._heartbeat.start()
        else:
            self._log.warn(
                "Serving the cloud configuration from the backup {path} (revision {revision}, "
                "{apis} APIs) until the configuration service answers",
                path=backup_file(self._backup_path or ""),
                revision=self.revision,
                apis=apis,
            )
        self._synced.fire(None)

    def _publish(self) -> None:
        """Write what changed (objects and problems) to the store."""
        decoded = self._decoder.decode(self._mirror.entities)
        old = self._decoded
        refs: set[ObjectRef] = set(old.objects) | set(old.problems)
        for ref in refs - set(decoded.objects) - set(decoded.problems):
            self._store.delete(ref)
        for ref, problems in decoded.problems.items():
            if ref not in decoded.objects and old.problems.get(ref) != problems:
                self._store.report(ref, problems)
        for ref, obj in decoded.objects.items():
            problems = decoded.problems.get(ref, ())
            if old.objects.get(ref) != obj or old.problems.get(ref, ()) != problems:
                self._store.upsert(obj, problems)
        self._log_problems(decoded.problems, old.problems)
        self._decoded = decoded

    def _log_problems(self, new: dict[ObjectRef, tuple[Problem, ...]],
                      old: dict[ObjectRef, tuple[Problem, ...]]) -> None:
        """One log line per newly found problem (the store holds them all)."""
        for ref, problems in new.items():
            if old.get(ref) != problems:
                for problem in problems:
                    self._log.error("Cloud entity {ref}: {problem}", ref=str(ref),
                                    problem=problem.message)

    # -- backup

    def _backup_document(self) -> dict[str, Any]:
        return {
            "format": BACKUP_FORMAT,
            "gatewayId": self.gateway_id,
            "revision": self.revision,
            "savedAt": datetime.fromtimestamp(self._clock.seconds(), timezone.utc).isoformat(),
            "endpoint": self._endpoint,
            "snapshot": self._mirror.snapshot(),
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
        key = self._backup_key_for(self.gateway_id, self._current_token())
        if key is None:
            # No usable token to seal the secrets with: written once there is.
            self._log.warn(
                "The cloud configuration backup is not written: no usable token to derive its "
                "key from (set config.backup.key)"
            )
            return
        self._backup_dirty = False
        document = self._backup_document()
        revision = document["revision"]
        d = deferToThread(write_backup, self._backup_path, document, key)

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
