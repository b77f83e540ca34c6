"""
``SIGHUP`` reloads the configuration file: the operator's way to say "read
it now" without waiting for the next poll.
"""

from __future__ import annotations

import signal
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorThreads
from twisted.logger import Logger

from ._source import FileSource

__all__ = ["SignalReload"]


class SignalReload(Service):
    """
    Reloads ``source`` on SIGHUP. The handler only schedules the reload on
    the reactor (``callFromThread`` is signal-safe), so the file is read in
    the reactor thread like every other reload.
    """

    _log = Logger()

    def __init__(self, reactor: IReactorThreads, source: FileSource) -> None:
        self._reactor = reactor
        self._source = source
        self._previous: Any = None

    def startService(self) -> None:
        super().startService()
        if hasattr(signal, "SIGHUP"):
            self._previous = signal.signal(signal.SIGHUP, self._handle)

    def stopService(self) -> Deferred[None]:
        if hasattr(signal, "SIGHUP") and self._previous is not None:
            signal.signal(signal.SIGHUP, self._previous)
        super().stopService()
        return succeed(None)

    def _handle(self, signum: int, frame: Any) -> None:
        self._reactor.callFromThread(self._reload)

    def _reload(self) -> None:
        self._log.info("SIGHUP: reloading {path}", path=self._source.path)
        self._source.reload()
