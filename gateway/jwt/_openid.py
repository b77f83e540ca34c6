"""
The background cache of the signing keys of ``openid-config`` URLs.

APIM reads each URL's discovery document, follows its ``jwks_uri`` and
keeps the keys, refreshing them hourly. Here the same happens on the
reactor, never on a request: :meth:`OpenIdKeys.watch` is given each new
configuration and starts fetching the URLs it uses (and forgets the ones
it no longer uses); each URL is refreshed every ``refresh_interval``
seconds; a failed fetch is retried with exponential backoff and the last
good keys stay in use (a malformed document counts as a failure). A token
signed with a ``kid`` the cache does not know asks for one early refresh
(:meth:`OpenIdKeys.unknown_kid`): coalesced with a fetch already running,
and at most once per ``unknown_kid_interval`` per URL (the first one
at any time), so a stream of
tokens with made-up ``kid`` values cannot turn into a stream of fetches.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, TimeoutError, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from gateway.translate import GatewayConfig
from gateway.translate.policy import is_loopback_url

from ._fetch import Fetch, FetchError
from ._keys import KeySet, MalformedDocument, jwks_keys
from ._walk import openid_urls

__all__ = ["OpenIdKeys"]


@dataclass(eq=False)
class _Source:
    """One URL's keys and the state of fetching them."""

    url: str
    keys: KeySet | None = None
    fetched_at: float | None = None
    last_error: str | None = None
    failed_at: float | None = None
    failures: int = 0
    fetches: int = 0
    started_at: float | None = None
    #: when a token with an unknown ``kid`` last started a refresh
    kid_refresh_at: float | None = None
    inflight: Deferred[KeySet] | None = None
    timer: IDelayedCall | None = field(default=None, repr=False)


def _json(body: bytes, what: str) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise MalformedDocument(f"the {what} is not JSON") from error


def _when(seconds: float | None) -> str | None:
    """Epoch seconds as RFC 3339 UTC text, as the rest of ``/config`` shows times."""
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _describe_failure(failure: Failure) -> str:
    """A short reason for a log line and :meth:`OpenIdKeys.describe`."""
    if failure.check(TimeoutError):
        return "timed out"
    if failure.check(MalformedDocument, FetchError):
        return str(failure.value)
    text = str(failure.value) or failure.type.__name__  # type: ignore[union-attr]
    text = " ".join(text.split())
    return text if len(text) <= 200 else text[:197] + "..."


