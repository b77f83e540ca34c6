"""
The proxy's leaf resource: look up, forward, stream back.

Per request: one trie lookup, one header list, one backend exchange. All
configuration-derived values (parsed backends, compiled routes) come from
the live generation, built once per configuration change. Retries (a stale
pooled connection, a refused endpoint) are the backend client's
(:mod:`gateway.upstream`): this module sees one outcome per request.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from typing import IO
from urllib.parse import unquote_plus

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from gateway.routing import Generation, LiveGeneration, Match
from gateway.translate import (
    KIND_API,
    Access,
    ApiCall,
    Backend,
    Denial,
    HeaderEdits,
    Pipelines,
    RouteEntry,
    Variant,
)
from gateway.upstream import FAILURE_HOLD, BackendError, BackendPool, BackendTimeout, Exchange
from gateway.upstream._connection import Connection

from ._body import BodyError, BoundedBody, StreamedBody
from ._contracts import ProxyHealth, ProxyObserver, ProxyRequest
from ._headers import (
    forward_request_headers,
    response_headers_to_forward,
    switching_response_headers,
    upgrade_request_headers,
)
from ._limits import Counters
from ._policies import JwtValidator, policy_request
from ._policy_run import PolicyRun
from ._replies import close_after_response, cut, envelope, finish_streamed, start_streamed
from ._splice import Splice
from ._tunnels import Tunnels, upgrade_idle_timeout
from ._variants import BackendChooser, RequestFacts, change_path, edit_headers, redirect_location

#: The upstream Helm chart's probe path, answered on the traffic port.
STATUS_PATH = b"/status-0123456789abcdef"

#: How backend failures are reported to clients.
ERROR_MODES = ("apim", "http")


def _take_query_key(query: bytes, prefix: bytes) -> tuple[str | None, bytes]:
    """
    The subscription key from the query (the first ``name=value`` whose
    name matches, percent-decoded) and the query without any parameter of
    that name, so the backend never sees it.
    """
    key: str | None = None
    kept = []
    for part in query.split(b"&"):
        if part.startswith(prefix):
            if key is None:
                key = unquote_plus(part[len(prefix) :].decode("latin-1"))
            continue
        kept.append(part)
    return key, b"&".join(kept)


def _unchanged(target: str) -> str:
    return target


_NOT_FOUND = envelope(404, "Resource not found")
_NOT_READY = envelope(503, "Service unavailable: no configuration loaded yet")
_NO_ENDPOINTS = envelope(503, "Service unavailable: the backend has no ready endpoint")
_TOO_LARGE = envelope(413, "Request entity too large")
_BAD_REQUEST = envelope(400, "Bad request")
#: An upgrade (WebSocket) request to an API with policies: the policies
#: cannot run on what follows a 101, and passing it through without them
#: would skip the API's checks (validate-jwt, limits).
_NO_UPGRADE = envelope(501, "Upgrade not implemented for an API with policies")
#: An upgrade request while draining: its tunnel would be cut at the grace's end.
_DRAINING_UPGRADE = envelope(503, "Service unavailable: shutting down, connect again")

#: ``apimgw_upgraded_connections_total{protocol}`` values: the common
#: upgrade tokens, everything else ``other`` (the token comes from clients).
_PROTOCOLS = frozenset({"websocket", "h2c", "tls"})


class RequestIds:
    """
    Request ids shaped like version-4 UUIDs: a random 80-bit prefix per
    process and a 48-bit counter. Unique across processes (random prefix)
    and within one (counter), at a fraction of ``uuid.uuid4()``'s cost,
    which reads the system's random source for every id.
    """

    def __init__(self) -> None:
        raw = uuid.uuid4().hex
        self._prefix = f"{raw[:8]}-{raw[8:12]}-{raw[12:16]}-{raw[16:20]}-".encode("ascii")
        self._counter = int.from_bytes(os.urandom(6), "big")

    def next(self) -> bytes:
        self._counter = counter = (self._counter + 1) & 0xFFFFFFFFFFFF
        # Formatted as bytes: half the cost of an f-string then encode.
        return b"%s%012x" % (self._prefix, counter)


class ProxyResource(Resource):
    """
    The only resource of the gateway's traffic ports.

    :param generations: holds the live generation (the reconciler), read
        once per request so a swap never affects a request in progress.
    :param pool: the backend client; its balancers keep the endpoint
        rotation and failure holds across generations.
    :param clock: times each request.
    :param observer: receives ``request_done(...)`` once per answered
        request (metrics and the access log) and ``backend_error(...)``.
    :param health: readiness for the status probe; while draining, keep-alive
        clients are asked to reconnect.
    :param scheme: ``http`` or ``https``: the listener's scheme, sent as
        ``X-Forwarded-Proto``; on ``http``, routes with ``https_redirect``
        are answered with a redirect instead of being forwarded.
    :param https_port: the port HTTPS redirects point at (443 is left out of
        the URL), asked per redirect because a listener on port 0 knows its
        port only once it listens.
    :param jwt: checks ``validate-jwt`` tokens (:class:`gateway.jwt`'s,
        keys fetched in the background); ``None``: a pipeline that meets a
        ``validate-jwt`` answers 500 (logged), never skips it.
    :param counters: the counter store of ``rate-limit``, ``rate-limit-by-key``
        and ``quota`` (:mod:`gateway.counters`); ``None``: an API with a limit
        policy answers 500 (logged).
    :param redact: hides secret query values (subscription keys, tokens)
        in the request targets this resource logs, as the access log does
        (:class:`gateway.observability.QueryRedactor`); default: none.
    :param choose: picks the backend of a Gateway API rule by weight
        (:class:`BackendChooser`); tests pass one with a deterministic
        random source.
    """

    isLeaf = True
    #: The strict HTTP/1.1 server renders this resource at the end of the
    #: header section, ``request.content`` a :class:`StreamedBody`: both the
    #: plain path and the policy path stream it to the backend.
    streams_request_body = True
    _log = Logger()

    def __init__(
        self,
        generations: LiveGeneration,
        pool: BackendPool,
        clock: IReactorTime,
        observer: ProxyObserver,
        health: ProxyHealth,
        *,
        scheme: bytes = b"http",
        error_mode: str = "apim",
        https_port: Callable[[], int] | None = None,
        redact: Callable[[str], str] | None = None,
        jwt: JwtValidator | None = None,
        counters: Counters | None = None,
        choose: BackendChooser | None = None,
    ) -> None:
        super().__init__()
        if error_mode not in ERROR_MODES:
            raise ValueError(f"error mode must be one of {ERROR_MODES}, not {error_mode!r}")
        self._generations = generations
        self._pool = pool
        self._clock = clock
        self._observer = observer
        self._health = health
        self._scheme = scheme
        self._redirects = scheme == b"http"
        self._https_port = https_port or _default_https_port
        self._redact: Callable[[str], str] = redact or _unchanged
        self._error_mode = error_mode
        self.in_flight = 0
        self._idle_waiters: list[Deferred[None]] = []
        self._ids = RequestIds()
        self._jwt = jwt
        self._counters = counters
        self._chooser = choose or BackendChooser()
        self._scheme_text = scheme.decode("ascii")
        #: Rebound to each request before its lookup (see RequestFacts).
        self._facts = RequestFacts(Headers(), b"")
        #: the upgraded connections open (the drain waits for them, then closes them)
        self.tunnels = Tunnels(clock)

    # -- draining ---------------------------------------------------------

    def when_idle(self) -> Deferred[None]:
        """Fires once no proxied request is in progress."""
        d: Deferred[None] = Deferred()
        if self.in_flight == 0:
            d.callback(None)
        else:
            self._idle_waiters.append(d)
        return d

    def _request_ended(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0 and self._idle_waiters:
            waiters, self._idle_waiters = self._idle_waiters, []
            for d in waiters:
                d.callback(None)

    # -- rendering --------------------------------------------------------

    def render(self, request: ProxyRequest) -> bytes | int:  # type: ignore[override]
        started = self._clock.seconds()
        if self._health.draining:
            close_after_response(request)
        path, _, query = request.uri.partition(b"?")
        if path == STATUS_PATH:
            return self._status(request)
        generation = self._generations.current
        if generation is None:
            return self._answer(request, started, 503, _NOT_READY, "-")
        # Headers' storage, by canonical name: no name encoding per lookup.
        raw_headers = request.requestHeaders._rawHeaders
        host_values = raw_headers.get(b"Host")
        host_bytes = host_values[0] if host_values else b""
        if path[:1] != b"/" and path[:4].lower() == b"http":
            # Absolute form (RFC 9112 §3.2.2): its authority replaces Host.
            authority, path = _split_absolute(path)
            if authority is not None:
                host_bytes = authority
        host = host_bytes.decode("latin-1")
        try:
            method = request.method.decode("ascii")
            path_text = path.decode("ascii")
        except UnicodeDecodeError:
            return self._answer(request, started, 400, _BAD_REQUEST, "-")
        facts = self._facts
        facts.headers = request.requestHeaders
        facts.raw_query = query
        facts.params = None
        match = generation.table.lookup(host, path_text, method, self._scheme, facts)
        if match is None:
            return self._answer(request, started, 404, _NOT_FOUND, "-")
        entry = match.entry
        if entry.schemes is not None and self._scheme not in entry.schemes:
            return self._answer(request, started, 404, _NOT_FOUND, entry.label)
        if entry.https_redirect and self._redirects:
            return self._redirect_to_https(request, started, host, path, query, entry.label)
        body = request.content
        if getattr(body, "exceeded", False):
            return self._answer(request, started, 413, _TOO_LARGE, entry.label)
        upgrade: bytes | None = getattr(request, "upgrade", None)
        if upgrade is not None and self._health.draining:
            return self._answer(request, started, 503, _DRAINING_UPGRADE, entry.label)
        if match.variant is not None:
            return self._serve_variant(
                request, started, generation, match, match.variant, host, path_text, query
            )
        access = entry.access
        drop = None
        if access is not None:
            operation = match.operation
            preflight = method == "OPTIONS" and _is_preflight(request)
            # A preflight the cors policy may answer (an OPTIONS operation's
            # requests are its own: APIM forwards them).
            cors_only = preflight and (operation is None or operation.method != "OPTIONS")
            if operation is None and entry.operations is not None:
                # An OPTIONS no operation accepts: only a CORS preflight,
                # answered by the API-level policies (as APIM does).
                if not preflight or entry.pipelines is None:
                    return self._answer(request, started, 404, _NOT_FOUND, entry.label)
            # An APIM API: the subscription key decides (header first, the
            # query only without it); the key never reaches the backend.
            values = request.requestHeaders.getRawHeaders(access.header)
            if values:
                key: str | None = values[0].decode("latin-1")
                drop = access.header
            elif query and query.find(access.query_prefix) != -1:
                key, query = _take_query_key(query, access.query_prefix)
            else:
                key = None
            verdict = generation.config.subscriptions.check(access, key)
            pipelines = operation.pipelines if operation is not None else entry.pipelines
            denied: Denial | None = None
            if verdict.__class__ is Denial:
                denial: Denial = verdict  # type: ignore[assignment]
                if not (cors_only and pipelines is not None and entry.policy_error is None):
                    # Counted per API too (no product, no subscription).
                    request.api_call = ApiCall(
                        access.api_id, operation.name if operation is not None else None, None, None
                    )
                    body_bytes = envelope(denial.status, denial.message)
                    return self._answer(request, started, denial.status, body_bytes, entry.label)
                # A browser never sends a key on a preflight: the policies
                # (cors) answer it without one; if they let it through
                # instead, the denial is the answer.
                denied, verdict = denial, _NO_SUBSCRIPTION
            request.api_call = ApiCall(
                access.api_id,
                operation.name if operation is not None else None,
                verdict.product_id,  # type: ignore[union-attr]
                verdict.subscription_id,  # type: ignore[union-attr]
            )
            if entry.policy_error is not None:
                return self._policy_failed(request, started, entry)
            if pipelines is not None:
                if upgrade is not None:
                    return self._answer(request, started, 501, _NO_UPGRADE, entry.label)
                args = (
                    request,
                    started,
                    generation.number,
                    match,
                    query,
                    access.header,
                    verdict,
                    pipelines,
                    denied,
                    cors_only,
                    operation is None and entry.operations is not None,
                    host,
                )
                # A streamed body is not collected: policies never read it,
                # and forward-request streams it (see PolicyRun._forward).
                return self._run_pipeline(*args)  # type: ignore[arg-type]
        backend = entry.backend
        if entry.kind == KIND_API:
            target = (backend.base_path + match.rest) or "/"
            target_bytes = target.encode("ascii")
        else:
            target_bytes = path
        if query:
            target_bytes += b"?" + query
        request_id = self._request_id(request)
        client = request.getClientAddress()
        forwarded_for = _forwarded_for(request, getattr(client, "host", "") or "")
        headers = forward_request_headers(
            raw_headers,
            host=host_bytes if entry.preserve_host else backend.authority_bytes,
            forwarded_for=forwarded_for,
            forwarded_proto=self._scheme,
            forwarded_host=host_bytes,
            request_id=request_id,
            drop=drop,
        )
        if upgrade is not None:
            headers = upgrade_request_headers(headers, upgrade)
        if body.__class__ is BoundedBody and not body.size:  # type: ignore[union-attr]
            payload, length, source = None, 0, None  # the common bodyless request
        else:
            payload, length, source = _outgoing_body(body)
        endpoints = entry.endpoints
        balancer = None
        if endpoints is not None:
            # Balanced by the gateway itself; Host still names the Service.
            balancer = self._pool.balancers.of(endpoints, generation.number)
            picked = balancer.pick(started)
            if picked is None:
                return self._answer(request, started, 503, _NO_ENDPOINTS, entry.label)
            backend = picked
        exchange = _Exchange(self, request, entry, started, request_id, backend)
        self.in_flight += 1
        request.on_client_gone = exchange.client_gone
        backend_exchange = self._pool.request(
            backend,
            request.method,
            target_bytes,
            headers,
            payload,
            length,
            exchange,
            balancer,
            source=source,
            upgrade=upgrade is not None,
        )
        if not exchange.done:
            # (Over already: it failed at once and the exchange has ended;
            # keeping it would tie the two together again.)
            exchange.backend_exchange = backend_exchange
        return NOT_DONE_YET

    def _serve_variant(
        self,
        request: ProxyRequest,
        started: float,
        generation: Generation,
        match: Match,
        variant: Variant,
        host: str,
        path: str,
        query: bytes,
    ) -> bytes | int:
        """
        A Gateway API rule (:mod:`gateway.proxy._variants`): a redirect is
        answered here; otherwise one backend is chosen by weight, the URL
        rewrite and the request header modifier shape what it receives,
        and the response header modifier what the client receives.

        The client's ``Host`` goes to the backend unless the rule rewrites
        it: the Gateway API forwards it unchanged (its conformance tests
        check what the backend saw), unlike an Ingress route.
        """
        label = variant.label
        redirect = variant.redirect
        if redirect is not None:
            if not host:
                host = request.getRequestHostname().decode("latin-1")
            location = redirect_location(
                redirect, self._scheme_text, host, path, query.decode("latin-1"), match.entry.path
            )
            request.setResponseCode(redirect.status)
            request.setHeader(b"location", location.encode("latin-1"))
            request.setHeader(b"content-length", b"0")
            if variant.response_headers is not None:
                _edit_response(request, variant.response_headers)
            self._observer.request_done(
                request, redirect.status, 0, self._clock.seconds() - started, label, "-", "-"
            )
            return b""
        chosen = self._chooser.choose(variant, generation.number)
        if chosen is None or chosen.backend is None:
            problem = (
                "it has no backend with a weight above 0"
                if chosen is None
                else f"its backend is invalid: {chosen.problem or 'unknown reason'}"
            )
            return self._variant_failed(request, started, label, problem)
        backend = chosen.backend
        rewrite = variant.rewrite
        send_host = host.encode("latin-1") if host else backend.authority_bytes
        if rewrite is not None:
            if rewrite.path is not None:
                path = change_path(path, rewrite.path, match.entry.path)
            if rewrite.hostname is not None:
                send_host = rewrite.hostname.encode("latin-1")
        target_bytes = path.encode("utf-8")
        if query:
            target_bytes += b"?" + query
        request_id = self._request_id(request)
        client = request.getClientAddress()
        headers = forward_request_headers(
            request.requestHeaders._rawHeaders,
            host=send_host,
            forwarded_for=_forwarded_for(request, getattr(client, "host", "") or ""),
            forwarded_proto=self._scheme,
            forwarded_host=host.encode("latin-1"),
            request_id=request_id,
        )
        if variant.request_headers is not None:
            headers = edit_headers(headers, variant.request_headers)
        upgrade: bytes | None = getattr(request, "upgrade", None)
        if upgrade is not None:
            headers = upgrade_request_headers(headers, upgrade)
        payload, length, source = _outgoing_body(request.content)
        exchange = _VariantExchange(self, request, match.entry, variant, started, request_id, backend)
        self.in_flight += 1
        request.on_client_gone = exchange.client_gone
        backend_exchange = self._pool.request(
            backend,
            request.method,
            target_bytes,
            headers,
            payload,
            length,
            exchange,
            None,
            source=source,
            upgrade=upgrade is not None,
        )
        if not exchange.done:
            # (Over already: it failed at once and the exchange has ended;
            # keeping it would tie the two together again.)
            exchange.backend_exchange = backend_exchange
        return NOT_DONE_YET

    def _variant_failed(
        self, request: ProxyRequest, started: float, label: str, problem: str
    ) -> bytes:
        """
        A Gateway API rule's share of traffic that no backend can serve: 500,
        as the spec requires (an invalid ``backendRef``'s share is not moved
        to the valid ones), with one log line naming the route and why.
        """
        request_id = self._request_id(request)
        activity_id = request_id.decode("latin-1")
        self._log.error(
            "{route}: answered 500, {problem} (activityId {activity_id})",
            route=label,
            problem=problem,
            activity_id=activity_id,
        )
        request.setHeader(b"x-request-id", request_id)
        body = envelope(500, "Internal server error", activityId=activity_id)
        return self._answer(request, started, 500, body, label)

    def _run_pipeline(
        self,
        request: ProxyRequest,
        started: float,
        generation_number: int,
        match: Match,
        query: bytes,
        key_header: bytes,
        access: Access,
        pipelines: Pipelines,
        denied: Denial | None,
        preflight: bool,
        api_level: bool,
        host: str,
    ) -> bytes | int:
        """
        An operation with policies: the pipeline of the request's product
        context decides (:class:`PolicyRun`); the subscription key header is
        not shown to policies nor forwarded.

        :param denied: a keyless CORS preflight's subscription denial, sent
            if the policies let the request through rather than answer it.
        :param preflight: a CORS preflight the ``cors`` policy may answer
            (``False`` for a request an ``OPTIONS`` operation accepted:
            APIM forwards those to the backend).
        :param api_level: a preflight no operation accepted, run through the
            API-level pipeline: only a ``cors`` answer is sent; anything else
            is 404 (or ``denied``), never forwarded.
        """
        entry = match.entry
        pipeline = pipelines.get(access.product_id)
        request_id = self._request_id(request)
        if pipeline is None:
            # Translation builds a pipeline for every product context the
            # subscription check can give: a missing one is a bug.
            self._log.error(
                "{route}: no pipeline for product context {product} (activityId {activity_id})",
                route=entry.label,
                product=access.product_id,
                activity_id=request_id.decode("latin-1"),
            )
            request.setHeader(b"x-request-id", request_id)
            body = envelope(500, "Internal server error", activityId=request_id.decode("latin-1"))
            return self._answer(request, started, 500, body, entry.label)
        ctx = policy_request(
            request,
            match.rest,
            query,
            match.params,
            access.subscription_id,
            access.product_id,
            drop=key_header,
        )
        ctx.cors_preflight = preflight
        call = request.api_call
        if call is not None:
            ctx.api_id = call.api
            ctx.operation_id = call.operation
        run = PolicyRun(
            self,
            request,
            entry,
            pipeline,
            ctx,
            started,
            request_id,
            generation_number,
            denied,
            api_level,
            host.encode("latin-1"),
            _forwarded_for(request, ctx.ip_address),
        )
        return run.start(self._jwt)

    def answer_body_error(
        self, request: ProxyRequest, started: float, label: str, error: BodyError
    ) -> None:
        """
        A streamed body failed (over the limit, too slow, bad framing) and
        the backend request was aborted: answer the body's status, unless
        the client is gone.
        """
        if request.channel is None or getattr(request, "finished", False):
            return
        body = self._answer(
            request, started, error.status, envelope(error.status, error.message), label
        )
        request.write(body)
        request.finish()

    def _redirect_to_https(
        self,
        request: ProxyRequest,
        started: float,
        host: str,
        path: bytes,
        query: bytes,
        route: str,
    ) -> bytes:
        """
        ``308 Permanent Redirect`` to the same URL on HTTPS: 308 rather than
        301, so that clients repeat the method and body (a POST stays a POST).
        """
        name = _without_port(host) or request.getRequestHostname().decode("latin-1")
        port = self._https_port()
        authority = name if port == 443 else f"{name}:{port}"
        location = b"https://" + authority.encode("latin-1") + path
        if query:
            location += b"?" + query
        request.setResponseCode(308)
        request.setHeader(b"location", location)
        request.setHeader(b"content-length", b"0")
        self._observer.request_done(
            request, 308, 0, self._clock.seconds() - started, route, "-", "-"
        )
        return b""

    def _request_id(self, request: ProxyRequest) -> bytes:
        given = request.requestHeaders._rawHeaders.get(b"X-Request-Id")
        if given and given[0]:
            return given[0]
        return self._ids.next()

    def _status(self, request: ProxyRequest) -> bytes:
        ready = self._generations.current is not None and self._health.ready
        request.setResponseCode(200 if ready else 503)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return self._health.describe().encode() + b"\n"

    def _answer(
        self, request: ProxyRequest, started: float, status: int, body: bytes, route: str
    ) -> bytes:
        """Answer from the gateway itself (no backend involved)."""
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"content-length", b"%d" % len(body))
        self._observer.request_done(
            request, status, len(body), self._clock.seconds() - started, route, "-", "-"
        )
        return body

    def _policy_failed(self, request: ProxyRequest, started: float, entry: RouteEntry) -> bytes:
        """
        The API's policies did not compile: 500 with the envelope rather
        than a partial pipeline; the reason is in /config and the log line.
        """
        request_id = self._request_id(request)
        activity_id = request_id.decode("latin-1")
        self._log.error(
            "{route}: not served, its policies have problems ({reason}) (activityId {activity_id})",
            route=entry.label,
            reason=entry.policy_error,
            activity_id=activity_id,
        )
        request.setHeader(b"x-request-id", request_id)
        body = envelope(500, "Internal server error", activityId=activity_id)
        return self._answer(request, started, 500, body, entry.label)

    def failure_answer(self, timeout: bool) -> tuple[int, str]:
        """The status and message a failed backend is answered with (``error_mode``)."""
        if self._error_mode == "http":
            return (504, "Gateway timeout") if timeout else (502, "Bad gateway")
        return 500, "Internal server error"

    def report_backend_failure(
        self, request: ProxyRequest, backend: Backend, activity_id: str, reason: Failure
    ) -> bool:
        """
        Log and count a backend that failed before any response byte.

        :return: whether it was a timeout.
        """
        error = reason.value
        timeout = isinstance(error, BackendTimeout)
        self._log.error(
            "Backend {backend} failed for {method} {path} (activityId {activity_id}): {error}",
            backend=backend.url,
            method=request.method.decode("ascii", "replace"),
            path=self._redact(request.uri.decode("latin-1")),
            activity_id=activity_id,
            error=str(error) if isinstance(error, BackendError) else repr(error),
        )
        self._observer.backend_error(backend.url, "timeout" if timeout else "error")
        return timeout

    def report_broken_response(self, backend: Backend, activity_id: str, reason: Failure) -> None:
        """Log and count a backend that broke off a response whose headers went out."""
        self._log.warn(
            "Backend {backend} broke off the response to {request_id}: {error}",
            backend=backend.url,
            request_id=activity_id,
            error=reason.getErrorMessage(),
        )
        self._observer.backend_error(backend.url, "broken")

    def report_endpoint_moved(
        self, route: str, failed: Backend, retry_on: Backend, reason: Failure
    ) -> None:
        """Log and count an endpoint the backend client put on hold, the request moved on."""
        self._log.warn(
            "Endpoint {failed} of {route} refused the connection ({error}): held for {hold:.0f} s, "
            "retrying on {backend}",
            failed=failed.authority,
            route=route,
            error=reason.getErrorMessage(),
            hold=FAILURE_HOLD,
            backend=retry_on.authority,
        )
        self._observer.backend_error(failed.url, "endpoint")

    def backend_failed(
        self,
        request: ProxyRequest,
        started: float,
        label: str,
        backend: Backend,
        request_id: bytes,
        reason: Failure,
    ) -> None:
        """
        The backend failed before any response byte: answer with the
        envelope.

        :param label: the route's, for metrics and the access log.
        :param backend: the route's backend (not the endpoint), for the log
            and the backend error metric.
        """
        activity_id = request_id.decode("latin-1")
        timeout = self.report_backend_failure(request, backend, activity_id, reason)
        status, message = self.failure_answer(timeout)
        body = envelope(status, message, activityId=activity_id)
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"content-length", b"%d" % len(body))
        request.write(body)
        request.finish()
        self._observer.request_done(
            request,
            status,
            len(body),
            self._clock.seconds() - started,
            label,
            backend.url,
            activity_id,
        )


#: The verdict of a keyless CORS preflight whose key check is deferred.
_NO_SUBSCRIPTION = Access(None, None)


def _forwarded_for(request: ProxyRequest, client_host: str) -> bytes:
    """The complete ``X-Forwarded-For``: any incoming value, then the client's address."""
    forwarded_for = client_host.encode("ascii")
    previous = request.requestHeaders._rawHeaders.get(b"X-Forwarded-For")
    if previous:
        forwarded_for = b", ".join(previous) + b", " + forwarded_for
    return forwarded_for


