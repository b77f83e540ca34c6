"""
Tests for :class:`gateway.sources.cloud.CloudSource` against a real configuration service
in-process on loopback (``tests.configservice.harness``).

The service runs on its own ``task.Clock`` (tokens, long-poll timeouts);
the cloud source schedules its backoff, heartbeats and backups on another
one (``self.gclock``), so a test decides when a retry happens by advancing
it. HTTP runs on the real reactor.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import time
from typing import Any

from prometheus_client import generate_latest
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from cloudproto import expiry_stamp, issue
from gateway.model import ObjectRef, Store
from gateway.observability import GatewayMetrics
from gateway.sources.cloud._backup import BACKUP_FILE
from gateway.sources.cloud import CloudSource, parse_modified
from tests.configservice.harness import ServiceTestCase, self_signed
from tests.integration.harness import dead_port

GATEWAY = "edge"


class CloudTestCase(ServiceTestCase):
    """A service with gateway ``edge`` and one assigned API ``echo``."""

    @inlineCallbacks
    def setUp(self) -> Any:
        yield super().setUp()
        self.gclock = Clock()
        self.gclock.advance(time.time())
        self.backup_dir = tempfile.mkdtemp()
        yield self.ok("PUT", f"/gateways/{GATEWAY}", {})
        yield self.assigned_api("echo", "echo")
        self.token_value = yield self.token(GATEWAY)

    @inlineCallbacks
    def assigned_api(self, api_id: str, path: str, **fields: Any) -> Any:
        api = yield self.api(api_id, path, **fields)
        yield self.ok("PUT", f"/apis/{api_id}/operations/get",
                      {"method": "GET", "urlTemplate": "/resource"})
        yield self.ok("PUT", f"/gateways/{GATEWAY}/apis/{api_id}")
        return api

    def endpoint(self, port: int | None = None) -> str:
        return f"http://127.0.0.1:{port or self.gateway_port}"

    def source(self, store: Store | None = None, *, auth: str | None = None,
               endpoint: str | None = None, **kw: Any) -> CloudSource:
        kw.setdefault("backup_path", self.backup_dir)
        kw.setdefault("backup_interval", 0.0)
        source = CloudSource(
            store if store is not None else Store(),
            endpoint or self.endpoint(),
            auth or self.token_value,
            reactor=reactor,
            clock=self.gclock,
            random=random.Random(4),
            **kw,
        )
        source.startService()
        self.addCleanup(lambda: source.stopService() if source.running else None)
        return source

    def settle(self, predicate: Any, step: float = 0.0, timeout: float = 10.0) -> Any:
        """Wait for ``predicate()``, advancing the source's clock by ``step`` each time."""

        def check() -> Any:
            self.gclock.advance(step)
            return predicate()

        return self.wait_for(check, timeout)

    @staticmethod
    def api_of(store: Store, name: str) -> Any:
        for obj in store.objects("cloud"):
            if obj.ref == ObjectRef("cloud", "api", name):
                return obj
        return None

    @inlineCallbacks
    def restart_listener(self) -> Any:
        """Start the service's gateway listener again on its old port."""
        listener = self.service.listeners["gateway"]
        # The harness listens on port 0; reopen on the same port.
        listener._description = f"tcp:{self.gateway_port}:interface=127.0.0.1"
        listener.startService()
        yield listener.when_listening()

    def backup_path(self) -> str:
        return os.path.join(self.backup_dir, BACKUP_FILE)