class OpenIdKeys:
    """
    Keys of the ``openid-config`` URLs the live configuration uses.

    :param clock: schedules refreshes and retries, and gives the times
        :meth:`describe` shows.
    :param fetch: ``fetch(url)`` → a Deferred of the body
        (:func:`~gateway.jwt.http_fetch` in production).
    :param refresh_interval: seconds between refreshes of a URL whose last
        fetch succeeded (APIM: one hour).
    :param unknown_kid_interval: a token with an unknown ``kid`` starts a
        refresh only when no other unknown ``kid`` started one in these
        last seconds (counted from the last such refresh, not from the
        periodic ones, as Microsoft.IdentityModel's ``RequestRefresh``
        does: a key rotated just after a periodic fetch is still fetched at
        once).
    :param retry_initial: first wait after a failed fetch; it doubles
        with each further failure, up to ``retry_max`` (and never beyond
        ``refresh_interval``).
    :param jitter: a number in ``[0, 1)``; up to 10% is added to each
        retry wait so that gateways do not retry in step.
    """

    _log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        fetch: Fetch,
        *,
        refresh_interval: float = 3600.0,
        unknown_kid_interval: float = 300.0,
        retry_initial: float = 5.0,
        retry_max: float = 300.0,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._clock = clock
        self._fetch = fetch
        self.refresh_interval = refresh_interval
        self.unknown_kid_interval = unknown_kid_interval
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self._jitter = jitter
        self._sources: dict[str, _Source] = {}
        self._idle: list[Deferred[None]] = []

    # --- what the validator reads (request path: dict lookups only) -------

    def keys(self, url: str) -> KeySet | None:
        """The URL's last good keys; ``None`` when it is not watched or never fetched."""
        source = self._sources.get(url)
        return source.keys if source is not None else None

    def unknown_kid(self, url: str) -> None:
        """
        A token named a ``kid`` that none of the URL's keys has: start one
        background refresh, unless one is running or one started less than
        ``unknown_kid_interval`` seconds ago. Returns at once.
        """
        source = self._sources.get(url)
        if source is None or source.inflight is not None:
            return
        now = self._clock.seconds()
        if source.kid_refresh_at is not None and now - source.kid_refresh_at < self.unknown_kid_interval:
            return
        source.kid_refresh_at = now
        self._log.info("validate-jwt: a token names an unknown key id; refreshing the keys of {url}",
                       url=url)
        self._start(source)

    # --- configuration ----------------------------------------------------

    def watch(self, config: GatewayConfig) -> None:
        """Follow the ``openid-config`` URLs of a new configuration (call at every swap)."""
        self.watch_urls(openid_urls(config))

    def watch_urls(self, urls: Iterable[str]) -> None:
        """Fetch the URLs not watched yet; drop (and stop refreshing) those not listed."""
        wanted = set(urls)
        for url in [u for u in self._sources if u not in wanted]:
            self._drop(self._sources.pop(url))
        for url in sorted(wanted):
            if url not in self._sources:
                source = _Source(url)
                self._sources[url] = source
                self._start(source)

    def stop(self) -> None:
        """Stop every timer and fetch (the gateway is stopping)."""
        for source in list(self._sources.values()):
            self._drop(source)
        self._sources.clear()

    def _drop(self, source: _Source) -> None:
        if source.timer is not None and source.timer.active():
            source.timer.cancel()
        source.timer = None
        if source.inflight is not None:
            inflight, source.inflight = source.inflight, None
            inflight.cancel()
        self._check_idle()

    # --- fetching -----------------------------------------------------------

    def _current(self, source: _Source) -> bool:
        return self._sources.get(source.url) is source

    def _start(self, source: _Source) -> None:
        if source.timer is not None and source.timer.active():
            source.timer.cancel()
        source.timer = None
        source.started_at = self._clock.seconds()
        source.fetches += 1
        fetching = self._fetch_keys(source.url)
        source.inflight = fetching
        fetching.addCallbacks(self._fetched, self._failed, callbackArgs=(source,), errbackArgs=(source,))
        fetching.addBoth(self._finished, source, fetching)

    def _fetch_keys(self, url: str) -> Deferred[KeySet]:
        """Discovery document → ``jwks_uri`` → JWKS → keys."""
        def discovered(body: bytes) -> Deferred[bytes]:
            document = _json(body, "discovery document")
            if not isinstance(document, dict):
                raise MalformedDocument("the discovery document is not a JSON object")
            jwks_uri = document.get("jwks_uri")
            if not isinstance(jwks_uri, str) or not (
                jwks_uri.startswith("https://")
                or (jwks_uri.startswith("http://") and is_loopback_url(jwks_uri))
            ):
                raise MalformedDocument(
                    "the discovery document has no https jwks_uri (http only on a loopback host)"
                )
            return self._fetch(jwks_uri)

        # maybeDeferred: a fetch that raises at once fails this fetch only.
        started: Deferred[bytes] = maybeDeferred(self._fetch, url)
        return started.addCallback(discovered).addCallback(
            lambda body: jwks_keys(_json(body, "JWKS")))

    def _fetched(self, keys: KeySet, source: _Source) -> None:
        if not self._current(source):
            return
        source.keys = keys
        source.fetched_at = self._clock.seconds()
        source.failures = 0
        source.last_error = None
        self._log.info("validate-jwt: {count} signing key(s) from {url}",
                       count=len(keys.keys), url=source.url)
        self._schedule(source, self.refresh_interval)

    def _failed(self, failure: Failure, source: _Source) -> None:
        if not self._current(source) or failure.check(CancelledError) and source.inflight is None:
            return
        source.failures += 1
        source.failed_at = self._clock.seconds()
        source.last_error = _describe_failure(failure)
        delay = min(self.retry_max, self.refresh_interval,
                    self.retry_initial * 2 ** min(source.failures - 1, 32))
        delay += delay * 0.1 * self._jitter()
        kept = len(source.keys.keys) if source.keys is not None else 0
        self._log.warn(
            "validate-jwt: fetching the signing keys of {url} failed: {reason}; "
            "keeping the last good keys ({kept}); retry in {delay:.0f} s",
            url=source.url, reason=source.last_error, kept=kept, delay=delay,
        )
        self._schedule(source, delay)

    def _finished(self, result: object, source: _Source, fetching: Deferred[KeySet]) -> None:
        if source.inflight is fetching:
            source.inflight = None
        self._check_idle()

    def _schedule(self, source: _Source, delay: float) -> None:
        if source.timer is not None and source.timer.active():
            source.timer.cancel()
        source.timer = self._clock.callLater(delay, self._start, source)

    # --- observing ------------------------------------------------------------

    def idle(self) -> Deferred[None]:
        """Fires once no fetch is running (at once if none is): for tests and shutdown."""
        if not any(s.inflight is not None for s in self._sources.values()):
            return succeed(None)
        waiting: Deferred[None] = Deferred()
        self._idle.append(waiting)
        return waiting

    def _check_idle(self) -> None:
        if self._idle and not any(s.inflight is not None for s in self._sources.values()):
            waiting, self._idle = self._idle, []
            for d in waiting:
                d.callback(None)

    def describe(self) -> dict[str, dict[str, object]]:
        """
        Per watched URL: keys held, fetch counts, the times of the last good
        fetch and failure (RFC 3339, UTC), the last error (for ``/config``).
        """
        return {
            url: {
                "keys": len(s.keys.keys) if s.keys is not None else None,
                "kids": sorted(s.keys.by_kid) if s.keys is not None else [],
                "fetchedAt": _when(s.fetched_at),
                "fetches": s.fetches,
                "failures": s.failures,
                "lastError": s.last_error,
                "failedAt": _when(s.failed_at),
                "fetching": s.inflight is not None,
            }
            for url, s in sorted(self._sources.items())
        }
