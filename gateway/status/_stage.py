"""
The status stage: after each generation swap, tell the world what the
gateway now serves.

Sources only read the cluster (or the cloud) and push objects into the
store; what the gateway writes *back* (an Ingress's
``status.loadBalancer``, Warning Events about invalid or shadowed
Ingresses, and later Gateway API conditions) depends on the translated
result, so it belongs after the swap, beside observability, not in a
source fed by the reconciler. The reconciler calls
:meth:`StatusStage.generation_swapped` (a swap listener); the stage hands
each generation to its :class:`StatusWriter`\\ s.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from twisted.application.service import IService, MultiService
from twisted.logger import Logger

from gateway.routing import Generation

__all__ = ["StatusStage", "StatusWriter"]


@runtime_checkable
class StatusWriter(Protocol):
    """
    Writes the status one kind of object should show for a generation.

    :meth:`publish` is called in the reactor thread right after each swap
    and must not block: a writer starts its API calls and returns. A writer
    that is also an :class:`~twisted.application.service.IService` becomes
    a child of the stage, so it starts and stops with it.
    """

    def publish(self, generation: Generation) -> None:
        """The live generation is now ``generation``."""


class StatusStage(MultiService):
    """
    Hands every new :class:`~gateway.routing.Generation` to the status
    writers. A writer's failure is logged and never reaches the reconciler
    (the swap has happened; status is a report of it, not part of it).

    :ivar current: the last generation received (``None`` before the first).
    :ivar writers: the writers, in the order they were added.
    """

    _log = Logger()

    def __init__(self, writers: tuple[StatusWriter, ...] | list[StatusWriter] = ()) -> None:
        super().__init__()
        self.setName("status")
        self.current: Generation | None = None
        self.writers: list[StatusWriter] = []
        for writer in writers:
            self.add_writer(writer)

    def add_writer(self, writer: StatusWriter) -> None:
        """Add a writer; it is given the current generation at once, if any."""
        self.writers.append(writer)
        if IService.providedBy(writer):
            writer.setServiceParent(self)  # type: ignore[attr-defined]
        if self.current is not None:
            self._hand(writer, self.current)

    def generation_swapped(self, generation: Generation) -> None:
        """The reconciler's swap listener."""
        self.current = generation
        for writer in list(self.writers):
            self._hand(writer, generation)

    def _hand(self, writer: StatusWriter, generation: Generation) -> None:
        try:
            writer.publish(generation)
        except Exception:
            self._log.failure(
                "Status writer {writer} failed on generation {number}",
                writer=repr(writer),
                number=generation.number,
            )