class SnapshotTests(CloudTestCase):
    """The first snapshot."""

    @inlineCallbacks
    def test_snapshotApplied(self) -> Any:
        """
        The snapshot's APIs become ``cloud`` Api objects with their
        operations and the entity's own modification time, and a certificate
        named by a host name becomes a Certificate for that name; the
        source is synced.
        """
        cert, key = self_signed("www.example.com")
        yield self.ok("PUT", "/certificates/www", {"pem": cert + key})
        yield self.ok("PUT", f"/gateways/{GATEWAY}/hostnames/www.example.com",
                      {"certificateId": "www"})
        entity = yield self.ok("GET", "/apis/echo")
        store = Store()
        source = self.source(store)
        yield source.when_synced()
        obj = self.api_of(store, "echo")
        self.assertEqual(obj.body.path, "echo")
        self.assertEqual([(o.method, o.url_template) for o in obj.body.operations],
                         [("GET", "/resource")])
        self.assertEqual(obj.modified, parse_modified(entity["modified"]))
        (certificate,) = [o for o in store.objects("cloud") if o.ref.kind == "certificate"]
        self.assertEqual(certificate.body.hosts, ("www.example.com",))
        self.assertIn("PRIVATE KEY", certificate.body.key_pem)
        self.assertEqual(source.gateway_id, GATEWAY)

    @inlineCallbacks
    def test_unassignedApiNotApplied(self) -> Any:
        """An API not assigned to the gateway is not in its store."""
        yield self.api("other", "other")
        store = Store()
        yield self.source(store).when_synced()
        self.assertIsNone(self.api_of(store, "other"))
        self.assertIsNotNone(self.api_of(store, "echo"))


class EventTests(CloudTestCase):
    """The change feed."""

    @inlineCallbacks
    def test_upsertAndDeleteApplied(self) -> Any:
        """
        An API created, changed and deleted through the management API is
        upserted, replaced and removed in the store.
        """
        store = Store()
        source = self.source(store)
        yield source.when_synced()
        yield self.assigned_api("users", "users")
        yield self.settle(lambda: self.api_of(store, "users") is not None)
        yield self.ok("PUT", "/apis/users", {"path": "people", "serviceUrl": "http://127.0.0.1:9/u"})
        yield self.settle(lambda: self.api_of(store, "users").body.path == "people")
        yield self.ok("DELETE", "/apis/users")
        yield self.settle(lambda: self.api_of(store, "users") is None)
        self.assertIsNotNone(self.api_of(store, "echo"))

    @inlineCallbacks
    def test_heartbeatListsInstance(self) -> Any:
        """A heartbeat makes the service list the instance with its revision."""
        source = self.source()
        yield source.when_synced()
        source.send_heartbeat()

        @inlineCallbacks
        def listed() -> Any:
            answer = yield self.ok("GET", f"/gateways/{GATEWAY}/instances")
            return [i for i in answer["value"] if i["instanceId"] == source.instance_id]

        (instance,) = yield self.wait_for(listed)
        self.assertEqual(instance["revision"], source.revision)
        yield self.settle(lambda: source.instances == 1)

    @inlineCallbacks
    def test_heartbeatOnTimer(self) -> Any:
        """The heartbeat is sent every heartbeat interval of the source's clock."""
        source = self.source(heartbeat_interval=5)
        yield source.when_synced()
        self.gclock.advance(5)

        @inlineCallbacks
        def count() -> Any:
            answer = yield self.ok("GET", f"/gateways/{GATEWAY}/instances")
            return answer["count"] == 1

        yield self.wait_for(count)


class GoneTests(CloudTestCase):
    """A feed that no longer reaches the gateway's revision."""

    options = ["--retain-events", "2"]

    @inlineCallbacks
    def test_goneRefetchesSnapshot(self) -> Any:
        """
        After missing more changes than the service retains, the source's
        poll is answered 410 and a new snapshot brings every change, deletes
        included.
        """
        store = Store()
        source = self.source(store)
        yield source.when_synced()
        yield self.service.listeners["gateway"].stopService()
        yield self.assigned_api("a", "a")
        yield self.assigned_api("b", "b")
        yield self.ok("DELETE", "/apis/echo")
        yield self.restart_listener()
        yield self.settle(
            lambda: {o.ref.name for o in store.objects("cloud")} == {"a", "b"}, step=5
        )
        self.assertTrue(self.logged("no longer reaches revision"))
        answer = yield self.ok("GET", "/")
        yield self.settle(lambda: source.revision == answer["revision"], step=5)


