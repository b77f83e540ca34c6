"""
``twistd apimgw``: command-line options and the service tree.

This is the only module that touches the global reactor. The services are
composed in dependency order (sources, reconciler, admin listener, traffic
listeners), so at shutdown they stop in reverse: the traffic listeners
drain first, while the admin port still answers ``/readyz`` with 503.
"""

from __future__ import annotations

import gc
import itertools
import os
import signal
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks, maybeDeferred
from twisted.logger import (
    FileLogObserver,
    Logger,
    eventAsText,
    formatEventAsClassicLogText,
    globalLogBeginner,
)
from twisted.python import usage
from twisted.web import http

from gateway.counters import (
    Counters,
    CountersService,
    FallbackCounters,
    LocalCounters,
    RedisCounters,
)
from gateway.dispatch import streamline
from gateway.echo import EchoBackend
from gateway.jwt import OpenIdKeys, OpenIdKeysService, TokenValidator, http_fetch
from gateway.model import Store
from gateway.observability import (
    AdminListener,
    AdminResource,
    GatewayMetrics,
    Health,
    RequestObserver,
    build_access_log,
    twistd_logs_to_stdout,
)
from gateway.proxy import H1Limits, ProxyResource, TrafficListener, listener_factory
from gateway.reconcile import Reconciler
from gateway.routing import Generation
from gateway.settings import (
    SETTINGS,
    CloudSettings,
    GatewayApiSourceSettings,
    GatewaySettings,
    IngressSourceSettings,
    ProxySettings,
    RateLimitSettings,
    SettingError,
    read_environment,
)
from gateway.sources.cloud import CloudSource, TokenError
from gateway.sources.file import DefaultConfigSource, FileSource, SignalReload
from gateway.sources.gatewayapi import GatewayApiSource
from gateway.sources.ingress import IngressSettings, IngressSource
from gateway.status import GatewayApiStatusWriter, IngressStatusWriter, StatusStage, StatusWriter
from gateway.tls import (
    ALPN_PROTOCOLS,
    SNIConnectionCreator,
    SNIMapBuilder,
    TLSServerFactory,
    TLSSettings,
    generate_default_certificate,
)
from gateway.translate import GatewayConfig
from gateway.upstream import BackendPool, PoolService
from gateway.workers import (
    CHANNEL_FD,
    AdoptedTrafficListener,
    ChannelFactory,
    MergedMetricsResource,
    UnsupportedListener,
    WorkerLink,
    WorkerPool,
    WorkerStart,
    available_cpus,
    bind_group,
    parse_listen,
    read_message,
)

_log = Logger(namespace="apimgw")


def _option_help(setting: Any) -> str:
    default = setting.default if setting.default else "(empty)"
    return f"{setting.help} [env {setting.name} / {setting.shell_name}; default {default}]"


class Options(usage.Options):
    """
    Options of ``twistd apimgw``. Every option can also be set through the
    environment (dotted name or shell-safe form); an option given on the
    command line wins.
    """

    synopsis = "[options]"
    longdesc = (
        "apimgw: an open, self-hosted API gateway. With no configuration it serves the "
        "built-in Echo API at /echo/ on the HTTP port (try "
        "curl 'http://127.0.0.1:8080/echo/resource?param1=sample'). Listen strings are "
        "strports descriptions, e.g. tcp:8080:interface=127.0.0.1. "
        "Environment settings without an option: "
        + "; ".join(f"{s.name} ({s.shell_name})" for s in SETTINGS if s.option is None)
        + "."
    )
    optParameters = [
        [setting.option, None, None, _option_help(setting)]
        for setting in SETTINGS
        if setting.option is not None
    ]

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        super().__init__()
        self._environ = os.environ if environ is None else environ
        self.unknown_settings: list[str] = []
        self.environment: dict[str, str] = {}

    def postOptions(self) -> None:
        self.environment, self.unknown_settings = read_environment(self._environ)
        values = dict(self.environment)
        for setting in SETTINGS:
            if setting.option is None:
                continue
            if self[setting.option] is None:
                self[setting.option] = self.environment.get(setting.name, setting.default)
            values[setting.name] = self[setting.option]
        try:
            #: Every setting, typed and validated: what build_gateway reads.
            self.settings = GatewaySettings.parse(values)
        except SettingError as e:
            raise usage.UsageError(str(e)) from None
        # The typed values under the option names as well, for callers that
        # read the options mapping.
        proxy, file = self.settings.proxy, self.settings.file
        self["grace"], self["drain-delay"] = proxy.grace, proxy.drain_delay
        self["connect-timeout"], self["backend-timeout"] = proxy.connect_timeout, proxy.backend_timeout
        self["max-idle"], self["max-body"] = proxy.max_idle, proxy.max_body
        self["poll-interval"] = file.poll_interval
        self["https"] = self.settings.listen.https
        if self["config"] and not os.path.exists(self["config"]):
            # Not fatal: the file source keeps polling for it, but say so now.
            _log.warn("Configuration file {path} does not exist (yet)", path=self["config"])


