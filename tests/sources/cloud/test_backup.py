"""
Tests of the cloud configuration backup's secrecy: the file is 0600, its
secret fields (subscription keys, secret named values, certificate keys)
are encrypted with AES-GCM under a key from ``config.backup.key`` or the
gateway token, and a backup that cannot be decrypted is reported and
ignored while the service still configures the gateway.
"""

from __future__ import annotations

import json
import os
import stat
from typing import Any

from twisted.internet.defer import inlineCallbacks

from gateway.model import Store
from tests.configservice.harness import self_signed
from tests.integration.harness import dead_port

from .test_source import GATEWAY, CloudTestCase

SECRETS = ("sub-primary-key-0123456789", "sub-secondary-key-9876543210", "named-secret-value-42")


class BackupSecrecyTests(CloudTestCase):
    """A service whose gateway has a subscription, a secret named value and a certificate."""

    @inlineCallbacks
    def setUp(self) -> Any:
        yield super().setUp()
        yield self.ok("PUT", "/subscriptions/s1", {"scope": "/apis/echo",
                                                   "primaryKey": SECRETS[0],
                                                   "secondaryKey": SECRETS[1]})
        yield self.ok("PUT", "/namedValues/n1", {"value": SECRETS[2], "secret": True})
        yield self.ok("PUT", "/namedValues/plain", {"value": "not-a-secret-value"})
        cert, key = self_signed("www.example.com")
        self.key_pem = key
        yield self.ok("PUT", "/certificates/www", {"pem": cert + key})
        yield self.ok("PUT", f"/gateways/{GATEWAY}/hostnames/www.example.com",
                      {"certificateId": "www"})

    @inlineCallbacks
    def backed_up(self, **kw: Any) -> Any:
        """Start a source, wait for its backup, stop it; the raw file's bytes."""
        source = self.source(**kw)
        yield source.when_synced()
        yield self.settle(lambda: os.path.exists(self.backup_path()))
        yield source.stopService()
        with open(self.backup_path(), "rb") as f:
            return f.read()

    @inlineCallbacks
    def test_fileIsPrivate(self) -> Any:
        """The backup file is readable and writable by its owner only (0600)."""
        yield self.backed_up()
        self.assertEqual(stat.S_IMODE(os.stat(self.backup_path()).st_mode), 0o600)

    @inlineCallbacks
    def test_noSecretInClear(self) -> Any:
        """
        The file holds no subscription key, secret named value or private
        key in clear (with a key from the token and with a configured
        one); what is not secret stays readable.
        """
        for kw in ({}, {"backup_key": "a configured backup key, 32 chars"}):
            data = yield self.backed_up(**kw)
            for secret in SECRETS:
                self.assertNotIn(secret.encode(), data)
            self.assertNotIn(b"PRIVATE KEY", data)
            self.assertNotIn(self.key_pem.splitlines()[1].encode(), data)
            self.assertIn(b"not-a-secret-value", data)
            self.assertIn(b'"echo"', data)

    @inlineCallbacks
    def test_roundTrip(self) -> Any:
        """A backup read at boot (service down) gives back the secrets as the service sent them."""
        first = self.source(Store())
        yield first.when_synced()
        yield self.settle(lambda: os.path.exists(self.backup_path()))
        expected = json.loads(json.dumps(first._mirror.snapshot()))
        yield first.stopService()
        second = self.source(Store(), endpoint=self.endpoint(dead_port()))
        yield second.when_synced()
        self.assertTrue(second.from_backup)
        self.assertEqual(second._mirror.snapshot(), expected)
        subscription = second._mirror.entities["subscriptions"]["s1"]
        self.assertEqual(subscription["primaryKey"], SECRETS[0])

    @inlineCallbacks
    def test_configuredKeySurvivesRotation(self) -> Any:
        """
        With ``config.backup.key`` the backup is readable by a gateway
        holding another token of the same gateway (after a rotation).
        """
        key = os.path.join(self.backup_dir, "backup.key")
        with open(key, "w") as f:
            f.write("0123456789abcdef0123456789abcdef\n")
        yield self.backed_up(backup_key=key)
        rotated = yield self.token(GATEWAY, key_type="secondary")
        source = self.source(Store(), auth=rotated, endpoint=self.endpoint(dead_port()),
                             backup_key=key)
        yield source.when_synced()
        self.assertTrue(source.from_backup)

    @inlineCallbacks
    def test_wrongKeyReportedAndIgnored(self) -> Any:
        """
        A backup encrypted with another key is reported (one clear line)
        and ignored: nothing is served from it; the same source configured
        by a reachable service is otherwise unaffected and rewrites it.
        """
        yield self.backed_up(backup_key="the first key, long enough to do")
        store = Store()
        down = self.source(store, endpoint=self.endpoint(dead_port()),
                           backup_key="another key, not the one it used",
                           require_configuration=False)
        yield down.when_synced()
        (line,) = self.logged("backup " + self.backup_path() + " is ignored")
        self.assertIn("another key", line)
        self.assertFalse(down.from_backup)
        self.assertEqual(store.objects(), ())
        yield down.stopService()

        up = self.source(Store(), backup_key="another key, not the one it used")
        yield up.when_synced()
        self.assertFalse(up.from_backup)
        self.assertIsNotNone(self.api_of(up._store, "echo"))
        yield self.settle(lambda: self.logged("backup written"))

    @inlineCallbacks
    def test_tokenKeyFollowsRotation(self) -> Any:
        """
        Without ``config.backup.key`` the backup is sealed anew as soon as
        the source uses a rotated token, so a restart with the new token
        reads it; a gateway holding only the old token no longer can.
        """
        path = os.path.join(self.backup_dir, "token")
        with open(path, "w") as f:
            f.write(self.token_value)
        source = self.source(Store(), auth=path)
        yield source.when_synced()
        yield self.settle(lambda: self.logged("backup written"))
        rotated = yield self.token(GATEWAY, key_type="secondary")
        with open(path + ".new", "w") as f:
            f.write(rotated)
        os.replace(path + ".new", path)
        yield self.assigned_api("poke", "poke")  # answers the long poll: the next one uses it
        yield self.settle(lambda: len(self.logged("backup written")) >= 2)
        yield source.stopService()
        after = self.source(Store(), auth=rotated, endpoint=self.endpoint(dead_port()))
        yield after.when_synced()
        self.assertTrue(after.from_backup)
        before = self.source(Store(), auth=self.token_value, endpoint=self.endpoint(dead_port()),
                             require_configuration=False)
        yield before.when_synced()
        self.assertFalse(before.from_backup)
        self.assertTrue(self.logged("set config.backup.key"))


