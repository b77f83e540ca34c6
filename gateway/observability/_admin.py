"""
The admin port: ``/metrics`` (Prometheus text), ``/healthz`` (the process
is alive), ``/readyz`` (a configuration is live and we are not draining),
``/config`` (the effective configuration).

It listens apart from traffic so probes and scrapes never queue behind
proxied requests, and so it can be bound to a private interface.
"""

from __future__ import annotations

import json
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from twisted.web.resource import Resource

from ._configdump import describe_generation
from ._health import Health
from ._metrics import GatewayMetrics


class AdminResource(Resource):
    """Leaf resource answering the admin paths; anything else is 404."""

    isLeaf = True

    def __init__(self, metrics: GatewayMetrics, health: Health, generations: Any) -> None:
        super().__init__()
        self._metrics = metrics
        self._health = health
        self._generations = generations

    def render_GET(self, request: Any) -> bytes:
        path = request.path.rstrip(b"/") or b"/"
        if path == b"/metrics":
            request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode())
            return generate_latest(self._metrics.registry)
        if path == b"/healthz":
            return self._text(request, 200, "ok")
        if path == b"/readyz":
            return self._text(request, 200 if self._health.ready else 503, self._health.describe())
        if path == b"/config":
            request.setHeader(b"content-type", b"application/json")
            dump = describe_generation(self._generations.current)
            return json.dumps(dump, indent=2, sort_keys=True).encode() + b"\n"
        return self._text(request, 404, "not found: try /metrics, /healthz, /readyz, /config")

    render_HEAD = render_GET

    def _text(self, request: Any, status: int, text: str) -> bytes:
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return text.encode() + b"\n"