def _is_preflight(request: ProxyRequest) -> bool:
    """A CORS preflight (Fetch standard): ``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``."""
    headers = request.requestHeaders
    return headers.hasHeader(b"origin") and headers.hasHeader(b"access-control-request-method")


def _default_https_port() -> int:
    return 443


def _without_port(host: str) -> str:
    """``example.com:8080`` → ``example.com``; ``[::1]:8080`` → ``[::1]``."""
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end > 0 else host
    return host.partition(":")[0]


def _split_absolute(target: bytes) -> tuple[bytes | None, bytes]:
    """``http://host:port/p`` → (``host:port``, ``/p``); anything else unchanged."""
    scheme, sep, rest = target.partition(b"://")
    if not sep or scheme.lower() not in (b"http", b"https"):
        return None, target
    authority, slash, path = rest.partition(b"/")
    return authority, slash + path if slash else b"/"


class _Exchange:
    """
    One proxied request: receives the backend's response (the
    :class:`gateway.upstream.ResponseSink`) and writes it to the client with
    backpressure.

    :param backend: the backend (or endpoint) the request goes to.
    """

    __slots__ = (
        "backend",
        "backend_exchange",
        "done",
        "label",
        "producer",
        "request",
        "request_id",
        "resource",
        "service",
        "started",
    )
    #: Response header edits (a Gateway API rule's, in :class:`_VariantExchange`).
    edits: HeaderEdits | None = None

    def __init__(
        self,
        resource: ProxyResource,
        request: ProxyRequest,
        entry: RouteEntry,
        started: float,
        request_id: bytes,
        backend: Backend,
    ) -> None:
        self.resource = resource
        self.request = request
        #: The route's label: metrics, the access log, log lines.
        self.label = entry.label
        #: The route's backend as configured (a Service, not one of its
        #: endpoints), named in failure logs and metrics.
        self.service = entry.backend
        self.started = started
        self.request_id = request_id
        self.backend_exchange: Exchange | None = None
        self.producer: IPushProducer | None = None
        self.done = False
        #: The backend (or endpoint) the request went to.
        self.backend = backend

    def response_started(
        self,
        status: int,
        reason: bytes,
        headers: list[tuple[bytes, bytes]],
        producer: IPushProducer,
    ) -> None:
        self.producer = producer
        start_streamed(
            self.request,
            status,
            reason,
            response_headers_to_forward(headers),
            self.request_id,
            self.resource._health.draining,
            producer,
        )

    def body_received(self, data: bytes) -> None:
        self.request.write(data)

    def response_finished(self) -> None:
        request = self.request
        finish_streamed(request, self.producer)
        self.producer = None
        self._end(request.code)

    def response_failed(self, reason: Failure) -> None:
        request = self.request
        if self.producer is not None:
            request.unregisterProducer()
            self.producer = None
            # Headers went out already: the only honest signal left is to
            # cut the connection, so the client sees a truncated response.
            body_error = getattr(request.content, "error", None)
            if body_error is not None:
                # The client's body failed (it aborted the backend request),
                # not the backend: no backend error logged nor counted.
                self.resource._log.info(
                    "{route}: the client's request body failed after the response started "
                    "({status} {reason}): response cut (activityId {activity_id})",
                    route=self.label,
                    status=body_error.status,
                    reason=body_error.message,
                    activity_id=self.request_id.decode("latin-1"),
                )
            else:
                self.resource.report_broken_response(
                    self.service, self.request_id.decode("latin-1"), reason
                )
            cut(request)
            self._end(request.code)
            return
        body_error = getattr(request.content, "error", None)
        if body_error is not None:
            # The client's body failed, not the backend: answer its status.
            self.resource.answer_body_error(request, self.started, self.label, body_error)
            self._end(None)
            return
        self.resource.backend_failed(
            request, self.started, self.label, self.service, self.request_id, reason
        )
        self._end(None)

    def endpoint_failed(self, failed: Backend, retry_on: Backend, reason: Failure) -> None:
        """
        The backend client put endpoint ``failed`` on hold and sends the
        request to ``retry_on``: say so, count it, and credit the response to
        ``retry_on``.
        """
        self.backend = retry_on
        self.resource.report_endpoint_moved(self.label, failed, retry_on, reason)

    def client_gone(self, reason: Failure) -> None:
        """The client disconnected first: abort the backend side."""
        if self.done:
            return
        if self.backend_exchange is not None:
            self.backend_exchange.cancel()
        # 499: nginx's code for "client closed the request".
        self._end(499)

    def _end(self, status: int | None) -> None:
        if self.done:
            return
        self.done = True
        self.request.on_client_gone = None
        # The backend exchange points back here (its sink): let go of it, so
        # that reference counting frees both, the request and its headers as
        # soon as the request ends, rather than the cyclic garbage collector
        # later (a collection per few hundred requests, and pauses).
        self.backend_exchange = None
        resource = self.resource
        resource._request_ended()
        if status is not None:
            resource._observer.request_done(
                self.request,
                status,
                self.request.sentLength,
                resource._clock.seconds() - self.started,
                self.label,
                self.backend.url,
                self.request_id.decode("latin-1"),
            )

    def switched(
        self,
        reason: bytes,
        headers: list[tuple[bytes, bytes]],
        connection: Connection,
        rest: bytes,
    ) -> None:
        """The backend answered 101 to an upgrade request (only then called): see :func:`_switched`."""
        _switched(self, self.edits, reason, headers, connection, rest)


