"""
Where the API server is and how to authenticate to it: loaded with the
``kubernetes`` package's own loaders, so every kubeconfig and in-cluster
setup that ``kubectl`` and the official client understand works here too.

The loaders block (they read files, and an ``exec`` credential plugin runs
a command), so :func:`load_credentials_in_thread` runs them in the
reactor's thread pool; :func:`load_credentials` is the blocking form for
start-up code that runs before the reactor does.

What comes out is a plain, immutable :class:`ClusterCredentials` (PEM bytes
read once, not paths to temporary files), plus a token source: bound
service-account tokens rotate (the kubelet replaces the projected file
about every hour), so a token that comes from a file is re-read whenever
the file changes (:class:`TokenSource`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

__all__ = [
    "IN_CLUSTER_CA",
    "IN_CLUSTER_NAMESPACE",
    "IN_CLUSTER_TOKEN",
    "ClusterCredentials",
    "CredentialsError",
    "TokenSource",
    "load_credentials",
    "load_credentials_in_thread",
    "load_in_cluster",
    "load_kubeconfig",
]

IN_CLUSTER_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"
IN_CLUSTER_CA = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
IN_CLUSTER_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

_log = Logger()


class CredentialsError(Exception):
    """No usable credentials: a missing or invalid kubeconfig, or not in a pod."""


@dataclass(frozen=True)
class ClusterCredentials:
    """
    Everything needed to reach one API server.

    :ivar server: the base URL, such as ``https://10.96.0.1:443`` (any path
        is kept: some proxies serve a cluster below one).
    :ivar ca_pem: the cluster CA bundle (PEM); ``None``: the platform's
        trust store.
    :ivar client_cert_pem: a client certificate (PEM), with
        ``client_key_pem``.
    :ivar authorization: a fixed ``Authorization`` header value
        (``Bearer …`` or ``Basic …``), when the token does not come from a
        file.
    :ivar token_file: a file holding the bearer token, re-read when it
        changes (service-account tokens, kubeconfig ``tokenFile``).
    :ivar tls_server_name: the name to verify the server's certificate
        against instead of the URL's host (kubeconfig ``tls-server-name``).
    :ivar verify_tls: ``False`` only with ``insecure-skip-tls-verify``.
    :ivar namespace: the namespace of the kubeconfig context, or the pod's.
    :ivar refresh: a blocking callable that renews an expiring credential
        (an ``exec`` plugin or an auth provider) and returns the new
        ``Authorization`` value; run in a thread after a ``401``.
    :ivar origin: where they came from, for log lines.
    """

    server: str
    ca_pem: bytes | None = None
    client_cert_pem: bytes | None = field(default=None, repr=False)
    client_key_pem: bytes | None = field(default=None, repr=False)
    authorization: str | None = field(default=None, repr=False)
    token_file: str | None = None
    tls_server_name: str | None = None
    verify_tls: bool = True
    namespace: str | None = None
    refresh: Callable[[], str | None] | None = field(default=None, repr=False, compare=False)
    origin: str = ""


def _read(path: str | None) -> bytes | None:
    if not path:
        return None
    with open(path, "rb") as f:
        return f.read()


def _normalize_authorization(value: str | None) -> str | None:
    """The loaders write ``bearer x`` (in-cluster) or ``Bearer x`` (kubeconfig)."""
    if not value:
        return None
    scheme, _, rest = value.partition(" ")
    if scheme.lower() == "bearer":
        return f"Bearer {rest.strip()}" if rest.strip() else None
    return value


def _from_configuration(
    configuration: Any,
    *,
    token_file: str | None,
    namespace: str | None,
    origin: str,
    refreshable: bool,
) -> ClusterCredentials:
    host = (configuration.host or "").rstrip("/")
    if not host:
        raise CredentialsError(f"{origin}: no server address")
    if getattr(configuration, "proxy", None):
        _log.warn(
            "The kubeconfig names a proxy ({proxy}); apimgw connects to the API server directly",
            proxy=configuration.proxy,
        )
    authorization = (
        None
        if token_file
        else _normalize_authorization(
            configuration.api_key.get("BearerToken") or configuration.api_key.get("authorization")
        )
    )
    refresh = None
    hook = getattr(configuration, "refresh_api_key_hook", None)
    if refreshable and hook is not None and token_file is None:

        def refresh() -> str | None:
            hook(configuration)
            return _normalize_authorization(configuration.api_key.get("BearerToken"))

    verify = bool(getattr(configuration, "verify_ssl", True))
    if not verify:
        _log.warn(
            "TLS verification of the API server is off (insecure-skip-tls-verify) for {origin}",
            origin=origin,
        )
    return ClusterCredentials(
        server=host,
        ca_pem=_read(configuration.ssl_ca_cert),
        client_cert_pem=_read(configuration.cert_file),
        client_key_pem=_read(configuration.key_file),
        authorization=authorization,
        token_file=token_file,
        tls_server_name=getattr(configuration, "tls_server_name", None) or None,
        verify_tls=verify,
        namespace=namespace,
        refresh=refresh,
        origin=origin,
    )


def _kubeconfig_paths(path: str | None, environ: Mapping[str, str]) -> str:
    if path:
        return path
    from_env = environ.get("KUBECONFIG")
    if from_env:
        return from_env
    return os.path.join(os.path.expanduser("~"), ".kube", "config")


def _kubectl_current_context(paths: str) -> str | None:
    """
    The ``current-context`` as kubectl picks it from several files: the
    first file that sets one. (The ``kubernetes`` package's merger lets the
    last one win; operators expect kubectl's rule.)
    """
    import yaml

    for path in paths.split(os.pathsep):
        path = os.path.expanduser(path)
        if not path or not os.path.exists(path):
            continue
        with open(path, encoding="utf-8") as f:
            config = yaml.safe_load(f) or {}
        if isinstance(config, dict) and config.get("current-context"):
            return str(config["current-context"])
    return None


def _active_user(paths: str, context: str | None) -> tuple[Any, Any]:
    """The active context and user nodes, merged across ``paths`` as the loader does."""
    from kubernetes.config.kube_config import KubeConfigMerger

    merged = KubeConfigMerger(paths).config
    if merged is None:
        raise CredentialsError(f"no kubeconfig found at {paths}")
    name = context or merged["current-context"]
    ctx = merged["contexts"].get_with_name(name)
    user_name = ctx["context"].safe_get("user")
    user = None
    if user_name and merged.safe_get("users"):
        found = merged["users"].get_with_name(user_name, safe=True)
        user = found["user"] if found else None
    return ctx, user


def load_kubeconfig(
    path: str | None = None,
    *,
    context: str | None = None,
    environ: Mapping[str, str] = os.environ,
) -> ClusterCredentials:
    """
    Load credentials from a kubeconfig (blocking).

    :param path: the file; else ``KUBECONFIG``, else ``~/.kube/config``.
        Several ``:``-separated files are merged as kubectl does: the first
        definition of a name wins, and so does the first ``current-context``.
    :param context: the context to use; else ``current-context``.
    :raises CredentialsError: when the file is missing or unusable.
    """
    from kubernetes.client import Configuration
    from kubernetes.config.config_exception import ConfigException
    from kubernetes.config.kube_config import load_kube_config

    paths = _kubeconfig_paths(path, environ)
    configuration = type.__call__(Configuration)
    try:
        if context is None and os.pathsep in paths:
            context = _kubectl_current_context(paths)
        load_kube_config(
            config_file=paths,
            context=context,
            client_configuration=configuration,
            persist_config=False,
        )
        ctx, user = _active_user(paths, context)
    except (ConfigException, OSError, KeyError, ValueError, TypeError) as e:
        raise CredentialsError(f"kubeconfig {paths}: {e}") from None
    token_file = None
    if user is not None and "auth-provider" not in user and "tokenFile" in user:
        token_file = user["tokenFile"]
        if not os.path.isabs(token_file) and user.path:
            token_file = os.path.join(os.path.dirname(os.path.abspath(user.path)), token_file)
    namespace = ctx["context"].safe_get("namespace") or None
    return _from_configuration(
        configuration,
        token_file=token_file,
        namespace=namespace,
        origin=f"kubeconfig {paths}",
        refreshable=True,
    )


def load_in_cluster(
    *,
    environ: Mapping[str, str] = os.environ,
    token_path: str = IN_CLUSTER_TOKEN,
    ca_path: str = IN_CLUSTER_CA,
    namespace_path: str = IN_CLUSTER_NAMESPACE,
) -> ClusterCredentials:
    """
    Load the pod's service-account credentials (blocking): the API server
    from ``KUBERNETES_SERVICE_HOST``/``_PORT``, the CA and the token from
    the service-account mount (the token is re-read when it rotates).

    :raises CredentialsError: when not running in a pod.
    """
    from kubernetes.client import Configuration
    from kubernetes.config.config_exception import ConfigException
    from kubernetes.config.incluster_config import InClusterConfigLoader

    configuration = type.__call__(Configuration)
    try:
        InClusterConfigLoader(
            token_filename=token_path,
            cert_filename=ca_path,
            try_refresh_token=False,
            environ=environ,
        ).load_and_set(configuration)
    except (ConfigException, OSError) as e:
        raise CredentialsError(f"in-cluster configuration: {e}") from None
    namespace = None
    try:
        with open(namespace_path, encoding="utf-8") as f:
            namespace = f.read().strip() or None
    except OSError:
        pass
    return _from_configuration(
        configuration,
        token_file=token_path,
        namespace=namespace,
        origin="in-cluster service account",
        refreshable=False,
    )


def load_credentials(
    config_path: str | None = None,
    *,
    environ: Mapping[str, str] = os.environ,
    in_cluster: Callable[[], ClusterCredentials] | None = None,
) -> ClusterCredentials:
    """
    The credentials the gateway uses (blocking), in the order of DESIGN.md:
    an explicit kubeconfig path (``k8s.ingress.config.path``) first; in a
    pod, the service account; otherwise ``KUBECONFIG`` or
    ``~/.kube/config``, as ``kubectl`` does.

    :param in_cluster: the in-cluster loader (a test substitutes paths).
    """
    if config_path:
        return load_kubeconfig(config_path, environ=environ)
    if environ.get("KUBERNETES_SERVICE_HOST"):
        return (in_cluster or (lambda: load_in_cluster(environ=environ)))()
    return load_kubeconfig(None, environ=environ)


def load_credentials_in_thread(
    reactor: Any,
    config_path: str | None = None,
    *,
    environ: Mapping[str, str] = os.environ,
) -> Deferred[ClusterCredentials]:
    """
    :func:`load_credentials` in the reactor's thread pool, so an ``exec``
    plugin or a slow file system never stalls the reactor.
    """
    return deferToThreadPool(
        reactor, reactor.getThreadPool(), load_credentials, config_path, environ=environ
    )


def _signature(path: str) -> tuple[int, int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class TokenSource:
    """
    The ``Authorization`` header value for the next request.

    A token read from a file is cached with the file's identity (device,
    inode, size, mtime); every call compares a fresh ``stat`` with it and
    re-reads the file when it differs. Reading in the reactor thread is a
    deliberate trade: the file is a few hundred bytes on a local tmpfs (the
    projected service-account volume), and a ``stat`` per API request is
    far cheaper than the thread hop, while it catches a rotation on the
    very next request.
    """

    _log = Logger()

    def __init__(self, credentials: ClusterCredentials) -> None:
        self._credentials = credentials
        self._static = credentials.authorization
        self._seen: tuple[int, int, int, int] | None = None
        self._token_header: str | None = None

    @property
    def refreshable(self) -> bool:
        """Whether :meth:`refresh_blocking` can produce a new value."""
        return self._credentials.token_file is not None or self._credentials.refresh is not None

    def header(self) -> str | None:
        """The current value (``None``: send no ``Authorization``)."""
        path = self._credentials.token_file
        if path is None:
            return self._static
        signature = _signature(path)
        if signature != self._seen or self._token_header is None:
            self._reload(path, signature)
        return self._token_header

    def _reload(self, path: str, signature: tuple[int, int, int, int] | None) -> None:
        try:
            with open(path, encoding="utf-8") as f:
                token = f.read().strip()
        except OSError as e:
            # Keep the previous token: a rotation swaps the file atomically,
            # so a failed read is transient; the next request tries again.
            self._log.warn("Cannot read the token file {path}: {error}", path=path, error=str(e))
            return
        first = self._token_header is None
        self._seen = signature
        self._token_header = f"Bearer {token}" if token else None
        if not first:
            self._log.info("Token file {path} changed: using the new token", path=path)

    def refresh_blocking(self) -> bool:
        """
        Renew after a ``401`` (blocking: run it in a thread): re-read the
        token file, or run the loader's refresh hook. Returns whether the
        value changed, i.e. whether a retry can help.
        """
        before = self.header()
        if self._credentials.token_file is not None:
            self._seen = None
            return self.header() != before
        if self._credentials.refresh is not None:
            try:
                self._static = self._credentials.refresh()
            except Exception:
                self._log.failure("Refreshing the API server credentials failed")
                return False
            return self._static != before
        return False
