"""
The live instances of each gateway, from their heartbeats.

Held in memory, not in the database: liveness is a fact about the last few
minutes, and a restarted service relearns it within one heartbeat interval
(the instances beat every interval whatever happens). An instance is alive
while its last heartbeat is at most three intervals old, as the upstream
portal counts nodes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._times import iso

__all__ = ["Instances"]


@dataclass
class _Instance:
    instance_id: str
    hostname: str
    version: str
    revision: int
    seen: float
    first_seen: float


class Instances:
    """
    :param clock: ``seconds()``, the time of heartbeats.
    :param interval: the heartbeat interval, in seconds.
    :param limit: most instances kept per gateway (a token holder cannot
        fill the memory with made-up instance ids).
    """

    def __init__(self, clock: Any, interval: float = 60.0, limit: int = 1000) -> None:
        self._clock = clock
        self.interval = interval
        self._limit = limit
        self._gateways: dict[str, dict[str, _Instance]] = {}

    def heartbeat(self, gateway_id: str, instance_id: str, hostname: str, version: str,
                  revision: int) -> int:
        """Record a heartbeat; returns how many instances of the gateway are alive."""
        now = self._clock.seconds()
        instances = self._prune(gateway_id)
        known = instances.get(instance_id)
        if known is None and len(instances) >= self._limit:
            oldest = min(instances.values(), key=lambda i: i.seen)
            del instances[oldest.instance_id]
        first = known.first_seen if known else now
        instances[instance_id] = _Instance(instance_id, hostname, version, revision, now, first)
        self._gateways[gateway_id] = instances
        return len(instances)

    def _prune(self, gateway_id: str) -> dict[str, _Instance]:
        deadline = self._clock.seconds() - 3 * self.interval
        instances = {
            k: v for k, v in self._gateways.get(gateway_id, {}).items() if v.seen >= deadline
        }
        if instances:
            self._gateways[gateway_id] = instances
        else:
            self._gateways.pop(gateway_id, None)
        return instances

    def alive(self, gateway_id: str) -> list[dict[str, Any]]:
        """The live instances of a gateway, by id, as the management API lists them."""
        return [
            {
                "instanceId": i.instance_id,
                "hostname": i.hostname,
                "version": i.version,
                "revision": i.revision,
                "lastHeartbeat": iso(i.seen),
                "firstHeartbeat": iso(i.first_seen),
            }
            for _, i in sorted(self._prune(gateway_id).items())
        ]

    def forget(self, gateway_id: str) -> None:
        """The gateway was deleted."""
        self._gateways.pop(gateway_id, None)
