"""
Counters in a real Redis, shared by every gateway replica that uses the
same Redis and namespace: one script call (one round trip, atomic) per
``take`` or ``peek``, pipelined on one connection.

Keys: ``apimgw:<namespace>:s:<period>:<key>`` (sliding, a sorted set) and
``apimgw:<namespace>:f:<period>:<key>`` (fixed, a hash), each expiring by
itself one window after its last write (fixed windows with period 0 never
expire). See :mod:`gateway.counters._scripts` for what the scripts do.

Memory of a sliding key: one sorted-set member per admitted unit in the
window (a member is this client's random id and a sequence number, ~16–24
bytes). Measured with ``MEMORY USAGE`` on Redis 7.0: ~31 bytes per member
while the set has at most 128 members (a listpack), ~113 bytes per member
above (skiplist + dict): a key at a limit of 1,000 calls per window holds
~113 kB. A fixed-window key is ~104 bytes. A key idle for one period is gone.

The pipeline is one queue: with thousands of checks in flight, the last one
waits for all the others, and the command timeout (0.25 s by default)
bounds that queue; at a gateway's concurrency (tens in flight) it is far off.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from ._client import RedisClient
from ._resp import Reply
from ._scripts import EPOCH, FIXED, SLIDING, Script
from ._url import parse_redis_url
from ._verdict import NEVER, Verdict

__all__ = ["RedisCounters"]


def _verdict(reply: Reply, limit: int) -> Verdict:
    admitted, count, retry = reply  # type: ignore[misc]
    return Verdict(
        admitted == 1,
        count,
        max(0, limit - count),
        NEVER if retry < 0 else retry / 1e6,
    )


class RedisCounters:
    """
    :param reactor: the reactor (time and TCP).
    :param url: ``redis://[[user]:password@]host[:port][/db]`` or ``rediss://``.
    :param password: overrides the URL's password.
    :param namespace: keeps several gateways (or environments) apart in
        one Redis.
    :param time_source: ``None`` (production): Redis's clock decides the
        windows. A callable returning seconds makes the scripts use that
        time instead (tests on a fake clock).
    :param client_options: ``connect_timeout``, ``command_timeout``,
        ``ca_file``, ``tls_verify`` (see :class:`RedisClient`).
    """

    _log = Logger()

    def __init__(
        self,
        reactor: IReactorTime,
        url: str,
        *,
        password: str | None = None,
        namespace: str = "default",
        time_source: Callable[[], float] | None = None,
        connect_timeout: float = 2.0,
        command_timeout: float = 0.25,
        ca_file: str | None = None,
        tls_verify: bool = True,
    ) -> None:
        self.client = RedisClient(
            reactor,
            parse_redis_url(url, password),
            scripts=(SLIDING, FIXED),
            connect_timeout=connect_timeout,
            command_timeout=command_timeout,
            ca_file=ca_file,
            tls_verify=tls_verify,
        )
        self._prefix = f"apimgw:{namespace}:"
        self._time = time_source
        # Sorted-set members must be unique across every gateway sharing
        # the key: a random id per client plus a sequence number.
        self._id = os.urandom(6).hex()
        self._seq = 0

    def start(self) -> None:
        """Connect (and keep reconnecting)."""
        self.client.start()

    def stop(self) -> Deferred[None]:
        return self.client.stop()

    # -- the Counters interface -------------------------------------------

    def take(
        self,
        key: str,
        limit: int,
        period: float,
        amount: int = 1,
        *,
        sliding: bool = True,
        anchor: float = 0.0,
    ) -> Deferred[Verdict]:
        d = self._run(b"t", key, limit, period, amount, sliding, anchor, None)
        return d.addCallback(_verdict, limit)

    def peek(
        self, key: str, limit: int, period: float, *, sliding: bool = True, anchor: float = 0.0
    ) -> Deferred[Verdict]:
        d = self._run(b"p", key, limit, period, 1, sliding, anchor, None)
        return d.addCallback(_verdict, limit)

    def add(
        self, key: str, amount: int, period: float, *, sliding: bool = True, anchor: float = 0.0
    ) -> None:
        self.add_at(key, amount, period, sliding=sliding, anchor=anchor).addErrback(self._add_failed)

    # -- beyond the interface: for the fallback's replay ------------------

    def add_at(
        self,
        key: str,
        amount: int,
        period: float,
        *,
        sliding: bool = True,
        anchor: float = 0.0,
        at: float | None = None,
    ) -> Deferred[None]:
        """
        :meth:`add`, telling when it landed (or failed); ``at`` (seconds
        since the epoch) records it at that time instead of Redis's now.
        """
        d = self._run(b"a", key, 0, period, amount, sliding, anchor, at)
        return d.addCallback(lambda _: None)

    def epoch(self, candidate: str) -> Deferred[str]:
        """
        The namespace's epoch marker, set to ``candidate`` if missing. It
        changes when Redis lost its data (restart without persistence,
        flush), which the fallback must know to replay everything it knows.
        """
        d = self.client.evalsha(EPOCH, [self._prefix + "epoch"], [candidate])
        return d.addCallback(lambda v: v.decode("utf-8") if isinstance(v, bytes) else str(v))

    def key(self, key: str, period: float, sliding: bool) -> str:
        """The Redis key of a counter."""
        return f"{self._prefix}{'s' if sliding else 'f'}:{period:g}:{key}"

    # -- internals ---------------------------------------------------------

    def _run(
        self,
        mode: bytes,
        key: str,
        limit: int,
        period: float,
        amount: int,
        sliding: bool,
        anchor: float,
        at: float | None,
    ) -> Deferred[Reply]:
        if at is None and self._time is not None:
            at = self._time()
        now = b"" if at is None else b"%d" % round(at * 1e6)
        script: Script
        if sliding:
            script = SLIDING
            self._seq += 1
            last = b"%s:%d" % (self._id.encode(), self._seq)
        else:
            script = FIXED
            last = b"%d" % round(anchor * 1e6)
        args: Sequence[bytes | int] = (limit, round(period * 1e6), amount, mode, now, last)
        return self.client.evalsha(script, [self.key(key, period, sliding)], args)

    def _add_failed(self, failure: Failure) -> None:
        self._log.failure("Redis add failed (the amount is not counted)", failure, level=LogLevel.warn)
