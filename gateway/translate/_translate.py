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
from typing import Any, Callable, Iterable
from urllib.parse import urlsplit

from gateway.memo import BuildMemo, remembered
from gateway.model import (
    Api,
    Certificate,
    GatewayRoutes,
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
from ._gatewayapi import gateway_entries
from ._pipelines import CompiledPolicy, PolicyTable, api_pipelines, build_policy_table
from ._subscriptions import ApiAccess, SubscriptionIndex, build_index
from ._variants import ListenerClaim

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


#: API management objects: they give no routes of their own; translation
#: compiles them into the APIs' pipelines and the subscription key index.
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
    Validate every object, build route entries, and merge conflicts;
    compile the policies into each API's pipelines and index the
    subscription keys.

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
        build, and the compiled policy documents whose object and named
        values did not change (the result is the same with or without it;
        only faster when one object among thousands changed).
    """
    found: list[Problem] = list(problems)
    candidates: dict[tuple[str, str, str], list[RouteEntry]] = {}
    certificates: list[CertificateEntry] = []
    last_valid = {c.ref: c for c in previous.certificates} if previous is not None else {}
    management: dict[type, list[SourceObject]] = {kind: [] for kind in _MANAGEMENT}
    served: list[SourceObject] = []
    gateways: list[SourceObject] = []
    for obj in sorted(objects, key=lambda o: o.ref.order):
        body = obj.body
        if isinstance(body, GatewayRoutes):
            gateways.append(obj)
        elif isinstance(body, Certificate):
            _certificate(obj, body, now, last_valid.get(obj.ref), certificates, found, memo)
        elif isinstance(body, _MANAGEMENT):
            management[type(body)].append(obj)
        else:
            served.append(obj)
    context = _Management.build(served, management, found, memo)
    for obj in served:
        body = obj.body
        tag: object = "entries"
        compute: Callable[[], tuple[Any, ...]] = lambda: _object_entries(obj)  # noqa: E731
        if isinstance(body, Api):
            # The API's entries with its access facts and pipelines, in one
            # memo entry keyed by everything they depend on: the object
            # (identity), its access facts (value) and the compiled policy
            # documents involved (identity; the result holds them, so their
            # ids stay unique while the entry lives). An unchanged API keeps
            # the very same entries and operations, which the route
            # table's memo reuses in turn.
            access, involved = context.inputs(body)
            tag = ("entries", access, tuple(map(id, involved)))
            compute = lambda: context.attach(obj, body, access, involved)  # noqa: E731
        try:
            result = remembered(memo, obj, tag, compute, (InvalidObject,))  # type: ignore[arg-type]
        except InvalidObject as e:
            found.append(Problem(obj.ref, str(e)))
            continue
        entries, object_problems = result[0], result[1]
        found.extend(object_problems)
        for entry in entries:
            candidates.setdefault(entry.key, []).append(entry)
    claims: tuple[ListenerClaim, ...] = ()
    if gateways:
        entries, gateway_problems, claims = _gateway_routes(gateways, memo)
        found.extend(gateway_problems)
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
        subscriptions=context.index,
        secrets=context.policies.secrets,
        claims=claims,
    )


def _gateway_routes(
    gateways: list[SourceObject], memo: BuildMemo | None
) -> tuple[tuple[RouteEntry, ...], tuple[Problem, ...], tuple[ListenerClaim, ...]]:
    """
    The Gateway API entries, problems and claims. They depend on all
    Gateway bodies together (rules of several Gateways share entries), so
    they are grouped again on every build; the memo keeps the compiled
    variant of each unchanged rule and the entry of each unchanged group
    (:func:`gateway_entries`), which is what costs.
    """
    return gateway_entries(gateways, parse_backend, memo)


def _newest(objs: list[SourceObject], name: str, problems: list[Problem]) -> SourceObject:
    """
    One object among several with the same id: the newest, then the
    smallest ref (the routes' rule); the others are reported.
    """
    ranked = sorted(objs, key=lambda o: (-o.modified, o.ref.order))
    for loser in ranked[1:]:
        problems.append(Problem(loser.ref, f"{ranked[0].ref} is newer for the same id "
                                           f"{name!r}; this one is not applied"))
    return ranked[0]


def _by_name(objs: Iterable[SourceObject], problems: list[Problem]) -> dict[str, SourceObject]:
    groups: dict[str, list[SourceObject]] = {}
    for obj in objs:
        groups.setdefault(obj.body.name, []).append(obj)  # type: ignore[union-attr]
    return {name: _newest(group, name, problems) for name, group in sorted(groups.items())}


class _Management:
    """
    The API management part of one translation: products, the compiled
    policies, the subscription key index, and each API's access facts.
    """

    def __init__(self, products: dict[str, Product], policies: PolicyTable, index: SubscriptionIndex,
                 apis: dict[str, Api]) -> None:
        self.products = products
        self.policies = policies
        self.index = index
        self.apis = apis
        membership: dict[str, list[str]] = {}
        for product_id, product in products.items():
            if product.state != "published":
                continue
            for api_id in product.api_ids:
                membership.setdefault(api_id, []).append(product_id)
        self.membership = {a: tuple(sorted(p)) for a, p in membership.items()}

    @classmethod
    def build(cls, served: list[SourceObject], management: dict[type, list[SourceObject]],
              problems: list[Problem], memo: BuildMemo | None) -> _Management:
        api_objects = _by_name((o for o in served if isinstance(o.body, Api)), [])
        apis: dict[str, Api] = {n: o.body for n, o in api_objects.items()}  # type: ignore[misc]
        products = {n: o.body for n, o in _by_name(management[Product], problems).items()}
        for name, product in products.items():
            unknown = [a for a in product.api_ids if a not in apis]  # type: ignore[union-attr]
            if unknown:
                ref = next(o.ref for o in management[Product] if o.body is product)
                problems.append(Problem(ref, f"no API {', '.join(map(repr, unknown))}; "
                                             "left out of the product"))
        named = {n: o.body for n, o in _by_name(management[NamedValue], problems).items()}
        policies = build_policy_table(management[Policy], named, apis, products,  # type: ignore[arg-type]
                                      problems, memo)
        subscriptions = _by_name(management[Subscription], problems)
        index = build_index(subscriptions.values(), products, frozenset(apis),  # type: ignore[arg-type]
                            problems)
        return cls(products, policies, index, apis)  # type: ignore[arg-type]

    def access(self, api: Api) -> ApiAccess:
        products = self.membership.get(api.name, ())
        open_products = [p for p in products if not self.products[p].subscription_required]
        return ApiAccess(
            api_id=api.name,
            subscription_required=api.subscription_required,
            key_names=api.subscription_key_parameter_names,
            products=products,
            open_product=open_products[0] if open_products else None,
        )

    def inputs(self, api: Api) -> tuple[ApiAccess, tuple[CompiledPolicy | None, ...]]:
        """
        What an API's pipelines depend on: its access facts and the
        compiled policies of its scopes, in :func:`api_pipelines`' order.
        """
        access = self.access(api)
        table = self.policies
        involved: tuple[CompiledPolicy | None, ...] = (
            table.global_,
            *(table.products.get(p) for p in access.products),
            table.apis.get(api.name),
            *(table.operations.get((api.name, op.name)) for op in api.operations),
        )
        return access, involved

    def attach(
        self,
        obj: SourceObject,
        api: Api,
        access: ApiAccess,
        involved: tuple[CompiledPolicy | None, ...],
    ) -> tuple[tuple[RouteEntry, ...], tuple[Problem, ...], tuple[CompiledPolicy | None, ...]]:
        """
        The API's route entries with its access facts and pipelines (or
        its policy error), its problems, and ``involved`` (kept with a
        memoized result; see :func:`translate`).

        :raises InvalidObject: the API itself is invalid.
        """
        entries, problems = _object_entries(obj)
        pipelines, error = api_pipelines(api, access.products, involved)
        operations = entries[0].operations if entries else None
        if operations is not None and pipelines is not None:
            operations = tuple(replace(op, pipelines=pipelines[op.name]) for op in operations)
        attached = tuple(
            replace(
                entry,
                access=access,
                operations=operations,
                pipelines=pipelines[""] if pipelines is not None else None,
                policy_error=error,
            )
            for entry in entries
        )
        return attached, problems, involved



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
