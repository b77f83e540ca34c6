"""
Kubernetes Events about the objects the gateway serves.

Why: an operator who wrote an Ingress looks at ``kubectl describe
ingress`` to learn why it is not served as intended; a line in the
gateway's log is in the wrong place for them. So problems are also
written as core/v1 Events about the object, the way client-go's
``record.EventRecorder`` writes them, so they look and behave like every
controller's:

* one Event per distinct occurrence (involved object, type, reason,
  message); the same one again within ten minutes is not a new Event but
  a merge patch of the existing one's ``count`` and ``lastTimestamp``
  (what ``kubectl`` shows as ``x3 over 5m``). If that Event is gone (the
  API server deletes Events an hour after their last change), it is
  created again, under a new name, with the same count;
* a token bucket per involved object (client-go's spam filter: a burst of
  25, then one every 5 minutes) drops what a storm would otherwise send;
* best effort: Events are advisory, so a failure (no RBAC permission, API
  server unreachable) is logged once per kind of failure and never
  raised; the returned Deferred always succeeds;
* bounded memory: the aggregation cache and the buckets are LRU maps of
  4096 entries, as in client-go.

Writes about one series of occurrences are made one after the other (a
patch never overtakes the create it patches); a write that finds a later
occurrence already written is skipped. All times come from the injected
reactor.
"""

from __future__ import annotations

import secrets
import socket
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, ensureDeferred, succeed
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.internet.error import ConnectError, ConnectionLost
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.client import RequestTransmissionFailed, ResponseFailed

from ._client import KubeClient
from ._errors import AlreadyExists, ApiError, NotFound
from ._kinds import EVENT

__all__ = [
    "NORMAL",
    "WARNING",
    "EventRecorder",
    "event_time",
    "object_reference",
    "truncate_message",
]

JSON = dict[str, Any]

NORMAL = "Normal"
WARNING = "Warning"

#: The longest message kept, in UTF-8 bytes (the Events API's note limit).
MAX_MESSAGE_BYTES = 1024
#: The longest Event name (a DNS subdomain).
_MAX_NAME = 253
#: Errors that mean the API server could not be reached or did not answer:
#: one kind of failure, however the connection broke.
_UNREACHABLE = (
    ConnectError,
    ConnectionLost,
    DeferredTimeoutError,
    CancelledError,
    ResponseFailed,
    RequestTransmissionFailed,
)
#: What the involved object's reference carries, in this order.
_REFERENCE_FIELDS = ("apiVersion", "kind", "namespace", "name", "uid", "resourceVersion")


