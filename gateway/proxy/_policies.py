"""
The policy executor: runs a compiled :class:`~gateway.translate.policy.Pipeline`
on one request, synchronously and without I/O.

What the proxy does with it (:mod:`._policy_run`, see ``docs/policies.md``):

1. when the matched operation has pipelines, build a :class:`PolicyRequest`
   with :func:`policy_request` (nothing is built on the plain path);
2. :func:`run_inbound`: :data:`PROCEED` (forward what the view now says),
   a :class:`PolicyResponse` to answer at once, or a :class:`Failure`;
3. :func:`run_backend`: a :class:`BackendPlan` (forward-request timeout,
   fail-on-error-status-code, retry) that the caller performs; waits for
   a retry come from :func:`retry_delay` through the caller's clock;
4. :func:`run_outbound` on the backend's response headers (a
   :class:`PolicyResponse`), before any byte goes to the client;
5. a :class:`Failure` from any section goes to :func:`run_on_error`, which
   always gives the response to send (APIM's 500 envelope when there is
   no ``on-error`` section).

A :class:`PolicyResponse` whose ``body`` is ``None`` and ``message`` is set
is answered with APIM's envelope (``{"statusCode", "message",
"activityId"}``), which the caller renders because it owns the activity id.

:class:`PolicyExecutionError` is a bug upstream (a rate-limit step in a
served pipeline, a ``validate-jwt`` without a validator, an expression
raising something other than
:class:`~gateway.translate.policy.ExpressionRuntimeError`): the caller
answers 500 and logs it; the executor never skips a step it cannot run.

Per request nothing derived from configuration is recomputed: what a step
needs beyond its fields (lower-cased header names, parsed templates, CORS
sets) is computed the first time the step runs and kept in a table keyed by
the step's identity (holding the step, so the identity stays valid).
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote, unquote_plus

from twisted.internet.defer import Deferred

from gateway.translate.policy import (
    REQUEST,
    CheckHeader,
    Choose,
    Cors,
    ExpressionRuntimeError,
    ForwardRequest,
    IpFilter,
    MockResponse,
    Quota,
    RateLimit,
    RateLimitByKey,
    Retry,
    ReturnResponse,
    RewriteUri,
    SetBackendService,
    SetBody,
    SetHeader,
    SetMethod,
    SetQueryParameter,
    SetStatus,
    SetVariable,
    Step,
    Text,
    ValidateJwt,
)

from ._limits import CounterCall, Counters, Postponed, limit_step
from ._outcomes import Failure, PolicyResponse, Stop, envelope_response, joined, phrase

__all__ = [
    "PROCEED",
    "BackendPlan",
    "Failure",
    "JwtValidator",
    "PolicyExecutionError",
    "PolicyRequest",
    "PolicyResponse",
    "Proceed",
    "policy_request",
    "retry_delay",
    "run_backend",
    "run_inbound",
    "run_on_error",
    "run_outbound",
]


class PolicyExecutionError(Exception):
    """A pipeline the executor must not run: a bug upstream; answer 500 and log it."""


class Proceed:
    """Go on: the section ran to its end (the request view holds the changes)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "PROCEED"


PROCEED = Proceed()


@dataclass(frozen=True, slots=True)
class BackendPlan:
    """
    How to forward, for the caller (the executor does no I/O).

    :ivar forward: the ``forward-request`` to perform; ``None``: the
        pipeline forwards nothing (APIM answers an empty 200, then runs
        ``outbound``).
    :ivar retry: the ``retry`` around ``forward-request``, if any: after a
        failed attempt, :func:`retry_delay` says whether and when to retry.
    """

    forward: ForwardRequest | None
    retry: Retry | None = None


class JwtValidator(Protocol):
    """
    Checks a token against a ``validate-jwt`` step (signature with the
    step's keys or the cached OpenID keys, issuers, audiences, claims,
    expiry). Must not block: keys are fetched in the background.
    """

    def validate(self, token: str, step: ValidateJwt, request: PolicyRequest) -> Mapping[str, object] | str:
        """The token's claims, or an error message (the token is refused)."""


