"""
Request bodies: a bounded spool (:class:`BoundedBody`), and a body as it
arrives (:class:`StreamedBody`, the strict HTTP/1.1 server's, streamed to
the backend with backpressure).

A bounded request-body spool.

twisted.web reads the whole request body before ``render`` runs. This spool
keeps it in memory up to a threshold, then in an anonymous temporary file,
and stops storing once the configured limit is exceeded (the request is then
answered 413), so neither memory nor disk grows with what a client sends.
"""

from __future__ import annotations

import io
import tempfile
from collections import deque
from collections.abc import Callable
from typing import IO, Protocol

#: Bodies up to this size stay in memory.
MEMORY_THRESHOLD = 1024 * 1024


class _Empty(io.BytesIO):
    """The shared stand-in for a body nothing was written to (read-only use)."""

    def close(self) -> None:
        """Never closed: shared by every request without a body."""


_EMPTY: IO[bytes] = _Empty()


class BoundedBody:
    """File-like sink for twisted.web's ``request.content``."""

    __slots__ = ("_file", "exceeded", "limit", "size")

    def __init__(self, limit: int, declared_length: int | None = None) -> None:
        self.limit = limit
        self.size = 0
        self.exceeded = declared_length is not None and declared_length > limit
        # Created on the first write: most requests have no body at all.
        self._file: IO[bytes] = _EMPTY

    def write(self, data: bytes) -> None:
        if self.exceeded:
            return
        if self._file is _EMPTY:
            self._file = io.BytesIO()
        self.size += len(data)
        if self.size > self.limit:
            self.exceeded = True
            self._file.close()
            self._file = _EMPTY
            return
        if self.size > MEMORY_THRESHOLD and isinstance(self._file, io.BytesIO):
            spilled = tempfile.TemporaryFile()  # noqa: SIM115 - kept open as the body
            spilled.write(self._file.getvalue())
            self._file = spilled
        self._file.write(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def read(self, size: int = -1) -> bytes:
        return self._file.read(size)

    def close(self) -> None:
        if self._file is not _EMPTY:
            self._file.close()

    @property
    def file(self) -> IO[bytes]:
        """The stored body, positioned at the start (for sending)."""
        self._file.seek(0)
        return self._file


# -- streamed request bodies (the strict HTTP/1.1 server) -------------------------

#: Body bytes a source holds for a consumer that is absent or paused before
#: the client connection stops reading (one socket read may add up to
#: 64 KiB more): the memory a streamed upload costs, whatever its size.
#: The default of ``StreamedBody(high_water=...)``; the server's comes from
#: ``net.server.body-buffer-bytes`` (``H1Limits.body_buffer``).
HIGH_WATER = 64 * 1024

#: Body bytes kept after they went to the backend, so that a retry (a stale
#: pooled connection, another endpoint) can send them again; a body that
#: has sent more than this is not retried. The default of
#: ``StreamedBody(replay_limit=...)``; the server's comes from
#: ``net.server.body-replay-bytes`` (``H1Limits.body_replay``).
REPLAY_LIMIT = 64 * 1024


class BodyError(Exception):
    """
    The request body cannot be completed: what the client is answered
    (``status``, ``message``), if no response has started.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message


class BodyConsumer(Protocol):
    """Receives a :class:`StreamedBody`: pieces, then one end or one failure."""

    def body_received(self, data: bytes) -> None:
        """One piece of the body (chunked framing already removed)."""

    def body_finished(self) -> None:
        """The whole body was delivered."""

    def body_failed(self, error: BodyError) -> None:
        """The body will not complete (too large, client gone, timeout, bad framing)."""


class BodyControl(Protocol):
    """The connection a :class:`StreamedBody` is read from (:class:`~gateway.proxy.H1Channel`)."""

    def body_backlog(self, source: StreamedBody, full: bool) -> None:
        """``full``: stop reading the client; ``False``: read again."""

    def body_wanted(self, source: StreamedBody) -> None:
        """A consumer started: the moment for ``100 Continue``."""


class StreamedBody:
    """
    A request body as it arrives: the source the strict HTTP/1.1 server
    gives the resource, which is rendered at the end of the header section.

    The channel writes pieces (:meth:`write`), then :meth:`finish` or
    :meth:`fail`. A consumer (:meth:`start`) receives them as a
    :class:`BodyConsumer`, and pauses the source as a push producer; what
    it has not taken yet (no consumer, or paused) is held here up to
    ``high_water`` bytes, above which the channel stops reading the client
    (TCP backpressure reaches the client). The limit is checked as the body
    arrives: over it, the consumer is failed with a 413 :class:`BodyError`
    and the rest is dropped.

    What was delivered is kept while it is at most ``replay_limit`` bytes,
    so a retry can :meth:`rewind` (only then).

    A body nobody consumes (its reader waits: a retry interval, the
    rate-limit counters; or it was dropped, :meth:`discard`) is still
    counted against the limit, and a failure then goes to the watcher
    (:meth:`watch`), so the request is answered at once, not when the
    wait ends.

    :param length: the declared ``Content-Length``; ``None``: chunked.
    :param replay_limit: see above (default :data:`REPLAY_LIMIT`).
    :param high_water: see above (default :data:`HIGH_WATER`).
    """

    __slots__ = (
        "_buffered",
        "_consumer",
        "_control",
        "_delivered",
        "_discarding",
        "_ended",
        "_flushing",
        "_full",
        "_high_water",
        "_paused",
        "_pieces",
        "_replay",
        "_replay_limit",
        "_watcher",
        "complete",
        "error",
        "exceeded",
        "length",
        "limit",
        "size",
        "started",
    )

    def __init__(
        self,
        limit: int,
        length: int | None,
        control: BodyControl | None = None,
        replay_limit: int = REPLAY_LIMIT,
        high_water: int = HIGH_WATER,
    ) -> None:
        self.limit = limit
        self._replay_limit = replay_limit
        self._high_water = high_water
        self.length = length
        #: bytes received so far
        self.size = 0
        self.exceeded = length is not None and length > limit
        #: the whole body has been received
        self.complete = False
        #: why it cannot complete, once known
        self.error: BodyError | None = None
        #: a consumer was given (the body is wanted)
        self.started = False
        self._control = control
        self._pieces: deque[bytes] = deque()
        self._buffered = 0
        self._consumer: BodyConsumer | None = None
        self._paused = False
        self._full = False
        self._flushing = False
        self._ended = False
        self._discarding = False
        self._delivered = 0
        self._replay: list[bytes] | None = []
        self._watcher: Callable[[BodyError], object] | None = None

    # -- the channel's side -------------------------------------------------

    def write(self, data: bytes) -> None:
        """A piece of the body arrived."""
        if self.error is not None:
            return
        size = self.size = self.size + len(data)
        if size > self.limit:
            # Counted even when dropped (discard): a replaced body is still
            # read from the client, and the limit bounds that read.
            self.exceeded = True
            self.fail(BodyError(413, "Request entity too large"))
            return
        if self._discarding:
            return
        consumer = self._consumer
        if consumer is not None and not self._paused and not self._pieces:
            self._deliver(consumer, data)
            return
        self._pieces.append(data)
        self._buffered += len(data)
        if self._buffered >= self._high_water and not self._full:
            self._set_full(True)

    def finish(self) -> None:
        """The last piece arrived."""
        self.complete = True
        self._full = False
        self._flush()

    def fail(self, error: BodyError) -> None:
        """The body will not complete: the consumer (now or when it starts) is told."""
        if self.error is not None or self.complete and self._ended:
            return
        self.error = error
        self._pieces.clear()
        self._buffered = 0
        self._replay = None
        consumer = self._consumer
        if consumer is not None and not self._ended:
            self._ended = True
            self._consumer = None
            consumer.body_failed(error)
            return
        watcher = self._watcher
        if watcher is not None:
            self._watcher = None
            watcher(error)

    def watch(self, watcher: Callable[[BodyError], object] | None) -> None:
        """
        ``watcher`` is told if the body fails while no consumer is on it
        (once; ``None``: nobody is). Its reader waits meanwhile (a retry
        interval, a counter store, a body it dropped), and must answer the
        failure at once rather than when the wait ends. The reader clears
        it when it stops waiting: the watcher is usually a bound method of
        an object that holds this body.
        """
        self._watcher = watcher

    def whole(self) -> bytes | None:
        """The body, when complete and not started; else ``None``."""
        if not self.complete or self.started or self.error is not None:
            return None
        return b"".join(self._pieces)

    # -- the consumer's side ------------------------------------------------------

    def start(self, consumer: BodyConsumer) -> None:
        """Deliver to ``consumer``: what is held at once, the rest as it comes."""
        self._consumer = consumer
        self._paused = False
        self._ended = False
        first = not self.started
        self.started = True
        if self.error is not None:
            self._ended = True
            self._consumer = None
            consumer.body_failed(self.error)
            return
        if first and not self.complete and self._control is not None:
            self._control.body_wanted(self)
        self._flush()

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._flush()

    def stopProducing(self) -> None:
        self.detach()

    def detach(self, consumer: BodyConsumer | None = None) -> None:
        """
        ``consumer`` (or whichever is current) lets go, its connection
        closed: nothing more is delivered to it.
        """
        if consumer is None or self._consumer is consumer:
            self._consumer = None

    def discard(self) -> None:
        """Nobody will want the rest (the backend answered early): drop it as it comes."""
        self._consumer = None
        self._discarding = True
        self._pieces.clear()
        self._buffered = 0
        self._replay = None
        if self._full:
            self._set_full(False)

    def rewind(self) -> bool:
        """
        Start over for a new consumer (a retry): possible while everything
        delivered is still held (at most ``replay_limit`` bytes).
        """
        replay = self._replay
        if replay is None or self.error is not None:
            return False
        self._consumer = None
        self._ended = False
        if replay:
            self._pieces.extendleft(reversed(replay))
            self._buffered += self._delivered
            self._replay = []
            self._delivered = 0
        return True

    # -- delivery ------------------------------------------------------------------

    def _deliver(self, consumer: BodyConsumer, data: bytes) -> None:
        replay = self._replay
        if replay is not None:
            delivered = self._delivered = self._delivered + len(data)
            if delivered <= self._replay_limit:
                replay.append(data)
            else:
                self._replay = None
        consumer.body_received(data)

    def _flush(self) -> None:
        if self._flushing:
            return
        self._flushing = True
        try:
            pieces = self._pieces
            while pieces and not self._paused:
                consumer = self._consumer
                if consumer is None:
                    break
                data = pieces.popleft()
                self._buffered -= len(data)
                self._deliver(consumer, data)
            if self._full and self._buffered < self._high_water:
                self._set_full(False)
            consumer = self._consumer
            if (
                self.complete
                and not pieces
                and consumer is not None
                and not self._ended
                and self.error is None
            ):
                self._ended = True
                consumer.body_finished()
        finally:
            self._flushing = False

    def _set_full(self, full: bool) -> None:
        self._full = full
        control = self._control
        if control is not None and not self.complete:
            control.body_backlog(self, full)
