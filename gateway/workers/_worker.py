"""
A worker's side of the channel: apply each configuration change to the
worker's mirror store, acknowledge it once the worker's own reconciler has
swapped, answer metrics scrapes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from gateway.model import ObjectRef, SourceObject, Store

from ._channel import Channel
from ._messages import Applied, Changes, Scrape, Scraped

__all__ = ["WorkerLink"]


class WorkerLink:
    """
    The worker end of the channel.

    :param store: the worker's mirror of the supervisor's store; its
        reconciler rebuilds from it as from any source.
    :param metrics_text: the worker's metrics as Prometheus text.
    :param on_lost: the supervisor is gone (the worker then drains and exits).
    :param rebuild: asks the worker's reconciler to build again although
        the store did not change (the supervisor resends the whole state
        after a failed build); by default the store's change notification,
        which the reconciler listens to.
    """

    _log = Logger()

    def __init__(
        self,
        store: Store,
        metrics_text: Callable[[], bytes],
        on_lost: Callable[[], None],
        rebuild: Callable[[], object] | None = None,
    ) -> None:
        self.store = store
        # Store._changed is the notification its listeners (the
        # reconciler) get after an effective change.
        self._rebuild = rebuild if rebuild is not None else store._changed
        self._metrics_text = metrics_text
        self._on_lost = on_lost
        self.channel = Channel(self.received, self._lost)
        #: fires at the first Changes (the reconciler's ``synced``)
        self.first_configuration: Deferred[None] = Deferred()
        #: the objects received, by source then ref (the mirror store's content)
        self._held: dict[str, dict[ObjectRef, SourceObject]] = {}
        #: the sources that had problems in the last Changes
        self._problems: set[str] = set()
        self._awaiting: int | None = None
        #: the last build failed: Changes that change nothing build again
        self._failed = False
        self.generation = 0
        #: set when the worker shuts down on its own (SIGTERM): the
        #: channel's end is then expected
        self.closing = False

    def received(self, message: Any) -> None:
        if isinstance(message, Changes):
            self._apply(message)
        elif isinstance(message, Scrape):
            self.channel.send(Scraped(message.request, self._metrics_text()))

    def _apply(self, changes: Changes) -> None:
        before = self.store.version
        touched = set(changes.problems) | set(self._problems)
        for ref in changes.removed:
            self._held.get(ref.source, {}).pop(ref, None)
            touched.add(ref.source)
        for obj in changes.upserts:
            self._held.setdefault(obj.ref.source, {})[obj.ref] = obj
            touched.add(obj.ref.source)
        for source in sorted(touched):
            # An unchanged object stays the same object in the mirror store
            # (replace_source keeps it), so the build memo reuses its build.
            held = self._held.get(source, {})
            self.store.replace_source(source, held.values(), changes.problems.get(source, ()))
            if not held:
                self._held.pop(source, None)
        self._problems = set(changes.problems)
        if not self.first_configuration.called:
            # The reconciler builds the first generation when this fires.
            self._awaiting = changes.version
            self.first_configuration.callback(None)
        elif self.store.version == before and self._failed:
            # The supervisor resent the whole state after our failed
            # build: build again (what failed may have been transient).
            self._awaiting = changes.version
            self._rebuild()
        elif self.store.version == before:
            # Nothing changed for this worker: nothing to build.
            self.channel.send(Applied(changes.version, self.generation))
        else:
            self._awaiting = changes.version

    def swapped(self, generation: Any) -> None:
        """The reconciler's swap listener: acknowledge the Changes being built."""
        self.generation = generation.number
        self._failed = False
        self._acknowledge(failed=False)

    def failed(self, error: Exception) -> None:
        """The reconciler's failure callback: the last generation keeps serving."""
        self._failed = True
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
