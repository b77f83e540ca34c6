"""
The pool's place in the service tree: it closes its idle connections only
once the traffic listeners have drained.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred

from ._pool import BackendPool

__all__ = ["PoolService"]


class PoolService(Service):
    """
    Closes ``pool``'s idle backend connections when stopped. Added to the
    gateway's service tree *before* the listeners, so that (services stop
    in reverse order) it stops after they drained.
    """

    def __init__(self, pool: BackendPool) -> None:
        self.pool = pool

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        return self.pool.close()
