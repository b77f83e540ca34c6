"""
Liveness and readiness of the gateway process.

Ready means: a configuration generation is live and the process is not
draining. Kubernetes routes traffic by readiness, so draining flips it
first, before any listener stops accepting.
"""

from __future__ import annotations


class Health:
    """Shared, mutable readiness state (written by the reconciler and shutdown)."""

    def __init__(self) -> None:
        self.generation: int = 0
        self.draining: bool = False

    @property
    def ready(self) -> bool:
        """A configuration is live and we are not shutting down."""
        return self.generation > 0 and not self.draining

    def describe(self) -> str:
        """A one-line reason, for probe bodies and logs."""
        if self.draining:
            return "draining: shutting down"
        if self.generation == 0:
            return "not ready: no configuration loaded yet"
        return f"ready: configuration generation {self.generation}"
