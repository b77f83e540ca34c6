"""
Reactor iteration trace for a gateway under load (issue 11's p99 question).

Put this directory first on ``PYTHONPATH`` and set ``APIMGW_TRACE`` to a
directory: every ``twistd`` started with that environment records, for each
reactor iteration, when its wait for events began and ended and how many
events it returned, any timer pass (``runUntilCurrent``) longer than
0.2 ms and every garbage collection; it writes them to
``$APIMGW_TRACE/iterations.<pid>.bin`` every two seconds and at shutdown.
``bench/iteration_report.py`` reads them.

    APIMGW_TRACE=/tmp/trace PYTHONPATH=bench/trace \\
        python bench/proxy_bench.py --only apimgw-none --repeat 1
    python bench/iteration_report.py /tmp/trace

Why a ``sitecustomize``: it reaches the gateway's own processes (started
by ``proxy_bench.py`` with the caller's environment; with ``--workers N``
each worker writes its own file) without a trace hook in the gateway. It
imports the default reactor before twistd does, so a twistd ``--reactor``
option other than the default fails. The cost is two clock reads and an
append per iteration (about 1 µs per ~30 events). Python imports
``sitecustomize`` at start-up; without ``APIMGW_TRACE`` this module does
nothing.
"""

from __future__ import annotations

import os
import sys


def _install(directory: str) -> None:
    import gc
    from array import array
    from time import perf_counter

    from twisted.internet import reactor

    #: flat records: kind (0 wait, 1 timers, 2 collection, 3 this trace's
    #: own save), start, end, count
    #: (events, pending timers, or the generation collected)
    records = array("d")
    path = os.path.join(directory, f"iterations.{os.getpid()}.bin")

    class _TimedPoller:
        """The reactor's epoll object, its ``poll`` timed."""

        def __init__(self, poller: object) -> None:
            self._poller = poller

        def poll(self, timeout: float, maxevents: int) -> list[tuple[int, int]]:
            started = perf_counter()
            events = self._poller.poll(timeout, maxevents)  # type: ignore[attr-defined]
            records.extend((0.0, started, perf_counter(), float(len(events))))
            return events

        def __getattr__(self, name: str) -> object:
            return getattr(self._poller, name)

    def timed_timers(run=reactor.runUntilCurrent) -> None:  # type: ignore[attr-defined]
        started = perf_counter()
        run()
        ended = perf_counter()
        if ended - started > 0.0002:
            records.extend((1.0, started, ended, float(len(reactor._pendingTimedCalls))))  # type: ignore[attr-defined]

    collecting = [0.0]

    def collection(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collecting[0] = perf_counter()
        else:
            records.extend((2.0, collecting[0], perf_counter(), float(info["generation"])))

    def save() -> None:
        started = perf_counter()
        with open(path + ".tmp", "wb") as f:
            records.tofile(f)
        os.replace(path + ".tmp", path)
        # Its own time, so the report can leave out the timer pass it made.
        records.extend((3.0, started, perf_counter(), 0.0))

    def periodic() -> None:
        save()
        reactor.callLater(2.0, periodic)  # type: ignore[attr-defined]

    def start() -> None:
        # After the gateway's start-up (streamline installs its loop on the
        # same poller object, so wrapping it here sees every iteration).
        reactor._poller = _TimedPoller(reactor._poller)  # type: ignore[attr-defined]
        reactor.runUntilCurrent = timed_timers  # type: ignore[attr-defined]
        gc.callbacks.append(collection)
        reactor.callLater(2.0, periodic)  # type: ignore[attr-defined]
        reactor.addSystemEventTrigger("after", "shutdown", save)  # type: ignore[attr-defined]

    reactor.callWhenRunning(start)  # type: ignore[attr-defined]


_directory = os.environ.get("APIMGW_TRACE")
# twistd, and the gateway's worker processes (``python -c``, see
# gateway.workers); not the benchmark scripts that start them.
if _directory and (os.path.basename(sys.argv[0]) == "twistd" or sys.argv[:1] == ["-c"]):
    os.makedirs(_directory, exist_ok=True)
    _install(_directory)
