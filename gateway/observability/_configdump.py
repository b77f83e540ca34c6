"""
The effective configuration as JSON for the admin ``/config`` endpoint:
every route with the source object it came from and what it shadows,
problems, and certificates without their keys (subject, names, validity,
fingerprint; never PEM).

For APIM APIs it also shows what the gateway enforces: each API's access
rules, each operation's effective policy pipeline per product context as
readable lines (secret named values shown as ``***``), a policy problem
that makes the API answer 500, and the subscriptions with key fingerprints
(never a key).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from gateway.routing import Generation
from gateway.translate import (
    ApiAccess,
    CertificateEntry,
    Pipelines,
    SubscriptionEntry,
    Variant,
    describe_pipeline,
)


def _time(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat().replace("+00:00", "Z")


def describe_generation(generation: Generation | None) -> dict[str, Any]:
    """A JSON-ready description of one generation (no secrets)."""
    if generation is None:
        return {
            "generation": 0,
            "routes": [],
            "problems": [],
            "shadowed": [],
            "certificates": [],
            "defaultCertificate": None,
            "subscriptions": [],
        }
    config = generation.config
    secrets = config.secrets
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
        if entry.access is not None:
            route["access"] = _access(entry.access)
        if entry.policy_error is not None:
            route["policyError"] = entry.policy_error
        if entry.pipelines is not None:
            route["pipelines"] = _pipelines(entry.pipelines, secrets)
        if entry.operations is not None:
            operations = []
            for op in entry.operations:
                operation: dict[str, Any] = {
                    "name": op.name, "method": op.method, "urlTemplate": op.template,
                }
                if op.pipelines is not None:
                    operation["pipelines"] = _pipelines(op.pipelines, secrets)
                operations.append(operation)
            route["operations"] = operations
        if entry.preserve_host:
            route["preserveHost"] = True
        if entry.https_redirect:
            route["httpsRedirect"] = True
        if entry.schemes is not None:
            route["protocols"] = sorted(s.decode() for s in entry.schemes)
        if entry.endpoints is not None:
            route["endpoints"] = [b.url for b in entry.endpoints]
        if entry.variants is not None:
            route["variants"] = [_variant(v) for v in entry.variants]
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
        "certificates": [_certificate(c, config.default_certificate) for c in config.certificates],
        "defaultCertificate": _default_certificate(generation),
        "subscriptions": [_subscription(s) for s in config.subscriptions.entries],
        "listenerClaims": [
            {"host": c.hostname or "*", "scheme": c.scheme.decode()} for c in config.claims
        ],
    }


def _variant(variant: Variant) -> dict[str, Any]:
    """One Gateway API rule match of an entry, in the order it is tried."""
    out: dict[str, Any] = {"label": variant.label, "source": str(variant.origin)}
    if variant.schemes is not None:
        out["protocols"] = sorted(s.decode() for s in variant.schemes)
    if variant.method is not None:
        out["method"] = variant.method
    for name, values in (("headers", variant.headers), ("query", variant.query)):
        if values:
            out[name] = [
                {"name": m.name, "value": m.value, "regex": m.pattern is not None} for m in values
            ]
    if variant.redirect is not None:
        r = variant.redirect
        out["redirect"] = {
            "scheme": r.scheme, "hostname": r.hostname, "port": r.port, "status": r.status,
            "path": None if r.path is None else {"kind": r.path.kind, "value": r.path.value},
        }
    if variant.rewrite is not None:
        w = variant.rewrite
        out["rewrite"] = {
            "hostname": w.hostname,
            "path": None if w.path is None else {"kind": w.path.kind, "value": w.path.value},
        }
    for name, edits in (("requestHeaders", variant.request_headers),
                        ("responseHeaders", variant.response_headers)):
        if edits is not None:
            out[name] = {
                "set": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in edits.set],
                "add": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in edits.add],
                "remove": [k.decode("latin-1") for k in edits.remove],
            }
    out["backends"] = [
        {
            "url": None if b.backend is None else b.backend.url,
            "weight": b.weight,
            **({"problem": b.problem} if b.problem else {}),
        }
        for b in variant.backends
    ]
    return out


def _access(access: ApiAccess) -> dict[str, Any]:
    """What the subscription check of one API looks at."""
    return {
        "api": access.api_id,
        "subscriptionRequired": access.subscription_required,
        "keyHeader": access.key_names.header,
        "keyQuery": access.key_names.query,
        "products": list(access.products),
        "openProduct": access.open_product,
    }


def _pipelines(pipelines: Pipelines, secrets: frozenset[str]) -> list[dict[str, Any]]:
    """
    The effective pipeline per product context (``product`` ``null``: a
    request in no product's context), as the lines of
    :func:`~gateway.translate.describe_pipeline`, secrets masked. The
    no-product context first, then by product id, so the dump is stable.
    """
    return [
        {"product": product, "policies": list(describe_pipeline(pipeline, secrets))}
        for product, pipeline in sorted(
            pipelines.items(), key=lambda kv: (kv[0] is not None, kv[0] or "")
        )
    ]


def _subscription(entry: SubscriptionEntry) -> dict[str, Any]:
    """One subscription: its scope, state and key fingerprints; never a key."""
    return {
        "id": entry.id,
        "object": str(entry.ref),
        "state": entry.state,
        "scope": entry.scope,
        "products": list(entry.products),
        "admittedKeys": entry.admitted_keys,
        "keyFingerprints": list(entry.fingerprints),
    }


def _certificate(entry: CertificateEntry, default: Any) -> dict[str, Any]:
    """One certificate: what it is and where it is served; never its key."""
    return {
        "object": str(entry.ref),
        "hosts": list(entry.served_hosts),
        "shadowedHosts": list(entry.shadowed_hosts),
        "default": entry.ref == default,
        "subject": entry.subject,
        "issuer": entry.issuer,
        "sans": list(entry.sans),
        "notBefore": _time(entry.not_before),
        "notAfter": _time(entry.not_after),
        "fingerprintSha256": entry.fingerprint,
        "modified": _time(entry.modified),
        "keptLastValid": entry.kept,
    }


def _default_certificate(generation: Generation) -> dict[str, Any] | None:
    """
    The certificate served for unknown or absent server names, when the
    gateway serves HTTPS: the configured default or the generated one.
    """
    sni = getattr(generation, "sni", None)
    if sni is None:
        default = generation.config.default_certificate
        return None if default is None else {"object": str(default)}
    entry = sni.default
    return {
        "object": str(entry.ref),
        "subject": entry.subject,
        "notAfter": _time(entry.not_after),
        "fingerprintSha256": entry.fingerprint,
    }