def event_time(seconds: float) -> str:
    """A time as ``metav1.Time`` serialises it (RFC 3339, UTC, whole seconds)."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def truncate_message(message: str, limit: int = MAX_MESSAGE_BYTES) -> str:
    """``message`` cut to ``limit`` UTF-8 bytes, never in the middle of a character."""
    raw = message.encode("utf-8")
    if len(raw) <= limit:
        return message
    return raw[:limit].decode("utf-8", "ignore")


def object_reference(involved: Mapping[str, Any]) -> JSON:
    """The ``ObjectReference`` of an object: its type, where it is, and which version of it."""
    meta = involved.get("metadata") or {}
    values = {
        "apiVersion": involved.get("apiVersion"),
        "kind": involved.get("kind"),
        "namespace": meta.get("namespace"),
        "name": meta.get("name"),
        "uid": meta.get("uid"),
        "resourceVersion": meta.get("resourceVersion"),
    }
    return {k: str(values[k]) for k in _REFERENCE_FIELDS if values[k]}


def _object_key(reference: Mapping[str, str]) -> tuple[str, ...]:
    """Which object a reference names (its version left out)."""
    return tuple(reference.get(k, "") for k in ("apiVersion", "kind", "namespace", "name", "uid"))


def _event_name(reference: Mapping[str, str]) -> str:
    """``<involved name>.<16 hex digits>``, within the length of a name."""
    suffix = secrets.token_hex(8)
    prefix = (reference.get("name") or "object")[: _MAX_NAME - len(suffix) - 1].rstrip(".-")
    return f"{prefix}.{suffix}"


@dataclass(eq=False)
class _Series:
    """
    The occurrences of one event (same object, type, reason and message)
    and the Event object that records them.

    :ivar count: occurrences so far.
    :ivar recorded: the count the API server has.
    :ivar created: whether the Event named ``name`` exists (as far as known).
    :ivar tail: the last write queued for this series.
    """

    reference: JSON
    namespace: str
    type: str
    reason: str
    message: str
    name: str
    first: float
    last: float
    count: int = 0
    recorded: int = 0
    created: bool = False
    tail: Deferred[None] = field(default_factory=lambda: succeed(None))


@dataclass
class _Bucket:
    tokens: float
    at: float


class EventRecorder:
    """
    Writes core/v1 Events about objects (see the module docstring).

    :ivar component: ``source.component`` and ``reportingComponent``.
    :ivar instance: ``source.host`` and ``reportingInstance``.
    :ivar dropped: occurrences dropped by the rate limit.
    :ivar failures: writes that failed.
    :ivar writes: creates and patches that succeeded.
    """

    _log = Logger()

    def __init__(
        self,
        client: KubeClient,
        *,
        reactor: IReactorTime,
        component: str = "apimgw",
        instance: str | None = None,
        burst: int = 25,
        refill_interval: float = 300.0,
        window: float = 600.0,
        cache_size: int = 4096,
    ) -> None:
        """
        :param instance: this replica's name; the host name by default.
        :param burst: events about one object sent before the rate limit
            applies.
        :param refill_interval: seconds per event allowed after the burst
            (client-go: 300).
        :param window: an occurrence within this many seconds of the
            previous one of the same event patches it.
        :param cache_size: entries of the aggregation cache and of the
            rate limit's buckets.
        """
        self.client = client
        self.component = component
        self.instance = instance or socket.gethostname()
        self._reactor = reactor
        self._burst = burst
        self._refill = refill_interval
        self._window = window
        self._cache_size = cache_size
        self._series: OrderedDict[tuple[str, ...], _Series] = OrderedDict()
        self._buckets: OrderedDict[tuple[str, ...], _Bucket] = OrderedDict()
        self._failure_kinds: set[str] = set()
        self.dropped = 0
        self.failures = 0
        self.writes = 0

    def warning(self, involved: Mapping[str, Any], reason: str, message: str) -> Deferred[None]:
        """
        Record a ``Warning`` about ``involved`` (an object as the API
        serves it). The Deferred fires once it is written, dropped or
        given up; it never fails.
        """
        return self.record(involved, WARNING, reason, message)

    def normal(self, involved: Mapping[str, Any], reason: str, message: str) -> Deferred[None]:
        """Record a ``Normal`` event about ``involved``; as :meth:`warning`."""
        return self.record(involved, NORMAL, reason, message)

    def record(
        self, involved: Mapping[str, Any], event_type: str, reason: str, message: str
    ) -> Deferred[None]:
        """Record an event of ``event_type`` (``Normal`` or ``Warning``); as :meth:`warning`."""
        try:
            reference = object_reference(involved)
            now = self._reactor.seconds()
            if not self._admit(reference, now):
                self.dropped += 1
                self._log.debug(
                    "Events: dropped {type} {reason} about {object}: too many events about it",
                    type=event_type,
                    reason=reason,
                    object=_describe_object(reference),
                )
                return succeed(None)
            series = self._occurred(reference, event_type, reason, truncate_message(message), now)
        except Exception:
            self._log.failure("Events: could not record {reason}", reason=reason)
            return succeed(None)
        return self._enqueue(series)

    # -- rate limit and aggregation --------------------------------------

    def _admit(self, reference: Mapping[str, str], now: float) -> bool:
        """client-go's spam filter: one token bucket per involved object."""
        key = _object_key(reference)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(self._burst), now)
            self._trim(self._buckets)
        else:
            self._buckets.move_to_end(key)
            refilled = bucket.tokens + (now - bucket.at) / self._refill
            bucket.tokens = min(float(self._burst), refilled)
            bucket.at = now
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True

    def _occurred(
        self, reference: JSON, event_type: str, reason: str, message: str, now: float
    ) -> _Series:
        """The series this occurrence belongs to (a new one after ``window``), counted."""
        key = (
            *_object_key(reference),
            event_type,
            reason,
            message,
        )
        series = self._series.get(key)
        if series is not None and now - series.last <= self._window:
            self._series.move_to_end(key)
        else:
            series = _Series(
                reference=reference,
                namespace=reference.get("namespace") or "default",
                type=event_type,
                reason=reason,
                message=message,
                name=_event_name(reference),
                first=now,
                last=now,
            )
            self._series[key] = series
            self._series.move_to_end(key)
            self._trim(self._series)
        series.count += 1
        series.last = now
        return series

    def _trim(self, cache: OrderedDict[Any, Any]) -> None:
        while len(cache) > self._cache_size:
            cache.popitem(last=False)

    # -- writing ---------------------------------------------------------

    def _enqueue(self, series: _Series) -> Deferred[None]:
        """Queue the write of occurrence number ``series.count`` behind the series' earlier ones."""
        wanted = series.count
        done: Deferred[None] = Deferred()

        def finished(_: object) -> None:
            if not done.called:
                done.callback(None)

        def write(_: object) -> Deferred[None]:
            d = ensureDeferred(self._write(series, wanted))
            d.addErrback(
                lambda f: self._log.failure("Events: unexpected error writing an event", f)
            )
            d.addBoth(finished)
            return d

        series.tail.addBoth(write)
        return done

    async def _write(self, series: _Series, wanted: int) -> None:
        """
        Bring the Event up to the series' count: create it, or patch it;
        a patch that finds it gone creates it again; a create that finds
        its name taken (an earlier create whose answer was lost) patches.
        """
        if series.recorded >= wanted:
            return
        count, last = series.count, series.last
        try:
            for _ in range(2):
                if series.created:
                    try:
                        await self.client.patch(
                            EVENT,
                            series.namespace,
                            series.name,
                            {"count": count, "lastTimestamp": event_time(last)},
                        )
                    except NotFound:
                        series.created = False
                        series.name = _event_name(series.reference)
                        continue
                else:
                    try:
                        await self.client.create(
                            EVENT, self._event(series, count, last), series.namespace
                        )
                    except AlreadyExists:
                        series.created = True
                        continue
                    series.created = True
                series.recorded = count
                self.writes += 1
                return
        except Exception as e:
            self._failed(e, series)

    def _event(self, series: _Series, count: int, last: float) -> JSON:
        return {
            "metadata": {"name": series.name, "namespace": series.namespace},
            "involvedObject": dict(series.reference),
            "reason": series.reason,
            "message": series.message,
            "type": series.type,
            "source": {"component": self.component, "host": self.instance},
            "reportingComponent": self.component,
            "reportingInstance": self.instance,
            "firstTimestamp": event_time(series.first),
            "lastTimestamp": event_time(last),
            "count": count,
        }

    def _failed(self, error: Exception, series: _Series) -> None:
        """Log a failed write: at warn level the first time this kind of failure happens."""
        self.failures += 1
        if isinstance(error, ApiError):
            kind = f"{error.code} {error.reason}"
            why = f"{kind}: {error.message}"
        elif isinstance(error, _UNREACHABLE):
            kind = "unreachable"
            why = f"the API server is unreachable: {type(error).__name__}: {error}"
        else:
            kind = type(error).__name__
            why = f"{kind}: {error}"
        first = kind not in self._failure_kinds
        self._failure_kinds.add(kind)
        log = self._log.warn if first else self._log.debug
        log(
            "Events: could not record {type} {reason} about {object} ({why})"
            + ("; failures of this kind are not logged again" if first else ""),
            type=series.type,
            reason=series.reason,
            object=_describe_object(series.reference),
            why=why,
        )


def _describe_object(reference: Mapping[str, str]) -> str:
    kind = reference.get("kind") or "object"
    where = "/".join(p for p in (reference.get("namespace"), reference.get("name")) if p)
    return f"{kind} {where}"
