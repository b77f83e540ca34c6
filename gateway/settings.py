"""
Settings from the environment, the way the container is configured.

The names are those of the Azure self-hosted gateway where one exists
(``k8s.ingress.enabled``, ``config.service.endpoint``,
``telemetry.logs.std``, ...), so its users' manifests carry over; our own
settings live under ``gateway.``. Each is accepted in its dotted form and in
its shell-safe form (upper case, ``.`` and ``-`` as ``_``:
``TELEMETRY_LOGS_STD``). twistd options override the environment; the
environment overrides the defaults. Unknown keys under our prefixes are
ignored with one warning line each.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting: its dotted name, the twistd option it feeds (if any), its default."""

    name: str
    option: str | None
    default: str | None
    help: str

    @property
    def shell_name(self) -> str:
        return self.name.upper().replace(".", "_").replace("-", "_")


SETTINGS: tuple[Setting, ...] = (
    Setting("gateway.listen.http", "http", "tcp:8080", "HTTP listener (strports)"),
    Setting(
        "gateway.listen.https",
        "https",
        "tcp:8081",
        "HTTPS listener: a TCP strports description (certificates come from the "
        "configuration, chosen by SNI); empty: off",
    ),
    Setting(
        "gateway.listen.admin",
        "admin",
        "tcp:8082:interface=127.0.0.1",
        "admin listener: /metrics, /healthz, /readyz, /config (the container image sets tcp:8082)",
    ),
    Setting("gateway.config.file", "config", "", "local YAML configuration file (empty: the built-in Echo API)"),
    Setting("config.backup.path", "backup-path", "/apim/config", "where the cloud configuration backup lives"),
    Setting("telemetry.logs.std", "access-log", "text", "access log format: text, json or none"),
    Setting("gateway.shutdown.grace", "grace", "30", "seconds in-flight requests and open tunnels (WebSocket) may take to finish at shutdown"),
    Setting("gateway.shutdown.delay", "drain-delay", "0", "seconds to keep accepting while not ready, before draining"),
    Setting("gateway.backend.connect-timeout", "connect-timeout", "5", "backend connect timeout (seconds)"),
    Setting("gateway.backend.timeout", "backend-timeout", "60", "time to the backend's response headers (seconds)"),
    Setting("gateway.backend.max-idle", "max-idle", "64", "idle keep-alive connections kept per backend"),
    Setting("gateway.request.max-body", "max-body", str(100 * 1024 * 1024), "request body limit in bytes (413 above)"),
    Setting("gateway.errors.mode", "error-mode", "apim", "backend failures as 500 (apim) or 502/504 (http)"),
    Setting("net.server.header-timeout", None, "60",
            "seconds a client may take to send a request's header section (408 after)"),
    Setting("net.server.body-timeout", None, "60",
            "seconds a client may pause while sending a request body (408 after)"),
    Setting("net.server.send-timeout", None, "60",
            "seconds a client may read nothing of its answer before the connection is aborted"),
    Setting("net.server.keepalive-timeout", None, "75",
            "seconds an idle keep-alive connection is kept open"),
    Setting("net.server.max-target", None, str(8 * 1024),
            "longest request target in bytes (414 above)"),
    Setting("net.server.max-header-bytes", None, str(32 * 1024),
            "largest header section in bytes (431 above)"),
    Setting("net.server.upgrade-idle-timeout", None, "300",
            "seconds an upgraded connection (WebSocket) may pass no byte either way before it is closed"),
    Setting("net.server.body-buffer-bytes", None, str(64 * 1024),
            "bytes of a streamed request body held for a slow backend before the client is no "
            "longer read (1 KiB to 64 MiB)"),
    Setting("net.server.body-replay-bytes", None, str(64 * 1024),
            "bytes of a streamed request body kept after they went to the backend, so a retry can "
            "send them again; a body that sent more is not retried (0 to 256 MiB)"),
    Setting(
        "gateway.http1.server",
        "http1-server",
        "strict",
        "HTTP/1.1 server of the traffic listeners: twisted (twisted.web) or strict (apimgw's own "
        "on httptools, docs/http1.md)",
    ),
    Setting(
        "gateway.http2.cleartext",
        "http2-cleartext",
        "true",
        "serve HTTP/2 with prior knowledge (h2c: the connection opens with the HTTP/2 preface) "
        "on the plain listener, beside HTTP/1.1: true or false (strict server only)",
    ),
    Setting("gateway.config.poll", "poll-interval", "1", "seconds between checks of the configuration file"),
    Setting(
        "gateway.workers",
        "workers",
        "auto",
        "worker processes serving the traffic listeners (sharing the ports with SO_REUSEPORT; "
        "the sources, the reconciler and the admin port run once); auto: the CPUs the "
        "container may use (cgroup CPU limit, else every CPU the process may run on; 1 CPU: "
        "one process); 0 or 1: one process",
    ),
    Setting(
        "net.server.tls.min-version",
        "tls-min-version",
        "1.2",
        "lowest TLS version the HTTPS listener accepts: 1.2 or 1.3",
    ),
    Setting(
        "gateway.https.redirect-port",
        "https-redirect-port",
        "443",
        "port in the Location of HTTP-to-HTTPS redirects (443 is left out); "
        "'listener': the HTTPS listener's own port",
    ),
    # The Kubernetes Ingress source (POD_NAME and POD_NAMESPACE, from the
    # downward API, name the replica in leader election).
    Setting("k8s.ingress.enabled", None, "false", "watch Kubernetes Ingress objects"),
    Setting("k8s.ingress.namespace", None, "default", "namespace watched (empty: all)"),
    Setting("k8s.ingress.class", None, "azure-api-management/gateway", "Ingress class served"),
    Setting("k8s.ingress.dns.suffix", None, "svc.cluster.local", "cluster DNS suffix of Service backends"),
    Setting("k8s.ingress.config.path", None, None, "kubeconfig path outside a cluster"),
    Setting(
        "k8s.ingress.backend",
        None,
        "service",
        "how Ingress backends are reached: service (the Service's cluster DNS name) or "
        "endpoints (the ready addresses of its EndpointSlices, balanced by the gateway)",
    ),
    Setting(
        "k8s.ingress.publish-service",
        None,
        "",
        "namespace/name of the gateway's own Service: its load-balancer address is written to "
        "status.loadBalancer.ingress of served Ingresses",
    ),
    Setting(
        "k8s.ingress.publish-address",
        None,
        "",
        "fixed address(es), comma separated, written to status.loadBalancer.ingress instead",
    ),
    Setting(
        "k8s.ingress.election-id",
        None,
        "apimgw-leader",
        "name of the coordination.k8s.io Lease that elects the one replica writing Ingress status",
    ),
    # The Kubernetes Gateway API source (gateway.networking.k8s.io); the
    # cluster DNS suffix of its Service backends is k8s.ingress.dns.suffix.
    Setting("k8s.gateway.enabled", None, "false", "watch Kubernetes Gateway API objects"),
    Setting(
        "k8s.gateway.controller",
        None,
        "apimgw.io/gateway-controller",
        "spec.controllerName of the GatewayClasses served (their Gateways and HTTPRoutes)",
    ),
    Setting(
        "k8s.gateway.namespace",
        None,
        "",
        "namespace of the Gateways, HTTPRoutes, ReferenceGrants, Services and Secrets watched "
        "(empty: all; GatewayClasses are cluster-scoped)",
    ),
    Setting(
        "k8s.gateway.allow-external-name",
        None,
        "false",
        "serve HTTPRoute backendRefs to ExternalName Services (off: a tenant could name "
        "localhost or a metadata endpoint)",
    ),
    Setting(
        "k8s.gateway.http-port",
        None,
        "80",
        "the port clients reach the gateway's HTTP listener on (its Service's port): Gateway "
        "listeners of protocol HTTP on another port are not served (PortUnavailable)",
    ),
    Setting(
        "k8s.gateway.https-port",
        None,
        "443",
        "the same for HTTPS listeners",
    ),
    Setting(
        "k8s.gateway.election-id",
        None,
        "apimgw-gateway-api",
        "name of the coordination.k8s.io Lease that elects the one replica writing Gateway API status",
    ),
    Setting(
        "k8s.gateway.config.path",
        None,
        None,
        "kubeconfig path outside a cluster (empty: k8s.ingress.config.path, else in-cluster or "
        "KUBECONFIG)",
    ),
    # The cloud source (configuration service).
    Setting("config.service.endpoint", None, None, "configuration service base URL"),
    Setting("config.service.auth", None, None, "GatewayKey token, or a file holding it"),
    Setting(
        "config.service.heartbeat-interval",
        None,
        "60",
        "seconds between heartbeats to the configuration service",
    ),
    Setting(
        "config.backup.interval",
        None,
        "10",
        "at most one cloud configuration backup write per this many seconds",
    ),
    # Observability: access-log redaction and the admin port's token.
    Setting(
        "telemetry.logs.redact-query",
        "redact-query",
        "",
        "query parameters whose values the access log writes as REDACTED, comma separated, "
        "besides subscription-key, access_token, code and sig (always redacted)",
    ),
    Setting(
        "telemetry.logs.access.buffer",
        "access-log-buffer",
        str(4 * 1024 * 1024),
        "bytes of access-log lines that may wait for a slow stdout; beyond, lines are dropped "
        "and counted (apimgw_access_log_dropped_total)",
    ),
    Setting(
        "gateway.admin.token",
        "admin-token",
        "",
        "bearer token required for /config on the admin port: the token, or the path of a file "
        "holding it (starts with / or .; re-read when it changes); empty: /config is open",
    ),
    # The cloud source: trust and the backup's encryption key.
    Setting(
        "config.service.ca",
        None,
        "",
        "PEM certificate authorities (or the path of a file holding them) the configuration "
        "service's HTTPS certificate is checked against; empty: the system trust store",
    ),
    Setting(
        "config.backup.key",
        None,
        "",
        "key encrypting the secrets in the cloud configuration backup (or the path of a file "
        "holding it, starts with / or .; at least 16 characters); empty: derived from the token, "
        "so a backup does not survive a token rotated while the gateway is down",
    ),
)

