"""
Typed reads of the ``entities`` table, shared by the writers and the
readers. Synchronous: runs in the database thread.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

__all__ = ["Reader", "Row"]


@dataclass(frozen=True)
class Row:
    """One stored entity."""

    kind: str
    id: str
    parent: str
    ref: str
    body: dict[str, Any]
    revision: int
    modified: str


_COLUMNS = "kind, id, parent, ref, body, revision, modified"


def _row(values: tuple[Any, ...]) -> Row:
    kind, entity_id, parent, ref, body, revision, modified = values
    return Row(kind, entity_id, parent, ref, json.loads(body), revision, modified)


class Reader:
    """
    Queries over one connection (inside the caller's transaction, if any).

    The lookups by parent and by ref name their index: without statistics
    SQLite prefers the ``(kind, id)`` primary key, which turns each lookup
    into a scan of every entity of the kind (measured: writes slowed down
    linearly with the number of APIs).
    """

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    def get(self, kind: str, entity_id: str) -> Row | None:
        found = self.connection.execute(
            f"SELECT {_COLUMNS} FROM entities WHERE kind = ? AND id = ?", (kind, entity_id)
        ).fetchone()
        return None if found is None else _row(found)

    def all(self, kind: str) -> list[Row]:
        """Every entity of ``kind``, by id."""
        cursor = self.connection.execute(
            f"SELECT {_COLUMNS} FROM entities WHERE kind = ? ORDER BY id", (kind,)
        )
        return [_row(values) for values in cursor]

    def children(self, kind: str, parent: str) -> list[Row]:
        cursor = self.connection.execute(
            f"SELECT {_COLUMNS} FROM entities INDEXED BY entities_by_parent"
            " WHERE kind = ? AND parent = ? ORDER BY id",
            (kind, parent),
        )
        return [_row(values) for values in cursor]

    def referencing(self, kind: str, ref: str) -> list[Row]:
        cursor = self.connection.execute(
            f"SELECT {_COLUMNS} FROM entities INDEXED BY entities_by_ref"
            " WHERE kind = ? AND ref = ? ORDER BY id",
            (kind, ref),
        )
        return [_row(values) for values in cursor]

    def meta(self, key: str) -> int:
        found = self.connection.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(found[0])

    def revision(self) -> int:
        """The revision of the last change."""
        return self.meta("revision")