class PolicyRequest:
    """
    The request as policies see and change it, and the
    :class:`~gateway.translate.policy.PolicyContext` expressions read.

    :ivar path: the path below the backend base URL, as received
        (percent-encoded), starting with ``/``.
    :ivar headers: ``(lower-case name, value)`` pairs in order; names are
        lower-cased once when the view is built, so lookups compare strings.
    :ivar params: the operation's captured template parameters.
    :ivar backend_url: ``None``: the route's backend; else set by
        ``set-backend-service``.
    :ivar body: ``None``: the client's body; else set by ``set-body``.
    :ivar response_headers: headers ``cors`` adds to whatever response goes out.
    """

    __slots__ = (
        "method", "path", "headers", "ip_address", "params", "variables", "subscription_id",
        "product_id", "backend_url", "body", "last_error", "status", "response_headers",
        "_raw_query", "_query", "_ip", "cors_preflight", "original_method", "api_id",
        "operation_id", "response_status", "postponed", "cors_answered",
    )

    def __init__(
        self,
        method: str,
        path: str,
        query: str = "",
        headers: list[tuple[str, str]] | None = None,
        ip_address: str = "",
        params: Mapping[str, str] = {},
        subscription_id: str | None = None,
        product_id: str | None = None,
    ) -> None:
        self.method = method
        #: the method as received: a method set by a policy is checked
        #: before it goes on a request line (``is`` tells them apart)
        self.original_method = method
        self.path = path
        self.headers: list[tuple[str, str]] = headers if headers is not None else []
        self.ip_address = ip_address
        self.params = params
        self.variables: dict[str, object] = {}
        self.subscription_id = subscription_id
        self.product_id = product_id
        self.backend_url: str | None = None
        self.body: bytes | None = None
        self.last_error: Failure | None = None
        self.status: tuple[int, str | None] | None = None
        self.response_headers: list[tuple[str, str]] | None = None
        self._raw_query = query
        self._query: list[tuple[str, str]] | None = None
        self._ip: tuple[int, int] | None = None
        #: the API and operation the request matched (nested limits of
        #: ``rate-limit`` and ``quota`` name them)
        self.api_id: str | None = None
        self.operation_id: str | None = None
        #: ``context.Response.StatusCode``: set once there is a response
        self.response_status: int | None = None
        #: counter increments APIM makes after the response
        #: (``rate-limit-by-key`` with an expression ``increment-condition``,
        #: ``quota`` bandwidth): see :func:`postponed_increments`
        self.postponed: list[Postponed] | None = None
        #: set when a ``cors`` policy answered a preflight (matched, or an
        #: unmatched one ended with an empty 200)
        self.cors_answered = False
        #: ``False`` when an ``OPTIONS`` operation accepted the request:
        #: ``cors`` then treats it as an actual request (APIM forwards it).
        self.cors_preflight = True

    def header(self, name: str) -> str | None:
        """The request header's values joined with ``,`` (APIM's form), or ``None``."""
        return joined(self.headers, name.lower())

    @property
    def query(self) -> list[tuple[str, str]]:
        """The query parameters, decoded, in order; parsed on first use only."""
        if self._query is None:
            self._query = [
                (unquote_plus(name), unquote_plus(value))
                for name, _, value in (p.partition("=") for p in self._raw_query.split("&") if p)
            ]
        return self._query

    @query.setter
    def query(self, value: list[tuple[str, str]]) -> None:
        self._query = value

    def query_string(self) -> str:
        """The query as sent to the backend (unchanged bytes when no policy touched it)."""
        if self._query is None:
            return self._raw_query
        return "&".join(f"{quote(n, safe='')}={quote(v, safe='')}" for n, v in self._query)

    def target(self) -> str:
        """Path and query for the request line (below the backend base URL)."""
        query = self.query_string()
        return f"{self.path}?{query}" if query else self.path

    def ip(self) -> tuple[int, int] | None:
        """The client address as ``(version, integer)``; IPv4-mapped IPv6 counts as IPv4."""
        if self._ip is None:
            try:
                address = ipaddress.ip_address(self.ip_address)
            except ValueError:
                return None
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
                address = address.ipv4_mapped
            self._ip = (address.version, int(address))
        return self._ip


def policy_request(
    request: Any,
    path: str,
    query: bytes,
    params: Mapping[str, str],
    subscription_id: str | None,
    product_id: str | None,
    drop: bytes | None = None,
) -> PolicyRequest:
    """
    The view of a twisted.web request, built once by the proxy when the
    route has pipelines.

    :param path: the path below the backend base URL (the match's rest).
    :param query: the raw query, the subscription key already taken out.
    :param drop: a request header not to show (the subscription key header,
        lower-case).
    """
    headers: list[tuple[str, str]] = []
    append = headers.append
    for name, values in request.requestHeaders.getAllRawHeaders():
        lower = name.lower()
        if lower == drop:
            continue
        text = lower.decode("latin-1")
        for value in values:
            append((text, value.decode("latin-1")))
    client = request.getClientAddress()
    return PolicyRequest(
        request.method.decode("ascii"),
        path,
        query.decode("latin-1"),
        headers,
        getattr(client, "host", "") or "",
        params,
        subscription_id,
        product_id,
    )