class OutageTests(CloudTestCase):
    """The service going away and coming back."""

    @inlineCallbacks
    def test_serviceDownLaterCatchesUp(self) -> Any:
        """
        While the service's gateway listener is closed the store keeps the
        last configuration; when it listens again the source catches up
        with the changes made meanwhile.
        """
        store = Store()
        source = self.source(store)
        yield source.when_synced()
        yield self.service.listeners["gateway"].stopService()
        yield self.settle(lambda: self.logged("cannot be reached"), step=1)
        self.assertFalse(source.connected)
        self.assertIsNotNone(self.api_of(store, "echo"))
        yield self.assigned_api("late", "late")
        yield self.restart_listener()
        yield self.settle(lambda: self.api_of(store, "late") is not None, step=5)
        self.assertIsNotNone(self.api_of(store, "echo"))
        self.assertTrue(source.connected)

    @inlineCallbacks
    def test_serviceDownAtBootServedFromBackup(self) -> Any:
        """
        A source that cannot reach the service at boot loads the backup a
        previous run wrote, serves it and counts as synced.
        """
        first = self.source(Store())
        yield first.when_synced()
        yield self.settle(lambda: os.path.exists(self.backup_path()))
        yield first.stopService()
        store = Store()
        second = self.source(store, endpoint=self.endpoint(dead_port()))
        yield second.when_synced()
        self.assertTrue(second.from_backup)
        self.assertEqual(second.revision, first.revision)
        self.assertEqual(self.api_of(store, "echo"), self.api_of(first._store, "echo"))
        self.assertTrue(self.logged("from the backup"))

    @inlineCallbacks
    def test_serviceDownAtBootWithoutBackup(self) -> Any:
        """
        With no backup and no service, a source that must bring the
        configuration stays unsynced (the gateway not ready); one beside
        other sources reports synced with an empty set after the first
        failed attempt.
        """
        alone = self.source(endpoint=self.endpoint(dead_port()))
        beside = self.source(endpoint=self.endpoint(dead_port()), require_configuration=False)
        yield beside.when_synced()
        self.assertTrue(self.logged("serves its other sources meanwhile"))
        synced = alone.when_synced()
        yield self.settle(lambda: len(self.logged("cannot be reached")) >= 3)
        self.assertNoResult(synced)
        self.assertEqual(alone._store.objects(), ())


