"""
The Kubernetes API layer of the Ingress source: credentials, a
reactor-native API client and informers.

* :mod:`._credentials`: where the API server is and how to authenticate,
  loaded with the ``kubernetes`` package's loaders (kubeconfig or the pod's
  service account), off the reactor thread; rotating token files re-read.
* :mod:`._client`: :class:`KubeClient`, list / watch / get / create /
  update / update_status / patch / delete over treq with the cluster CA
  trusted; errors as typed :class:`ApiError` subclasses (``410`` is
  :class:`Gone`); the watch stream parsed incrementally.
* :mod:`._informer`: :class:`Informer`, list-then-watch with bookmarks,
  resume from the last version, relist-and-diff after ``410``, jittered
  backoff.
* :mod:`._election`: :class:`LeaderElection`, client-go's leader election
  on a ``coordination.k8s.io`` Lease (expiry judged by the local clock,
  optimistic concurrency, renew deadline, release on stop), so that one
  replica writes status and Events.
* :mod:`._events`: :class:`EventRecorder`, core/v1 Events about objects
  as client-go's recorder writes them: repeats patched into a count, a
  rate limit per object, failures logged and never raised.

The translation of Ingress objects into routes lives in
:mod:`gateway.translate`; this package only moves objects.
"""

from ._client import (
    ENDPOINT_SLICE,
    EVENT,
    INGRESS,
    INGRESS_CLASS,
    LEASE,
    NAMESPACE,
    SECRET,
    SERVICE,
    AlreadyExists,
    ApiError,
    ClusterTLSPolicy,
    Conflict,
    Forbidden,
    Gone,
    Invalid,
    Kind,
    KubeClient,
    NotFound,
    ObjectList,
    Unauthorized,
    WatchEvent,
    WatchStalled,
    WatchStreamDecoder,
    WatchStreamError,
)
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
from ._events import EventRecorder
from ._informer import Informer, ObjectKey, object_key

__all__ = [
    "ENDPOINT_SLICE",
    "EVENT",
    "INGRESS",
    "INGRESS_CLASS",
    "LEASE",
    "NAMESPACE",
    "SECRET",
    "SERVICE",
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
    "Kind",
    "KubeClient",
    "LeaderElection",
    "NotFound",
    "ObjectKey",
    "ObjectList",
    "TokenSource",
    "Unauthorized",
    "WatchEvent",
    "WatchStalled",
    "WatchStreamDecoder",
    "WatchStreamError",
    "load_credentials",
    "load_credentials_in_thread",
    "load_in_cluster",
    "load_kubeconfig",
    "object_key",
]
