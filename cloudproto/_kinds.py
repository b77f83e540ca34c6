"""
The entity kinds a gateway receives, the snapshot list each travels in, and
the fields of each that are secret.

A snapshot (``GET /gateways/{id}/configuration``) is
``{"revision": N, "apis": [...], "products": [...], ...}``: one list per
kind, named here. A change event names its kind (``{"kind": "api", "id":
..., "operation": "upsert"|"delete", "body": {...}}``). Operations are not a
kind of their own on the wire: they travel inside their API
(``apis[].operations``), so a change to one is an ``api`` event.

The secret fields are what a gateway must never write in clear (its backup)
or show (logs, ``/config``): subscription keys, the values of named values
marked secret, certificate private keys.
"""

from __future__ import annotations

from typing import Any, Mapping

__all__ = ["ENTITY_LISTS", "KINDS", "SECRET_FIELDS", "list_of", "secret_fields"]

#: Event kind → snapshot list name.
ENTITY_LISTS: Mapping[str, str] = {
    "api": "apis",
    "product": "products",
    "subscription": "subscriptions",
    "policy": "policies",
    "namedValue": "namedValues",
    "certificate": "certificates",
    "hostname": "hostnames",
}

#: The kinds, in the order of the snapshot.
KINDS: tuple[str, ...] = tuple(ENTITY_LISTS)

#: Snapshot list name → the fields that are always secret in its entities.
SECRET_FIELDS: Mapping[str, tuple[str, ...]] = {
    "subscriptions": ("primaryKey", "secondaryKey"),
    "certificates": ("key",),
}


def list_of(kind: Any) -> str | None:
    """The snapshot list of an event ``kind``; ``None`` for an unknown kind."""
    return ENTITY_LISTS.get(kind) if isinstance(kind, str) else None


def secret_fields(list_name: str, entity: Mapping[str, Any]) -> tuple[str, ...]:
    """
    The secret fields present in ``entity`` of snapshot list ``list_name``:
    :data:`SECRET_FIELDS`, plus ``value`` of a named value marked
    ``secret``. A certificate's ``pem`` counts too when it carries a
    private key (the management API accepts the key inside it).
    """
    fields = [f for f in SECRET_FIELDS.get(list_name, ()) if f in entity]
    if list_name == "namedValues" and entity.get("secret") is True and "value" in entity:
        fields.append("value")
    if list_name == "certificates" and "PRIVATE KEY" in str(entity.get("pem", "")):
        fields.append("pem")
    return tuple(fields)
