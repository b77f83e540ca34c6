"""
Liveness and readiness of the gateway process.

Ready means: a configuration generation is live, no source the operator
asked for is still waiting for its first complete load (the Kubernetes
Ingress source while the API server cannot be reached: the gateway serves
its other sources meanwhile, but does not claim to be ready), and the
process is not draining. Kubernetes routes traffic by readiness, so draining flips it
first, before any listener stops accepting.
"""

from __future__ import annotations


class Health:
    """Shared, mutable readiness state (written by the reconciler and shutdown)."""

    def __init__(self) -> None:
        self.generation: int = 0
        self.draining: bool = False
        #: Sources that have not completed their first load, with why.
        self.waiting: dict[str, str] = {}

    @property
    def ready(self) -> bool:
        """A configuration is live, every source has loaded, and we are not shutting down."""
        return self.generation > 0 and not self.waiting and not self.draining

    def describe(self) -> str:
        """A one-line reason, for probe bodies and logs."""
        if self.draining:
            return "draining: shutting down"
        if self.waiting:
            reasons = "; ".join(f"{name}: {why}" for name, why in sorted(self.waiting.items()))
            return f"not ready: waiting for {reasons}"
        if self.generation == 0:
            return "not ready: no configuration loaded yet"
        return f"ready: configuration generation {self.generation}"