_RATE_LIMIT_SETTINGS = (
    Setting(
        "rate-limit.redis.url",
        "redis-url",
        "",
        "Redis for the rate-limit and quota counters shared by every replica: redis://[:password@]"
        "host:port/db or rediss:// (TLS); empty: each replica counts alone (local counters)",
    ),
    Setting("rate-limit.redis.password", None, "", "Redis password (or in the URL)"),
    Setting(
        "rate-limit.redis.ca",
        None,
        "",
        "PEM file of the certificate authorities a rediss:// server is checked against; empty: the "
        "system trust store",
    ),
    Setting(
        "rate-limit.redis.namespace",
        None,
        "default",
        "prefix of the counter keys (apimgw:<namespace>:...): one per gateway deployment sharing a "
        "Redis",
    ),
    Setting(
        "rate-limit.redis.timeout",
        None,
        "0.25",
        "seconds a counter check may wait for Redis before the request is decided by the local "
        "counters",
    ),
)
SETTINGS = SETTINGS + _RATE_LIMIT_SETTINGS

_PREFIXES = (
    "gateway.", "k8s.", "config.", "telemetry.", "net.", "runtime.", "rate-limit.",
    # the shell-safe form of rate-limit.* read back with "_" as "."
    "rate.limit.",
)
_BY_NAME = {s.name: s for s in SETTINGS}
_BY_SHELL = {s.shell_name: s for s in SETTINGS}


