"""
The Kubernetes API layer of the Ingress source: credentials, a
reactor-native API client and informers.

* :mod:`._credentials`: where the API server is and how to authenticate,
  loaded with the ``kubernetes`` package's loaders (kubeconfig or the pod's
  service account), off the reactor thread; rotating token files re-read.
* :mod:`._kinds`: :class:`Kind`, where a resource type lives in the API,
  and the kinds the gateway uses (``INGRESS``, ``SERVICE``, the Gateway
  API's ``GATEWAY``, ``HTTP_ROUTE``, ...).
* :mod:`._errors`: the API server's refusals as typed :class:`ApiError`
  subclasses (``410`` is :class:`Gone`), and broken watch streams.
* :mod:`._watch`: the watch stream parsed incrementally
  (:class:`WatchStreamDecoder`), its events and the list response.
* :mod:`._client`: :class:`KubeClient`, list / watch / get / create /
  update / update_status / patch / delete over treq, with the cluster CA
  trusted (:class:`ClusterTLSPolicy`).
* :mod:`._informer`: :class:`Informer`, list-then-watch with bookmarks,
  resume from the last version, relist-and-diff after ``410``, jittered
  backoff.
* :mod:`._election`: :class:`LeaderElection`, client-go's leader election
  on a ``coordination.k8s.io`` Lease (expiry judged by the local clock,
  optimistic concurrency, renew deadline, release on stop), so that one
  replica writes status and Events.
* :mod:`._objects`: what both Kubernetes sources read the same way from
  objects: :func:`modification_time`, :func:`tls_secret_pem`,
  :func:`replica_identity`.
* :mod:`._sourcekit`: what the sources do alike around their objects:
  :func:`connect` (credentials retried), :class:`Leadership` (the status
  writer's election and its listeners), :func:`list_failure`.
* :mod:`._events`: :class:`EventRecorder`, core/v1 Events about objects
  as client-go's recorder writes them: repeats patched into a count, a
  rate limit per object, failures logged and never raised.

The decoding of Ingress objects into routes lives in
:mod:`gateway.sources.ingress`; this package only moves objects.
"""

from ._client import ClusterTLSPolicy, KubeClient
from ._credentials import (
    ClusterCredentials,
    CredentialsError,
    TokenSource,
    load_credentials,
    load_credentials_in_thread,
    load_in_cluster,
    load_kubeconfig,
)
from ._election import LeaderElection
from ._errors import (
    AlreadyExists,
    ApiError,
    Conflict,
    Forbidden,
    Gone,
    Invalid,
    NotFound,
    Unauthorized,
    WatchStalled,
    WatchStreamError,
    api_error,
)
from ._events import EventRecorder
from ._informer import Informer, ObjectKey, object_key
from ._kinds import (
    ENDPOINT_SLICE,
    EVENT,
    GATEWAY,
    GATEWAY_CLASS,
    HTTP_ROUTE,
    INGRESS,
    INGRESS_CLASS,
    LEASE,
    NAMESPACE,
    REFERENCE_GRANT,
    SECRET,
    SERVICE,
    Kind,
)
from ._objects import (
    TLS_SECRET_FIELD_SELECTOR,
    InvalidSecret,
    modification_time,
    replica_identity,
    tls_secret_pem,
)
from ._sourcekit import Leadership, connect, list_failure
from ._watch import MAX_EVENT_BYTES, ObjectList, WatchEvent, WatchStreamDecoder

__all__ = [
    "ENDPOINT_SLICE",
    "EVENT",
    "GATEWAY",
    "GATEWAY_CLASS",
    "HTTP_ROUTE",
    "INGRESS",
    "INGRESS_CLASS",
    "LEASE",
    "MAX_EVENT_BYTES",
    "NAMESPACE",
    "REFERENCE_GRANT",
    "SECRET",
    "SERVICE",
    "TLS_SECRET_FIELD_SELECTOR",
    "AlreadyExists",
    "ApiError",
    "ClusterCredentials",
    "ClusterTLSPolicy",
    "Conflict",
    "CredentialsError",
    "EventRecorder",
    "Forbidden",
    "Gone",
    "Informer",
    "Invalid",
    "InvalidSecret",
    "Kind",
    "KubeClient",
    "LeaderElection",
    "Leadership",
    "NotFound",
    "ObjectKey",
    "ObjectList",
    "TokenSource",
    "Unauthorized",
    "WatchEvent",
    "WatchStalled",
    "WatchStreamDecoder",
    "WatchStreamError",
    "api_error",
    "connect",
    "list_failure",
    "load_credentials",
    "load_credentials_in_thread",
    "load_in_cluster",
    "load_kubeconfig",
    "modification_time",
    "object_key",
    "replica_identity",
    "tls_secret_pem",
]
