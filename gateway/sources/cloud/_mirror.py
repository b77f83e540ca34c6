"""
The service's raw entities as the gateway holds them: a snapshot replaces
them, each change event updates them in order.

Raw, because the backup is made of them (so a gateway restored from it
sees exactly what the service sent, including kinds that have no model
objects yet: products, subscriptions, policies, named values) and because
decoding is re-done from them after every change. Pure: no I/O, no Twisted.
"""

from __future__ import annotations

from typing import Any

from cloudproto import ENTITY_LISTS, list_of

__all__ = ["Entities", "Mirror"]

#: Snapshot list name → entity id → the entity as delivered.
Entities = dict[str, dict[str, dict[str, Any]]]


class Mirror:
    """
    The entities of one gateway at one revision.

    :ivar entities: by snapshot list name, then id.
    :ivar revision: the revision they are at (``None`` before any).
    :ivar gateway_id: the gateway they are of.
    """

    def __init__(self) -> None:
        self.entities: Entities = {}
        self.revision: int | None = None
        self.gateway_id: str | None = None

    @property
    def loaded(self) -> bool:
        """Whether a snapshot (from the service or a backup) has been applied."""
        return self.revision is not None

    def apply_snapshot(self, snapshot: dict[str, Any], gateway_id: str) -> None:
        """
        Replace everything with ``snapshot`` (``{"revision": N, "apis": [...], ...}``).
        Entities that are not objects or have no string ``id`` are dropped:
        they could be neither updated nor deleted by an event.
        """
        entities: Entities = {}
        for name in ENTITY_LISTS.values():
            items = snapshot.get(name)
            entities[name] = {
                e["id"]: e
                for e in (items if isinstance(items, list) else [])
                if isinstance(e, dict) and isinstance(e.get("id"), str)
            }
        self.entities = entities
        self.revision = int(snapshot["revision"])
        self.gateway_id = gateway_id

    def apply_event(self, event: Any) -> bool:
        """
        Apply one change event (``{"kind", "id", "operation", "body"}``).

        :return: whether it was understood (an unknown kind is skipped, so
            a newer service can add kinds without breaking older gateways).
        """
        if not isinstance(event, dict):
            return False
        name = list_of(event.get("kind"))
        entity_id = event.get("id")
        if name is None or not isinstance(entity_id, str):
            return False
        table = self.entities.setdefault(name, {})
        if event.get("operation") == "delete":
            table.pop(entity_id, None)
        elif isinstance(event.get("body"), dict):
            table[entity_id] = event["body"]
        return True

    def snapshot(self) -> dict[str, Any]:
        """The entities as a snapshot document (lists sorted by id), for the backup."""
        document: dict[str, Any] = {"gatewayId": self.gateway_id, "revision": self.revision}
        for name, table in self.entities.items():
            document[name] = [table[k] for k in sorted(table)]
        return document