class BackupTests(CloudTestCase):
    """The backup file."""

    @inlineCallbacks
    def test_backupWrittenAfterChange(self) -> Any:
        """
        After a change the backup holds the raw snapshot at the new revision
        (complete JSON, no temporary file left beside it).
        """
        source = self.source()
        yield source.when_synced()
        yield self.assigned_api("users", "users")

        def backed_up() -> Any:
            try:
                with open(self.backup_path()) as f:
                    document = json.load(f)
            except (OSError, ValueError):
                return False
            return document["revision"] == source.revision and any(
                a["id"] == "users" for a in document["snapshot"]["apis"]
            )

        yield self.settle(backed_up)
        self.assertEqual(os.listdir(self.backup_dir), [BACKUP_FILE])
        with open(self.backup_path()) as f:
            document = json.load(f)
        self.assertEqual(document["gatewayId"], GATEWAY)
        self.assertEqual({a["id"] for a in document["snapshot"]["apis"]}, {"echo", "users"})

    @inlineCallbacks
    def test_backupCoalesced(self) -> Any:
        """
        Changes within the backup interval are written once the interval
        has passed, not one write each.
        """
        source = self.source(backup_interval=30)
        yield source.when_synced()
        yield self.settle(lambda: self.logged("backup written"))
        yield self.assigned_api("one", "one")
        yield self.assigned_api("two", "two")
        yield self.settle(lambda: self.api_of(source._store, "two") is not None)
        self.assertEqual(len(self.logged("backup written")), 1)
        self.gclock.advance(30)
        yield self.settle(lambda: len(self.logged("backup written")) == 2)
        with open(self.backup_path()) as f:
            self.assertEqual(json.load(f)["revision"], source.revision)

    @inlineCallbacks
    def test_corruptBackupIgnored(self) -> Any:
        """
        A backup that is not JSON is reported with its path and ignored:
        nothing is served from it.
        """
        with open(self.backup_path(), "w") as f:
            f.write('{"format": 1, "revis')
        store = Store()
        source = self.source(store, endpoint=self.endpoint(dead_port()))
        yield self.settle(lambda: self.logged("backup " + self.backup_path() + " is ignored"))
        self.assertNoResult(source.when_synced())
        self.assertEqual(store.objects(), ())

    @inlineCallbacks
    def test_missingDirectoryReportedOnce(self) -> Any:
        """
        A backup directory that does not exist is reported once, however
        many changes would have been backed up; the source works without.
        """
        store = Store()
        source = self.source(store, backup_path=os.path.join(self.backup_dir, "absent"))
        yield source.when_synced()
        yield self.assigned_api("one", "one")
        yield self.settle(lambda: self.api_of(store, "one") is not None)
        yield self.assigned_api("two", "two")
        yield self.settle(lambda: self.api_of(store, "two") is not None)
        yield self.settle(lambda: self.logged("LoadBackupLocationNotFound"))
        self.gclock.advance(1)
        self.assertEqual(len(self.logged("LoadBackupLocationNotFound")), 1)


