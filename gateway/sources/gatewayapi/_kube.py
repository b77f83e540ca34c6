"""
Small readers of raw Kubernetes objects (JSON dicts), shared by the
resolver's modules so each of them reads metadata the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

__all__ = ["GROUP", "KubeObject", "creation_time", "generation", "key", "meta", "spec"]

#: The Gateway API group.
GROUP = "gateway.networking.k8s.io"

KubeObject = Mapping[str, Any]


def meta(obj: KubeObject) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def spec(obj: KubeObject) -> Mapping[str, Any]:
    return obj.get("spec") or {}


def key(obj: KubeObject) -> str:
    """``namespace/name`` (cluster-scoped objects: ``/name``)."""
    m = meta(obj)
    return f"{m.get('namespace', '')}/{m.get('name', '')}"


def generation(obj: KubeObject) -> int | None:
    """``metadata.generation``, the ``observedGeneration`` status reports."""
    value = meta(obj).get("generation")
    return value if isinstance(value, int) else None


def creation_time(obj: KubeObject) -> float:
    """
    ``creationTimestamp`` as seconds; absent or unreadable counts as the
    newest possible, so an object whose age is unknown never outranks
    one whose age is known in the "oldest route wins" tiebreak.
    """
    text = meta(obj).get("creationTimestamp")
    if isinstance(text, str) and text:
        try:
            return datetime.fromisoformat(text).timestamp()
        except ValueError:
            pass
    return float("inf")
