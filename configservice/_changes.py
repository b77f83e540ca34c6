"""
Applying a planned change: rows, revisions, events and their audiences, in
one transaction.

A management write is planned as a list of :class:`Put` and
:class:`Delete` (an API delete also deletes its policies and assignments
and takes it out of its products). :func:`apply` then

1. computes, before changing anything, who sees each touched row and each
   row whose visibility may follow from it (:func:`._audience.dependents`);
2. writes the rows;
3. computes who sees them now, and appends events: for a touched row, a
   delete to those who lost it and an upsert (or the delete) to those who
   see it; for a dependent row, a delete to those who lost it and an
   upsert to those who gained it (an API newly assigned to a gateway
   reaches it with its policies, products and subscriptions);
4. advances the revision and trims the log to the retained count.

Every event has its own revision, so a gateway that applies the events of
its feed in order always ends with what its snapshot would show. A touched
row always gets an event (with an empty audience if nobody sees it): the
log is also the audit trail.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Union

from ._audience import NOBODY, Audience, audience, dependents, gained_after
from ._entities import DELIVERED, gateway_view
from ._rows import Reader, Row
from ._times import iso

__all__ = ["Commit", "Delete", "Put", "apply"]


@dataclass(frozen=True)
class Put:
    """Create or replace ``(kind, id)`` with ``body``; its modification time becomes now."""

    kind: str
    id: str
    body: dict[str, Any]
    parent: str = ""
    ref: str = ""


@dataclass(frozen=True)
class Delete:
    kind: str
    id: str


Change = Union[Put, Delete]


@dataclass
class Commit:
    """
    What a write changed, for the reactor side: the new revision and who
    must be woken (:class:`._feed.ChangeFeed`).
    """

    revision: int = 0
    audience: Audience = NOBODY
    events: int = 0
    rows: dict[tuple[str, str], Row | None] = field(default_factory=dict)


def _encode(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


class _Log:
    """Appends events to the log, one revision each."""

    def __init__(self, reader: Reader, now: float) -> None:
        self._connection = reader.connection
        self.revision = reader.revision()
        self.time = iso(now)
        self.audience = NOBODY
        self.count = 0

    def append(self, kind: str, entity_id: str, operation: str, body: dict[str, Any] | None,
               modified: str, to: Audience) -> int:
        self.revision += 1
        self.count += 1
        self._connection.execute(
            "INSERT INTO events (revision, kind, id, operation, body, modified, time, everyone)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (self.revision, kind, entity_id, operation,
             None if body is None else _encode(body), modified, self.time, int(to.everyone)),
        )
        if not to.everyone and to.gateways:
            self._connection.executemany(
                "INSERT INTO event_gateways (gateway_id, revision) VALUES (?, ?)",
                [(gateway, self.revision) for gateway in sorted(to.gateways)],
            )
        self.audience = self.audience | to
        return self.revision


def _view(row: Row, revision: int | None = None) -> dict[str, Any] | None:
    if row.kind not in DELIVERED:
        return row.body  # audit only: never delivered (and holds no secret)
    return gateway_view(row.kind, row.id, row.body, row.revision if revision is None else revision,
                        row.modified)


def apply(reader: Reader, changes: list[Change], now: float, retain: int) -> Commit:
    """
    Apply ``changes`` (inside the caller's transaction) and log them.

    :param retain: how many events to keep; older ones are deleted and the
        feed answers 410 for revisions before them.
    """
    connection = reader.connection
    modified = iso(now)
    touched: dict[tuple[str, str], Change] = {}
    for change in changes:
        touched[(change.kind, change.id)] = change
    before: dict[tuple[str, str], Row | None] = {}
    candidates: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()

    def add(key: tuple[str, str]) -> None:
        if key not in seen:
            seen.add(key)
            candidates.append(key)

    for key, change in touched.items():
        before[key] = reader.get(*key)
        add(key)
    for key, change in touched.items():
        after_ref = change.ref if isinstance(change, Put) else None
        for dependent in dependents(reader, before[key], after_ref, *key):
            add(dependent)
    for key in candidates:
        if key not in before:
            before[key] = reader.get(*key)
    audience_before = {key: audience(reader, before[key]) for key in candidates}

    for key, change in touched.items():
        if isinstance(change, Put):
            connection.execute(
                "INSERT OR REPLACE INTO entities (kind, id, parent, ref, body, revision, modified)"
                " VALUES (?, ?, ?, ?, ?, 0, ?)",
                (change.kind, change.id, change.parent, change.ref, _encode(change.body), modified),
            )
        else:
            connection.execute("DELETE FROM entities WHERE kind = ? AND id = ?", key)

    log = _Log(reader, now)
    commit = Commit()
    for key in candidates:
        row = reader.get(*key)
        was, now_sees = audience_before[key], audience(reader, row)
        if key in touched:
            if row is None:
                log.append(*key, "delete", None, modified, was)
                commit.rows[key] = None
                continue
            lost = was.without(now_sees)
            if lost:
                log.append(*key, "delete", None, modified, lost)
            revision = log.revision + 1
            log.append(*key, "upsert", _view(row, revision), modified, now_sees)
            connection.execute(
                "UPDATE entities SET revision = ? WHERE kind = ? AND id = ?", (revision, *key)
            )
            commit.rows[key] = Row(row.kind, row.id, row.parent, row.ref, row.body, revision,
                                   row.modified)
        elif row is not None:
            lost = was.without(now_sees)
            if lost:
                log.append(*key, "delete", None, modified, lost)
            gained = gained_after(was, now_sees)
            if gained:
                log.append(*key, "upsert", _view(row), row.modified, gained)

    connection.execute("UPDATE meta SET value = ? WHERE key = 'revision'", (log.revision,))
    floor = log.revision - retain
    if floor > reader.meta("pruned_through"):
        connection.execute("DELETE FROM events WHERE revision <= ?", (floor,))
        connection.execute("DELETE FROM event_gateways WHERE revision <= ?", (floor,))
        connection.execute("UPDATE meta SET value = ? WHERE key = 'pruned_through'", (floor,))
    commit.revision = log.revision
    commit.audience = log.audience
    commit.events = log.count
    return commit