class _VariantExchange(_Exchange):
    """
    A Gateway API rule's exchange: labelled with the variant, credited to
    the backend chosen by weight, and the response header modifier edits
    what the client receives.
    """

    __slots__ = ("edits",)

    def __init__(
        self,
        resource: ProxyResource,
        request: ProxyRequest,
        entry: RouteEntry,
        variant: Variant,
        started: float,
        request_id: bytes,
        backend: Backend,
    ) -> None:
        super().__init__(resource, request, entry, started, request_id, backend)
        self.label = variant.label
        self.service = backend
        self.edits = variant.response_headers

    def response_started(
        self,
        status: int,
        reason: bytes,
        headers: list[tuple[bytes, bytes]],
        producer: IPushProducer,
    ) -> None:
        self.producer = producer
        forwarded = response_headers_to_forward(headers)
        if self.edits is not None:
            forwarded = edit_headers(forwarded, self.edits)
        start_streamed(
            self.request,
            status,
            reason,
            forwarded,
            self.request_id,
            self.resource._health.draining,
            producer,
        )


def _switched(
    exchange: _Exchange,
    edits: HeaderEdits | None,
    reason: bytes,
    headers: list[tuple[bytes, bytes]],
    connection: Connection,
    rest: bytes,
) -> None:
    """
    The backend answered 101 to an upgrade request: the 101 goes to the
    client and a :class:`Splice` copies bytes between the two connections
    from now on. The request itself ends here (access log: 101); the
    upgraded connection is counted in the metrics until it closes.
    """
    resource = exchange.resource
    request = exchange.request
    forwarded = switching_response_headers(headers)
    if edits is not None:
        forwarded = edit_headers(forwarded, edits)
    observer = resource._observer

    def closed(splice: Splice) -> None:
        observer.upgrade_closed(splice.ended_by)

    def make(transport: object) -> Splice:
        return resource.tunnels.open(
            transport,
            connection.transport,
            idle_timeout=upgrade_idle_timeout(request),
            on_closed=closed,
        )

    switch = getattr(request, "switch_protocols", None)
    tunnel = switch(reason, forwarded, make) if switch is not None else None
    if tunnel is None:
        # The client left meanwhile: nobody for the backend to talk to.
        connection.transport.abortConnection()
        exchange._end(499)
        return
    connection.hand_over(tunnel)
    if rest:
        tunnel.backend_data(rest)
    observer.upgrade_opened(_protocol(headers, getattr(request, "upgrade", b"") or b""))
    exchange._end(101)