# --- helpers ---------------------------------------------------------------


def _text(value: Text, ctx: PolicyRequest) -> str:
    return value if isinstance(value, str) else value.text(ctx)


_DERIVED: dict[int, tuple[object, object]] = {}
_DERIVED_LIMIT = 65536


def _derived(step: Any, compute: Callable[[Any], Any]) -> Any:
    """
    What ``step`` needs beyond its fields, computed once per step object
    (keyed by identity, the step kept alive with it): pipelines are built
    once per configuration, so this fills once per generation.
    """
    entry = _DERIVED.get(id(step))
    if entry is not None and entry[0] is step:
        return entry[1]
    value = compute(step)
    if len(_DERIVED) >= _DERIVED_LIMIT:
        _DERIVED.clear()
    _DERIVED[id(step)] = (step, value)
    return value


_NAMES: dict[type, str] = {
    SetHeader: "set-header", SetQueryParameter: "set-query-parameter", RewriteUri: "rewrite-uri",
    SetBackendService: "set-backend-service", SetMethod: "set-method", SetStatus: "set-status",
    SetBody: "set-body", ReturnResponse: "return-response", MockResponse: "mock-response",
    CheckHeader: "check-header", IpFilter: "ip-filter", Cors: "cors", ValidateJwt: "validate-jwt",
    ForwardRequest: "forward-request", SetVariable: "set-variable", Choose: "choose",
    Retry: "retry", RateLimit: "rate-limit", RateLimitByKey: "rate-limit-by-key", Quota: "quota",
}


_LIMITS = (RateLimit, RateLimitByKey, Quota)


def _fail(step: Step, section: str, reason: str, message: str, response: PolicyResponse) -> Stop:
    return Stop(Failure(_NAMES[type(step)], reason, message, section, response))


# --- headers and query -------------------------------------------------------


def _set_header(headers: list[tuple[str, str]], step: SetHeader, lower: str,
                ctx: PolicyRequest) -> None:
    action = step.exists_action
    if action == "delete":
        headers[:] = [h for h in headers if h[0] != lower]
        return
    present = False
    for n, _ in headers:
        if n == lower:
            present = True
            break
    if present:
        if action == "skip":
            return
        if action == "override":
            headers[:] = [h for h in headers if h[0] != lower]
    for v in step.values:
        headers.append((lower, v if v.__class__ is str else _text(v, ctx)))


def _lower_name(step: SetHeader | CheckHeader) -> str:
    return step.name.lower()


def _set_query(ctx: PolicyRequest, step: SetQueryParameter) -> None:
    query = ctx.query
    name = step.name
    action = step.exists_action
    if action == "delete":
        ctx.query = [p for p in query if p[0] != name]
        return
    present = any(n == name for n, _ in query)
    if action == "skip" and present:
        return
    values = [(name, _text(v, ctx)) for v in step.values]
    if action == "override" and present:
        query = [p for p in query if p[0] != name]
    query.extend(values)
    ctx.query = query


# --- rewrite-uri -------------------------------------------------------------


def _parse_template(template: str) -> tuple[tuple[str | None, ...], tuple[str, ...], frozenset[str]]:
    """
    A template as alternating literals and parameter names (``None`` marks
    a literal, the next item its text), with the names, and the names of
    the template's own query parameters.
    """
    parts: list[str | None] = []
    names: list[str] = []
    i = 0
    while True:
        start = template.find("{", i)
        if start < 0:
            parts += [None, template[i:]]
            break
        end = template.find("}", start)
        if end < 0:
            parts += [None, template[i:]]
            break
        parts += [None, template[i:start], template[start + 1 : end]]
        names.append(template[start + 1 : end])
        i = end + 1
    query_names = frozenset(
        unquote_plus(p.partition("=")[0]) for p in template.partition("?")[2].split("&") if p
    )
    return tuple(parts), tuple(names), query_names


_TEMPLATES: dict[str, tuple[tuple[str | None, ...], tuple[str, ...], frozenset[str]]] = {}


def _template(text: str) -> tuple[tuple[str | None, ...], tuple[str, ...], frozenset[str]]:
    parsed = _TEMPLATES.get(text)
    if parsed is None:
        if len(_TEMPLATES) >= 4096:
            _TEMPLATES.clear()
        parsed = _TEMPLATES[text] = _parse_template(text)
    return parsed


