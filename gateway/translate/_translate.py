"""
Translation: source objects in, one validated :class:`GatewayConfig` out.

Pure and deterministic: no clock, no I/O, no logging. The result depends on
its inputs only (the set of objects, the time given for certificate expiry,
the previous configuration for certificates whose new version is invalid),
never on the order the objects arrived in, so a restart (which loads them
in a different order) gives the same table.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Iterable
from urllib.parse import urlsplit

from gateway.memo import BuildMemo, remembered
from gateway.model import (
    Api,
    Certificate,
    NamedValue,
    ObjectRef,
    Policy,
    Product,
    RouteSet,
    SourceObject,
    Subscription,
)

from ._certificates import (
    InvalidCertificate,
    certificate_entry,
    check_expiry,
    keep_previous,
    resolve_certificates,
)
from ._config import (
    EXACT,
    KIND_API,
    KIND_ROUTE,
    PREFIX,
    Backend,
    CertificateEntry,
    GatewayConfig,
    OperationSpec,
    Problem,
    RouteEntry,
    Shadowing,
)

_DEFAULT_PORTS = {"http": 80, "https": 443}
_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_HOST_RE = re.compile(rf"^(\*\.)?{_LABEL}(\.{_LABEL})*$")
_METHOD_RE = re.compile(r"^([A-Z]+|\*)$")
_PARAM_RE = re.compile(r"^\{[A-Za-z_][A-Za-z0-9_-]*\}$")


class InvalidObject(ValueError):
    """One part of a source object cannot be served; the message says why."""


def parse_backend(url: str) -> Backend:
    """
    Parse a backend URL (``http://host:port/base``) once per configuration.

    :raises InvalidObject: not an absolute http(s) URL with a host.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise InvalidObject(f"invalid backend URL {url!r}: {e}") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise InvalidObject(f"backend URL {url!r} must start with http:// or https://")
    host = parts.hostname
    if not host:
        raise InvalidObject(f"backend URL {url!r} has no host")
    if parts.query or parts.fragment:
        raise InvalidObject(f"backend URL {url!r} must not have a query or fragment")
    default = _DEFAULT_PORTS[scheme]
    port = default if port is None else port
    shown = f"[{host}]" if ":" in host else host
    authority = shown if port == default else f"{shown}:{port}"
    return Backend(scheme, host, port, parts.path.rstrip("/"), authority)


def normalize_host(host: str | None) -> str:
    """
    ``None``/empty → ``""`` (any host); otherwise a lower-case DNS name,
    optionally with a leading ``*.`` for exactly one label.

    :raises InvalidObject: not a valid host name or wildcard.
    """
    if not host:
        return ""
    lowered = host.strip().lower().rstrip(".")
    if not _HOST_RE.match(lowered):
        raise InvalidObject(f"invalid host {host!r}")
    return lowered


def _normalize_path(path: str, match: str) -> str:
    if not path.startswith("/"):
        raise InvalidObject(f"path {path!r} must start with '/'")
    if any(c in path for c in "?#") or any(ord(c) <= 32 for c in path):
        raise InvalidObject(f"path {path!r} must not contain '?', '#', spaces or controls")
    if match == PREFIX:
        return path.rstrip("/") or "/"
    return path


def parse_template(template: str) -> tuple[str, ...]:
    """
    Split an operation URL template into segments (see :class:`OperationSpec`).
    A query part (``/search?q={q}``) is ignored for matching.

    :raises InvalidObject: not starting with ``/`` or a malformed ``{param}``.
    """
    path = template.split("?", 1)[0]
    if not path.startswith("/"):
        raise InvalidObject(f"URL template {template!r} must start with '/'")
    segments = tuple(path[1:].split("/")) if path != "/" else ()
    for seg in segments:
        if ("{" in seg or "}" in seg) and not _PARAM_RE.match(seg):
            raise InvalidObject(
                f"URL template {template!r}: a parameter must be a whole segment like {{id}}"
            )
    return segments


def _api_entries(ref: ObjectRef, modified: float, api: Api) -> list[RouteEntry]:
    backend = parse_backend(api.service_url)
    path = "/" + api.path.strip("/")
    _normalize_path(path, PREFIX)
    operations = None
    if api.operations:
        ops = []
        seen = set()
        for op in api.operations:
            method = op.method.strip().upper()
            if not _METHOD_RE.match(method):
                raise InvalidObject(f"operation {op.name!r}: invalid method {op.method!r}")
            segments = parse_template(op.url_template)
            shape = (method, tuple("{}" if _PARAM_RE.match(s) else s for s in segments))
            if shape in seen:
                raise InvalidObject(
                    f"operation {op.name!r}: {method} {op.url_template} duplicates another operation"
                )
            seen.add(shape)
            ops.append(OperationSpec(op.name, method, op.url_template, segments))
        operations = tuple(ops)
    hosts = sorted({normalize_host(h) for h in api.hostnames}) or [""]
    protocols = {p.strip().lower() for p in api.protocols}
    if not protocols or not protocols <= {"http", "https"}:
        raise InvalidObject(f"protocols must be http and/or https, not {list(api.protocols)!r}")
    schemes = None if protocols == {"http", "https"} else frozenset(p.encode() for p in protocols)
    return [
        RouteEntry(
            host=host,
            path=path,
            match=PREFIX,
            kind=KIND_API,
            backend=backend,
            origin=ref,
            modified=modified,
            label=f"api:{api.name}",
            operations=operations,
            schemes=schemes,
        )
        for host in hosts
    ]


def _route_entries(
    ref: ObjectRef, modified: float, routes: RouteSet, problems: list[Problem]
) -> list[RouteEntry]:
    entries: dict[tuple[str, str, str], RouteEntry] = {}
    for index, route in enumerate(routes.routes):
        where = f"route {index} ({route.host or '*'}{route.path})"
        try:
            if route.path_type not in ("Exact", "Prefix", "ImplementationSpecific"):
                raise InvalidObject(f"unknown pathType {route.path_type!r}")
            match = EXACT if route.path_type == "Exact" else PREFIX
            entry = RouteEntry(
                host=normalize_host(route.host),
                path=_normalize_path(route.path, match),
                match=match,
                kind=KIND_ROUTE,
                backend=parse_backend(route.backend),
                origin=ref,
                modified=modified,
                label=f"{ref.name}:{route.host or '*'}{route.path}",
                preserve_host=route.preserve_host,
                https_redirect=route.https_redirect,
                endpoints=_endpoints(route.endpoints),
            )
        except InvalidObject as e:
            problems.append(Problem(ref, f"{where}: {e}"))
            continue
        if entry.key in entries:
            problems.append(Problem(ref, f"{where}: duplicates an earlier route, ignored"))
            continue
        entries[entry.key] = entry
    return list(entries.values())


def _endpoints(urls: tuple[str, ...] | None) -> tuple[Backend, ...] | None:
    """
    A route's endpoints as plain data, sorted and without duplicates so that
    equal sets compare equal across generations (the balancing state, keyed
    by the set, lives in :mod:`gateway.upstream`).
    """
    if urls is None:
        return None
    return tuple(parse_backend(url) for url in sorted(set(urls)))


def _precedence(entry: RouteEntry) -> tuple[float, ObjectRef]:
    """
    Total order for conflicting routes: the newest modification time wins
    ("last one wins", DESIGN.md); on an exact tie the smallest
    :class:`ObjectRef` wins, so the outcome never depends on load order.
    """
    return (-entry.modified, entry.origin)


#: API management objects: they give no routes of their own. They are
#: compiled into the APIs' pipelines and the subscription key index (issue
#: 9); until then they are accepted and produce nothing, rather than being
#: reported as unsupported.
_MANAGEMENT = (Product, Subscription, NamedValue, Policy)


def _object_entries(obj: SourceObject) -> tuple[tuple[RouteEntry, ...], tuple[Problem, ...]]:
    """
    The route entries of one API or route set, and its problems; depends on
    the object alone, so a :class:`BuildMemo` may reuse it.

    :raises InvalidObject: the whole object is invalid.
    """
    body = obj.body
    if isinstance(body, Api):
        return tuple(_api_entries(obj.ref, obj.modified, body)), ()
    if isinstance(body, RouteSet):
        problems: list[Problem] = []
        entries = _route_entries(obj.ref, obj.modified, body, problems)
        return tuple(entries), tuple(problems)
    if isinstance(body, _MANAGEMENT):
        return (), ()
    raise InvalidObject(f"unsupported object type {type(body).__name__}")


def translate(
    objects: Iterable[SourceObject],
    *,
    problems: Iterable[Problem] = (),
    now: float | None = None,
    previous: GatewayConfig | None = None,
    memo: BuildMemo | None = None,
) -> GatewayConfig:
    """
    Validate every object, build route entries, and merge conflicts.

    An invalid object (or an invalid part of a route set) becomes a
    :class:`Problem` and is left out; everything else is served.

    :param problems: what the sources' decoders found wrong (objects that
        could not be read at all, or parts of them); reported first, with
        translation's own after them.
    :param now: the current time (seconds since the epoch) against which
        certificates are checked for expiry; ``None`` skips that check.
    :param previous: the configuration being served. A certificate object
        whose new version is invalid keeps its last valid version from it
        (if that has not expired), so a bad rotation does not take a host's
        certificate away; the problem is reported all the same.
    :param memo: reuse the entries of objects equal to those of the last
        build (the result is the same with or without it; only faster when
        one object among thousands changed).
    """
    found: list[Problem] = list(problems)
    candidates: dict[tuple[str, str, str], list[RouteEntry]] = {}
    certificates: list[CertificateEntry] = []
    last_valid = {c.ref: c for c in previous.certificates} if previous is not None else {}
    for obj in sorted(objects, key=lambda o: o.ref.order):
        body = obj.body
        if isinstance(body, Certificate):
            _certificate(obj, body, now, last_valid.get(obj.ref), certificates, found, memo)
            continue
        try:
            entries, object_problems = remembered(
                memo, obj, "entries", lambda: _object_entries(obj), (InvalidObject,)
            )
        except InvalidObject as e:
            found.append(Problem(obj.ref, str(e)))
            continue
        found.extend(object_problems)
        for entry in entries:
            candidates.setdefault(entry.key, []).append(entry)
    resolved, default = resolve_certificates(certificates)

    routes: list[RouteEntry] = []
    shadowed: list[Shadowing] = []
    for key in sorted(candidates):
        ranked = candidates[key]
        if len(ranked) == 1:
            routes.append(ranked[0])
            continue
        ranked = sorted(ranked, key=_precedence)
        winner = ranked[0]
        losers = tuple(e.origin for e in ranked[1:])
        shadowed.extend(Shadowing(key, winner.origin, loser) for loser in losers)
        routes.append(replace(winner, shadows=losers))
    return GatewayConfig(
        routes=tuple(routes),
        problems=tuple(found),
        shadowed=tuple(shadowed),
        certificates=resolved,
        default_certificate=default,
    )


def _certificate(
    obj: SourceObject,
    body: Certificate,
    now: float | None,
    last_valid: CertificateEntry | None,
    certificates: list[CertificateEntry],
    problems: list[Problem],
    memo: BuildMemo | None = None,
) -> None:
    """
    Validate one certificate object into ``certificates`` and ``problems``.
    Parsing and checking a certificate depends on the object alone and is
    memoized; only the expiry is checked against ``now`` on every build.
    """
    try:
        entry, host_problems = remembered(
            memo,
            obj,
            "certificate",
            lambda: certificate_entry(
                obj.ref, body, modified=obj.modified, normalize_host=normalize_host
            ),
            (InvalidCertificate,),
        )
        check_expiry(entry, now)
    except InvalidCertificate as e:
        kept = keep_previous(last_valid, now)
        if kept is None:
            problems.append(Problem(obj.ref, f"{e}; its hosts fall back to the default certificate"))
            return
        problems.append(
            Problem(
                obj.ref,
                f"{e}; its last valid version (sha256 {kept.fingerprint[:23]}...) keeps serving",
            )
        )
        certificates.append(kept)
        return
    problems.extend(host_problems)
    certificates.append(entry)
