"""
Leader election on a ``coordination.k8s.io/v1`` Lease.

Why: every replica of the gateway watches the same Ingress objects and
serves them, but only one may write what is *about* them (the Ingress
status, Events); otherwise the replicas fight over the status and repeat
every Event. The replicas agree on that one through a Lease, the way
Kubernetes controllers do, so operators see the usual object
(``kubectl get lease``) and the usual behaviour.

The protocol is client-go's ``leaderelection`` with a ``LeaseLock`` and
``ReleaseOnCancel``:

* **Acquire**: read the Lease; create it when there is none (a create
  that finds it taken, ``AlreadyExists``, is retried later). A Lease held
  by another identity is left alone until it *expires*, and expiry is
  judged by this replica's own clock: the lease counts as live until
  ``leaseDurationSeconds`` after this replica last *saw it change*
  (client-go's ``observedTime``). The holder's ``renewTime`` is written
  for humans, never compared with the local clock, so clock skew between
  nodes cannot hand the lease to two replicas. An expired, released or
  absent holder is replaced by an update that names
  ``metadata.resourceVersion``: of two candidates racing, the API server
  lets exactly one win, and the other gets ``409 Conflict`` and tries
  again after a jittered ``retry_period``.
* **Renew** every ``retry_period`` while leading, first optimistically
  from the last version seen (one request), falling back to read and
  update. If no renewal succeeded for ``renew_deadline``, leadership is
  given up (``on_stopped_leading``) and the replica goes back to
  acquiring: ``renew_deadline < lease_duration``, so it stops acting
  before anyone else can take over. Unlike client-go, a leader that reads
  the Lease and finds another holder stops at once rather than at the
  deadline.
* **Release** on :meth:`LeaderElection.stopService`: the holder is
  cleared and the duration set to one second, so another replica takes
  over at its next retry instead of after a whole lease duration.

``leaseDurationSeconds`` is a whole number of seconds on the wire (at
least 1): a shorter ``lease_duration`` (tests) is rounded up there.
Everything is scheduled through the injected reactor; nothing blocks it;
API errors are logged, never raised out of a timer.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._client import KubeClient
from ._errors import AlreadyExists, ApiError, Conflict, NotFound
from ._kinds import LEASE

__all__ = ["LeaderElection", "micro_time"]

JSON = dict[str, Any]

#: client-go's ``JitterFactor``: a candidate retries after
#: ``retry_period * (1 + random * JITTER_FACTOR)``.
JITTER_FACTOR = 1.2


def micro_time(seconds: float) -> str:
    """
    A time as ``metav1.MicroTime`` serialises it (RFC 3339, UTC,
    microseconds): ``2026-12-01T10:00:00.000000Z``.
    """
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _ignore() -> None:
    return None


class LeaderElection(Service):
    """
    Takes part in the election of one leader among the replicas sharing a
    Lease, and says when this replica starts and stops leading.

    The callbacks run in the reactor thread; an exception in one is
    logged. ``on_started_leading`` and ``on_stopped_leading`` alternate,
    starting with the former: ``on_stopped_leading`` is called only after
    ``on_started_leading`` was.

    :ivar lease_name: the Lease's name (not ``name``: that is the
        service's name in a ``MultiService``).
    :ivar is_leader: whether this replica leads now.
    :ivar leader: the holder of the Lease as last observed (``None``:
        nobody, or not observed yet).
    :ivar attempts: acquisition or renewal attempts completed.
    :ivar failures: attempts that ended in an error.
    """

    _log = Logger()

    def __init__(
        self,
        client: KubeClient,
        *,
        reactor: IReactorTime,
        namespace: str,
        name: str,
        identity: str,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        on_started_leading: Callable[[], None] = _ignore,
        on_stopped_leading: Callable[[], None] = _ignore,
        random_source: Callable[[], float] = random.random,
        release_timeout: float = 2.0,
    ) -> None:
        """
        :param namespace: where the Lease lives.
        :param name: the Lease's name: every replica of one gateway uses
            the same.
        :param identity: this replica's name in the Lease; unique among
            the replicas (a pod name plus a random suffix).
        :param lease_duration: how long the others wait after the Lease
            last changed before taking it over.
        :param renew_deadline: how long the leader keeps leading without a
            successful renewal; shorter than ``lease_duration``.
        :param retry_period: seconds between renewals, and (jittered)
            between acquisition attempts.
        :param random_source: the randomness of the jitter (inject for
            determinism).
        :param release_timeout: how long :meth:`stopService` waits for the
            API server to take the release.
        :raises ValueError: for timings client-go refuses too.
        """
        if not identity:
            raise ValueError("the identity of a leader election candidate must not be empty")
        if retry_period <= 0:
            raise ValueError("retry_period must be positive")
        if lease_duration <= renew_deadline:
            raise ValueError("lease_duration must be longer than renew_deadline")
        if renew_deadline <= JITTER_FACTOR * retry_period:
            raise ValueError(f"renew_deadline must be longer than {JITTER_FACTOR} * retry_period")
        self.client = client
        self.namespace = namespace
        self.lease_name = name
        self.identity = identity
        self._reactor = reactor
        self._lease_duration = lease_duration
        self._renew_deadline = renew_deadline
        self._retry_period = retry_period
        self._on_started_leading = on_started_leading
        self._on_stopped_leading = on_stopped_leading
        self._random = random_source
        self._release_timeout = release_timeout
        self.is_leader = False
        self.leader: str | None = None
        self.attempts = 0
        self.failures = 0
        #: The Lease as last read or written (its resourceVersion is the
        #: precondition of the next update).
        self._lease: JSON | None = None
        #: The Lease's spec as last observed, and when (local clock).
        self._observed: JSON | None = None
        self._observed_at = 0.0
        self._running = False
        self._next: IDelayedCall | None = None
        self._deadline: IDelayedCall | None = None
        self._inflight: Deferred[bool] | None = None
        self._last_error: str | None = None

    def __repr__(self) -> str:
        return f"<LeaderElection {self.namespace}/{self.lease_name} as {self.identity}>"

    @property
    def lease_seconds(self) -> int:
        """``leaseDurationSeconds`` as written: ``lease_duration`` rounded up, at least 1."""
        return max(1, math.ceil(self._lease_duration))

    # -- lifecycle -------------------------------------------------------

    def startService(self) -> None:
        """Start trying to acquire the Lease (at once, in the background)."""
        super().startService()
        self._running = True
        self._schedule(0)

    def stopService(self) -> Deferred[None]:  # type: ignore[override]
        """
        Stop: no more attempts; a leader calls ``on_stopped_leading`` and
        then releases the Lease. The Deferred fires when that is done, or
        after ``release_timeout`` whatever the API server does (the Lease
        then expires on its own); it never fails.
        """
        super().stopService()
        self._running = False
        self._cancel_timers()
        finished: Deferred[None] = Deferred()
        winding = ensureDeferred(self._wind_down())

        def give_up() -> None:
            self._log.warn(
                "Leader election {election}: no answer within {timeout} s while releasing the "
                "lease; the other replicas take over when it expires",
                election=repr(self),
                timeout=self._release_timeout,
            )
            winding.cancel()
            self._stopped(finished)

        timer = self._reactor.callLater(self._release_timeout, give_up)

        def wound_down(result: object) -> None:
            if timer.active():
                timer.cancel()
            if isinstance(result, Failure) and not result.check(CancelledError):
                self._log.warn(
                    "Leader election {election}: could not release the lease ({why}); the other "
                    "replicas take over when it expires",
                    election=repr(self),
                    why=_describe(result.value),
                )
            self._stopped(finished)

        winding.addBoth(wound_down)
        return finished

    def _stopped(self, finished: Deferred[None]) -> None:
        self._stop_leading("the service stopped")
        if not finished.called:
            finished.callback(None)

    async def _wind_down(self) -> None:
        inflight = self._inflight
        if inflight is not None:
            # An attempt under way may be winning the Lease right now:
            # let it finish, so that a won Lease is released, not orphaned.
            await _settled(inflight)
        self._stop_leading("the service is stopping")
        await self._release()

    # -- the loop --------------------------------------------------------

    def _schedule(self, delay: float) -> None:
        if self._next is not None and self._next.active():
            self._next.cancel()
        self._next = self._reactor.callLater(delay, self._tick) if self._running else None

    def _cancel_timers(self) -> None:
        for call in (self._next, self._deadline):
            if call is not None and call.active():
                call.cancel()
        self._next = self._deadline = None

    def _retry_delay(self) -> float:
        """A candidate's wait: ``retry_period`` stretched by up to 120 %, as client-go's jitter."""
        return self._retry_period * (1.0 + self._random() * JITTER_FACTOR)

    def _tick(self) -> None:
        """One attempt to acquire or renew; the next is scheduled when it ends."""
        self._next = None
        if not self._running or self._inflight is not None:
            return
        try:
            attempt = ensureDeferred(self._try_acquire_or_renew())
        except Exception:
            self._log.failure("Leader election {election}: an attempt failed", election=repr(self))
            self._schedule(self._retry_delay())
            return
        self._inflight = attempt
        attempt.addTimeout(self._renew_deadline, self._reactor)
        attempt.addCallbacks(self._attempted, self._attempt_failed)
        attempt.addErrback(
            lambda f: self._log.failure(
                "Leader election {election}: unexpected error", f, election=repr(self)
            )
        )

    def _attempted(self, won: bool) -> None:
        self._inflight = None
        self.attempts += 1
        if not self._running:
            return
        if not won:
            if self.is_leader and self.leader != self.identity:
                self._stop_leading(f"the lease is held by {self.leader}")
            self._schedule(self._retry_delay())
            return
        self._last_error = None
        self._schedule(self._retry_period)
        if self.is_leader:
            self._arm_deadline()
        else:
            self._start_leading()

    def _attempt_failed(self, failure: Failure) -> None:
        self._inflight = None
        self.attempts += 1
        self.failures += 1
        if not self._running:
            return
        self._report(failure)
        self._schedule(self._retry_period if self.is_leader else self._retry_delay())

    def _report(self, failure: Failure) -> None:
        """Log a failed attempt: at warn level when it differs from the previous failure."""
        error = failure.value
        level = "warn"
        if isinstance(error, Conflict):
            why = "another replica wrote the lease first"
            level = "info"
        elif isinstance(error, AlreadyExists):
            why = "another replica created the lease first"
            level = "info"
        elif isinstance(error, (DeferredTimeoutError, CancelledError)):
            why = f"no answer within {self._renew_deadline} s"
        else:
            why = _describe(error)
        kind = type(error).__name__ + (f" {error.code}" if isinstance(error, ApiError) else "")
        if kind == self._last_error:
            level = "debug"
        self._last_error = kind
        action = "renew" if self.is_leader else "acquire"
        getattr(self._log, level)(
            "Leader election {election}: could not {action} the lease ({why}); retrying",
            election=repr(self),
            action=action,
            why=why,
        )

    # -- leading ---------------------------------------------------------

    def _start_leading(self) -> None:
        self.is_leader = True
        self._arm_deadline()
        self._log.info("Leader election {election}: now leading", election=repr(self))
        self._call(self._on_started_leading)

    def _stop_leading(self, why: str) -> None:
        if not self.is_leader:
            return
        self.is_leader = False
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None
        self._log.info(
            "Leader election {election}: no longer leading ({why})", election=repr(self), why=why
        )
        self._call(self._on_stopped_leading)

    def _arm_deadline(self) -> None:
        """Stop leading ``renew_deadline`` after this successful renewal, unless another follows."""
        if self._deadline is not None and self._deadline.active():
            self._deadline.reset(self._renew_deadline)
        else:
            self._deadline = self._reactor.callLater(self._renew_deadline, self._deadline_passed)

    def _deadline_passed(self) -> None:
        self._deadline = None
        self._log.warn(
            "Leader election {election}: the lease was not renewed within {deadline} s",
            election=repr(self),
            deadline=self._renew_deadline,
        )
        self._stop_leading("renew deadline passed")
        inflight = self._inflight
        if inflight is not None:
            # A hung renewal: abandon it; its failure schedules the next attempt.
            inflight.cancel()

    def _call(self, callback: Callable[[], None]) -> None:
        try:
            callback()
        except Exception:
            self._log.failure("Leader election {election}: a callback raised", election=repr(self))

    # -- the Lease -------------------------------------------------------

    async def _try_acquire_or_renew(self) -> bool:
        """
        client-go's ``tryAcquireOrRenew``: whether this replica holds the
        Lease now. ``False`` while another holder's lease is live; errors
        (``Conflict`` included) propagate.
        """
        now = self._reactor.seconds()
        fast = self._lease is not None and self._holds() and self._lease_valid(now)
        if fast and await self._renew_optimistically(now):
            return True
        try:
            lease = await self.client.get(LEASE, self.namespace, self.lease_name)
        except NotFound:
            return await self._create(now)
        spec = dict(lease.get("spec") or {})
        self._lease = lease
        if spec != self._observed:
            self._observe(spec)
        holder = spec.get("holderIdentity") or ""
        if holder and holder != self.identity and self._lease_valid(now):
            return False
        record = self._record(now)
        transitions = _int(spec.get("leaseTransitions"))
        if holder == self.identity:
            record["acquireTime"] = spec.get("acquireTime") or record["acquireTime"]
            record["leaseTransitions"] = transitions
        else:
            record["leaseTransitions"] = transitions + 1
        await self._write(record)
        return True

    async def _renew_optimistically(self, now: float) -> bool:
        """
        Renew from the version last seen, without reading first (one
        request instead of two); ``False`` when the API server refused
        (the caller reads and tries again).
        """
        assert self._observed is not None
        record = self._record(now)
        record["acquireTime"] = self._observed.get("acquireTime") or record["acquireTime"]
        record["leaseTransitions"] = _int(self._observed.get("leaseTransitions"))
        try:
            await self._write(record)
        except ApiError as e:
            self._log.debug(
                "Leader election {election}: optimistic renewal refused ({why}); reading the lease",
                election=repr(self),
                why=_describe(e),
            )
            return False
        return True

    async def _create(self, now: float) -> bool:
        body = {
            "metadata": {"name": self.lease_name, "namespace": self.namespace},
            "spec": self._record(now),
        }
        created = await self.client.create(LEASE, body, self.namespace)
        self._lease = created
        self._observe(dict(created.get("spec") or body["spec"]))
        return True

    async def _write(self, record: JSON) -> None:
        """Update the Lease last read or written with ``record``; its resourceVersion guards it."""
        assert self._lease is not None
        lease = dict(self._lease)
        # Fields this replica does not know (preferredHolder, strategy)
        # are kept.
        lease["spec"] = {**(lease.get("spec") or {}), **record}
        updated = await self.client.update(LEASE, lease)
        self._lease = updated
        self._observe(dict(updated.get("spec") or lease["spec"]))

    async def _release(self) -> None:
        """client-go's ``release``: clear the holder and shorten the lease to one second."""
        if self._lease is None or not self._holds():
            return
        now = self._reactor.seconds()
        assert self._observed is not None
        await self._write(
            {
                "holderIdentity": "",
                "leaseDurationSeconds": 1,
                "acquireTime": micro_time(now),
                "renewTime": micro_time(now),
                "leaseTransitions": _int(self._observed.get("leaseTransitions")),
            }
        )
        self._log.info("Leader election {election}: released the lease", election=repr(self))

    def _record(self, now: float) -> JSON:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.lease_seconds,
            "acquireTime": micro_time(now),
            "renewTime": micro_time(now),
            "leaseTransitions": 0,
        }

    def _observe(self, spec: JSON) -> None:
        """Remember the Lease's spec and when it was seen to change."""
        self._observed = spec
        self._observed_at = self._reactor.seconds()
        holder = spec.get("holderIdentity") or None
        if holder != self.leader:
            self.leader = holder
            self._log.info(
                "Leader election {election}: the lease is held by {holder}",
                election=repr(self),
                holder=holder or "nobody",
            )

    def _holds(self) -> bool:
        """Whether the Lease, as last observed, names this replica."""
        return self._observed is not None and self._observed.get("holderIdentity") == self.identity

    def _lease_valid(self, now: float) -> bool:
        """
        Whether the observed holder's lease is live: it changed less than
        its own ``leaseDurationSeconds`` ago, by the local clock.
        """
        if self._observed is None:
            return False
        duration = self._observed.get("leaseDurationSeconds")
        if not isinstance(duration, (int, float)) or isinstance(duration, bool) or duration <= 0:
            duration = self._lease_duration
        return self._observed_at + duration > now


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _describe(error: BaseException) -> str:
    if isinstance(error, ApiError):
        return f"{error.code} {error.reason}: {error.message}"
    return f"{type(error).__name__}: {error}"


def _settled(d: Deferred[Any]) -> Deferred[None]:
    """
    A Deferred that fires with ``None`` once ``d`` has fired (whatever its
    result, which stays with ``d``). Cancelling it fails it with
    ``CancelledError`` and cancels ``d``.
    """

    def cancel(settled: Deferred[None]) -> None:
        settled.errback(Failure(CancelledError()))
        d.cancel()

    settled: Deferred[None] = Deferred(cancel)

    def fire(result: Any) -> Any:
        if not settled.called:
            settled.callback(None)
        return result

    d.addBoth(fire)
    return settled