def _rewrite(ctx: PolicyRequest, step: RewriteUri) -> None:
    """
    APIM: the template replaces the URL below the backend base URL;
    ``{name}`` takes the operation's captured parameter (or a query
    parameter of the request); with ``copy-unmatched-params`` the request's
    query parameters the template does not name are kept.
    """
    template = step.template
    parts, _names, query_names = _template(template if isinstance(template, str) else template.text(ctx))
    params = ctx.params
    out: list[str] = []
    literal = False
    fallback = False
    for part in parts:
        if part is None:
            literal = True
            continue
        if literal:
            out.append(part)
            literal = False
            continue
        value = params.get(part)
        if value is None:
            value = next((quote(v, safe="") for n, v in ctx.query if n == part), "")
            query_names = query_names | {part}
            fallback = True
        out.append(value)
    path, _, template_query = "".join(out).partition("?")
    ctx.path = path
    if not template_query and not fallback:
        if not step.copy_unmatched_params:
            ctx.query = []
        # else: the query is unchanged (the client's bytes, unparsed).
        return
    new = [(unquote_plus(n), unquote_plus(v))
           for n, _, v in (p.partition("=") for p in template_query.split("&") if p)]
    kept = [p for p in ctx.query if p[0] not in query_names] if step.copy_unmatched_params else []
    ctx.query = new + kept


def _add_response_headers(ctx: PolicyRequest, headers: list[tuple[str, str]]) -> None:
    """Headers for whatever response goes out (CORS, limit counts), after any noted before."""
    if ctx.response_headers is None:
        ctx.response_headers = headers
    else:
        ctx.response_headers.extend(headers)


# --- cors --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _CorsSets:
    any_origin: bool
    origins: frozenset[str]
    any_method: bool
    methods: frozenset[str]
    methods_text: str
    any_header: bool
    headers: frozenset[str]
    expose: str


def _cors_sets(step: Cors) -> _CorsSets:
    return _CorsSets(
        "*" in step.allowed_origins,
        frozenset(o.lower() for o in step.allowed_origins),
        "*" in step.allowed_methods,
        frozenset(step.allowed_methods),
        ", ".join(step.allowed_methods),
        "*" in step.allowed_headers,
        frozenset(h.lower() for h in step.allowed_headers),
        ", ".join(step.expose_headers),
    )


def _cors(ctx: PolicyRequest, step: Cors, state: list[bool]) -> None:
    """
    APIM's ``cors``: a preflight (``OPTIONS`` with ``Origin`` and
    ``Access-Control-Request-Method``) is answered here; an actual
    cross-origin request goes on, with the CORS headers noted for its
    response. Unmatched: an empty 200 when ``terminate-unmatched-request``,
    else the next ``cors`` is tried (a preflight nobody matched still ends
    with an empty 200 at the end of inbound: ``state[0]``).
    """
    origin = ctx.header("origin")
    if origin is None:
        return
    sets: _CorsSets = _derived(step, _cors_sets)
    origin_ok = sets.any_origin or origin.lower().rstrip("/") in sets.origins
    allow_origin = "*" if sets.any_origin and not step.allow_credentials else origin
    requested = ctx.header("access-control-request-method")
    if ctx.method == "OPTIONS" and requested is not None and ctx.cors_preflight:
        wanted = ctx.header("access-control-request-headers")
        asked = [h.strip().lower() for h in wanted.split(",") if h.strip()] if wanted else []
        ok = (origin_ok and (sets.any_method or requested.strip().upper() in sets.methods)
              and (sets.any_header or all(h in sets.headers for h in asked)))
        if not ok:
            if step.terminate_unmatched_request:
                ctx.cors_answered = True
                raise Stop(PolicyResponse(200, "OK", [], b""))
            state[0] = True
            return
        headers = [("access-control-allow-origin", allow_origin)]
        if step.allow_credentials:
            headers.append(("access-control-allow-credentials", "true"))
        headers.append(("access-control-allow-methods",
                        requested.strip().upper() if sets.any_method else sets.methods_text))
        if asked:
            headers.append(("access-control-allow-headers", ", ".join(asked)))
        if step.preflight_result_max_age:
            headers.append(("access-control-max-age", str(step.preflight_result_max_age)))
        if allow_origin != "*":
            headers.append(("vary", "Origin"))
        ctx.cors_answered = True
        raise Stop(PolicyResponse(200, "OK", headers, b""))
    if not origin_ok or not (sets.any_method or ctx.method in sets.methods):
        if step.terminate_unmatched_request:
            raise Stop(PolicyResponse(200, "OK", [], b""))
        return
    state[0] = False
    headers = [("access-control-allow-origin", allow_origin)]
    if step.allow_credentials:
        headers.append(("access-control-allow-credentials", "true"))
    if sets.expose:
        headers.append(("access-control-expose-headers", sets.expose))
    if allow_origin != "*":
        headers.append(("vary", "Origin"))
    _add_response_headers(ctx, headers)


