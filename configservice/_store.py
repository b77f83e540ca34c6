"""
The database of the service, for the reactor: every query runs on one
dedicated database thread (an :mod:`twisted.enterprise.adbapi` pool of
exactly one connection), so nothing blocks the reactor and writes are
serialized without locks of our own.

Writes are :class:`._writes.Plan` builders run inside ``BEGIN IMMEDIATE``
… ``COMMIT``; once a write has committed, its :class:`._changes.Commit` is
handed to ``on_commit`` in the reactor thread (the change feed wakes the
long polls it concerns).
"""

from __future__ import annotations

import sqlite3
from typing import Any, Callable

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from ._changes import Commit, apply
from ._rows import Reader
from ._schema import SCHEMA_VERSION, configure, migrate
from ._writes import Plan

__all__ = ["ConfigStore"]


class ConfigStore:
    """
    :param path: the SQLite file (created, and migrated, on :meth:`start`).
    :param clock: the time of changes (``seconds()``).
    :param retain: how many events the log keeps.
    :param on_commit: called in the reactor thread after each committed write.
    """

    _log = Logger()

    def __init__(
        self,
        path: str,
        reactor: Any,
        clock: Any,
        *,
        retain: int = 10000,
        on_commit: Callable[[Commit], None] | None = None,
    ) -> None:
        self.path = path
        self._reactor = reactor
        self._clock = clock
        self.retain = retain
        self._on_commit = on_commit
        self._pool: adbapi.ConnectionPool | None = None

    def start(self) -> Deferred[list[int]]:
        """Open the pool and bring the schema up to date; fires with the migrations applied."""
        self._pool = adbapi.ConnectionPool(
            "sqlite3",
            self.path,
            check_same_thread=False,
            isolation_level=None,
            cp_min=1,
            cp_max=1,
            cp_openfun=configure,
            cp_reactor=self._reactor,
            cp_noisy=False,
        )
        if not self._pool.running:
            self._pool.start()
        now = self._clock.seconds()
        d = self._pool.runWithConnection(lambda connection: migrate(connection, now))

        def migrated(applied: list[int]) -> list[int]:
            self._log.info(
                "Database {path} at schema version {version} (applied: {applied})",
                path=self.path, version=SCHEMA_VERSION, applied=applied or "none",
            )
            return applied

        return d.addCallback(migrated)

    def close(self) -> None:
        """Close the connection (waits for the query in progress, if any)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def read(self, query: Callable[..., Any], *args: Any) -> Deferred[Any]:
        """Run ``query(reader, *args)`` in one read transaction."""
        def run(connection: sqlite3.Connection) -> Any:
            connection.execute("BEGIN")
            try:
                return query(Reader(connection), *args)
            finally:
                connection.execute("COMMIT")

        return self._run(run)

    def write(self, planner: Callable[..., Plan], *args: Any) -> Deferred[tuple[Plan, Any]]:
        """
        Plan and apply one write atomically; fires with the plan and its
        answer (what ``plan.respond`` made of the committed rows).
        """
        now = self._clock.seconds()

        def run(connection: sqlite3.Connection) -> tuple[Plan, Any, Commit | None]:
            connection.execute("BEGIN IMMEDIATE")
            try:
                reader = Reader(connection)
                plan = planner(reader, *args)
                commit = apply(reader, plan.changes, now, self.retain) if plan.changes else None
                for statement, params in plan.extra:
                    connection.execute(statement, params)
                answer = plan.respond(reader, commit or Commit())
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")
            return plan, answer, commit

        def committed(result: tuple[Plan, Any, Commit | None]) -> tuple[Plan, Any]:
            plan, answer, commit = result
            if commit is not None and self._on_commit is not None:
                self._on_commit(commit)
            return plan, answer

        return self._run(run).addCallback(committed)

    def _run(self, function: Callable[[sqlite3.Connection], Any]) -> Deferred[Any]:
        if self._pool is None:
            raise RuntimeError("the store is not started")
        return self._pool.runWithConnection(function)