class Gateway(MultiService):
    """
    The service tree of one gateway, with handles on its parts for tests
    and embedding: ``store``, ``reconciler``, ``metrics``, ``health`` and
    ``listeners`` (by name: ``http``, ``https``, ``admin``).
    """

    store: Store
    reconciler: Reconciler
    metrics: GatewayMetrics
    health: Health
    listeners: dict[str, Any]
    pool: BackendPool
    #: The rate-limit and quota counters (local, or Redis with fallback).
    counters: Any
    #: The ``validate-jwt`` key cache of ``openid-config`` URLs.
    openid_keys: OpenIdKeys
    #: The cloud source, when ``config.service.endpoint`` is set.
    cloud: CloudSource | None = None
    #: The Kubernetes Ingress source, when ``k8s.ingress.enabled`` is true.
    ingress: IngressSource | None = None
    #: The Kubernetes Gateway API source, when ``k8s.gateway.enabled`` is true.
    gateway_api: GatewayApiSource | None = None
    #: The worker processes, with ``--workers`` above 1 (this process is
    #: then their supervisor and serves no traffic itself).
    workers: WorkerPool | None = None

    def startService(self) -> None:
        super().startService()
        # The objects alive after start-up (modules, Twisted, the first
        # configuration) live as long as the process: move them out of the
        # cyclic collector's view, so its full collections scan only what
        # requests allocate. Measured with bench/: fewer long pauses (p99).
        gc.collect()
        gc.freeze()

    @inlineCallbacks
    def stopService(self) -> Any:
        """
        Stop the traffic listeners together (each drains within the one
        grace period: one after the other, a shutdown could take a grace
        per listener, and the tunnels of the last would outlive a worker's
        kill deadline), then the other children one after the other, in
        reverse order, each waiting for the previous: :class:`MultiService`
        would stop them all at once, closing the admin port and the sources
        while the traffic listeners are still draining.
        """
        Service.stopService(self)
        children = list(reversed(list(self)))
        traffic = [child for child in children if isinstance(child, TrafficListener)]
        yield DeferredList(
            [maybeDeferred(child.stopService) for child in traffic], consumeErrors=True
        ).addCallback(self._log_stop_failures, traffic)
        for child in children:
            if child in traffic:
                continue
            try:
                yield maybeDeferred(child.stopService)
            except Exception:
                _log.failure("Stopping {service} failed", service=repr(child))

    @staticmethod
    def _log_stop_failures(results: list[tuple[bool, Any]], services: list[Any]) -> None:
        for (ok, result), service in zip(results, services, strict=True):
            if not ok:
                _log.failure("Stopping {service} failed", result, service=repr(service))


