"""
A worker's side of the channel: apply each configuration snapshot to the
worker's mirror store, acknowledge it once the worker's own reconciler has
swapped, answer metrics scrapes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from gateway.model import Store

from ._channel import Channel
from ._messages import Applied, Scrape, Scraped, Snapshot

__all__ = ["WorkerLink"]


class WorkerLink:
    """
    The worker end of the channel.

    :param store: the worker's mirror of the supervisor's store; its
        reconciler rebuilds from it as from any source.
    :param metrics_text: the worker's metrics as Prometheus text.
    :param on_lost: the supervisor is gone (the worker then drains and exits).
    """

    _log = Logger()

    def __init__(
        self,
        store: Store,
        metrics_text: Callable[[], bytes],
        on_lost: Callable[[], None],
    ) -> None:
        self.store = store
        self._metrics_text = metrics_text
        self._on_lost = on_lost
        self.channel = Channel(self.received, self._lost)
        #: fires at the first snapshot (the reconciler's ``synced``)
        self.first_snapshot: Deferred[None] = Deferred()
        self._sources: set[str] = set()
        self._awaiting: int | None = None
        self.generation = 0
        #: set when the worker shuts down on its own (SIGTERM): the
        #: channel's end is then expected
        self.closing = False

    def received(self, message: Any) -> None:
        if isinstance(message, Snapshot):
            self._apply(message)
        elif isinstance(message, Scrape):
            self.channel.send(Scraped(message.request, self._metrics_text()))

    def _apply(self, snapshot: Snapshot) -> None:
        before = self.store.version
        sources = set(snapshot.objects) | set(snapshot.problems)
        for source in sorted(sources | self._sources):
            self.store.replace_source(
                source, snapshot.objects.get(source, ()), snapshot.problems.get(source, ())
            )
        self._sources = sources
        if not self.first_snapshot.called:
            # The reconciler builds the first generation when this fires.
            self._awaiting = snapshot.version
            self.first_snapshot.callback(None)
        elif self.store.version == before:
            # Nothing changed for this worker: nothing to build.
            self.channel.send(Applied(snapshot.version, self.generation))
        else:
            self._awaiting = snapshot.version

    def swapped(self, generation: Any) -> None:
        """The reconciler's swap listener: acknowledge the snapshot being built."""
        self.generation = generation.number
        self._acknowledge(failed=False)

    def failed(self, error: Exception) -> None:
        """The reconciler's failure callback: the last generation keeps serving."""
        self._acknowledge(failed=True)

    def _acknowledge(self, *, failed: bool) -> None:
        if self._awaiting is not None:
            self.channel.send(Applied(self._awaiting, self.generation, failed=failed))
            self._awaiting = None

    def _lost(self) -> None:
        if self.closing:
            return
        self._log.warn("The supervisor's channel closed: draining and exiting")
        self._on_lost()
