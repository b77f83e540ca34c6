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

from dataclasses import dataclass
from typing import Mapping


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
    Setting("gateway.listen.admin", "admin", "tcp:8082", "admin listener: /metrics, /healthz, /readyz, /config"),
    Setting("gateway.config.file", "config", "", "local YAML configuration file (empty: the built-in Echo API)"),
    Setting("config.backup.path", "backup-path", "/apim/config", "where the cloud configuration backup lives"),
    Setting("telemetry.logs.std", "access-log", "text", "access log format: text, json or none"),
    Setting("gateway.shutdown.grace", "grace", "30", "seconds in-flight requests may take to finish at shutdown"),
    Setting("gateway.shutdown.delay", "drain-delay", "0", "seconds to keep accepting while not ready, before draining"),
    Setting("gateway.backend.connect-timeout", "connect-timeout", "5", "backend connect timeout (seconds)"),
    Setting("gateway.backend.timeout", "backend-timeout", "60", "time to the backend's response headers (seconds)"),
    Setting("gateway.backend.max-idle", "max-idle", "64", "idle keep-alive connections kept per backend"),
    Setting("gateway.request.max-body", "max-body", str(100 * 1024 * 1024), "request body limit in bytes (413 above)"),
    Setting("gateway.errors.mode", "error-mode", "apim", "backend failures as 500 (apim) or 502/504 (http)"),
    Setting("gateway.config.poll", "poll-interval", "1", "seconds between checks of the configuration file"),
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
)

_PREFIXES = ("gateway.", "k8s.", "config.", "telemetry.", "net.", "runtime.")
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
