"""
The SQLite database: opening a connection the way the service needs it,
and the schema migrations.

Migrations are code: an ordered list of SQL scripts, each applied once in
its own transaction and recorded in ``schema_version``. Opening an existing
database applies only what it lacks, so opening is idempotent and a newer
service upgrades an older file in place.

Everything here is synchronous: it runs in the database thread of the
service (see :mod:`configservice._store`), or in the ``token`` command,
which has no reactor.
"""

from __future__ import annotations

import sqlite3
import time

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "configure", "connect", "migrate", "schema_version"]

#: ``(version, script)``, in order. Never edit an applied one: add another.
MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        """
        CREATE TABLE meta (
            key TEXT PRIMARY KEY,
            value INTEGER NOT NULL
        );
        INSERT INTO meta (key, value) VALUES ('revision', 0), ('pruned_through', 0);

        -- One row per entity. parent: the owner (a hostname's gateway);
        -- ref: what its visibility follows (a gateway assignment's API, a
        -- hostname's certificate, a policy's or subscription's scope), or
        -- for an API its lower-cased path (the conflict check's index).
        CREATE TABLE entities (
            kind TEXT NOT NULL,
            id TEXT NOT NULL,
            parent TEXT NOT NULL DEFAULT '',
            ref TEXT NOT NULL DEFAULT '',
            body TEXT NOT NULL,
            revision INTEGER NOT NULL,
            modified TEXT NOT NULL,
            PRIMARY KEY (kind, id)
        ) WITHOUT ROWID;
        CREATE INDEX entities_by_parent ON entities (kind, parent, id);
        CREATE INDEX entities_by_ref ON entities (kind, ref, id);

        -- The change log: one revision per event. everyone: delivered to
        -- every gateway; else to the gateways listed in event_gateways.
        CREATE TABLE events (
            revision INTEGER PRIMARY KEY,
            kind TEXT NOT NULL,
            id TEXT NOT NULL,
            operation TEXT NOT NULL CHECK (operation IN ('upsert', 'delete')),
            body TEXT,
            modified TEXT NOT NULL,
            time TEXT NOT NULL,
            everyone INTEGER NOT NULL DEFAULT 0
        );
        CREATE TABLE event_gateways (
            gateway_id TEXT NOT NULL,
            revision INTEGER NOT NULL,
            PRIMARY KEY (gateway_id, revision)
        ) WITHOUT ROWID;
        CREATE INDEX event_gateways_by_revision ON event_gateways (revision);

        -- Signing keys of gateway tokens: never in entities (and so never
        -- in an event or a snapshot).
        CREATE TABLE gateway_keys (
            gateway_id TEXT PRIMARY KEY,
            primary_key TEXT NOT NULL,
            secondary_key TEXT NOT NULL
        );
        """,
    ),
)

#: The version a fully migrated database has.
SCHEMA_VERSION = MIGRATIONS[-1][0]


def configure(connection: sqlite3.Connection) -> None:
    """
    Per-connection settings: WAL (readers such as the ``token`` command do
    not block the writer), ``synchronous=NORMAL`` (durable at each
    checkpoint, safe with WAL), a busy timeout for the rare second writer.
    """
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute("PRAGMA busy_timeout=5000")
    connection.execute("PRAGMA foreign_keys=ON")


def connect(path: str) -> sqlite3.Connection:
    """
    A connection in autocommit mode (``isolation_level=None``): transactions
    are explicit ``BEGIN IMMEDIATE`` … ``COMMIT`` in our code, never implied
    by the driver.
    """
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    configure(connection)
    return connection


def schema_version(connection: sqlite3.Connection) -> int:
    """The version of the schema; 0 for an empty database."""
    exists = connection.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if not exists:
        return 0
    row = connection.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def migrate(connection: sqlite3.Connection, now: float | None = None) -> list[int]:
    """
    Apply the migrations the database lacks, each in its own transaction;
    returns the versions applied (empty when it was up to date).

    :raises RuntimeError: the database is newer than this code.
    """
    stamp = time.time() if now is None else now
    applied: list[int] = []
    connection.execute("BEGIN IMMEDIATE")
    try:
        connection.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            " version INTEGER PRIMARY KEY, applied REAL NOT NULL)"
        )
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    current = schema_version(connection)
    if current > SCHEMA_VERSION:
        raise RuntimeError(
            f"the database has schema version {current}, newer than this service's "
            f"{SCHEMA_VERSION}: upgrade the service"
        )
    for version, script in MIGRATIONS:
        if version <= current:
            continue
        connection.execute("BEGIN IMMEDIATE")
        try:
            # Checked again inside the write lock: another process may have
            # migrated in the meantime.
            if schema_version(connection) >= version:
                connection.execute("ROLLBACK")
                continue
            for statement in _statements(script):
                connection.execute(statement)
            connection.execute(
                "INSERT INTO schema_version (version, applied) VALUES (?, ?)", (version, stamp)
            )
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        applied.append(version)
    return applied


def _statements(script: str) -> list[str]:
    """
    Split a script into statements (``executescript`` would commit our
    transaction first, so each statement runs on its own inside it).
    """
    text = "".join(
        line for line in script.splitlines(keepends=True) if not line.strip().startswith("--")
    )
    statements: list[str] = []
    buffer = ""
    for piece in text.split(";"):
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):
            if buffer.strip() != ";":
                statements.append(buffer.strip())
            buffer = ""
    return statements