# --- check-header, ip-filter, validate-jwt ----------------------------------


def _check_header(ctx: PolicyRequest, step: CheckHeader, section: str) -> None:
    """
    APIM's predefined errors: ``HeaderNotFound`` / ``HeaderValueNotAllowed``
    (``LastError``); the client gets ``failed-check-httpcode`` with
    ``failed-check-error-message`` in the envelope.
    """
    lower: str = _derived(step, _lower_name)
    values = [v for n, v in ctx.headers if n == lower]
    response = envelope_response(step.failed_check_httpcode, step.failed_check_error_message)
    if not values:
        raise _fail(step, section, "HeaderNotFound",
                    f"Header {step.name} was not found in the request. Access denied.", response)
    if not step.values:
        return
    joined = ",".join(values)
    candidates = [joined, *values] if len(values) > 1 else values
    if step.ignore_case:
        allowed = {v.casefold() for v in step.values}
        ok = any(c.casefold() in allowed for c in candidates)
    else:
        ok = any(c in step.values for c in candidates)
    if not ok:
        raise _fail(step, section, "HeaderValueNotAllowed",
                    f"Header {step.name} value of {joined} is not allowed. Access denied.", response)


def _ip_filter(ctx: PolicyRequest, step: IpFilter, section: str) -> None:
    """APIM: ``CallerIpNotAllowed``; the client gets 403 ``Forbidden`` in the envelope."""
    ip = ctx.ip()
    inside = ip is not None and any(
        version == ip[0] and first <= ip[1] <= last for version, first, last in step.ranges
    )
    if inside == (step.action == "allow"):
        return
    raise _fail(step, section, "CallerIpNotAllowed",
                f"Caller IP address {ctx.ip_address} is not allowed. Access denied.",
                envelope_response(403, "Forbidden"))


def _token(ctx: PolicyRequest, step: ValidateJwt) -> str | None:
    if step.header_name is not None:
        value = ctx.header(_text(step.header_name, ctx))
        if value is None:
            return None
        scheme, _, rest = value.strip().partition(" ")
        if step.require_scheme is not None:
            return rest.strip() if scheme.lower() == step.require_scheme.lower() and rest else None
        return rest.strip() if rest and scheme.lower() == "bearer" else value.strip()
    if step.query_parameter_name is not None:
        name = _text(step.query_parameter_name, ctx)
        return next((v for n, v in ctx.query if n == name), None)
    assert step.token_value is not None
    value = _text(step.token_value, ctx)
    return value or None


def _validate_jwt(ctx: PolicyRequest, step: ValidateJwt, section: str,
                  jwt: JwtValidator | None) -> None:
    if jwt is None:
        raise PolicyExecutionError("validate-jwt met without a JWT validator")
    token = _token(ctx, step)
    if token is None:
        message = step.failed_validation_error_message or "JWT not present."
        raise _fail(step, section, "TokenNotPresent", message,
                    envelope_response(step.failed_validation_httpcode, message))
    result = jwt.validate(token, step, ctx)
    if isinstance(result, str):
        message = step.failed_validation_error_message or result
        raise _fail(step, section, "TokenInvalid", result,
                    envelope_response(step.failed_validation_httpcode, message))
    if step.output_token_variable_name:
        ctx.variables[step.output_token_variable_name] = result


# --- responses -----------------------------------------------------------------


def _return_response(ctx: PolicyRequest, step: ReturnResponse) -> PolicyResponse:
    status, reason = 200, "OK"
    if step.status is not None:
        status, reason = step.status.code, _text(step.status.reason, ctx)
    headers: list[tuple[str, str]] = []
    for header in step.headers:
        _set_header(headers, header, _derived(header, _lower_name), ctx)
    body = _text(step.body.body, ctx).encode("utf-8") if step.body is not None else b""
    return PolicyResponse(status, reason, headers, body)


def _mock_response(step: MockResponse) -> PolicyResponse:
    headers = [("content-type", step.content_type)] if step.content_type else []
    return PolicyResponse(step.status_code, phrase(step.status_code), headers, b"")


