"""Tests for :class:`gateway.status.StatusStage`: generations in, writers told."""

from __future__ import annotations

from twisted.application.service import Service
from twisted.trial.unittest import SynchronousTestCase

from gateway.routing import Generation, RouteTable
from gateway.status import StatusStage, StatusWriter
from gateway.translate import GatewayConfig


def generation(number: int) -> Generation:
    return Generation(number, GatewayConfig(), RouteTable.build(()), float(number))


class RecordingWriter:
    """A writer that keeps the numbers of the generations it was given."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    def publish(self, generation: Generation) -> None:
        self.seen.append(generation.number)


class ServiceWriter(Service, RecordingWriter):
    """A writer that is also a service."""

    def __init__(self) -> None:
        RecordingWriter.__init__(self)


class FailingWriter:
    def publish(self, generation: Generation) -> None:
        raise RuntimeError("boom")


class StageTests(SynchronousTestCase):
    def test_every_writer_gets_every_generation(self) -> None:
        """Each swap reaches each writer, in order."""
        first, second = RecordingWriter(), RecordingWriter()
        stage = StatusStage([first, second])
        stage.generation_swapped(generation(1))
        stage.generation_swapped(generation(2))
        self.assertEqual((first.seen, second.seen), ([1, 2], [1, 2]))
        self.assertEqual(stage.current.number, 2)  # type: ignore[union-attr]

    def test_late_writer_gets_the_current_generation(self) -> None:
        """A writer added after a swap is given the live generation at once."""
        stage = StatusStage()
        stage.generation_swapped(generation(3))
        late = RecordingWriter()
        stage.add_writer(late)
        self.assertEqual(late.seen, [3])

    def test_failing_writer_is_logged_and_isolated(self) -> None:
        """A writer that raises is logged; the others still get the generation, the caller sees nothing."""
        after = RecordingWriter()
        stage = StatusStage([FailingWriter(), after])
        stage.generation_swapped(generation(1))
        self.assertEqual(after.seen, [1])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_service_writers_start_and_stop_with_the_stage(self) -> None:
        """A writer that is a service is a child of the stage."""
        writer = ServiceWriter()
        stage = StatusStage([writer])
        stage.startService()
        self.assertTrue(writer.running)
        stage.stopService()
        self.assertFalse(writer.running)
        self.assertEqual(stage.name, "status")

    def test_writers_satisfy_the_protocol(self) -> None:
        """The protocol is checkable at run time (what ``add_writer`` accepts)."""
        self.assertIsInstance(RecordingWriter(), StatusWriter)
        self.assertNotIsInstance(object(), StatusWriter)