class BackupFileTests(CloudTestCase):
    """The file functions alone."""

    def test_damagedSecretRefused(self) -> None:
        """
        A sealed secret altered on disk fails the document's MAC; and even
        with the MAC made anew (by a holder of the key), the secret itself
        fails to decrypt: the backup is refused, not half-used.
        """
        from gateway.sources.cloud._backup import BackupError, BackupKey, load_backup, write_backup

        key = BackupKey.configured("k" * 32, GATEWAY)
        document = {"format": 2, "gatewayId": GATEWAY, "revision": 1,
                    "snapshot": {"subscriptions": [{"id": "s", "primaryKey": "p" * 20}]}}
        write_backup(self.backup_dir, document, key)
        self.assertEqual(load_backup(self.backup_dir, lambda gid: key)["snapshot"],
                         document["snapshot"])
        with open(self.backup_path()) as f:
            raw = json.load(f)
        sealed = raw["snapshot"]["subscriptions"][0]["primaryKey"]["$encrypted"]
        raw["snapshot"]["subscriptions"][0]["primaryKey"]["$encrypted"] = (
            ("B" if sealed[20] == "A" else "A").join((sealed[:20], sealed[21:])))
        with open(self.backup_path(), "w") as f:
            json.dump(raw, f)
        with self.assertRaises(BackupError) as raised:
            load_backup(self.backup_dir, lambda gid: key)
        self.assertIn("altered or written with another key", str(raised.exception))
        raw["encryption"]["mac"] = key.mac(raw)
        with open(self.backup_path(), "w") as f:
            json.dump(raw, f)
        with self.assertRaises(BackupError) as raised:
            load_backup(self.backup_dir, lambda gid: key)
        self.assertIn("subscriptions/s/primaryKey cannot be decrypted", str(raised.exception))

    def write_and_edit(self, edit: Any) -> Any:
        """
        Write a sealed backup of one API and one subscription with a
        configured key, apply ``edit`` to the file's JSON, write it back;
        the key.
        """
        from gateway.sources.cloud._backup import BackupKey, write_backup

        key = BackupKey.configured("k" * 32, GATEWAY)
        document = {"format": 2, "gatewayId": GATEWAY, "revision": 7,
                    "endpoint": "https://config.example.com",
                    "snapshot": {"gatewayId": GATEWAY, "revision": 7,
                                 "apis": [{"id": "echo", "path": "echo",
                                           "serviceUrl": "https://backend.internal/echo"}],
                                 "subscriptions": [{"id": "s", "primaryKey": "p" * 20}]}}
        write_backup(self.backup_dir, document, key)
        with open(self.backup_path()) as f:
            raw = json.load(f)
        edit(raw)
        with open(self.backup_path(), "w") as f:
            json.dump(raw, f)
        return key

    def test_macRoundTrip(self) -> None:
        """
        A sealed backup carries a MAC in its encryption header and reads
        back as written, however its JSON is laid out on disk.
        """
        from gateway.sources.cloud._backup import load_backup

        def check(raw: dict[str, Any]) -> None:
            self.assertRegex(raw["encryption"]["mac"], "^[0-9a-f]{64}$")

        key = self.write_and_edit(check)
        document = load_backup(self.backup_dir, lambda gid: key)
        self.assertEqual(document["snapshot"]["apis"][0]["serviceUrl"],
                         "https://backend.internal/echo")
        self.assertEqual(document["snapshot"]["subscriptions"][0]["primaryKey"], "p" * 20)

    def test_alteredFieldRefused(self) -> None:
        """
        A backend URL, subscription state or revision changed in an
        otherwise valid sealed file (its secrets intact) fails the MAC: the
        backup is refused as altered, not served.
        """
        from gateway.sources.cloud._backup import BackupError, load_backup

        def url(raw: dict[str, Any]) -> None:
            raw["snapshot"]["apis"][0]["serviceUrl"] = "https://attacker.example/"

        def state(raw: dict[str, Any]) -> None:
            raw["snapshot"]["subscriptions"][0]["state"] = "active"

        def revision(raw: dict[str, Any]) -> None:
            raw["revision"] = 8

        def no_mac(raw: dict[str, Any]) -> None:
            del raw["encryption"]["mac"]

        for edit in (url, state, revision, no_mac):
            key = self.write_and_edit(edit)
            with self.assertRaises(BackupError, msg=edit.__name__) as raised:
                load_backup(self.backup_dir, lambda gid: key)
            self.assertIn("altered or written with another key", str(raised.exception))

    @inlineCallbacks
    def test_alteredBackupIgnored(self) -> Any:
        """
        A source whose service is down reports an altered backup (its path,
        "altered") and serves nothing from it, as with a corrupt one.
        """
        def url(raw: dict[str, Any]) -> None:
            raw["snapshot"]["apis"][0]["serviceUrl"] = "https://attacker.example/"

        self.write_and_edit(url)
        store = Store()
        source = self.source(store, endpoint=self.endpoint(dead_port()),
                             backup_key="k" * 32, require_configuration=False)
        yield source.when_synced()
        (line,) = self.logged("backup " + self.backup_path() + " is ignored")
        self.assertIn("altered", line)
        self.assertFalse(source.from_backup)
        self.assertEqual(store.objects(), ())

    @inlineCallbacks
    def test_formatOneLoadedWithWarning(self) -> Any:
        """
        A backup of format 1 (before encryption: secrets in clear, nothing
        authenticated) is still served when the service is down, with a
        warning saying so; the next write is format 2 with a MAC.
        """
        snapshot = {"gatewayId": GATEWAY, "revision": 3,
                    "apis": [{"id": "echo", "path": "echo",
                              "serviceUrl": "http://127.0.0.1:9/echo",
                              "modified": "2025-01-01T00:00:00.000000Z"}]}
        with open(self.backup_path(), "w") as f:
            json.dump({"format": 1, "gatewayId": GATEWAY, "revision": 3,
                       "snapshot": snapshot}, f)
        down = self.source(Store(), endpoint=self.endpoint(dead_port()))
        yield down.when_synced()
        self.assertTrue(down.from_backup)
        self.assertEqual(down.revision, 3)
        (line,) = self.logged("format 1")
        self.assertIn(self.backup_path(), line)
        self.assertIn("not authenticated", line)
        yield down.stopService()

        up = self.source(Store())
        yield up.when_synced()
        yield self.settle(lambda: self.logged("backup written"))
        with open(self.backup_path()) as f:
            raw = json.load(f)
        self.assertEqual(raw["format"], 2)
        self.assertIn("mac", raw["encryption"])