# --- the interpreter ---------------------------------------------------------------


class _Run:
    """One section's run: where it is and what it may touch."""

    __slots__ = ("ctx", "section", "response", "jwt", "cors", "plan")

    def __init__(self, ctx: PolicyRequest, section: str, response: PolicyResponse | None = None,
                 jwt: JwtValidator | None = None) -> None:
        self.ctx = ctx
        self.section = section
        self.response = response
        self.jwt = jwt
        self.cors = [False]
        self.plan: BackendPlan | None = None

    def steps(self, steps: tuple[Step, ...], retry: Retry | None = None) -> bool:
        """Run ``steps``; ``True`` when a ``forward-request`` was reached (backend)."""
        ctx = self.ctx
        for step in steps:
            kind = step.__class__
            try:
                if kind is SetHeader:
                    if step.target == REQUEST:  # type: ignore[union-attr]
                        _set_header(ctx.headers, step, _derived(step, _lower_name), ctx)  # type: ignore[arg-type]
                    else:
                        _set_header(self._response().headers, step,  # type: ignore[arg-type]
                                    _derived(step, _lower_name), ctx)
                elif kind is RewriteUri:
                    _rewrite(ctx, step)  # type: ignore[arg-type]
                elif kind is SetQueryParameter:
                    _set_query(ctx, step)  # type: ignore[arg-type]
                elif kind is SetVariable:
                    value = step.value  # type: ignore[union-attr]
                    ctx.variables[step.name] = (  # type: ignore[union-attr]
                        value if isinstance(value, str) else value.evaluate(ctx))
                elif kind is Choose:
                    for branch in step.branches:  # type: ignore[union-attr]
                        c = branch.condition
                        if c if isinstance(c, bool) else c.evaluate(ctx):
                            if self.steps(branch.steps, retry):
                                return True
                            break
                    else:
                        if self.steps(step.otherwise, retry):  # type: ignore[union-attr]
                            return True
                elif kind is SetBackendService:
                    ctx.backend_url = _text(step.base_url, ctx)  # type: ignore[union-attr]
                elif kind is SetMethod:
                    ctx.method = _text(step.method, ctx).strip().upper()  # type: ignore[union-attr]
                elif kind is CheckHeader:
                    _check_header(ctx, step, self.section)  # type: ignore[arg-type]
                elif kind is IpFilter:
                    _ip_filter(ctx, step, self.section)  # type: ignore[arg-type]
                elif kind is Cors:
                    _cors(ctx, step, self.cors)  # type: ignore[arg-type]
                elif kind is ValidateJwt:
                    _validate_jwt(ctx, step, self.section, self.jwt)  # type: ignore[arg-type]
                elif kind is SetStatus:
                    status = (step.code, _text(step.reason, ctx))  # type: ignore[union-attr]
                    if self.response is not None:
                        self.response.status, self.response.reason = status
                    else:
                        ctx.status = status
                elif kind is SetBody:
                    body = _text(step.body, ctx).encode("utf-8")  # type: ignore[union-attr, arg-type]
                    if self.response is not None:
                        self.response.body = body
                        self.response.message = None
                    else:
                        ctx.body = body
                elif kind is ReturnResponse:
                    raise Stop(_return_response(ctx, step))  # type: ignore[arg-type]
                elif kind is MockResponse:
                    raise Stop(_mock_response(step))  # type: ignore[arg-type]
                elif kind is ForwardRequest:
                    if self.section != "backend":
                        raise PolicyExecutionError(f"forward-request in {self.section}")
                    self.plan = BackendPlan(step, retry)  # type: ignore[arg-type]
                    return True
                elif kind is Retry:
                    if self._retry(step):  # type: ignore[arg-type]
                        return True
                elif kind in _LIMITS:
                    raise PolicyExecutionError(
                        f"{_NAMES[kind]} met by the runner without counters (use "
                        "run_inbound_counted for a section with limits)")
                else:
                    raise PolicyExecutionError(f"unknown step {kind.__name__}")
            except ExpressionRuntimeError as error:
                raise _fail(step, self.section, "ExpressionValueEvaluationFailure",
                            f"Expression evaluation failed. {error}",
                            envelope_response(500, "Internal server error")) from None
        return False

    def counted_steps(self, steps: tuple[Step, ...]) -> Generator[CounterCall, Any, None]:
        """
        :meth:`steps` for an ``inbound`` section with limit policies: a
        generator that yields each limit's counter calls to the driver
        (:func:`run_inbound_counted`) and is sent their verdicts. Every other
        step runs through :meth:`steps`, one at a time.
        """
        ctx = self.ctx
        for step in steps:
            kind = step.__class__
            try:
                if kind in _LIMITS:
                    yield from limit_step(step, ctx, self.section)  # type: ignore[arg-type]
                elif kind is Choose:
                    for branch in step.branches:  # type: ignore[union-attr]
                        c = branch.condition
                        if c if isinstance(c, bool) else c.evaluate(ctx):
                            yield from self.counted_steps(branch.steps)
                            break
                    else:
                        yield from self.counted_steps(step.otherwise)  # type: ignore[union-attr]
                elif kind is Retry:
                    # Attempts back to back, as :meth:`_retry` outside backend.
                    yield from self.counted_steps(step.steps)  # type: ignore[union-attr]
                    done = 0
                    while done < step.count:  # type: ignore[union-attr]
                        c = step.condition  # type: ignore[union-attr]
                        if not (c if isinstance(c, bool) else c.evaluate(ctx)):
                            break
                        done += 1
                        yield from self.counted_steps(step.steps)  # type: ignore[union-attr]
                else:
                    self.steps((step,))
            except ExpressionRuntimeError as error:
                raise _fail(step, self.section, "ExpressionValueEvaluationFailure",
                            f"Expression evaluation failed. {error}",
                            envelope_response(500, "Internal server error")) from None

    def _retry(self, step: Retry) -> bool:
        """
        In ``backend`` a ``retry`` around ``forward-request`` becomes the
        plan's retry (the caller re-sends, waiting through its clock). Elsewhere
        nothing in the steps can fail transiently (no I/O), so attempts run
        back to back: the condition still decides how many.
        """
        if self.section == "backend" and self.steps(step.steps, step):
            return True
        done = 0
        while done < step.count:
            c = step.condition
            if not (c if isinstance(c, bool) else c.evaluate(self.ctx)):
                break
            done += 1
            if self.steps(step.steps, step):
                return True
        return False

    def _response(self) -> PolicyResponse:
        if self.response is None:
            raise PolicyExecutionError(f"a response header set in {self.section}")
        return self.response


