"""
ReferenceGrant: the consent of a namespace's owner to be referenced from
another namespace.

A reference from an HTTPRoute to a Service in another namespace, or from
a Gateway to a Secret in another namespace, is allowed only when a
ReferenceGrant *in the target's namespace* lists the referrer's group,
kind and namespace in ``from`` and the target's group, kind and
(optionally) name in ``to``. Without it the reference is ``RefNotPermitted``:
one namespace cannot borrow another's Services or certificates on its own
say-so.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ._kube import KubeObject, meta, spec

__all__ = ["Reference", "permitted"]


@dataclass(frozen=True)
class Reference:
    """A reference from one namespace into another (core group is ``""``)."""

    from_group: str
    from_kind: str
    from_namespace: str
    to_group: str
    to_kind: str
    to_namespace: str
    to_name: str


def permitted(reference: Reference, grants: Iterable[KubeObject]) -> bool:
    """Whether a reference is allowed: same namespace, or a matching grant exists."""
    if reference.from_namespace == reference.to_namespace:
        return True
    for grant in grants:
        if meta(grant).get("namespace") != reference.to_namespace:
            continue
        body = spec(grant)
        if not any(
            (entry.get("group") or "") == reference.from_group
            and entry.get("kind") == reference.from_kind
            and entry.get("namespace") == reference.from_namespace
            for entry in body.get("from") or ()
        ):
            continue
        if any(
            (entry.get("group") or "") == reference.to_group
            and entry.get("kind") == reference.to_kind
            and entry.get("name") in (None, "", reference.to_name)
            for entry in body.get("to") or ()
        ):
            return True
    return False