def build_gateway(
    options: Options,
    reactor: Any,
    *,
    store: Store | None = None,
    extra_sources: Sequence[Any] = (),
    cpus: Callable[[], int] | None = None,
) -> Gateway:
    """
    Compose the gateway's services from parsed options (testable without
    twistd). ``extra_sources`` are services writing to ``store`` that offer
    ``when_synced()`` (tests use an in-memory source this way).

    ``cpus`` counts the CPUs that ``gateway.workers`` ``auto`` (the
    default) stands for. twistd's :func:`makeService` passes
    :func:`~gateway.workers.available_cpus`; without it (the tests,
    benches and embedders composing a gateway in their own process)
    ``auto`` is one CPU: one process, never forked workers unless the
    options say ``--workers N``.

    The order is the data flow, and services stop in reverse: sources,
    reconciler (and the status stage fed by its swaps), admin listener,
    backend pool, traffic listeners.
    """
    for key in options.unknown_settings:
        _log.warn("Unknown setting {key} in the environment: ignored", key=key)
    settings = options.settings
    workers = worker_count(settings.workers, cpus or (lambda: 1))
    if settings.workers is None and cpus is not None:
        # What auto became, for the operator who set nothing (the
        # supervisor's own line follows when there are workers).
        _log.info(
            "gateway.workers auto: {cpus} CPU(s) available (cgroup CPU limit, scheduler "
            "affinity): {mode}",
            cpus=workers,
            mode="one process" if workers <= 1 else f"{workers} worker processes",
        )
    if workers > 1:
        return _build_supervisor(
            options, reactor, workers, store=store, extra_sources=extra_sources
        )
    top = Gateway()
    top.store = Store() if store is None else store
    top.metrics = GatewayMetrics(clock=reactor.seconds)
    top.health = Health()
    top.listeners = {}
    synced = _add_sources(top, settings, reactor, extra_sources, environ=options._environ)
    sni = _sni_builder(settings.proxy, reactor) if settings.listen.https else None
    _add_reconciler(top, reactor, synced, sni)
    _add_openid_keys(top, reactor)
    admin = AdminResource(
        top.metrics,
        top.health,
        top.reconciler,
        token=settings.admin.token,
        sections={"openidKeys": top.openid_keys.describe},
    )
    top.listeners["admin"] = AdminListener(reactor, settings.admin.listen, admin)
    top.listeners["admin"].setServiceParent(top)
    _add_traffic(top, settings, reactor, sni, getattr(options, "parent", None))
    return top


def _reload_failed(metrics: GatewayMetrics, source: str) -> Callable[[Exception], None]:
    """Counts a configuration that could not be loaded (``source``: file, rebuild)."""

    def failed(error: Exception) -> None:
        metrics.reload_failures.labels(source).inc()

    return failed


def _add_sources(
    top: Gateway,
    settings: GatewaySettings,
    reactor: Any,
    extra_sources: Sequence[Any],
    *,
    environ: Mapping[str, str],
) -> list[Deferred[Any]]:
    """
    Add the configured sources to ``top``; each one that has loaded once
    releases the reconciler (the returned ``when_synced`` Deferreds).
    Nothing configured: the built-in Echo API.
    """
    store, metrics = top.store, top.metrics
    synced: list[Deferred[Any]] = []

    def add(source: Any) -> Any:
        source.setServiceParent(top)
        synced.append(source.when_synced())
        return source

    # Which sources there are decides who waits for whom ("alone" below).
    present = {
        "file": bool(settings.file.path),
        "cloud": settings.cloud is not None,
        "ingress": settings.ingress is not None,
        "gatewayapi": settings.gateway_api is not None,
        "extra": bool(extra_sources),
    }

    def alone(name: str) -> bool:
        return not any(here for other, here in present.items() if other != name)

    if settings.file.path:
        file_source = add(
            FileSource(
                store,
                settings.file.path,
                reactor=reactor,
                poll_interval=settings.file.poll_interval,
                on_reload_failed=_reload_failed(metrics, "file"),
            )
        )
        SignalReload(reactor, file_source).setServiceParent(top)
    elif settings.cloud is None and settings.ingress is None and settings.gateway_api is None:
        echo = EchoBackend(reactor)
        echo.setServiceParent(top)
        add(DefaultConfigSource(store, echo.when_listening))
    if settings.cloud is not None:
        top.cloud = add(_cloud_source(settings.cloud, reactor, store, alone=alone("cloud")))
        metrics.cloud.attach(top.cloud)
    if settings.ingress is not None:
        top.ingress = add(
            _ingress_source(
                settings.ingress, reactor, store, top.health, alone=alone("ingress"), environ=environ
            )
        )
        metrics.ingress.attach(top.ingress)
    if settings.gateway_api is not None:
        top.gateway_api = add(
            _gateway_api_source(
                settings.gateway_api,
                reactor,
                store,
                top.health,
                alone=alone("gatewayapi"),
                environ=environ,
            )
        )
    for extra in extra_sources:
        add(extra)
    return synced


