"""
The effective configuration as JSON for the admin ``/config`` endpoint:
every route with the source object it came from and what it shadows,
problems, and certificates without their keys.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any


def _time(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat().replace("+00:00", "Z")


def describe_generation(generation: Any) -> dict[str, Any]:
    """A JSON-ready description of one generation (no secrets)."""
    if generation is None:
        return {"generation": 0, "routes": [], "problems": [], "shadowed": [], "certificates": []}
    config = generation.config
    routes = []
    for entry in config.routes:
        route: dict[str, Any] = {
            "host": entry.host or "*",
            "path": entry.path,
            "match": entry.match,
            "kind": entry.kind,
            "label": entry.label,
            "backend": entry.backend.url,
            "source": str(entry.origin),
            "modified": _time(entry.modified),
            "shadows": [str(ref) for ref in entry.shadows],
        }
        if entry.operations is not None:
            route["operations"] = [
                {"name": op.name, "method": op.method, "urlTemplate": op.template}
                for op in entry.operations
            ]
        if entry.preserve_host:
            route["preserveHost"] = True
        routes.append(route)
    return {
        "generation": generation.number,
        "created": _time(generation.created),
        "routes": routes,
        "problems": [{"object": str(p.ref), "message": p.message} for p in config.problems],
        "shadowed": [
            {
                "host": s.key[0] or "*",
                "match": s.key[1],
                "path": s.key[2],
                "winner": str(s.winner),
                "loser": str(s.loser),
            }
            for s in config.shadowed
        ],
        "certificates": [
            {"object": str(c.ref), "hosts": list(c.hosts), "default": c.is_default}
            for c in config.certificates
        ],
    }
