"""
What crosses the process boundary between the supervisor and a worker.

Plain frozen data, pickled (both ends are our own code, the same
checkout). The configuration travels as the store's *model objects* (the changed
ones), not as a compiled generation: model objects are plain data by construction
(``gateway.model`` imports nothing else), while a compiled route table holds
policy pipelines and TLS contexts that cannot cross a pipe. Each worker runs
its own reconciler over a mirror of the supervisor's store, so translation,
the per-object build memo, the SNI map and the "keep the last valid
certificate" rule are the single-process code, unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.model import ObjectRef, Problem, SourceObject

__all__ = ["Applied", "Changes", "Scrape", "Scraped", "WorkerStart"]


@dataclass(frozen=True, slots=True)
class WorkerStart:
    """
    The first message a worker reads (before its reactor runs).

    :ivar index: the worker's number, 1..N (stable across restarts).
    :ivar settings: the supervisor's :class:`~gateway.settings.GatewaySettings`.
    :ivar listeners: listener name → the fd of the inherited listening socket.
    :ivar log_to_supervisor: the worker writes its log lines (without
        timestamps) to its stdout, a pipe the supervisor reads and logs
        into its own log file: twistd's log file is written at its own
        offset (not appended to), so no other process may write it. Else
        the worker logs to the stdout it shares with the supervisor.
    :ivar access_log_stdout: the access log goes to stdout through the
        buffered writer (twistd logs to stdout).
    :ivar fallback_certificate: the self-signed default certificate the
        supervisor generated, so every worker serves the same one.
    """

    index: int
    settings: Any
    listeners: dict[str, int]
    log_to_supervisor: bool = False
    access_log_stdout: bool = False
    fallback_certificate: Any = None


@dataclass(frozen=True, slots=True)
class Changes:
    """
    What changed in the supervisor's store since the last :class:`Changes`
    sent to this worker (everything, for a worker that just started).

    Only changed objects cross the pipe: the store keeps an unchanged
    object the *same* object, so the supervisor finds the changes by
    identity, and a worker unpickles one changed API, not the whole
    configuration (2,000 APIs x 10 operations: ~1 MB and 0.36 s to unpickle
    whole, per worker and change).

    :ivar version: increases with every swap of the supervisor; a worker
        acknowledges it with :class:`Applied` once its own generation is
        built from it.
    :ivar upserts: new and changed objects.
    :ivar removed: objects no longer held.
    :ivar problems: every source's decoding problems (whole: they are few).
    """

    version: int
    upserts: tuple[SourceObject, ...] = ()
    removed: tuple[ObjectRef, ...] = ()
    problems: dict[str, tuple[Problem, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Applied:
    """A worker serves the generation built from :class:`Changes` ``version`` (or kept its last on failure)."""

    version: int
    generation: int
    failed: bool = False


@dataclass(frozen=True, slots=True)
class Scrape:
    """The supervisor asks for the worker's metrics (``/metrics`` is being scraped)."""

    request: int


@dataclass(frozen=True, slots=True)
class Scraped:
    """A worker's metrics as Prometheus text, answering :class:`Scrape` ``request``."""

    request: int
    text: bytes
