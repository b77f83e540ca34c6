"""
Coalesce store changes → translate → build → swap one reference.

The proxy reads :attr:`Reconciler.current` once per request; a rebuild
replaces that reference in one assignment, so a request sees either the old
generation or the new one, never a mixture, and requests in progress keep
the generation they started with.
"""

from __future__ import annotations

import gc
from dataclasses import replace
from datetime import datetime, timezone
from typing import Callable, Iterable

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from gateway.memo import BuildMemo
from gateway.model import Store
from gateway.ready import OneShot
from gateway.routing import Generation, RouteTable
from gateway.tls import SNIMap, SNIMapBuilder
from gateway.translate import GatewayConfig, Problem, translate


class Reconciler(Service):
    """
    Rebuilds the live :class:`Generation` whenever the store changes.

    Bursts of changes within ``delay`` seconds cause one rebuild. No
    generation is built before every source in ``synced`` has loaded once
    (so readiness never turns green on a half-loaded configuration); after
    that, every change is applied. A failed build keeps the last good
    generation, logs why and counts it.

    With ``sni`` (an :class:`SNIMapBuilder`), each generation also carries
    the SNI map built from its certificates, so a certificate rotation is
    one swap with the route table. Certificates are checked for expiry
    against the clock, and a certificate whose new version is invalid keeps
    its last valid version from the previous generation.
    """

    _log = Logger()

    def __init__(
        self,
        store: Store,
        clock: IReactorTime,
        *,
        synced: Iterable[Deferred[object]] = (),
        delay: float = 0.02,
        on_swap: Iterable[Callable[[Generation], None]] = (),
        on_failure: Callable[[Exception], None] | None = None,
        sni: SNIMapBuilder | None = None,
    ) -> None:
        self.store = store
        self.sni = sni
        self.clock = clock
        self.delay = delay
        self.current: Generation | None = None
        self._on_swap = list(on_swap)
        self._on_failure = on_failure
        self._synced_sources = list(synced)
        self._all_synced = False
        self._pending: IDelayedCall | None = None
        self._reported: frozenset[Problem] = frozenset()
        self._live: OneShot[Generation] = OneShot()
        #: Per-object translation and compiled operations of the last build.
        self._memo = BuildMemo()
        store.subscribe(self._changed)

    def startService(self) -> None:
        super().startService()
        d = DeferredList(self._synced_sources, fireOnOneErrback=False, consumeErrors=True)
        d.addCallback(self._sources_synced)

    def stopService(self) -> None:
        if self._pending is not None and self._pending.active():
            self._pending.cancel()
        self._pending = None
        return super().stopService()

    def add_swap_listener(self, listener: Callable[[Generation], None]) -> None:
        """Call ``listener(generation)`` after every swap."""
        self._on_swap.append(listener)

    def when_live(self) -> Deferred[Generation]:
        """Fires with the first generation (at once if one is live)."""
        return self._live.when()

    def _sources_synced(self, _: object) -> None:
        self._all_synced = True
        self.rebuild()

    def _changed(self) -> None:
        if not self._all_synced or not self.running:
            return
        if self._pending is None or not self._pending.active():
            self._pending = self.clock.callLater(self.delay, self.rebuild)

    def rebuild(self) -> Generation | None:
        """Translate and swap now; returns the new generation, or None on failure."""
        self._pending = None
        previous = self.current
        now = self.clock.seconds()
        memo = self._memo
        # A build allocates many long-lived objects at once: with the cyclic
        # collector on, each allocation burst triggers collections that
        # rescan the whole configuration (measured: half of a 2,000-API
        # rebuild). Paused for the build; the next collection runs later.
        collecting = gc.isenabled()
        gc.disable()
        try:
            config = translate(
                self.store.objects(),
                problems=self.store.problems(),
                now=now,
                previous=previous.config if previous is not None else None,
                memo=memo,
            )
            table = RouteTable.build(config.routes, memo, config.claims)
            sni = None
            if self.sni is not None:
                last_map = previous.sni if previous is not None else None
                sni, refused = self.sni.build(config, last_map)  # type: ignore[arg-type]
                if refused:
                    config = replace(config, problems=config.problems + refused)
        except Exception as e:
            memo.discard()
            self._log.failure("Configuration rebuild failed; the last good configuration keeps serving")
            if self._on_failure is not None:
                self._on_failure(e)
            return None
        finally:
            if collecting:
                gc.enable()
        memo.rotate()
        number = 1 if previous is None else previous.number + 1
        generation = Generation(number, config, table, now, sni)
        self.current = generation
        self._report(generation, previous)
        # A copy: a listener may add listeners (a test waiting for the next swap).
        for listener in list(self._on_swap):
            listener(generation)
        self._live.fire(generation)
        return generation

    def _report(self, generation: Generation, previous: Generation | None) -> None:
        config = generation.config
        problems = frozenset(config.problems)
        for problem in sorted(problems - self._reported, key=str):
            self._log.error(
                "Configuration problem in {object}: {problem} (left out; everything else is served)",
                object=str(problem.ref),
                problem=problem.message,
            )
        self._reported = problems
        self._log.info(
            "Configuration generation {number} live: {routes} routes, {certificates} "
            "certificates, {problems} problems, {shadowed} shadowed",
            number=generation.number,
            routes=len(config.routes),
            certificates=len(config.certificates),
            problems=len(config.problems),
            shadowed=len(config.shadowed),
        )
        self._report_certificates(generation, previous)
        for shadow in config.shadowed:
            self._log.warn(
                "Route {host}{path} ({match}) of {loser} is shadowed by newer {winner}",
                host=shadow.key[0] or "*",
                match=shadow.key[1],
                path=shadow.key[2],
                loser=str(shadow.loser),
                winner=str(shadow.winner),
            )

    def _report_certificates(self, generation: Generation, previous: Generation | None) -> None:
        """Log the default certificate when it changes, and hosts that lost a conflict."""
        sni = generation.sni
        if sni is not None:
            default = sni.default
            if previous is None or previous.sni is None or previous.sni.default != default:
                self._log.info(
                    "TLS default certificate: {object} ({subject}, sha256 {fingerprint}, "
                    "valid until {not_after})",
                    object=str(default.ref),
                    subject=default.subject,
                    fingerprint=default.fingerprint,
                    not_after=_utc(default.not_after),
                )
        for entry in generation.config.certificates:
            for host in entry.shadowed_hosts:
                self._log.warn(
                    "Certificate {loser} is not served for {host}: a newer certificate is",
                    loser=str(entry.ref),
                    host="the default role" if host == "*" else host,
                )


def _utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
