"""Tests of the database schema and its migrations (:mod:`configservice._schema`)."""

from __future__ import annotations

import os
import sqlite3
import tempfile

from twisted.trial.unittest import TestCase

from configservice import SCHEMA_VERSION, connect, migrate, schema_version
from configservice._schema import MIGRATIONS


class MigrationTests(TestCase):
    def setUp(self) -> None:
        self.path = os.path.join(tempfile.mkdtemp(), "config.db")

    def open(self) -> sqlite3.Connection:
        connection = connect(self.path)
        self.addCleanup(connection.close)
        return connection

    def test_creates_schema(self) -> None:
        """Migrating an empty file creates every table and records the latest schema version."""
        connection = self.open()
        self.assertEqual(migrate(connection), [version for version, _ in MIGRATIONS])
        tables = {row[0] for row in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        self.assertTrue(
            {"schema_version", "meta", "entities", "events", "event_gateways", "gateway_keys"}
            <= tables
        )
        self.assertEqual(schema_version(connection), SCHEMA_VERSION)
        self.assertEqual(
            dict(connection.execute("SELECT key, value FROM meta")),
            {"revision": 0, "pruned_through": 0},
        )

    def test_wal_mode(self) -> None:
        """The database runs in WAL mode (a reader does not block the writer)."""
        connection = self.open()
        migrate(connection)
        self.assertEqual(connection.execute("PRAGMA journal_mode").fetchone()[0], "wal")

    def test_idempotent_on_reopen(self) -> None:
        """Reopening a migrated database applies nothing and keeps its data."""
        connection = self.open()
        migrate(connection)
        connection.execute("UPDATE meta SET value = 7 WHERE key = 'revision'")
        connection.close()
        again = self.open()
        self.assertEqual(migrate(again), [])
        self.assertEqual(schema_version(again), SCHEMA_VERSION)
        self.assertEqual(again.execute("SELECT value FROM meta WHERE key = 'revision'").fetchone(),
                         (7,))
        self.assertEqual(again.execute("SELECT COUNT(*) FROM schema_version").fetchone(),
                         (len(MIGRATIONS),))

    def test_refuses_newer_database(self) -> None:
        """A database migrated by a newer service is refused rather than used."""
        connection = self.open()
        migrate(connection)
        connection.execute("INSERT INTO schema_version (version, applied) VALUES (?, 0)",
                           (SCHEMA_VERSION + 1,))
        with self.assertRaises(RuntimeError) as raised:
            migrate(connection)
        self.assertIn("newer", str(raised.exception))

    def test_failed_migration_rolls_back(self) -> None:
        """A migration that fails leaves neither its tables nor its version behind."""
        import configservice._schema as schema

        connection = self.open()
        migrate(connection)
        broken = ((SCHEMA_VERSION + 1, "CREATE TABLE extra (x INTEGER); INSERT INTO nowhere VALUES (1);"),)
        self.patch(schema, "MIGRATIONS", schema.MIGRATIONS + broken)
        self.patch(schema, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
        self.assertRaises(sqlite3.OperationalError, schema.migrate, connection)
        self.assertEqual(schema_version(connection), SCHEMA_VERSION)
        self.assertIsNone(connection.execute(
            "SELECT name FROM sqlite_master WHERE name = 'extra'").fetchone())
