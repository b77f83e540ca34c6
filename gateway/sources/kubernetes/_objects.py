"""
What both Kubernetes sources (Ingress and Gateway API) read from the
objects they watch, the same way: when an object last changed, the PEM of
a TLS Secret, and this replica's name in leader election.
"""

from __future__ import annotations

import base64
import binascii
import os
import socket
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

__all__ = [
    "TLS_SECRET_FIELD_SELECTOR",
    "InvalidSecret",
    "modification_time",
    "replica_identity",
    "tls_secret_pem",
]

KubeObject = Mapping[str, Any]

#: Only TLS Secrets are ever listed.
TLS_SECRET_FIELD_SELECTOR = "type=kubernetes.io/tls"


class InvalidSecret(ValueError):
    """A TLS Secret that cannot be served; the message completes "Secret ns/name ..."."""


def _timestamp(text: Any) -> float | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def modification_time(obj: KubeObject) -> float:
    """
    The object's own last-modification time: the newest
    ``managedFields[].time`` of a write to the object itself, else
    ``creationTimestamp``, else 0. Writes to a subresource (the gateway's
    own ``status`` updates) are not changes of the object: counting them
    would let publishing an address or a condition reorder "last one wins".
    """
    meta = obj.get("metadata") or {}
    times = [
        _timestamp(entry.get("time"))
        for entry in meta.get("managedFields") or ()
        if not entry.get("subresource")
    ]
    known = [t for t in times if t is not None]
    if known:
        return max(known)
    return _timestamp(meta.get("creationTimestamp")) or 0.0


def _pem(secret: KubeObject, item: str) -> str:
    raw = (secret.get("data") or {}).get(item)
    if not raw:
        raise InvalidSecret(f"has no {item}")
    try:
        return base64.b64decode(raw, validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError):
        raise InvalidSecret(f"{item} is not base64-encoded PEM") from None


def tls_secret_pem(secret: KubeObject | None) -> tuple[str, str]:
    """
    The certificate chain and key PEM of a ``kubernetes.io/tls`` Secret.
    Whether they parse and match is translation's check.

    :raises InvalidSecret: missing, another type, or an item missing or
        not base64-encoded text.
    """
    if secret is None:
        raise InvalidSecret("not found")
    if secret.get("type") != "kubernetes.io/tls":
        raise InvalidSecret(f"has type {secret.get('type')!r}, not kubernetes.io/tls")
    return _pem(secret, "tls.crt"), _pem(secret, "tls.key")


def replica_identity(environ: Mapping[str, str] = os.environ) -> str:
    """
    This replica's name in leader election: the pod's name (``POD_NAME``
    from the downward API) or the host name, plus a random suffix so a
    restarted container never inherits its predecessor's lease.
    """
    base = environ.get("POD_NAME") or socket.gethostname()
    return f"{base}_{uuid.uuid4().hex[:8]}"