def read_environment(environ: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """
    The settings present in ``environ``, by dotted name, and the unknown
    keys under our prefixes (to be warned about).

    A dotted name wins over its shell-safe form when both are set.
    """
    values: dict[str, str] = {}
    unknown: list[str] = []
    for key, value in sorted(environ.items()):
        setting = _BY_NAME.get(key)
        if setting is not None:
            values[setting.name] = value
            continue
        setting = _BY_SHELL.get(key)
        if setting is not None:
            values.setdefault(setting.name, value)
            continue
        lowered = key.lower()
        dotted = "." in key
        if dotted and lowered.startswith(_PREFIXES):
            unknown.append(key)
        elif not dotted and key.isupper() and lowered.replace("_", ".").startswith(_PREFIXES):
            unknown.append(key)
    return values, unknown


def flag(value: str | None) -> bool:
    """``true``/``1``/``yes``/``on`` (any case) are true; anything else false."""
    return (value or "").strip().lower() in ("true", "1", "yes", "on")


# -- typed settings ----------------------------------------------------------
#
# The raw values above are strings from the command line or the environment.
# Each part of the gateway receives one typed, validated settings object
# instead (built once at start by ``gateway.tap``), so a bad value is refused
# with its setting's name before anything starts, and no layer parses
# strings of its own.


class SettingError(ValueError):
    """A setting's value cannot be used; the message names the setting."""


#: The values the enumerated settings accept (the layers that act on them
#: use the same names).
ACCESS_LOG_FORMATS = ("none", "text", "json")
ERROR_MODES = ("apim", "http")
TLS_MIN_VERSIONS = ("1.2", "1.3")
INGRESS_BACKEND_MODES = ("service", "endpoints")
HTTP1_SERVERS = ("twisted", "strict")


def _number(values: Mapping[str, str], name: str, kind: type, *, positive: bool = False) -> Any:
    raw = values.get(name, _BY_NAME[name].default or "")
    try:
        value = kind(str(raw).strip())
    except (TypeError, ValueError):
        raise SettingError(f"{name} must be a number, not {raw!r}") from None
    if value < 0 or (positive and value == 0):
        raise SettingError(f"{name} must be {'positive' if positive else 'zero or more'}, not {raw!r}")
    return value


def _bytes_between(values: Mapping[str, str], name: str, low: int, high: int) -> int:
    """A size in bytes within ``[low, high]`` (a bound of memory held per connection)."""
    value: int = _number(values, name, int)
    if not low <= value <= high:
        raise SettingError(f"{name} must be between {low} and {high} bytes, not {value}")
    return value


#: Bounds of the streamed request body's buffers (memory per upload).
BODY_BUFFER_RANGE = (1024, 64 * 1024 * 1024)
BODY_REPLAY_RANGE = (0, 256 * 1024 * 1024)


def _text(values: Mapping[str, str], name: str) -> str:
    return str(values.get(name, _BY_NAME[name].default or "")).strip()


def _choice(values: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    value = _text(values, name)
    if value not in choices:
        raise SettingError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class ListenSettings:
    """
    Where the gateway's traffic listeners listen (strports descriptions).

    :ivar https: empty: no HTTPS listener.
    :ivar https_redirect_port: the port HTTP-to-HTTPS redirects name;
        ``None``: the HTTPS listener's own port.
    """

    http: str
    https: str
    https_redirect_port: int | None

    @classmethod
    def parse(cls, values: Mapping[str, str]) -> ListenSettings:
        https = _text(values, "gateway.listen.https")
        if https.split(":", 1)[0].lower() in ("ssl", "tls"):
            raise SettingError(
                "gateway.listen.https takes a TCP description such as tcp:8081 (the gateway "
                "terminates TLS itself, with the certificates of its configuration chosen by SNI)"
            )
        port = _text(values, "gateway.https.redirect-port")
        redirect: int | None = None
        if port != "listener":
            if not port.isdigit() or not 0 < int(port) < 65536:
                raise SettingError(
                    f"gateway.https.redirect-port must be a port number or 'listener', not {port!r}"
                )
            redirect = int(port)
        return cls(
            http=_text(values, "gateway.listen.http"),
            https=https,
            https_redirect_port=redirect,
        )


@dataclass(frozen=True, slots=True)
class AdminSettings:
    """
    The admin port (``/metrics``, ``/healthz``, ``/readyz``, ``/config``).

    :ivar token: the bearer token ``/config`` requires, or the path of a
        file holding it; empty: ``/config`` is open.
    """

    listen: str
    token: str

    @classmethod
    def parse(cls, values: Mapping[str, str]) -> AdminSettings:
        return cls(listen=_text(values, "gateway.listen.admin"), token=_text(values, "gateway.admin.token"))


@dataclass(frozen=True, slots=True)
class ProxySettings:
    """
    How requests are forwarded, answered, logged and drained.

    :ivar redact_query: query parameters whose values the access log
        redacts, besides the built-in ones.
    """

    access_log: str
    redact_query: tuple[str, ...]
    grace: float
    drain_delay: float
    connect_timeout: float
    backend_timeout: float
    max_idle: int
    max_body: int
    error_mode: str
    tls_min_version: str
    http1_server: str = "strict"
    #: HTTP/2 with prior knowledge (h2c) on the plain listener
    h2c: bool = True
    #: the strict HTTP/1.1 server's limits: header, body, send and
    #: keep-alive timeouts (s), request target and header section (bytes)
    header_timeout: float = 60.0
    body_timeout: float = 60.0
    send_timeout: float = 60.0
    keepalive_timeout: float = 75.0
    max_target: int = 8 * 1024
    max_header_bytes: int = 32 * 1024
    #: seconds an upgraded connection (a tunnel after a 101) may be idle
    upgrade_idle_timeout: float = 300.0
    #: a streamed request body: bytes held for a slow backend before the
    #: client is paused, and bytes kept for a retry (bytes)
    body_buffer: int = 64 * 1024
    body_replay: int = 64 * 1024
    #: bytes of access-log lines that may wait for a slow stdout
    access_log_buffer: int = 4 * 1024 * 1024

    @classmethod
    def parse(cls, values: Mapping[str, str]) -> ProxySettings:
        return cls(
            access_log=_choice(values, "telemetry.logs.std", ACCESS_LOG_FORMATS),
            redact_query=tuple(
                n.strip() for n in _text(values, "telemetry.logs.redact-query").split(",") if n.strip()
            ),
            grace=_number(values, "gateway.shutdown.grace", float),
            drain_delay=_number(values, "gateway.shutdown.delay", float),
            connect_timeout=_number(values, "gateway.backend.connect-timeout", float),
            backend_timeout=_number(values, "gateway.backend.timeout", float),
            max_idle=_number(values, "gateway.backend.max-idle", int),
            max_body=_number(values, "gateway.request.max-body", int),
            error_mode=_choice(values, "gateway.errors.mode", ERROR_MODES),
            tls_min_version=_choice(values, "net.server.tls.min-version", TLS_MIN_VERSIONS),
            http1_server=_choice(values, "gateway.http1.server", HTTP1_SERVERS),
            h2c=_choice(values, "gateway.http2.cleartext", ("true", "false")) == "true",
            access_log_buffer=_number(values, "telemetry.logs.access.buffer", int, positive=True),
            header_timeout=_number(values, "net.server.header-timeout", float, positive=True),
            body_timeout=_number(values, "net.server.body-timeout", float, positive=True),
            send_timeout=_number(values, "net.server.send-timeout", float, positive=True),
            keepalive_timeout=_number(values, "net.server.keepalive-timeout", float, positive=True),
            max_target=_number(values, "net.server.max-target", int, positive=True),
            max_header_bytes=_number(values, "net.server.max-header-bytes", int, positive=True),
            upgrade_idle_timeout=_number(
                values, "net.server.upgrade-idle-timeout", float, positive=True
            ),
            body_buffer=_bytes_between(values, "net.server.body-buffer-bytes", *BODY_BUFFER_RANGE),
            body_replay=_bytes_between(values, "net.server.body-replay-bytes", *BODY_REPLAY_RANGE),
        )


@dataclass(frozen=True, slots=True)
class FileSettings:
    """The local configuration file; ``path`` empty: none."""

    path: str
    poll_interval: float

    @classmethod
    def parse(cls, values: Mapping[str, str]) -> FileSettings:
        return cls(
            path=_text(values, "gateway.config.file"),
            poll_interval=_number(values, "gateway.config.poll", float),
        )


@dataclass(frozen=True, slots=True)
class CloudSettings:
    """
    The configuration service source (``config.service.*``, ``config.backup.*``).

    :ivar backup_path: empty: no backup.
    :ivar ca: PEM authorities (or a file of them) the service's certificate
        is checked against; ``None``: the system trust store.
    :ivar backup_key: the key sealing the backup's secrets (or a file
        holding it); ``None``: derived from the token.
    """

    endpoint: str
    auth: str
    backup_path: str
    backup_interval: float
    heartbeat_interval: float
    ca: str | None = None
    backup_key: str | None = None

    @classmethod
    def parse(cls, values: Mapping[str, str]) -> CloudSettings | None:
        """The settings, or ``None`` when no endpoint is configured."""
        endpoint = _text(values, "config.service.endpoint")
        if not endpoint:
            return None
        auth = _text(values, "config.service.auth")
        if not auth:
            raise SettingError(
                "config.service.endpoint is set but config.service.auth is not: give the "
                "gateway's token (GatewayKey ...) or the path of a file holding it"
            )
        return cls(
            endpoint=endpoint,
            auth=auth,
            backup_path=_text(values, "config.backup.path"),
            backup_interval=_number(values, "config.backup.interval", float),
            heartbeat_interval=_number(values, "config.service.heartbeat-interval", float, positive=True),
            ca=_text(values, "config.service.ca") or None,
            backup_key=_text(values, "config.backup.key") or None,
        )


@dataclass(frozen=True, slots=True)
class IngressSourceSettings:
    """
    The Kubernetes Ingress source (``k8s.ingress.*``).

    :ivar namespace: ``None``: all namespaces.
    :ivar publish_service: ``namespace/name`` of the gateway's own Service.
    """

    namespace: str | None
    ingress_class: str
    dns_suffix: str
    backend_mode: str
    config_path: str | None
    publish_service: str | None
    publish_addresses: tuple[str, ...]
    election_id: str | None

    @classmethod
    def parse(cls, values: Mapping[str, str]) -> IngressSourceSettings | None:
        """The settings, or ``None`` when the Ingress source is off."""
        if not flag(values.get("k8s.ingress.enabled")):
            return None
        publish_service = _text(values, "k8s.ingress.publish-service") or None
        if publish_service and publish_service.count("/") != 1:
            raise SettingError(
                f"k8s.ingress.publish-service must be namespace/name, not {publish_service!r}"
            )
        addresses = _text(values, "k8s.ingress.publish-address").split(",")
        return cls(
            namespace=_text(values, "k8s.ingress.namespace") or None,
            ingress_class=_text(values, "k8s.ingress.class"),
            dns_suffix=_text(values, "k8s.ingress.dns.suffix"),
            backend_mode=_choice(values, "k8s.ingress.backend", INGRESS_BACKEND_MODES),
            config_path=_text(values, "k8s.ingress.config.path") or None,
            publish_service=publish_service,
            publish_addresses=tuple(a.strip() for a in addresses if a.strip()),
            election_id=_text(values, "k8s.ingress.election-id") or None,
        )


#: ``GatewayController`` in the Gateway API's validation: a domain-prefixed path.
_CONTROLLER_NAME = re.compile(
    r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/[A-Za-z0-9/\-._~%!$&'()*+,;=:]+"
)


@dataclass(frozen=True, slots=True)
class GatewayApiSourceSettings:
    """
    The Kubernetes Gateway API source (``k8s.gateway.*``).

    :ivar namespace: ``None``: all namespaces.
    :ivar dns_suffix: ``k8s.ingress.dns.suffix``: one cluster, one DNS
        suffix, whichever source reads its Services.
    :ivar config_path: ``k8s.gateway.config.path``, else
        ``k8s.ingress.config.path``; ``None``: in-cluster or ``KUBECONFIG``.
    :ivar election_id: ``None``: no election, this replica writes status.
    :ivar allow_external_name: serve backendRefs to ``ExternalName``
        Services (``k8s.gateway.allow-external-name``).
    :ivar http_port: the port of HTTP listeners served
        (``k8s.gateway.http-port``); :ivar https_port: of HTTPS ones.
    """

    controller: str
    namespace: str | None
    dns_suffix: str
    config_path: str | None
    election_id: str | None
    allow_external_name: bool = False
    http_port: int = 80
    https_port: int = 443

    @classmethod
    def parse(cls, values: Mapping[str, str]) -> GatewayApiSourceSettings | None:
        """The settings, or ``None`` when the Gateway API source is off."""
        if not flag(values.get("k8s.gateway.enabled")):
            return None
        controller = _text(values, "k8s.gateway.controller")
        if not _CONTROLLER_NAME.fullmatch(controller):
            # What the API accepts as a GatewayClass's spec.controllerName:
            # a value no GatewayClass can carry would serve nothing.
            raise SettingError(
                f"k8s.gateway.controller must be a domain-prefixed path such as "
                f"example.com/gateway-controller, not {controller!r}"
            )
        return cls(
            controller=controller,
            namespace=_text(values, "k8s.gateway.namespace") or None,
            dns_suffix=_text(values, "k8s.ingress.dns.suffix"),
            config_path=(
                _text(values, "k8s.gateway.config.path")
                or _text(values, "k8s.ingress.config.path")
                or None
            ),
            election_id=_text(values, "k8s.gateway.election-id") or None,
            allow_external_name=flag(values.get("k8s.gateway.allow-external-name")),
            http_port=_number(values, "k8s.gateway.http-port", int, positive=True),
            https_port=_number(values, "k8s.gateway.https-port", int, positive=True),
        )


@dataclass(frozen=True, slots=True)
class RateLimitSettings:
    """
    Where the rate-limit and quota counters live.

    :ivar redis_url: empty: local counters (each replica counts alone).
    :ivar timeout: seconds a check waits for Redis before the local
        counters decide that request.
    """

    redis_url: str
    password: str
    ca: str
    namespace: str
    timeout: float

    @classmethod
    def parse(cls, values: Mapping[str, str]) -> RateLimitSettings:
        url = _text(values, "rate-limit.redis.url")
        if url and not url.startswith(("redis://", "rediss://")):
            raise SettingError(
                f"rate-limit.redis.url must start with redis:// or rediss://, not {url[:40]!r}"
            )
        namespace = _text(values, "rate-limit.redis.namespace")
        if not namespace or any(c in namespace for c in " :{}"):
            raise SettingError(
                f"rate-limit.redis.namespace must be a word without spaces, colons or braces, "
                f"not {namespace!r}"
            )
        return cls(
            redis_url=url,
            password=_text(values, "rate-limit.redis.password"),
            ca=_text(values, "rate-limit.redis.ca"),
            namespace=namespace,
            timeout=_number(values, "rate-limit.redis.timeout", float, positive=True),
        )


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """
    Every setting of one gateway, typed and validated.

    :ivar cloud: ``None``: no configuration service.
    :ivar ingress: ``None``: no Ingress source.
    :ivar gateway_api: ``None``: no Gateway API source.
    """

    listen: ListenSettings
    admin: AdminSettings
    proxy: ProxySettings
    file: FileSettings
    cloud: CloudSettings | None
    ingress: IngressSourceSettings | None
    rate_limit: RateLimitSettings
    gateway_api: GatewayApiSourceSettings | None = None
    #: worker processes; ``None``: ``auto``, the default (the CPUs the
    #: container may use, counted by twistd's composition, ``makeService``:
    #: an in-process ``build_gateway`` counts one, so tests never fork);
    #: 0 and 1: one process
    workers: int | None = None

    @classmethod
    def parse(cls, values: Mapping[str, str]) -> GatewaySettings:
        """
        Validate ``values`` (dotted names; absent ones take their defaults).

        :raises SettingError: the first unusable value, named.
        """
        return cls(
            listen=ListenSettings.parse(values),
            admin=AdminSettings.parse(values),
            proxy=ProxySettings.parse(values),
            file=FileSettings.parse(values),
            cloud=CloudSettings.parse(values),
            ingress=IngressSourceSettings.parse(values),
            rate_limit=RateLimitSettings.parse(values),
            gateway_api=GatewayApiSourceSettings.parse(values),
            workers=_workers(values),
        )


def _workers(values: Mapping[str, str]) -> int | None:
    """``gateway.workers``: a count, or ``auto`` (``None``)."""
    if _text(values, "gateway.workers").lower() == "auto":
        return None
    count: int = _number(values, "gateway.workers", int)
    if count > 256:
        raise SettingError(f"gateway.workers must be at most 256, not {count}")
    return count