def _add_reconciler(
    top: Gateway, reactor: Any, synced: list[Deferred[Any]], sni: SNIMapBuilder | None
) -> None:
    """
    The reconciler (with HTTPS on, building each generation's SNI map too)
    and what its swaps feed: health, metrics and, with Ingress on, the
    status stage.
    """
    health, metrics = top.health, top.metrics

    def swapped(generation: Generation) -> None:
        health.generation = generation.number
        metrics.generation.set(generation.number)
        metrics.generation_routes.set(len(generation.config.routes))
        metrics.config_problems.set(len(generation.config.problems))
        metrics.shadowed_routes.set(len(generation.config.shadowed))
        metrics.certificates.update(generation.sni.served if generation.sni is not None else ())

    top.reconciler = Reconciler(
        top.store,
        reactor,
        synced=synced,
        on_swap=[swapped],
        on_failure=_reload_failed(metrics, "rebuild"),
        sni=sni,
    )
    top.reconciler.setServiceParent(top)
    writers: list[StatusWriter] = []
    if top.ingress is not None:
        writer = IngressStatusWriter(top.ingress, reactor=reactor)
        metrics.ingress.attach_status(writer)
        writers.append(writer)
    if top.gateway_api is not None:
        writers.append(GatewayApiStatusWriter(top.gateway_api, reactor=reactor))
    if writers:
        status = StatusStage(writers)
        status.setServiceParent(top)
        top.reconciler.add_swap_listener(status.generation_swapped)


def _add_openid_keys(top: Gateway, reactor: Any) -> None:
    """
    validate-jwt's key cache: the keys of the ``openid-config`` URLs a
    generation names are fetched in the background at its swap, never on a
    request.
    """
    openid_keys = OpenIdKeys(reactor, http_fetch(reactor))
    OpenIdKeysService(openid_keys).setServiceParent(top)
    top.reconciler.add_swap_listener(lambda generation: openid_keys.watch(generation.config))
    top.openid_keys = openid_keys


def _counters(top: Gateway, settings: RateLimitSettings, reactor: Any) -> Counters:
    """
    The rate-limit and quota counters: local to this replica, or a Redis
    shared by every replica with the local ones as fallback.
    """
    local = LocalCounters(reactor)
    if not settings.redis_url:
        CountersService(local).setServiceParent(top)
        top.counters = local
        return local
    redis = RedisCounters(
        reactor,
        settings.redis_url,
        password=settings.password or None,
        namespace=settings.namespace,
        command_timeout=settings.timeout,
        ca_file=settings.ca or None,
    )
    counters = FallbackCounters(redis, local, on_fallback=top.metrics.ratelimit_fallback.inc)
    CountersService(counters).setServiceParent(top)
    top.counters = counters
    return counters