def _protocol(headers: list[tuple[bytes, bytes]], asked: bytes) -> str:
    """The metric label of the protocol switched to: the 101's ``Upgrade``, bounded."""
    token = asked
    for name, value in headers:
        if name.lower() == b"upgrade":
            token = value
            break
    text = token.split(b",")[0].split(b"/")[0].strip().lower().decode("latin-1")
    return text if text in _PROTOCOLS else "other"


def _outgoing_body(
    body: BoundedBody | StreamedBody | None,
) -> tuple[bytes | IO[bytes] | None, int, StreamedBody | None]:
    """
    What the backend client is given for a request body: a complete body
    as bytes or a file (so a retry re-sends it), or a body still arriving as
    a source (its declared length, ``-1`` when chunked).
    """
    if body is None:
        return None, 0, None
    if body.__class__ is StreamedBody:
        streamed: StreamedBody = body  # type: ignore[assignment]
        whole = streamed.whole()
        if whole is not None:
            return (whole or None), len(whole), None
        length = streamed.length
        return None, (-1 if length is None else length), streamed
    spooled: BoundedBody = body  # type: ignore[assignment]
    size = spooled.size
    return (spooled.file if size else None), size, None


def _edit_response(request: ProxyRequest, edits: HeaderEdits) -> None:
    """A response header modifier on an answer the gateway makes itself (a redirect)."""
    headers = request.responseHeaders
    pairs = [(name, value) for name, values in headers.getAllRawHeaders() for value in values]
    for name, _ in pairs:
        headers.removeHeader(name)
    for name, value in edit_headers(pairs, edits):
        headers.addRawHeader(name, value)