class TokenTests(CloudTestCase):
    """The token: file rotation, refusal, expiry."""

    def token_file(self, value: str) -> str:
        path = os.path.join(self.backup_dir, "token")
        tmp = path + ".new"
        with open(tmp, "w") as f:
            f.write(value + "\n")
        os.replace(tmp, path)
        return path

    @inlineCallbacks
    def test_tokenFileRotation(self) -> Any:
        """
        A token file replaced with a token of the other key is used from
        the next request on: after the old key is regenerated, changes are
        still applied and nothing is refused.
        """
        path = self.token_file(self.token_value)
        store = Store()
        source = self.source(store, auth=path)
        yield source.when_synced()
        secondary = yield self.token(GATEWAY, key_type="secondary")
        self.token_file(secondary)
        # One change applied after the file was replaced: the long poll
        # held from then on was sent with the new token. (Regenerating the
        # old key while a poll sent with it is still on its way to the
        # service would have that poll refused, rightly: under load it
        # could arrive after the regeneration.)
        yield self.assigned_api("zero", "zero")
        yield self.settle(lambda: self.api_of(store, "zero") is not None)
        yield self.ok("POST", f"/gateways/{GATEWAY}/regenerateKey", {"keyType": "primary"})
        yield self.assigned_api("one", "one")
        yield self.settle(lambda: self.api_of(store, "one") is not None)
        yield self.assigned_api("two", "two")
        yield self.settle(lambda: self.api_of(store, "two") is not None)
        self.assertEqual(source.auth_failures, 0)
        self.assertIn(secondary.split("&")[1], source._tokens.current().header())

    @inlineCallbacks
    def test_rejectedTokenKeepsConfiguration(self) -> Any:
        """
        A token the service stops accepting (its key regenerated) is an
        error log and a counted failure, and the last configuration stays
        in the store.
        """
        store = Store()
        source = self.source(store)
        yield source.when_synced()
        yield self.ok("POST", f"/gateways/{GATEWAY}/regenerateKey", {"keyType": "primary"})
        self.clock.advance(61)  # the held long poll is answered; the next one is refused
        yield self.settle(lambda: source.auth_failures >= 1)
        self.assertTrue(self.logged("refused the gateway's token (401"))
        self.assertIsNotNone(self.api_of(store, "echo"))

    @inlineCallbacks
    def test_forgedTokenNotApplied(self) -> Any:
        """
        A forged token gets nothing: no objects, an error log, a counted
        failure (exported as ``apimgw_cloud_auth_failures_total``).
        """
        gateway, expiry, signature = self.token_value.split(" ", 1)[1].split("&")
        forged = f"GatewayKey {gateway}&{expiry}&{'A' * (len(signature) - 2)}=="
        store = Store()
        source = self.source(store, auth=forged)
        metrics = GatewayMetrics(clock=self.gclock.seconds)
        metrics.cloud.attach(source)
        yield self.settle(lambda: source.auth_failures >= 1)
        self.assertEqual(store.objects(), ())
        self.assertTrue(self.logged("refused the gateway's token"))
        text = generate_latest(metrics.registry).decode()
        self.assertIn("apimgw_cloud_auth_failures_total 1.0", text)

    @inlineCallbacks
    def test_expiredTokenRefused(self) -> Any:
        """
        A token past its expiry is refused by the service and logged as
        expired by the source; nothing is applied.
        """
        short = yield self.token(GATEWAY, expiry="PT2M")
        self.clock.advance(600)
        store = Store()
        source = self.source(store, auth=short)
        yield self.settle(lambda: source.auth_failures >= 1)
        self.assertTrue(self.logged("expired"))
        self.assertEqual(store.objects(), ())

    @inlineCallbacks
    def test_expiryGaugeAndWarning(self) -> Any:
        """
        A token expiring in two days is warned about, once a day, and the
        gauge shows the seconds left on the source's clock.
        """
        short = yield self.token(GATEWAY, expiry="P2D")
        source = self.source(auth=short, heartbeat_interval=3600)
        metrics = GatewayMetrics(clock=self.gclock.seconds)
        metrics.cloud.attach(source)
        yield source.when_synced()
        self.assertEqual(len(self.logged("expires in")), 1)
        for _ in range(12):  # half a day of hourly checks: no second warning
            self.gclock.advance(3600)
        self.assertEqual(len(self.logged("expires in")), 1)
        for _ in range(13):
            self.gclock.advance(3600)
        self.assertEqual(len(self.logged("expires in")), 2)
        expected = source.token_expiry - self.gclock.seconds()
        text = generate_latest(metrics.registry).decode()
        (line,) = [t for t in text.splitlines() if t.startswith("apimgw_cloud_token_expiry_seconds ")]
        self.assertAlmostEqual(float(line.split()[1]), expected, places=0)


class DefectTests(CloudTestCase):
    """Issue 12's defects (written before the fixes)."""

    @inlineCallbacks
    def test_firstHeartbeatAtOnce(self) -> Any:
        """
        The first heartbeat goes out as soon as the first snapshot is
        applied, not one interval later: right after start the service
        lists the instance although the source's clock has not moved.
        """
        source = self.source(heartbeat_interval=60)
        yield source.when_synced()

        @inlineCallbacks
        def listed() -> Any:
            answer = yield self.ok("GET", f"/gateways/{GATEWAY}/instances")
            return [i["instanceId"] for i in answer["value"]] == [source.instance_id]

        yield self.wait_for(listed, timeout=3)

    def test_versionUnknownWithoutMetadata(self) -> None:
        """
        Without package metadata (a source tree), the version says so
        (``0+unknown``) instead of pretending a release.
        """
        import importlib.metadata

        from gateway.sources.cloud import package_version

        def missing(name: str) -> str:
            raise importlib.metadata.PackageNotFoundError(name)

        self.patch(importlib.metadata, "version", missing)
        self.assertEqual(package_version(), "0+unknown")

    @inlineCallbacks
    def test_versionFromMetadata(self) -> Any:
        """
        The heartbeat reports the version the package metadata gives for
        ``apimgw`` (patched to one no release has, so a hard-coded or cached
        version cannot pass): the service lists the instance with it.
        """
        import importlib.metadata

        asked: list[str] = []

        def version(name: str) -> str:
            asked.append(name)
            return "9.9.9"

        self.patch(importlib.metadata, "version", version)
        source = self.source()
        yield source.when_synced()
        self.assertEqual(asked, ["apimgw"])

        @inlineCallbacks
        def listed() -> Any:
            answer = yield self.ok("GET", f"/gateways/{GATEWAY}/instances")
            return [(i["instanceId"], i["version"]) for i in answer["value"]]

        yield self.wait_for(lambda: listed().addCallback(bool))
        instances = yield listed()
        self.assertEqual(instances, [(source.instance_id, "9.9.9")])


