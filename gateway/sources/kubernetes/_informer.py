"""
An informer: a local cache of one kind of Kubernetes object (in one
namespace or all, optionally filtered by selectors) kept current by
list-then-watch, reporting each change to handlers.

The protocol, as the API documents it ("Efficient detection of changes")
and as client-go's reflector does it, with one deliberate difference:

1. **List** the collection (consistent read, paged), replace the cache and
   *diff* against what was cached: objects that vanished are reported as
   deletions, new or changed ones as upserts, unchanged ones not at all.
2. **Watch** from the list's resourceVersion with ``allowWatchBookmarks``;
   every event and every BOOKMARK advances the version to resume from.
3. When the stream ends (server timeout, connection drop, API server
   restart) **watch again from the last version seen**: nothing is missed
   and nothing is delivered twice.
4. On **410 Gone** (an HTTP 410 or an ERROR event with code 410) the
   version is older than the server's history: **list again** (step 1).
   Unlike ``kubernetes/base/watch/watch.py``, which retries the same stale
   version, a stale version is never reused.
5. Failures (unreachable server, 5xx, 401 ...) are retried after a
   jittered exponential backoff (``twisted.application.internet.backoffPolicy``),
   reset by the next success.

All scheduling goes through the injected reactor, so the informer's timing
is testable with a ``Clock``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from twisted.application.internet import backoffPolicy
from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger

from gateway.ready import OneShot

from ._client import KubeClient
from ._errors import Gone, NotFound
from ._kinds import Kind
from ._watch import WatchEvent

__all__ = ["Informer", "ObjectKey", "object_key"]

JSON = dict[str, Any]

#: ``(namespace, name)``; the namespace is ``""`` for cluster-scoped kinds.
ObjectKey = tuple[str, str]


def object_key(obj: JSON) -> ObjectKey:
    """The cache key of an object."""
    meta = obj.get("metadata") or {}
    return (meta.get("namespace") or "", meta.get("name") or "")


def _rv(obj: JSON) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def _ignore(*args: Any) -> None:
    return None


class Informer(Service):
    """
    Keeps :attr:`cache` equal to the API server's objects of one kind and
    tells handlers about every change.

    Handlers run in the reactor thread, in the order of the changes; an
    exception in a handler is logged and does not stop the informer.

    :ivar cache: the current objects by ``(namespace, name)``; read-only
        for callers.
    :ivar resource_version: the version a watch resumes from (the last one
        seen, from an event, a bookmark or a list).
    :ivar synced: whether the first complete list has been delivered.
    """

    _log = Logger()

    def __init__(
        self,
        client: KubeClient,
        kind: Kind,
        *,
        reactor: IReactorTime,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        on_upsert: Callable[[JSON], None] = _ignore,
        on_delete: Callable[[JSON], None] = _ignore,
        on_synced: Callable[[], None] = _ignore,
        keep: Callable[[JSON], bool] | None = None,
        on_failure: Callable[[Exception], None] = _ignore,
        backoff: Callable[[int], float] | None = None,
        random_source: Callable[[], float] = random.random,
        page_size: int = 500,
        watch_timeout: tuple[int, int] = (300, 600),
    ) -> None:
        """
        :param namespace: the one namespace to watch; ``None``: all (and
            for cluster-scoped kinds).
        :param on_upsert: called with an object that appeared or changed.
        :param on_delete: called with the last known state of an object
            that is gone.
        :param on_synced: called once, after the first complete list has
            been delivered through ``on_upsert``.
        :param on_failure: called with each error before its retry
            (readiness reports an unreachable API server this way).
        :param keep: which objects to hold: others are treated as absent
            (not cached, not reported; a cached object that stops being
            kept is reported deleted). The Ingress source keeps only the
            Secrets its Ingresses reference; after widening the predicate,
            :meth:`fetch` brings in objects listed earlier.
        :param backoff: seconds to wait before retry number ``n`` (1, 2,
            ...); a jittered exponential policy by default.
        :param random_source: the randomness of the default backoff's jitter
            and of the watch timeouts (inject for determinism).
        :param watch_timeout: the range the server-side ``timeoutSeconds``
            of each watch is drawn from: spreading reconnections avoids a
            thundering herd of watches after an API server restart.
        """
        self.client = client
        self.kind = kind
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self._reactor = reactor
        self._on_upsert = on_upsert
        self._on_delete = on_delete
        self._on_synced = on_synced
        self._keep = keep
        self._on_failure = on_failure
        self._random = random_source
        self._backoff = backoff or backoffPolicy(
            initialDelay=0.5, maxDelay=30.0, factor=2.0, jitter=lambda: self._random() * 0.5
        )
        self._page_size = page_size
        self._watch_timeout = watch_timeout
        self.cache: dict[ObjectKey, JSON] = {}
        self.resource_version: str | None = None
        self.synced = False
        self._synced: OneShot[None] = OneShot()
        self._running = False
        self._current: Deferred[Any] | None = None
        self._loop: Deferred[None] | None = None
        #: Counters for observability and tests.
        self.lists = 0
        self.watches = 0
        self.failures = 0

    def __repr__(self) -> str:
        where = self.namespace if self.namespace is not None else "*"
        return f"<Informer {self.kind} in {where}>"

    # -- lifecycle -------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self.start()

    def stopService(self) -> Deferred[None]:  # type: ignore[override]
        super().stopService()
        return self.stop()

    def start(self) -> None:
        """Begin listing and watching (in the background)."""
        if self._running:
            return
        self._running = True
        self._loop = ensureDeferred(self._run())
        self._loop.addErrback(
            lambda f: self._log.failure(
                "Informer {informer} stopped unexpectedly", f, informer=repr(self)
            )
        )

    def stop(self) -> Deferred[None]:
        """Stop: the open watch is closed, no retry is scheduled; the cache is kept."""
        self._running = False
        current, self._current = self._current, None
        if current is not None and not current.called:
            current.cancel()
        loop, self._loop = self._loop, None
        if loop is None:
            return succeed(None)
        return loop

    def when_synced(self) -> Deferred[None]:
        """
        A new Deferred that fires once the first complete list has been
        delivered (at once if it has), for readiness.
        """
        return self._synced.when()

    def get(self, namespace: str | None, name: str) -> JSON | None:
        """A cached object, or ``None``."""
        return self.cache.get((namespace or "", name))

    def forget(self, key: ObjectKey) -> None:
        """
        Drop one object from the cache without reporting it (its holder no
        longer wants it: the ``keep`` predicate changed).
        """
        self.cache.pop(key, None)

    def fetch(self, namespace: str | None, name: str) -> Deferred[None]:
        """
        GET one object that the ``keep`` predicate now accepts and add it
        (reported as an upsert) unless a watch event brought it in first,
        which is at least as new. A missing object is simply absent; other
        errors are logged (the next relist or watch event repairs it).
        """
        key = (namespace or "", name)

        def got(obj: JSON) -> None:
            if not self._running or key in self.cache or not self._kept(obj):
                return
            self.cache[key] = obj
            self._call(self._on_upsert, obj)

        def failed(failure: Any) -> None:
            if failure.check(NotFound) or failure.check(CancelledError):
                return None
            self._log.warn(
                "Informer {informer}: could not fetch {namespace}/{name}: {error}",
                informer=repr(self),
                namespace=namespace,
                name=name,
                error=failure.getErrorMessage(),
            )
            return None

        return self.client.get(self.kind, namespace, name).addCallbacks(got, failed)

    def _kept(self, obj: JSON) -> bool:
        return self._keep is None or self._keep(obj)

    # -- the loop --------------------------------------------------------

    async def _wait(self, d: Deferred[Any]) -> Any:
        """
        Await ``d`` so that :meth:`stop` can cancel it. Handlers and
        ``when_synced`` waiters run synchronously inside the loop and may
        call :meth:`stop` while nothing is awaited; work started after that
        is cancelled at once.
        """
        if not self._running:
            d.cancel()
        self._current = d
        try:
            return await d
        finally:
            if self._current is d:
                self._current = None

    async def _run(self) -> None:
        attempt = 0
        need_list = True
        while self._running:
            try:
                if need_list:
                    await self._relist()
                    need_list = False
                    attempt = 0
                    if not self._running:
                        break
                received = await self._watch_once()
                if received:
                    attempt = 0
                else:
                    # A stream that ended cleanly without a single event or
                    # bookmark: a server (or proxy) closing watches at once
                    # must not turn this into a busy loop.
                    attempt += 1
                    await self._sleep(attempt, "watch ended without any event")
            except Gone as e:
                if not self._running:
                    break
                # Never retry the stale version: list again. A first 410 is
                # answered at once; repeated ones back off like failures.
                self._log.info(
                    "Informer {informer}: resource version {version} expired ({detail}); listing "
                    "again",
                    informer=repr(self),
                    version=self.resource_version,
                    detail=e.message,
                )
                self.resource_version = None
                need_list = True
                if attempt:
                    await self._sleep(attempt, "relist after 410")
                attempt += 1
            except CancelledError as e:
                if not self._running:
                    break
                self.failures += 1
                attempt += 1
                self._call(self._on_failure, e)
                await self._sleep(attempt, "request cancelled (timeout)")
            except Exception as e:
                if not self._running:
                    break
                self.failures += 1
                attempt += 1
                self._call(self._on_failure, e)
                await self._sleep(attempt, f"{type(e).__name__}: {e}")

    async def _sleep(self, attempt: int, why: str) -> None:
        if not self._running:
            return
        delay = self._backoff(attempt)
        self._log.warn(
            "Informer {informer}: {why}; retrying in {delay:.2f} s (attempt {attempt})",
            informer=repr(self),
            why=why,
            delay=delay,
            attempt=attempt,
        )
        try:
            await self._wait(deferLater(self._reactor, delay, lambda: None))
        except CancelledError:
            pass

    async def _relist(self) -> None:
        self.lists += 1
        listing = await self._wait(
            self.client.list_all(
                self.kind,
                self.namespace,
                label_selector=self.label_selector,
                field_selector=self.field_selector,
                page_size=self._page_size,
            )
        )
        if not self._running:
            return
        fresh = {object_key(obj): obj for obj in listing.items if self._kept(obj)}
        old, self.cache = self.cache, fresh
        self.resource_version = listing.resource_version
        deleted = [obj for key, obj in sorted(old.items()) if key not in fresh]
        changed = [
            obj for key, obj in sorted(fresh.items()) if key not in old or _rv(old[key]) != _rv(obj)
        ]
        for obj in deleted:
            self._call(self._on_delete, obj)
        for obj in changed:
            self._call(self._on_upsert, obj)
        self._log.info(
            "Informer {informer}: listed {count} objects at version {version} "
            "({changed} new or changed, {deleted} deleted)",
            informer=repr(self),
            count=len(fresh),
            version=self.resource_version,
            changed=len(changed),
            deleted=len(deleted),
        )
        if not self.synced:
            self.synced = True
            self._call(self._on_synced)
            self._synced.fire(None)

    async def _watch_once(self) -> bool:
        """One watch from the current version; whether anything arrived."""
        self.watches += 1
        received = [False]

        def on_event(event: WatchEvent) -> None:
            received[0] = True
            self._apply(event)

        low, high = self._watch_timeout
        timeout = low + int(self._random() * max(0, high - low))
        await self._wait(
            self.client.watch(
                self.kind,
                self.namespace,
                on_event=on_event,
                resource_version=self.resource_version,
                label_selector=self.label_selector,
                field_selector=self.field_selector,
                allow_bookmarks=True,
                timeout_seconds=timeout,
            )
        )
        return received[0]

    def _apply(self, event: WatchEvent) -> None:
        if not self._running:
            return
        version = event.resource_version
        if event.type == "BOOKMARK":
            if version:
                self.resource_version = version
            return
        obj = event.object
        key = object_key(obj)
        if event.type in ("ADDED", "MODIFIED"):
            if version:
                self.resource_version = version
            if not self._kept(obj):
                if self.cache.pop(key, None) is not None:
                    self._call(self._on_delete, obj)
                return
            old = self.cache.get(key)
            self.cache[key] = obj
            if old is None or _rv(old) != _rv(obj):
                self._call(self._on_upsert, obj)
        elif event.type == "DELETED":
            if version:
                self.resource_version = version
            if self.cache.pop(key, None) is not None:
                self._call(self._on_delete, obj)
        else:
            self._log.warn(
                "Informer {informer}: ignoring a watch event of type {type}",
                informer=repr(self),
                type=event.type,
            )

    def _call(self, handler: Callable[..., None], *args: Any) -> None:
        try:
            handler(*args)
        except Exception:
            self._log.failure("Informer {informer}: a handler raised", informer=repr(self))