def _section(run: _Run, steps: tuple[Step, ...]) -> Proceed | PolicyResponse | Failure:
    try:
        run.steps(steps)
    except Stop as stop:
        return stop.outcome
    return PROCEED


def run_inbound(steps: tuple[Step, ...], ctx: PolicyRequest,
                jwt: JwtValidator | None = None) -> Proceed | PolicyResponse | Failure:
    """
    Run the ``inbound`` section: :data:`PROCEED` (``ctx`` says what to
    forward: :meth:`PolicyRequest.target`, ``method``, ``headers``,
    ``backend_url``, ``body``), a response to send at once
    (``return-response``, ``mock-response``, a CORS preflight), or a
    :class:`Failure` for :func:`run_on_error`.

    :raises PolicyExecutionError: the pipeline must not be run (500).
    """
    run = _Run(ctx, "inbound", jwt=jwt)
    outcome = _section(run, steps)
    if outcome is PROCEED and run.cors[0]:
        ctx.cors_answered = True
        # A preflight no cors policy matched: APIM ends it with an empty 200.
        return PolicyResponse(200, "OK", [], b"")
    return outcome


def has_limits(steps: tuple[Step, ...]) -> bool:
    """Whether a section holds a limit policy (at any depth): computed once per section."""
    found: bool = _derived(steps, _find_limits)
    return found


def _find_limits(steps: tuple[Step, ...]) -> bool:
    for step in steps:
        kind = step.__class__
        if kind in _LIMITS:
            return True
        if kind is Choose and (
            any(_find_limits(b.steps) for b in step.branches)  # type: ignore[union-attr]
            or _find_limits(step.otherwise)  # type: ignore[union-attr]
        ):
            return True
        if kind is Retry and _find_limits(step.steps):  # type: ignore[union-attr]
            return True
    return False


def run_inbound_counted(
    steps: tuple[Step, ...],
    ctx: PolicyRequest,
    jwt: JwtValidator | None,
    counters: Counters,
    alive: Callable[[], bool] = lambda: True,
) -> Proceed | PolicyResponse | Failure | Deferred[Proceed | PolicyResponse | Failure]:
    """
    :func:`run_inbound` for a section with limit policies: each counter call
    goes to ``counters``; a store that answers at once (local counters)
    keeps the whole run synchronous, one that answers later (Redis) makes
    the outcome a Deferred.

    :raises PolicyExecutionError: the pipeline must not be run (500); in the
        Deferred case, its errback.
    """
    run = _Run(ctx, "inbound", jwt=jwt)
    return _drive(run, run.counted_steps(steps), counters, None, alive)


