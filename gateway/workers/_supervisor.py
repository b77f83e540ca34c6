"""
The supervisor's side: start N worker processes, feed them every new
configuration, merge their metrics, restart the ones that die, drain them
all at shutdown.

Rollout of a new configuration, one worker at a time: the supervisor sends
the changes to one worker and waits for its :class:`Applied` (sent once
that worker's own reconciler swapped; a build blocks that worker's reactor
for as long as it takes) before sending it to the next. So at any moment
at most one worker is building and the others keep serving at full speed:
a change of a large configuration never stalls the whole gateway at once,
and no request is dropped because each worker swaps one reference exactly
as a single process does. A worker that does not answer within
``rollout_timeout`` no longer holds the others back.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from gateway.model import ObjectRef, Problem, SourceObject, Store

from ._channel import Channel, ChannelFactory
from ._merge import fold
from ._messages import Applied, Changes, Scrape, Scraped, WorkerStart

__all__ = ["WORKER_COMMAND", "StoreState", "WorkerPool"]

#: How a worker process is started: the composition's worker entry point.
WORKER_COMMAND = (sys.executable, "-c", "from gateway.tap import worker_main; worker_main()")

#: The fd of the channel in a worker; the listening sockets follow.
CHANNEL_FD = 3


@dataclass(frozen=True, slots=True)
class StoreState:
    """
    The supervisor's store at one swap: its objects by ref and its problems
    by source (never mutated once made: every worker's record may share it).
    """

    version: int
    objects: dict[ObjectRef, SourceObject]
    problems: dict[str, tuple[Problem, ...]]

    @classmethod
    def of(cls, store: Store, version: int) -> StoreState:
        problems: dict[str, list[Problem]] = {}
        for problem in store.problems():
            problems.setdefault(problem.ref.source, []).append(problem)
        return cls(
            version,
            {obj.ref: obj for obj in store.objects()},
            {k: tuple(v) for k, v in problems.items()},
        )

    def changes_since(self, held: dict[ObjectRef, SourceObject]) -> Changes:
        """What a worker holding ``held`` needs to hold this state (by identity: see :class:`Changes`)."""
        upserts = tuple(obj for ref, obj in self.objects.items() if held.get(ref) is not obj)
        removed = tuple(ref for ref in held if ref not in self.objects)
        return Changes(self.version, upserts, removed, self.problems)


@dataclass(eq=False)
class _Worker:
    """The supervisor's record of one worker slot (kept across restarts)."""

    index: int
    process: Any = None
    channel: Channel | None = None
    pid: int | None = None
    #: the Changes version it acknowledged, and its own generation number
    version: int = 0
    generation: int = 0
    #: the objects sent to it (what it holds once it applied them)
    held: dict[ObjectRef, SourceObject] = field(default_factory=dict)
    #: Changes were sent and its Applied has not come back
    busy: bool = False
    #: when a busy worker stops holding the rollout back (IDelayedCall)
    late: Any = None
    #: it let its last rollout time out: served last until it answers again
    stuck: bool = False
    #: its last build failed (logged once, until one succeeds) and when its
    #: whole state is sent again (IDelayedCall)
    failed: bool = False
    retry: Any = None
    retry_delay: float = 0.0
    restarts: int = 0
    started: float = 0.0
    rapid_failures: int = 0
    scrapes: dict[int, Deferred[bytes]] = field(default_factory=dict)
    #: the current process's last metrics answer: stands in for it when it
    #: misses a scrape (a missing worker would make the sums go down)
    last_scrape: bytes = b""
    #: the cumulative samples of the slot's dead processes (counters,
    #: histograms, summaries), added to every scrape so a restart does not
    #: reset the merged counters (see gateway.workers._merge)
    offset: bytes = b""
    ended: Deferred[None] | None = None


def _cancel(call: Any) -> None:
    if call is not None and call.active():
        call.cancel()


def _cancelling(result: Any, timer: Any) -> Any:
    if timer.active():
        timer.cancel()
    return result


class _WorkerProcess(ProcessProtocol):
    def __init__(self, pool: WorkerPool, worker: _Worker) -> None:
        self.pool = pool
        self.worker = worker
        self._partial = b""

    def outReceived(self, data: bytes) -> None:
        """A worker's log lines (``forward_logs``): into the supervisor's log."""
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            self.pool._log_line(self.worker, line)

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        if self._partial:
            self.pool._log_line(self.worker, self._partial)
            self._partial = b""
        self.pool._ended(self.worker, reason)


class WorkerPool(Service):
    """
    N worker processes serving the traffic listeners.

    :param sockets: listener name → one listening socket per worker (see
        :func:`~gateway.workers.bind_group`); the pool keeps them open for
        restarts and closes them at shutdown.
    :param start_message: builds worker ``index``'s :class:`WorkerStart`
        (its listener fds filled in by the pool).
    :param grace: how long a worker may drain at shutdown before it is killed.
    :param forward_logs: the workers' stdout and stderr are pipes whose
        lines the pool logs (twistd logs to a file); else the workers share
        the supervisor's stdout and stderr.
    :param health: the supervisor's readiness (``/readyz``): waiting until
        a worker serves, not ready from the start of the drain.
    """

    _log = Logger()

    def __init__(
        self,
        reactor: Any,
        count: int,
        sockets: Mapping[str, Sequence[socket.socket]],
        start_message: Callable[[int, dict[str, int]], WorkerStart],
        *,
        grace: float = 30.0,
        command: Sequence[str] = WORKER_COMMAND,
        env: dict[str, str] | None = None,
        restart_delay: float = 0.5,
        rollout_timeout: float = 30.0,
        retry_delay: float = 1.0,
        scrape_timeout: float = 2.0,
        health: Any = None,
        forward_logs: bool = False,
    ) -> None:
        self.reactor = reactor
        self.count = count
        self.sockets = {name: list(group) for name, group in sockets.items()}
        self._start_message = start_message
        self.grace = grace
        self.command = list(command)
        self.env = dict(os.environ if env is None else env)
        self.restart_delay = restart_delay
        self.rollout_timeout = rollout_timeout
        self.retry_delay = retry_delay
        self.scrape_timeout = scrape_timeout
        self.health = health
        self.forward_logs = forward_logs
        self.workers = [_Worker(i + 1) for i in range(count)]
        self._latest: StoreState | None = None
        self._restarts: dict[int, Any] = {}  # index -> IDelayedCall
        #: /readyz turned ready once (see _update_readiness)
        self._served = False
        self._scrape_ids = 0
        #: fires each time every worker has acknowledged the latest state
        self._rolled_waiters: list[Deferred[None]] = []

    # -- life cycle ----------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._update_readiness()
        for worker in self.workers:
            self._spawn(worker)

    def _update_readiness(self) -> None:
        """
        ``/readyz`` waits until *every* live worker serves a configuration
        (the sources alone serve nothing, and a worker without one leaves
        the connections the kernel gives its socket waiting), then stays
        ready while at least one does: a worker restarting later is one
        socket of N, and taking the whole gateway out of rotation for it
        would do more harm.
        """
        if self.health is None:
            return
        live = [w for w in self.workers if w.process is not None]
        if self._served:
            ready = any(w.generation for w in live)
        else:
            ready = bool(live) and all(w.generation for w in live)
        if ready:
            self._served = True
            self.health.waiting.pop("workers", None)
        elif self._served or not any(w.generation for w in live):
            self.health.waiting["workers"] = "no worker process serves a configuration yet"
        else:
            waiting = sum(1 for w in live if not w.generation)
            self.health.waiting["workers"] = f"{waiting} of {len(live)} worker processes serve no configuration yet"

    def _spawn(self, worker: _Worker) -> None:
        self._restarts.pop(worker.index, None)
        try:
            self._start(worker)
        except OSError:
            # Out of descriptors or processes: try again later rather than
            # lose the worker slot for good.
            self._log.failure("Cannot start worker {index}; trying again in 5s", index=worker.index)
            if self.running:
                self._restarts[worker.index] = self.reactor.callLater(5.0, self._spawn, worker)

    def _start(self, worker: _Worker) -> None:
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        parent_end.setblocking(False)
        out: Any = "r" if self.forward_logs else 1
        err: Any = "r" if self.forward_logs else 2
        child_fds: dict[int, Any] = {0: "w", 1: out, 2: err, CHANNEL_FD: child_end.fileno()}
        listeners: dict[str, int] = {}
        for offset, name in enumerate(sorted(self.sockets)):
            fd = CHANNEL_FD + 1 + offset
            child_fds[fd] = self.sockets[name][worker.index - 1].fileno()
            listeners[name] = fd
        channel = Channel(
            lambda message: self._received(worker, message), lambda: self._channel_closed(worker)
        )
        try:
            worker.process = self.reactor.spawnProcess(
                _WorkerProcess(self, worker),
                self.command[0],
                self.command,
                env=self.env,
                childFDs=child_fds,
            )
        except BaseException:
            parent_end.close()
            raise
        finally:
            child_end.close()
        self.reactor.adoptStreamConnection(parent_end.fileno(), socket.AF_UNIX, ChannelFactory(channel))
        parent_end.close()
        worker.channel = channel
        worker.pid = worker.process.pid
        worker.started = self.reactor.seconds()
        worker.ended = Deferred()
        worker.busy = False
        worker.version = 0
        worker.generation = 0
        worker.held = {}
        worker.stuck = False
        worker.failed = False
        _cancel(worker.retry)
        worker.retry = None
        worker.retry_delay = 0.0
        channel.send(self._start_message(worker.index, listeners))
        self._log.info("Worker {index} started (pid {pid})", index=worker.index, pid=worker.pid)
        if self._latest is not None:
            # A new worker gets the live configuration at once: it serves
            # nothing before it has one, so this stalls no one.
            self._send(worker, self._latest)

    def _log_line(self, worker: _Worker, line: bytes) -> None:
        self._log.info(
            "{line}", line=line.decode("utf-8", "replace"), log_system=f"worker {worker.index}"
        )

    def _ended(self, worker: _Worker, reason: Failure) -> None:
        code = getattr(reason.value, "exitCode", None)
        sig = getattr(reason.value, "signal", None)
        worker.process = None
        ended, worker.ended = worker.ended, None
        # Before the scrapes in progress complete: they read the offset.
        if worker.last_scrape:
            worker.offset = fold(worker.offset, worker.last_scrape)
            worker.last_scrape = b""
        for d in worker.scrapes.values():
            d.callback(b"")
        worker.scrapes.clear()
        if worker.channel is not None:
            worker.channel.close()
            worker.channel = None
        was_busy, worker.busy = worker.busy, False
        _cancel(worker.late)
        _cancel(worker.retry)
        worker.retry = None
        worker.generation = 0
        if ended is not None:
            ended.callback(None)
        if not self.running:
            self._log.info(
                "Worker {index} (pid {pid}) exited ({code})",
                index=worker.index,
                pid=worker.pid,
                code=code if sig is None else f"signal {sig}",
            )
            return
        lived = self.reactor.seconds() - worker.started
        worker.rapid_failures = worker.rapid_failures + 1 if lived < 10 else 0
        delay = min(30.0, self.restart_delay * 2 ** max(0, worker.rapid_failures - 1))
        worker.restarts += 1
        self._update_readiness()
        self._log.error(
            "Worker {index} (pid {pid}) died ({how}); restarting it in {delay}s",
            index=worker.index,
            pid=worker.pid,
            how=f"exit {code}" if sig is None else f"signal {sig}",
            delay=delay,
        )
        self._restarts[worker.index] = self.reactor.callLater(delay, self._spawn, worker)
        if was_busy:
            self._roll()

    def _channel_closed(self, worker: _Worker) -> None:
        # The process's end is what counts (processEnded); a worker that
        # closed its channel but lives on is told to stop.
        if worker.process is not None and self.running:
            self._signal(worker, "TERM")

    def _signal(self, worker: _Worker, name: str) -> None:
        if worker.process is not None:
            try:
                worker.process.signalProcess(name)
            except ProcessExitedAlready:
                pass  # its processEnded is on its way

    def stopService(self) -> Deferred[Any]:
        """
        Drain every worker: SIGTERM each (a worker stops accepting after
        ``gateway.shutdown.delay`` and lets in-flight requests finish within
        the grace), then wait for all; a worker still alive after the grace
        (and some slack) is killed. The pool's own copies of the listening
        sockets close first, so the sockets close as soon as the workers
        stop listening.
        """
        super().stopService()
        if self.health is not None:
            self.health.draining = True
        for call in self._restarts.values():
            if call.active():
                call.cancel()
        self._restarts.clear()
        for worker in self.workers:
            _cancel(worker.late)
            _cancel(worker.retry)
        for group in self.sockets.values():
            for s in group:
                s.close()
        waiting = []
        for worker in self.workers:
            if worker.ended is not None:
                waiting.append(worker.ended)
                self._signal(worker, "TERM")
        if not waiting:
            return succeed(None)
        kill: Any = self.reactor.callLater(self.grace + 5.0, self._kill_all)
        done: Deferred[Any] = DeferredList(waiting)

        def finished(result: Any) -> Any:
            if kill.active():
                kill.cancel()
            return result

        return done.addBoth(finished)

    def _kill_all(self) -> None:
        for worker in self.workers:
            if worker.process is not None:
                self._log.warn("Worker {index} still draining after the grace: killed", index=worker.index)
                self._signal(worker, "KILL")

    # -- configuration rollout -------------------------------------------------

    def publish(self, store: Store, version: int) -> None:
        """Roll the store's state (the supervisor's swap ``version``) out to the workers, one at a time."""
        self._latest = StoreState.of(store, version)
        self._roll()

    def _send(self, worker: _Worker, state: StoreState) -> None:
        """
        Send ``worker`` the changes to ``state``; it is busy until it
        acknowledges them or ``rollout_timeout`` passes (a worker that
        hangs, including a new one on its first configuration, must not
        hold the rollout to the others back for ever).
        """
        assert worker.channel is not None
        worker.busy = True
        _cancel(worker.late)
        worker.late = self.reactor.callLater(
            self.rollout_timeout, self._rollout_late, worker, state.version
        )
        worker.channel.send(state.changes_since(worker.held))
        worker.held = state.objects

    def _roll(self) -> None:
        if self._latest is None:
            return
        state = self._latest
        # Workers that serve nothing yet (all of them, at the first
        # configuration) get it at once, as a restarted worker does: there
        # is no traffic of theirs to protect, and rolling the first
        # configuration out one worker at a time would keep the others'
        # sockets waiting for N builds.
        for worker in self.workers:
            if (
                worker.channel is not None
                and not worker.busy
                and not worker.generation
                and worker.retry is None
                and worker.version < state.version
            ):
                self._send(worker, state)
        if any(w.busy for w in self.workers):
            return
        # The most out-of-date worker first (one that applied an older
        # version while a newer one arrived waits for the others), a worker
        # that let its last rollout time out last; a worker whose build
        # failed waits for its retry.
        behind = [
            w
            for w in self.workers
            if w.channel is not None and w.version < state.version and w.retry is None
        ]
        if behind:
            worker = min(behind, key=lambda w: (w.stuck, w.version, w.index))
            self._send(worker, state)
            return
        if any(w.retry is not None for w in self.workers):
            return
        waiters, self._rolled_waiters = self._rolled_waiters, []
        for d in waiters:
            d.callback(None)

    def _build_failed(self, worker: _Worker, version: int) -> None:
        """
        ``worker`` could not build configuration ``version`` and keeps
        serving its last generation: its version stays behind, and after a
        delay (doubling while it keeps failing, up to a minute) it is sent
        the whole state again, so it rebuilds from a complete mirror
        rather than from a diff against objects it may not hold as we think.
        Logged once per run of failures (the worker logs each traceback).
        """
        if not worker.failed:
            self._log.error(
                "Worker {index} failed to build configuration {version}; it keeps serving its "
                "last one (generation {generation}) and is sent the whole state again",
                index=worker.index,
                version=version,
                generation=worker.generation,
            )
        worker.failed = True
        worker.held = {}
        worker.retry_delay = min(60.0, worker.retry_delay * 2 or self.retry_delay)
        _cancel(worker.retry)
        worker.retry = self.reactor.callLater(worker.retry_delay, self._retry, worker)

    def _retry(self, worker: _Worker) -> None:
        worker.retry = None
        self._roll()

    def _rollout_late(self, worker: _Worker, version: int) -> None:
        if worker.busy and worker.version < version:
            self._log.warn(
                "Worker {index} has not applied configuration {version} after {timeout}s; "
                "rolling on to the others",
                index=worker.index,
                version=version,
                timeout=self.rollout_timeout,
            )
            worker.busy = False
            worker.stuck = True
            worker.version = version
            self._roll()

    def when_rolled_out(self) -> Deferred[None]:
        """Fires once every live worker has applied the latest state."""
        d: Deferred[None] = Deferred()
        self._rolled_waiters.append(d)
        self._roll()
        return d

    def _received(self, worker: _Worker, message: Any) -> None:
        if isinstance(message, Applied):
            worker.generation = message.generation
            worker.busy = False
            worker.stuck = False
            _cancel(worker.late)
            if message.failed:
                self._build_failed(worker, message.version)
            else:
                if worker.failed:
                    self._log.info(
                        "Worker {index} applied configuration {version} after failed builds",
                        index=worker.index,
                        version=message.version,
                    )
                worker.failed = False
                worker.retry_delay = 0.0
                worker.version = max(worker.version, message.version)
            self._update_readiness()
            self._roll()
        elif isinstance(message, Scraped):
            d = worker.scrapes.pop(message.request, None)
            if d is not None:
                d.callback(message.text)

    # -- metrics ---------------------------------------------------------------

    def scrape(self) -> Deferred[list[bytes]]:
        """
        Every worker slot's metrics text, to be added up: each live
        worker's answer (or, if it does not answer within
        ``scrape_timeout``, its last one) and each slot's offset (what its
        dead processes counted), so no merged counter ever goes down.
        """
        asked: list[Deferred[bytes]] = []
        for worker in self.workers:
            if worker.channel is None:
                continue
            self._scrape_ids += 1
            request = self._scrape_ids
            d: Deferred[bytes] = Deferred()
            worker.scrapes[request] = d
            worker.channel.send(Scrape(request))
            timer = self.reactor.callLater(self.scrape_timeout, self._scrape_late, worker, request)
            d.addBoth(_cancelling, timer)
            d.addCallback(self._scraped, worker)
            asked.append(d)
        done = DeferredList(asked, consumeErrors=True)
        return done.addCallback(lambda _: self._scraped_texts())

    def _scraped(self, text: bytes, worker: _Worker) -> None:
        if text:
            worker.last_scrape = text

    def _scraped_texts(self) -> list[bytes]:
        """What the slots count, read once every answer is in (a worker that died meanwhile is in its offset)."""
        return [text for w in self.workers for text in (w.last_scrape, w.offset) if text]

    def _scrape_late(self, worker: _Worker, request: int) -> None:
        d = worker.scrapes.pop(request, None)
        if d is not None:
            self._log.warn("Worker {index} did not answer a metrics scrape in time", index=worker.index)
            d.callback(b"")

    def status(self) -> list[dict[str, Any]]:
        """The workers, for the admin port's ``/config``."""
        return [
            {
                "index": w.index,
                "pid": w.pid if w.process is not None else None,
                "generation": w.generation,
                "applied": w.version,
                "restarts": w.restarts,
            }
            for w in self.workers
        ]

    def collect(self) -> Iterator[Metric]:
        """Prometheus collector: live workers and restarts (register on the supervisor's registry)."""
        live = GaugeMetricFamily("apimgw_workers", "Worker processes running.")
        live.add_metric([], sum(1 for w in self.workers if w.process is not None))
        yield live
        restarts = CounterMetricFamily(
            "apimgw_worker_restarts", "Worker processes restarted after they died.", labels=["worker"]
        )
        for w in self.workers:
            restarts.add_metric([str(w.index)], w.restarts)
        yield restarts

