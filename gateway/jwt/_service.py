"""The key cache's place in the service tree: its timers and fetches end when the gateway stops."""

from __future__ import annotations

from twisted.application.service import Service

from ._openid import OpenIdKeys

__all__ = ["OpenIdKeysService"]


class OpenIdKeysService(Service):
    """Stops ``keys``' refresh timers and running fetches when stopped."""

    def __init__(self, keys: OpenIdKeys) -> None:
        self.keys = keys

    def stopService(self) -> None:
        super().stopService()
        self.keys.stop()