def _add_traffic(
    top: Gateway,
    settings: GatewaySettings,
    reactor: Any,
    sni: SNIMapBuilder | None,
    twistd_options: Any = None,
    *,
    adopt: Mapping[str, int] | None = None,
) -> None:
    """
    The backend pool and the HTTP (and HTTPS) listeners.

    :param adopt: in a worker, listener name → the fd of the listening
        socket inherited from the supervisor (listened on once the first
        generation is live), instead of the listen descriptions.
    """
    proxy = settings.proxy
    pool = BackendPool(
        reactor,
        max_idle_per_backend=proxy.max_idle,
        connect_timeout=proxy.connect_timeout,
        response_timeout=proxy.backend_timeout,
    )
    # Added before the listeners, so it stops after they drained.
    PoolService(pool).setServiceParent(top)
    top.pool = pool
    access_log = build_access_log(
        top,
        reactor,
        proxy.access_log,
        proxy.redact_query,
        twistd_options=twistd_options,
        on_drop=top.metrics.access_log_dropped.inc,
        buffer=proxy.access_log_buffer,
    )
    observer = RequestObserver(top.metrics, access_log)

    def key_names_redacted(generation: Generation) -> None:
        access_log.also_redact(
            {e.access.key_names.query for e in generation.config.routes if e.access is not None}
        )

    top.reconciler.add_swap_listener(key_names_redacted)
    jwt = TokenValidator(top.openid_keys, reactor)
    counters = _counters(top, settings.rate_limit, reactor)
    listeners = [("http", b"http", settings.listen.http)]
    if settings.listen.https:
        listeners.append(("https", b"https", settings.listen.https))
    https_port = _https_port(settings.listen.https_redirect_port, top.listeners)
    for name, scheme, description in listeners:
        resource = ProxyResource(
            top.reconciler,
            pool,
            reactor,
            observer,
            top.health,
            scheme=scheme,
            error_mode=proxy.error_mode,
            https_port=https_port,
            redact=lambda target: access_log.redact(target),
            jwt=jwt,
            counters=counters,
        )
        top.metrics.tunnel_bytes.watch(resource.tunnels)
        site: Any = listener_factory(
            resource,
            reactor,
            strict=proxy.http1_server == "strict",
            tls=name == "https",
            limits=H1Limits(
                max_body=proxy.max_body,
                header_timeout=proxy.header_timeout,
                body_timeout=proxy.body_timeout,
                send_timeout=proxy.send_timeout,
                keepalive_timeout=proxy.keepalive_timeout,
                max_target=proxy.max_target,
                max_header_bytes=proxy.max_header_bytes,
                upgrade_idle_timeout=proxy.upgrade_idle_timeout,
                body_buffer=proxy.body_buffer,
                body_replay=proxy.body_replay,
            ),
            on_refused=observer.request_refused,
            h2c=proxy.h2c,
        )
        factory: Any = site
        if name == "https" and sni is not None:
            fallback, _ = sni.build(GatewayConfig())
            creator = SNIConnectionCreator(top.reconciler, fallback)
            factory = TLSServerFactory(
                creator, site, on_handshake=top.metrics.handshake, clock=reactor
            )
        drain = {
            "name": name,
            "grace": proxy.grace,
            "drain_delay": proxy.drain_delay,
            "factory": factory,
        }
        if adopt is not None:
            top.listeners[name] = AdoptedTrafficListener(
                reactor,
                adopt[name],
                site,
                resource,
                top.health,
                ready=top.reconciler.when_live,
                **drain,
            )
        else:
            top.listeners[name] = TrafficListener(
                reactor, description, site, resource, top.health, **drain
            )
        top.listeners[name].setServiceParent(top)


def _cloud_source(
    settings: CloudSettings, reactor: Any, store: Store, *, alone: bool
) -> CloudSource:
    """
    The configuration service source.

    ``alone``: the cloud is the gateway's only source, so readiness waits
    for its configuration (from the service or the backup): a gateway with
    nothing to serve stays not-ready instead of answering 404 to
    everything. Beside other sources, an unreachable service with no
    backup does not hold them back: the cloud counts as synced after its
    first failed attempt and its APIs join when the service answers.
    """
    try:
        source = CloudSource(
            store,
            settings.endpoint,
            settings.auth,
            reactor=reactor,
            backup_path=settings.backup_path or None,
            backup_interval=settings.backup_interval,
            backup_key=settings.backup_key,
            heartbeat_interval=settings.heartbeat_interval,
            ca=settings.ca,
            require_configuration=alone,
        )
    except TokenError as e:
        raise usage.UsageError(f"config.service.auth: {e}") from None
    except ValueError as e:
        raise usage.UsageError(str(e)) from None
    _log.info(
        "Cloud source: configuration service {endpoint}, backup in {path}",
        endpoint=settings.endpoint,
        path=settings.backup_path or "(none)",
    )
    return source


