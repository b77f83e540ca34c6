"""
One Redis connection with pipelining: commands are written as soon as they
are issued, without waiting for earlier replies, and Redis answers in
order, so a FIFO of waiting Deferreds matches replies to commands.

Timeouts cost one timer per connection, not one per command: a watchdog
sleeps until the earliest deadline of the unanswered commands. Replies come in
order, so if the oldest is late, Redis (or the path to it) is stuck: the
connection is aborted and every waiting command fails with
:class:`RedisTimeout` — the client reconnects, and the fallback decides
those requests locally.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

from ._errors import RedisTimeout, RedisUnavailable, error_from_reply
from ._resp import Arg, Reply, ReplyError, ReplyParser, encode

__all__ = ["RedisProtocol"]


class RedisProtocol(Protocol):
    """
    :param clock: for the deadlines.
    :param on_lost: called once with the reason when the connection ends.
    """

    def __init__(self, clock: IReactorTime, on_lost: Callable[[Exception], None] | None = None) -> None:
        self._clock = clock
        self._on_lost = on_lost
        self._parser = ReplyParser()
        self._waiting: deque[tuple[Deferred[Reply], float]] = deque()
        self._watchdog: IDelayedCall | None = None
        self._lost: Exception | None = None
        self._abort_reason: Exception | None = None

    @property
    def pending(self) -> int:
        """Commands written and not answered yet."""
        return len(self._waiting)

    def command(self, args: Sequence[Arg], timeout: float) -> Deferred[Reply]:
        """Send one command; fires with its reply, or fails (error reply, timeout, lost)."""
        if self._lost is not None:
            raise RedisUnavailable(str(self._lost))
        d: Deferred[Reply] = Deferred()
        deadline = self._clock.seconds() + timeout
        self._waiting.append((d, deadline))
        watchdog = self._watchdog
        if watchdog is None:
            self._watchdog = self._clock.callLater(timeout, self._check)
        elif watchdog.getTime() > deadline:  # a shorter timeout than the ones before
            watchdog.reset(timeout)
        assert self.transport is not None
        self.transport.write(encode(args))
        return d

    def dataReceived(self, data: bytes) -> None:
        try:
            replies = self._parser.feed(data)
        except ValueError as e:
            self._abort(RedisUnavailable(f"Redis protocol error: {e}"))
            return
        waiting = self._waiting
        for reply in replies:
            if not waiting:
                self._abort(RedisUnavailable("Redis sent a reply nobody asked for"))
                return
            d, _ = waiting.popleft()
            if isinstance(reply, ReplyError):
                d.errback(error_from_reply(reply.message))
            else:
                d.callback(reply)

    def _check(self) -> None:
        self._watchdog = None
        if not self._waiting:
            return
        # Usually the oldest command's; but a short command may follow a
        # long one (the handshake's): any overdue reply means a stuck link.
        deadline = min(d for _, d in self._waiting)
        now = self._clock.seconds()
        if deadline <= now:
            self._abort(RedisTimeout("Redis did not answer in time"))
        else:
            self._watchdog = self._clock.callLater(deadline - now, self._check)

    def _abort(self, reason: Exception) -> None:
        self._abort_reason = reason
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:
        lost = self._abort_reason or RedisUnavailable(
            f"connection to Redis lost: {reason.getErrorMessage()}"
        )
        self._lost = lost
        if self._watchdog is not None and self._watchdog.active():
            self._watchdog.cancel()
        self._watchdog = None
        waiting, self._waiting = self._waiting, deque()
        for d, _ in waiting:
            d.errback(lost)
        if self._on_lost is not None:
            self._on_lost(lost)