class OfflineTestCase(TestCase):
    """
    A source whose service is never reached: its reactor is a
    ``MemoryReactorClock`` that records connection attempts and completes
    none, and also serves as its clock, so nothing runs on real time.
    """

    def setUp(self) -> None:
        self.log_events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.log_events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.log_events.append)
        self.reactor = MemoryReactorClock()
        self.reactor.advance(1_700_000_000)

    def token_expiring_in(self, seconds: float) -> str:
        """A well-formed token of gateway ``edge`` (no service checks it here)."""
        return issue(GATEWAY, "k" * 32, expiry_stamp(self.reactor.seconds() + seconds))

    def source(self, **kw: Any) -> CloudSource:
        kw.setdefault("auth", self.token_expiring_in(20 * 86400))
        source = CloudSource(
            Store(), "http://127.0.0.1:9", reactor=self.reactor, random=random.Random(4), **kw
        )
        source.startService()
        self.addCleanup(lambda: source.stopService() if source.running else None)
        return source

    def logged(self, text: str) -> list[str]:
        """The formatted log messages containing ``text``."""
        return [m for m in (formatEvent(e) for e in self.log_events) if text in m]


class OfflineExpiryTests(OfflineTestCase):
    """The token's expiry warning does not depend on reaching the service."""

    def test_expiryWarnedWithoutService(self) -> None:
        """
        A gateway that never reaches the service (running on its backup,
        or on nothing) still warns within one interval that its token
        expires in 3 days, and again a day later.
        """
        self.source(auth=self.token_expiring_in(3 * 86400), heartbeat_interval=60)
        self.reactor.advance(60)
        self.assertEqual(len(self.logged("expires in 3.0 days")), 1)
        self.assertTrue(self.reactor.tcpClients)
        self.assertEqual(self.logged("Applied"), [])
        for _ in range(24 * 60):
            self.reactor.advance(60)
        self.assertEqual(len(self.logged("expires in")), 2)


class BackupKeyWarningTests(OfflineTestCase):
    """The start-up warning about a backup sealed with a key from the token."""

    def test_warnedWithoutKey(self) -> None:
        """
        With a backup path and no ``config.backup.key``, one warning at
        start says the backup's key derives from the token, what that costs
        (unreadable after a rotation while down) and where to read more.
        """
        source = self.source(backup_path=tempfile.mkdtemp())
        (line,) = self.logged("config.backup.key")
        self.assertIn("derived from the token", line)
        self.assertIn("rotated while the gateway is down", line)
        self.assertIn("docs/cloud.md", line)
        source.stopService()
        source.startService()
        self.assertEqual(len(self.logged("config.backup.key")), 1)

    def test_notWarnedWithKey(self) -> None:
        """A configured backup key is not warned about."""
        self.source(backup_path=tempfile.mkdtemp(), backup_key="a configured backup key, 32 chars")
        self.assertEqual(self.logged("config.backup.key"), [])

    def test_notWarnedWithoutBackup(self) -> None:
        """Without a backup path there is no backup to warn about."""
        self.source(backup_path=None)
        self.assertEqual(self.logged("config.backup.key"), [])