def _ingress_source(
    settings: IngressSourceSettings,
    reactor: Any,
    store: Store,
    health: Health,
    *,
    alone: bool,
    environ: Mapping[str, str],
) -> IngressSource:
    """
    The Kubernetes Ingress source (``k8s.ingress.*``).

    ``alone``: it is the gateway's only source, so nothing is served before
    the Ingresses are; beside other sources, those are served while the API
    server cannot be reached, and readiness waits for the Ingresses.
    """
    decoding = IngressSettings(
        ingress_class=settings.ingress_class,
        dns_suffix=settings.dns_suffix,
        backend_mode=settings.backend_mode,
    )
    _log.info(
        "Kubernetes Ingress source: class {cls}, namespace {namespace}, backends via {mode}",
        cls=settings.ingress_class,
        namespace=settings.namespace or "(all)",
        mode=settings.backend_mode,
    )
    return IngressSource(
        store,
        reactor=reactor,
        settings=decoding,
        namespace=settings.namespace,
        config_path=settings.config_path,
        health=health,
        require_configuration=alone,
        publish_service=settings.publish_service,
        publish_addresses=settings.publish_addresses,
        election_id=settings.election_id,
        environ=environ,
    )


def _gateway_api_source(
    settings: GatewayApiSourceSettings,
    reactor: Any,
    store: Store,
    health: Health,
    *,
    alone: bool,
    environ: Mapping[str, str],
) -> GatewayApiSource:
    """
    The Kubernetes Gateway API source (``k8s.gateway.*``); ``alone`` as
    for the Ingress source: the only source waits for its objects, beside
    others it does not hold them back while the API server is unreachable.
    """
    _log.info(
        "Gateway API source: controller {controller}, namespace {namespace}",
        controller=settings.controller,
        namespace=settings.namespace or "(all)",
    )
    return GatewayApiSource(
        store,
        reactor=reactor,
        controller_name=settings.controller,
        namespace=settings.namespace,
        dns_suffix=settings.dns_suffix,
        config_path=settings.config_path,
        health=health,
        require_configuration=alone,
        election_id=settings.election_id,
        environ=environ,
        allow_external_name=settings.allow_external_name,
        http_port=settings.http_port,
        https_port=settings.https_port,
    )


def _sni_builder(proxy: ProxySettings, reactor: Any, fallback: Any = None) -> SNIMapBuilder:
    """
    The TLS settings of the HTTPS listener and its generated default
    certificate (made once per process, or given: a worker serves its
    supervisor's; served while the configuration names no
    ``defaultCertificate``).
    """
    alpn = ALPN_PROTOCOLS if http.H2_ENABLED else (b"http/1.1",)
    settings = TLSSettings(min_version=proxy.tls_min_version, alpn=alpn)
    if fallback is not None:
        return SNIMapBuilder(settings, fallback)
    fallback = generate_default_certificate(reactor.seconds())
    _log.info(
        "Generated a self-signed default certificate ({subject}, sha256 {fingerprint}); it is "
        "served for unknown server names while the configuration names no defaultCertificate",
        subject=fallback.subject,
        fingerprint=fallback.fingerprint,
    )
    if not http.H2_ENABLED:
        _log.warn("HTTP/2 is not available (install twisted[http2]): HTTPS offers http/1.1 only")
    return SNIMapBuilder(settings, fallback)


def _https_port(port: int | None, listeners: dict[str, Any]) -> Callable[[], int]:
    """
    The port HTTP-to-HTTPS redirects point at: ``port``, or with ``None``
    (``--https-redirect-port listener``) the HTTPS listener's own port,
    asked per redirect because a listener on port 0 knows it only once it
    listens.
    """
    if port is not None:
        return lambda: port

    def listening() -> int:
        listener = listeners.get("https")
        if listener is None or listener.port is None:
            return 443
        return int(listener.port.getHost().port)

    return listening