def _drive(run: _Run, steps: Generator[CounterCall, Any, None], counters: Counters,
           value: Any, alive: Callable[[], bool]) -> Any:
    """
    Send each verdict back into the section and perform its next call.
    Once the request is over (``alive()`` false: the client left while a
    counter answered), no further counter is touched.
    """
    while True:
        if not alive():
            steps.close()
            return PROCEED
        try:
            call = steps.send(value)
        except StopIteration:
            if run.cors[0]:
                run.ctx.cors_answered = True
                return PolicyResponse(200, "OK", [], b"")
            return PROCEED
        except Stop as stop:
            return stop.outcome
        value = call.perform(counters)
        if isinstance(value, Deferred):
            return value.addCallback(
                lambda verdict: _drive(run, steps, counters, verdict, alive)
            )


def run_backend(steps: tuple[Step, ...], ctx: PolicyRequest) -> BackendPlan | PolicyResponse | Failure:
    """
    Run the ``backend`` section up to its ``forward-request`` and say how
    to forward. Steps after ``forward-request`` are not run (APIM runs
    nothing useful there: the response belongs to ``outbound``).
    """
    if len(steps) == 1 and steps[0].__class__ is ForwardRequest:
        # The common section (APIM's default global backend): nothing to
        # run, and the plan is the same for every request.
        plan: BackendPlan = _derived(steps[0], _plain_plan)
        return plan
    run = _Run(ctx, "backend")
    outcome = _section(run, steps)
    if outcome is PROCEED:
        return run.plan if run.plan is not None else BackendPlan(None)
    return outcome  # type: ignore[return-value]


def _plain_plan(step: ForwardRequest) -> BackendPlan:
    return BackendPlan(step)


def run_outbound(steps: tuple[Step, ...], ctx: PolicyRequest,
                 response: PolicyResponse) -> Proceed | PolicyResponse | Failure:
    """
    Run ``outbound`` on the response (changed in place: status, reason,
    headers, literal body). CORS headers noted in inbound, and a status set
    in inbound, are applied first. A ``return-response``/``mock-response``
    replaces the response: send the one returned.
    """
    if ctx.status is not None:
        response.status, response.reason = ctx.status
    if ctx.response_headers:
        response.headers.extend(ctx.response_headers)
    ctx.response_status = response.status
    return _section(_Run(ctx, "outbound", response), steps)


def run_on_error(steps: tuple[Step, ...], ctx: PolicyRequest, failure: Failure) -> PolicyResponse:
    """
    Run ``on-error`` with ``context.LastError`` set to ``failure``, on a
    copy of the failure's response; return what to send. An expression
    failing here, as in APIM, ends with the 500 envelope.
    """
    ctx.last_error = failure
    base = failure.response
    response = PolicyResponse(base.status, base.reason, list(base.headers), base.body, base.message)
    ctx.response_status = response.status
    if ctx.response_headers:
        response.headers.extend(ctx.response_headers)
    outcome = _section(_Run(ctx, "on-error", response), steps)
    if outcome is PROCEED:
        return response
    if isinstance(outcome, PolicyResponse):
        return outcome
    return envelope_response(500, "Internal server error")


def retry_delay(retry: Retry, ctx: PolicyRequest, retries_done: int,
                uniform: Callable[[float, float], float] = random.uniform) -> float | None:
    """
    Whether to retry the forward after ``retries_done`` retries (the
    condition sees the request view, including ``LastError``), and the wait
    in seconds before it: ``None`` to stop. APIM's formulas: fixed
    ``interval``; with ``delta`` linear; with ``delta`` and
    ``max-interval`` exponential with jitter, capped.
    """
    if retries_done >= retry.count:
        return None
    c = retry.condition
    if not (c if isinstance(c, bool) else c.evaluate(ctx)):
        return None
    n = retries_done + 1
    if retry.first_fast_retry and n == 1:
        return 0.0
    if retry.delta is None:
        return float(retry.interval)
    if retry.max_interval is None:
        return float(retry.interval + (n - 1) * retry.delta)
    jittered = uniform(retry.delta * 0.8, retry.delta * 1.2)
    return float(min(retry.max_interval, retry.interval + (2 ** (n - 1) - 1) * jittered))
