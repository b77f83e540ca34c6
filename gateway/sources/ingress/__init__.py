"""
The Kubernetes Ingress source.

* :mod:`._decode`: the pure decoder, Ingress / IngressClass / Service /
  Secret / EndpointSlice dictionaries → model objects and problems
  (:func:`decode_ingresses`); imports only :mod:`gateway.model`.
* :mod:`._source`: :class:`IngressSource`, the service that watches those
  kinds (through :mod:`gateway.sources.kubernetes`), decodes on every
  burst of changes and replaces its part of the store, objects and
  problems together.

Writing back to the cluster (Ingress status, Events) happens after each
generation swap, in :mod:`gateway.status`, from what the source exposes.
"""

from ._decode import (
    BACKEND_MODES,
    CLASS_ANNOTATION,
    DEFAULT_CLASS_ANNOTATION,
    SERVICE_NAME_LABEL,
    SOURCE,
    IngressDecoding,
    IngressInputs,
    IngressMemo,
    IngressSettings,
    decode_ingresses,
    is_ours,
    modification_time,
)
from ._source import SECRET_FIELD_SELECTOR, WAITING, IngressSource, replica_identity

__all__ = [
    "BACKEND_MODES",
    "CLASS_ANNOTATION",
    "DEFAULT_CLASS_ANNOTATION",
    "SECRET_FIELD_SELECTOR",
    "SERVICE_NAME_LABEL",
    "SOURCE",
    "WAITING",
    "IngressDecoding",
    "IngressInputs",
    "IngressMemo",
    "IngressSettings",
    "IngressSource",
    "decode_ingresses",
    "is_ours",
    "modification_time",
    "replica_identity",
]