def worker_count(setting: int | None, cpus: Callable[[], int] = available_cpus) -> int:
    """
    ``gateway.workers``: ``None`` (``auto``) is ``cpus()``, by default the
    CPUs the container may use. Below 2 the composition is one process
    (no supervisor): a container limited to 1 CPU runs as without workers.
    """
    return cpus() if setting is None else setting


def _build_supervisor(
    options: Options,
    reactor: Any,
    workers: int,
    *,
    store: Store | None,
    extra_sources: Sequence[Any],
) -> Gateway:
    """
    ``--workers N`` (N > 1): this process runs the sources, the reconciler
    (and the status stage), the admin port, and N worker processes that
    serve the traffic listeners (docs/workers.md). Each swap here sends
    the store's changed objects to the workers, one worker at a time;
    ``/metrics`` merges every process's metrics.
    """
    settings = options.settings
    top = Gateway()
    top.store = Store() if store is None else store
    top.metrics = GatewayMetrics(clock=reactor.seconds)
    top.health = Health()
    top.listeners = {}
    synced = _add_sources(top, settings, reactor, extra_sources, environ=options._environ)
    sni = _sni_builder(settings.proxy, reactor) if settings.listen.https else None
    _add_reconciler(top, reactor, synced, sni)
    listen = {"http": settings.listen.http}
    if settings.listen.https:
        listen["https"] = settings.listen.https
    try:
        sockets = {name: bind_group(parse_listen(d), workers) for name, d in listen.items()}
    except UnsupportedListener as e:
        raise usage.UsageError(str(e)) from None
    except OSError as e:
        raise usage.UsageError(f"cannot listen on {listen}: {e}") from None
    twistd_options = getattr(options, "parent", None)
    # twistd logging to stdout (the container): the workers write there
    # too, the access log through its buffered writer. Anything else (a
    # log file, syslog, tests): their lines come through the supervisor.
    to_stdout = twistd_options is None or twistd_logs_to_stdout(twistd_options)
    fallback = sni.fallback if sni is not None else None

    def start_message(index: int, fds: dict[str, int]) -> WorkerStart:
        return WorkerStart(
            index,
            settings,
            fds,
            log_to_supervisor=not to_stdout,
            access_log_stdout=twistd_options is not None and to_stdout,
            fallback_certificate=fallback,
        )

    proxy = settings.proxy
    pool = WorkerPool(
        reactor,
        workers,
        sockets,
        start_message,
        grace=proxy.grace + proxy.drain_delay,
        health=top.health,
        forward_logs=not to_stdout,
    )
    top.workers = pool
    versions = itertools.count(1)
    top.reconciler.add_swap_listener(lambda generation: pool.publish(top.store, next(versions)))
    top.metrics.registry.register(pool)
    admin = AdminResource(
        top.metrics,
        top.health,
        top.reconciler,
        token=settings.admin.token,
        sections={"workers": pool.status},
    )
    merged = MergedMetricsResource(admin, top.metrics.registry, pool.scrape)
    top.listeners["admin"] = AdminListener(reactor, settings.admin.listen, merged)  # type: ignore[arg-type]
    top.listeners["admin"].setServiceParent(top)
    # Last: stopped first, so the workers drain while the admin port answers.
    pool.setServiceParent(top)
    _log.info(
        "{workers} worker processes serve {listeners} (SO_REUSEPORT); this process runs the "
        "sources, the reconciler and the admin port",
        workers=workers,
        listeners=", ".join(f"{n} {d}" for n, d in listen.items()),
    )
    return top


def build_worker(start: WorkerStart, reactor: Any, on_lost: Callable[[], None]) -> tuple[Gateway, WorkerLink]:
    """
    One worker's services: a mirror store fed by the supervisor's
    snapshots, its own reconciler, the backend pool, the counters and the
    traffic listeners on the inherited sockets. No sources, no admin port.
    """
    from prometheus_client import generate_latest

    settings = start.settings
    top = Gateway()
    top.store = Store()
    top.metrics = GatewayMetrics(clock=reactor.seconds)
    top.health = Health()
    top.listeners = {}
    link = WorkerLink(top.store, lambda: generate_latest(top.metrics.registry), on_lost)
    sni = (
        _sni_builder(settings.proxy, reactor, start.fallback_certificate)
        if settings.listen.https
        else None
    )
    health = top.health

    def swapped(generation: Generation) -> None:
        # Generation gauges are the supervisor's: a worker's stay 0, so
        # the merged /metrics adds nothing to them.
        health.generation = generation.number

    top.reconciler = Reconciler(
        top.store,
        reactor,
        synced=[link.first_configuration],  # type: ignore[list-item]
        on_swap=[swapped, link.swapped],
        on_failure=link.failed,
        sni=sni,
    )
    top.reconciler.setServiceParent(top)
    _add_openid_keys(top, reactor)
    twistd_options = {"nodaemon": True} if start.access_log_stdout else None
    _add_traffic(top, settings, reactor, sni, twistd_options, adopt=start.listeners)
    return top, link


_RECONCILER_NAMESPACE = f"{Reconciler.__module__}.{Reconciler.__name__}"


def _worker_logging(start: WorkerStart) -> None:
    """
    A worker logs where its supervisor does, each line marked with the
    worker's number: on the shared stdout, or (``log_to_supervisor``)
    without timestamps into the pipe the supervisor logs from.
    """
    system = f"worker {start.index}"

    def formatted(event: dict[str, Any]) -> str | None:
        return formatEventAsClassicLogText(dict(event, log_system=system))

    def forwarded(event: dict[str, Any]) -> str | None:
        text = eventAsText(event, includeTimestamp=False, includeSystem=False)
        if not text:
            return None
        level = event.get("log_level")
        where = f"[{event.get('log_namespace', '-')}#{level.name if level else '-'}] "
        return "".join(where + line + "\n" for line in text.splitlines())

    observer: Any = FileLogObserver(sys.stdout, forwarded if start.log_to_supervisor else formatted)

    def without_duplicates(event: dict[str, Any]) -> None:
        # The supervisor's reconciler reports the same problems, shadowed
        # routes and generations from the same objects: a worker's own
        # reconciler logs only its failures.
        if event.get("log_namespace") == _RECONCILER_NAMESPACE and "log_failure" not in event:
            return
        observer(event)

    observers: list[Any] = [without_duplicates]
    globalLogBeginner.beginLoggingTo(observers, redirectStandardIO=False)


def worker_main() -> None:
    """
    A worker process's entry point (started by the supervisor's
    :class:`~gateway.workers.WorkerPool`): read the start message from the
    channel, compose, serve until SIGTERM (drain) or until the supervisor
    is gone.
    """
    start = read_message(CHANNEL_FD)
    # A SIGHUP is the supervisor's (reload the file source), never a reason to die.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    _worker_logging(start)
    from twisted.internet import reactor as global_reactor
    from twisted.internet.error import ReactorNotRunning

    reactor: Any = global_reactor
    streamline(reactor)

    def lost() -> None:
        try:
            reactor.stop()
        except ReactorNotRunning:
            pass

    top, link = build_worker(start, reactor, lost)
    os.set_blocking(CHANNEL_FD, False)
    reactor.adoptStreamConnection(CHANNEL_FD, socket.AF_UNIX, ChannelFactory(link.channel))
    os.close(CHANNEL_FD)
    top.startService()

    def closing() -> None:
        link.closing = True

    reactor.addSystemEventTrigger("before", "shutdown", closing)
    reactor.addSystemEventTrigger("before", "shutdown", top.stopService)
    reactor.run()


def makeService(options: Options) -> IService:
    """twistd entry point."""
    from twisted.internet import reactor

    if streamline(reactor):
        _log.debug("Lean epoll dispatch installed (gateway.dispatch)")
    # Only here does ``auto`` (the default) count the container's CPUs.
    return build_gateway(options, reactor, cpus=available_cpus)
