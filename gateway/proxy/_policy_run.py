"""
Serving one request through its API's compiled pipeline.

The plain path (:mod:`._resource`) forwards and streams; an API operation
with pipelines comes here instead, so the plain path pays nothing for
policies. :class:`PolicyRun` drives the executor (:mod:`._policies`, pure
and synchronous) and does the I/O the executor leaves to its caller:

* ``inbound`` → a response to send at once, a failure (``on-error``), or
  on to ``backend``;
* ``backend`` → a :class:`~._policies.BackendPlan`: forward what the
  request view says (method, target, headers, body, ``set-backend-service``)
  with the ``forward-request`` timeout; a failed attempt (no connection, no
  response in time, an error status with ``fail-on-error-status-code``)
  is retried as the enclosing ``retry`` says, waiting through the reactor
  clock, never blocking; when attempts are spent, ``on-error`` runs;
* the client's body is never collected: policies cannot read it (a
  ``set-body`` replaces it), so the pipeline runs at the end of the header
  section and ``forward-request`` streams the body to the backend as it
  arrives (:class:`~._body.StreamedBody`, as the plain path does). A retry
  needs it from its start: it happens only while the body can
  :meth:`~._body.StreamedBody.rewind` (at most the replay buffer was sent),
  else the failed attempt is the last, unless ``forward-request
  buffer-request-body="true"`` asked for the body to be collected first
  (APIM's setting for exactly this: memory, then a temporary file). A
  replaced body, or an answer
  before the body is complete, drops the rest as it arrives; a body that
  fails (too large, too slow, the client gone) is answered as on the plain
  path;
* ``outbound`` runs on the backend's status and headers before a byte goes
  to the client; the body then streams as on the plain path, unless a
  policy replaced it (``set-body``) or answered instead
  (``return-response``), in which case the backend exchange is cancelled.

Nothing here parses or compiles configuration: the pipeline, its steps and
their derived tables were built once per generation.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.python.failure import Failure as TwistedFailure
from twisted.web.server import NOT_DONE_YET

from gateway.translate import Backend, Denial, InvalidObject, RouteEntry, parse_backend
from gateway.translate.policy import ExpressionRuntimeError, Pipeline
from gateway.upstream import Exchange

from ._body import BodyError, BoundedBody, StreamedBody
from ._contracts import ProxyRequest
from ._headers import HOP_BY_HOP, forward_view_headers, response_headers_to_forward, text_bytes
from ._limits import apply_postponed
from ._policies import (
    PROCEED,
    BackendPlan,
    Failure,
    PolicyExecutionError,
    PolicyRequest,
    PolicyResponse,
    has_limits,
    retry_delay,
    run_backend,
    run_inbound,
    run_inbound_counted,
    run_on_error,
    run_outbound,
)
from ._replies import cut, envelope, finish_streamed, start_streamed

if TYPE_CHECKING:
    from gateway.upstream import Balancer

    from ._resource import ProxyResource

__all__ = ["PolicyRun"]

#: Characters left as they are in a request target built by policies
#: (RFC 3986 ``pchar``, ``/``, ``?`` and ``%`` of existing escapes).
_TARGET_SAFE = "/?%:@!$&'()*+,;=-._~"

#: Statuses that never carry a body nor, for 1xx and 204, a Content-Length
#: (RFC 9110 §8.6).
_NO_BODY = frozenset({100, 101, 102, 103, 204, 304})

#: An HTTP method is a token (RFC 9110 §9.1).
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")

#: Base URLs of ``set-backend-service``, parsed once per distinct URL.
_BACKENDS: dict[str, Backend] = {}
_BACKENDS_LIMIT = 4096


def _backend_of(url: str) -> Backend:
    backend = _BACKENDS.get(url)
    if backend is None:
        backend = parse_backend(url)
        if len(_BACKENDS) >= _BACKENDS_LIMIT:
            _BACKENDS.clear()
        _BACKENDS[url] = backend
    return backend


#: Response headers no policy sets: the body's framing is the backend's (or
#: the gateway's own Content-Length), and hop-by-hop headers belong to one
#: connection.
_FRAMING_TEXT = frozenset(name.decode("ascii") for name in HOP_BY_HOP) | {"content-length"}


def _reason_bytes(reason: str | None) -> bytes:
    """A reason phrase for the status line, refused if it could split the response."""
    return text_bytes(reason, "a reason phrase") if reason else b""


def _target_bytes(base_path: str, ctx: PolicyRequest) -> bytes:
    path = (base_path + ctx.path) or "/"
    target = f"{path}?{query}" if (query := ctx.query_string()) else path
    try:
        raw = target.encode("ascii")
    except UnicodeEncodeError:
        raw = b""
    if raw and not any(c <= 0x20 or c == 0x7F for c in raw):
        return raw
    return quote(target, safe=_TARGET_SAFE).encode("ascii")


class PolicyRun:
    """
    One request through its pipeline, and the
    :class:`~gateway.upstream.ResponseSink` of its backend attempts.

    States: inbound/backend run synchronously in :meth:`start`; then at
    most one backend exchange or retry wait at a time; ``streaming`` once
    the response headers went to the client; ``done`` once the client's
    response is complete (or the client left).
    """

    __slots__ = (
        "resource",
        "request",
        "entry",
        "pipeline",
        "ctx",
        "started",
        "request_id",
        "activity_id",
        "plan",
        "retries",
        "backend",
        "backend_exchange",
        "producer",
        "streaming",
        "done",
        "counted",
        "generation_number",
        "denied",
        "api_level",
        "length",
        "host",
        "forwarded_for",
        "spool",
        "_timer",
    )

    def __init__(
        self,
        resource: ProxyResource,
        request: ProxyRequest,
        entry: RouteEntry,
        pipeline: Pipeline,
        ctx: PolicyRequest,
        started: float,
        request_id: bytes,
        generation_number: int,
        denied: Denial | None = None,
        api_level: bool = False,
        host: bytes = b"",
        forwarded_for: bytes = b"",
    ) -> None:
        self.resource = resource
        self.request = request
        self.entry = entry
        self.pipeline = pipeline
        self.ctx = ctx
        self.started = started
        self.request_id = request_id
        self.activity_id = request_id.decode("latin-1")
        self.plan: BackendPlan | None = None
        self.retries = 0
        self.backend: Backend = entry.backend
        self.backend_exchange: Exchange | None = None
        self.producer: IPushProducer | None = None
        self.streaming = False
        self.done = False
        #: counted in the resource's in-flight requests (while forwarding)
        self.counted = False
        #: the generation the request was matched in (endpoint balancers)
        self.generation_number = generation_number
        #: a keyless preflight's subscription denial: the answer if inbound
        #: does not answer the preflight itself
        self.denied = denied
        #: a preflight no operation accepted: only a cors answer goes out
        self.api_level = api_level
        #: the backend's Content-Length, when outbound runs on its response
        self.length: list[bytes] = []
        #: the request's Host and the complete X-Forwarded-For, as the
        #: resource worked them out
        self.host = host
        self.forwarded_for = forwarded_for
        #: the client's body collected for ``buffer-request-body="true"``
        self.spool: BoundedBody | None = None
        self._timer: IDelayedCall | None = None

    # -- inbound and backend ------------------------------------------------

    def start(self, jwt: Any) -> int:
        """Run inbound and backend; answer or forward. Returns ``NOT_DONE_YET``."""
        ctx = self.ctx
        pipeline = self.pipeline
        counters = self.resource._counters
        if has_limits(pipeline.inbound):
            if counters is None:
                self._bug(PolicyExecutionError("a limit policy and no counter store"))
                return NOT_DONE_YET
            try:
                counted = run_inbound_counted(
                    pipeline.inbound, ctx, jwt, counters, lambda: not self.done
                )
            except PolicyExecutionError as error:
                self._bug(error)
                return NOT_DONE_YET
            if isinstance(counted, Deferred):
                # The counters answer later (Redis): go on from there; a
                # client leaving meanwhile ends the request at once.
                self.request.on_client_gone = self.client_gone
                self.resource.in_flight += 1
                self.counted = True
                self._watch_body()
                counted.addCallback(self._after_inbound)
                counted.addErrback(self._counters_failed)
                return NOT_DONE_YET
            return self._after_inbound(counted)
        try:
            outcome = run_inbound(pipeline.inbound, ctx, jwt)
        except PolicyExecutionError as error:
            self._bug(error)
            return NOT_DONE_YET
        return self._after_inbound(outcome)

    def _counters_failed(self, reason: TwistedFailure) -> None:
        if isinstance(reason.value, PolicyExecutionError):
            self._bug(reason.value)
        else:
            self._bug(PolicyExecutionError(f"counter store failed: {reason.getErrorMessage()}"))

    def _after_inbound(self, outcome: Any) -> int:
        """Inbound's outcome: answer, or run backend and forward."""
        if self.done:
            return NOT_DONE_YET
        if self.counted:
            # The counters answered late (Redis): the body may have failed
            # meanwhile (too large, too slow); that is the answer then.
            error = _body_error(self.request.content)
            if error is not None:
                self._body_failed(error)
                return NOT_DONE_YET
        ctx = self.ctx
        pipeline = self.pipeline
        try:
            if (self.denied is not None or self.api_level) and not (
                isinstance(outcome, PolicyResponse) and ctx.cors_answered
            ):
                # Only the cors policy may answer these (a keyless preflight,
                # or one no operation accepted); anything else gets what the
                # request would have got without it.
                denied = self.denied
                outcome = (
                    PolicyResponse(404, None, [("content-type", "application/json")], None,
                                   "Resource not found")
                    if denied is None
                    else PolicyResponse(denied.status, None,
                                        [("content-type", "application/json")], None,
                                        denied.message)
                )
            if outcome is PROCEED:
                planned = run_backend(pipeline.backend, ctx)
                if isinstance(planned, BackendPlan):
                    if planned.forward is None:
                        # No forward-request: APIM answers an empty 200 and
                        # runs outbound on it.
                        self._outbound(PolicyResponse(200, "OK", [], b""))
                        return NOT_DONE_YET
                    self.plan = planned
                    self.request.on_client_gone = self.client_gone
                    if not self.counted:
                        self.resource.in_flight += 1
                        self.counted = True
                    self._forward()
                    return NOT_DONE_YET
                outcome = planned
            if isinstance(outcome, Failure):
                outcome = run_on_error(pipeline.on_error, ctx, outcome)
            elif isinstance(outcome, PolicyResponse) and ctx.response_headers:
                # The CORS headers of an actual cross-origin request go on
                # whatever answers it.
                outcome.headers.extend(ctx.response_headers)
            self._send(outcome)  # type: ignore[arg-type]
        except PolicyExecutionError as error:
            self._bug(error)
        return NOT_DONE_YET

    def _forward(self) -> None:
        """One attempt: send what the request view says to the backend."""
        self._timer = None
        self._unwatch_body()
        ctx = self.ctx
        resource = self.resource
        entry = self.entry
        plan = self.plan
        assert plan is not None and plan.forward is not None
        if plan.forward.buffer_request_body and ctx.body is None and self.spool is None:
            content = self.request.content
            if content.__class__ is StreamedBody and content.whole() is None:  # type: ignore[union-attr]
                # Collected first, so that every retry re-sends it whole.
                self._collect(content)  # type: ignore[arg-type]
                return
        balancer: Balancer | None = None
        try:
            if ctx.backend_url is not None:
                backend = _backend_of(ctx.backend_url)
                base_path = backend.base_path
            else:
                backend = entry.backend
                base_path = backend.base_path
                if entry.endpoints is not None:
                    balancer = resource._pool.balancers.of(entry.endpoints, self.generation_number)
                    picked = balancer.pick(resource._clock.seconds())
                    if picked is None:
                        self._attempt_failed(
                            "BackendConnectionFailure",
                            "the backend has no ready endpoint",
                        )
                        return
                    backend = picked
            method = ctx.method
            if method is not ctx.original_method and not _TOKEN.fullmatch(method):
                raise ValueError(f"set-method gave an invalid method {method[:40]!r}")
            target = _target_bytes(base_path, ctx)
            request = self.request
            host = self.host
            headers = forward_view_headers(
                ctx.headers,
                host=host
                if entry.preserve_host and ctx.backend_url is None
                else backend.authority_bytes,
                forwarded_for=self.forwarded_for,
                forwarded_proto=resource._scheme,
                forwarded_host=host,
                request_id=self.request_id,
            )
        except InvalidObject:
            # Not the URL itself: an expression built it, and it may hold
            # something secret.
            self._bug(PolicyExecutionError("set-backend-service gave an unusable base-url"))
            return
        except ValueError as error:
            self._bug(error)
            return
        body: Any = ctx.body
        length = len(body) if body is not None else 0
        source: StreamedBody | None = None
        content = request.content
        spool = self.spool
        if spool is not None:
            length = spool.size
            if length:
                body = spool.file
        elif content.__class__ is StreamedBody:
            streamed: StreamedBody = content  # type: ignore[assignment]
            if body is not None:
                # set-body replaced it: the client's body is dropped as it
                # arrives (never left to fill and stall the connection).
                if not streamed.complete:
                    streamed.discard()
                    # Still counted against the limit as it is dropped:
                    # a failure is heard while the backend answers.
                    streamed.watch(self._body_broke)
            elif streamed.error is not None:
                self._body_failed(streamed.error)
                return
            else:
                whole = streamed.whole()
                if whole is not None:
                    # Complete before anyone took it: sent as bytes (and
                    # re-sent as they are by a retry).
                    body = whole
                    length = len(whole)
                else:
                    source = streamed
                    length = -1 if streamed.length is None else streamed.length
        elif body is None:
            # The twisted.web server's collected body (a BoundedBody).
            length = content.size if content is not None else 0
            if length:
                body = content.file  # type: ignore[union-attr]
                body.seek(0)
        self.backend = backend
        backend_exchange = resource._pool.request(
            backend,
            method.encode("ascii"),
            target,
            headers,
            body if length > 0 else None,
            length,
            self,
            balancer,
            response_timeout=float(plan.forward.timeout),
            source=source,
        )
        if not backend_exchange.done:
            # Over already (it failed at once): a retry it started meanwhile
            # has set its own exchange; this one is not kept.
            self.backend_exchange = backend_exchange

    # -- the backend's response (ResponseSink) -------------------------------

    def response_started(
        self,
        status: int,
        reason: bytes,
        headers: list[tuple[bytes, bytes]],
        producer: IPushProducer,
    ) -> None:
        plan = self.plan
        assert plan is not None and plan.forward is not None
        if plan.forward.fail_on_error_status_code and status >= 400:
            self._cancel_backend()
            self._attempt_failed(
                "BackendError", f"The backend responded with status code {status}."
            )
            return
        ctx = self.ctx
        if not self.pipeline.outbound and ctx.status is None and not ctx.response_headers:
            # Nothing changes the response (the common case): stream it as
            # the plain path does, without a response view.
            self._stream_as_is(status, reason, headers, producer)
            return
        forwarded = response_headers_to_forward(headers)
        # The backend's framing stays the backend's: kept aside, put back
        # when its body streams (a policy cannot change it).
        self.length = [v for n, v in forwarded if n.lower() == b"content-length"]
        response = PolicyResponse(
            status,
            reason.decode("latin-1") or None,
            [
                (lower, value.decode("latin-1"))
                for name, value in forwarded
                if (lower := name.lower().decode("latin-1")) != "content-length"
            ],
        )
        try:
            outcome = run_outbound(self.pipeline.outbound, self.ctx, response)
        except PolicyExecutionError as error:
            self._cancel_backend()
            self._bug(error)
            return
        if outcome is PROCEED and response.body is None and response.message is None:
            self._stream(response, producer)
            return
        # A policy answered, replaced the body, or failed: the backend's
        # body is not wanted.
        self._cancel_backend()
        if isinstance(outcome, Failure):
            outcome = self._on_error(outcome)
        if outcome is PROCEED:
            outcome = response
        self._send(outcome)  # type: ignore[arg-type]

    def _stream(self, response: PolicyResponse, producer: IPushProducer) -> None:
        """Send the (changed) status and headers, then stream the backend's body."""
        try:
            # The body is the backend's, framed as the backend framed it: a
            # policy's Content-Length or Transfer-Encoding (or any hop-by-hop
            # header) would misframe it.
            encoded = [
                (text_bytes(n), text_bytes(v))
                for n, v in response.headers
                if n not in _FRAMING_TEXT
            ]
            reason = _reason_bytes(response.reason)
        except ValueError as error:
            self._cancel_backend()
            self._bug(error)
            return
        encoded += [(b"Content-Length", value) for value in self.length[:1]]
        self._stream_as_is(response.status, reason, encoded, producer, filtered=True)

    def _stream_as_is(
        self,
        status: int,
        reason: bytes,
        headers: list[tuple[bytes, bytes]],
        producer: IPushProducer,
        filtered: bool = False,
    ) -> None:
        self.streaming = True
        self.producer = producer
        start_streamed(
            self.request,
            status,
            reason,
            headers if filtered else response_headers_to_forward(headers),
            self.request_id,
            self.resource._health.draining,
            producer,
        )

    def body_received(self, data: bytes) -> None:
        if self.streaming:
            self.request.write(data)

    def response_finished(self) -> None:
        if not self.streaming or self.done:
            return
        request = self.request
        finish_streamed(request, self.producer)
        self.producer = None
        self._end(request.code)

    def response_failed(self, reason: TwistedFailure) -> None:
        if self.done:
            return
        resource = self.resource
        if self.streaming:
            if self.producer is not None:
                self.request.unregisterProducer()
                self.producer = None
            error = _body_error(self.request.content)
            if error is not None:
                # The client's body failed (it aborted the backend request),
                # not the backend: no backend error logged nor counted.
                self._report_body_failure(error)
            else:
                resource.report_broken_response(self._reported(), self.activity_id, reason)
            cut(self.request)
            self._end(self.request.code)
            return
        error = _body_error(self.request.content)
        if error is not None:
            # The client's body failed, not the backend: answer its status
            # (as the plain path does), never retried.
            self.backend_exchange = None
            self._body_failed(error)
            return
        timeout = resource.report_backend_failure(
            self.request, self._reported(), self.activity_id, reason
        )
        self.backend_exchange = None
        if timeout:
            self._attempt_failed("Timeout", str(reason.value), timeout=True)
        else:
            self._attempt_failed("BackendConnectionFailure", str(reason.value))

    def endpoint_failed(self, failed: Backend, retry_on: Backend, reason: TwistedFailure) -> None:
        """The backend client moved the request to another endpoint (see the plain path)."""
        self.backend = retry_on
        self.resource.report_endpoint_moved(self.entry.label, failed, retry_on, reason)

    def _reported(self) -> Backend:
        """
        The backend named in logs and metric labels: the route's when a
        policy chose another (``set-backend-service`` may build its URL from
        the request, which must not make labels or log text the client
        chooses).
        """
        return self.entry.backend if self.ctx.backend_url is not None else self.backend

    # -- failures, retries, on-error -----------------------------------------

    def _attempt_failed(self, reason: str, message: str, timeout: bool = False) -> None:
        """
        An attempt failed: retry if the plan's ``retry`` says so (its
        condition sees ``context.LastError``) and the body can be sent again
        from its start, else run ``on-error``.
        """
        error = _body_error(self.request.content)
        if error is not None:
            self._body_failed(error)
            return
        resource = self.resource
        status, answer = resource.failure_answer(timeout)
        failure = Failure(
            "forward-request",
            reason,
            message,
            "backend",
            PolicyResponse(status, None, [("content-type", "application/json")], None, answer),
        )
        self.ctx.last_error = failure
        plan = self.plan
        if plan is not None and plan.retry is not None:
            try:
                delay = retry_delay(plan.retry, self.ctx, self.retries)
            except ExpressionRuntimeError as error:
                failure = Failure(
                    "retry",
                    "ExpressionValueEvaluationFailure",
                    f"Expression evaluation failed. {error}",
                    "backend",
                    PolicyResponse(
                        500,
                        None,
                        [("content-type", "application/json")],
                        None,
                        "Internal server error",
                    ),
                )
                delay = None
            if delay is not None and not self._rewound():
                # A streamed body sent past its replay buffer cannot be
                # sent again: this failure is the last.
                resource._log.info(
                    "{route}: not retried, more of the request body was sent than "
                    "the replay buffer holds (net.server.body-replay-bytes) "
                    "(activityId {activity_id})",
                    route=self.entry.label,
                    activity_id=self.activity_id,
                )
                delay = None
            if delay is not None:
                self.retries += 1
                if delay <= 0:
                    self._forward()
                else:
                    self._timer = resource._clock.callLater(delay, self._forward)  # type: ignore[arg-type, misc]
                    self._watch_body()
                return
        try:
            response = self._on_error(failure)
        except PolicyExecutionError as error:
            self._bug(error)
            return
        self._send(response)

    def _collect(self, source: StreamedBody) -> None:
        """
        ``buffer-request-body="true"``: collect the streamed body into a
        :class:`BoundedBody` (memory, then a temporary file), then forward.
        """
        collector = _Collector(self, BoundedBody(source.limit), source)
        source.start(collector)

    def _collected(self, spool: BoundedBody, error: BodyError | None) -> None:
        if error is not None:
            spool.close()
            self._body_failed(error)
            return
        if self.done:
            spool.close()
            return
        self.spool = spool
        self._forward()

    def _rewound(self) -> bool:
        """
        The body of the next attempt starts from its beginning: a replaced
        or complete body always; a streamed one while it can rewind.
        """
        content = self.request.content
        if (
            self.ctx.body is not None
            or self.spool is not None
            or content.__class__ is not StreamedBody
        ):
            return True
        streamed: StreamedBody = content  # type: ignore[assignment]
        return not streamed.started or streamed.rewind()

    def _body_failed(self, error: BodyError) -> None:
        """
        The client's body cannot complete (over ``gateway.request.max-body``,
        too slow, bad framing, the client gone): its status is the answer,
        as on the plain path, unless the client left.
        """
        if self.done:
            return
        self._cancel_backend()
        self._stop_timer()
        if self.request.channel is None:
            self._end(499)
            return
        self._send(
            PolicyResponse(
                error.status, None, [("content-type", "application/json")], None, error.message
            )
        )

    def _on_error(self, failure: Failure) -> PolicyResponse:
        return run_on_error(self.pipeline.on_error, self.ctx, failure)

    def _cancel_backend(self) -> None:
        exchange = self.backend_exchange
        self.backend_exchange = None
        if exchange is not None:
            exchange.cancel()

    def _stop_timer(self) -> None:
        """No retry wait goes on."""
        timer = self._timer
        self._timer = None
        if timer is not None and timer.active():
            timer.cancel()

    def _watch_body(self) -> None:
        """
        The run waits (counters, a retry interval) with nobody reading the
        streamed body: a failure meanwhile is answered at once.
        """
        content = self.request.content
        if content.__class__ is StreamedBody:
            content.watch(self._body_broke)  # type: ignore[union-attr]

    def _unwatch_body(self) -> None:
        """Stop watching (a consumer takes over, or the run ended): no cycle is left."""
        content = self.request.content
        if content.__class__ is StreamedBody:
            content.watch(None)  # type: ignore[union-attr]

    def _body_broke(self, error: BodyError) -> None:
        """
        The body failed while the run waited for something else (see
        :meth:`_watch_body`) or while a ``set-body`` replacement went to the
        backend: its status is the answer, or, once the backend's response
        is streaming to the client, the response is cut.
        """
        if self.done:
            return
        if not self.streaming:
            self._body_failed(error)
            return
        self._cancel_backend()
        if self.done:
            return  # the cancelled exchange reported it (response_failed)
        if self.producer is not None:
            self.request.unregisterProducer()
            self.producer = None
        self._report_body_failure(error)
        cut(self.request)
        self._end(self.request.code)

    def _report_body_failure(self, error: BodyError) -> None:
        """The client's body failed after the response started: the client's fault, not the backend's."""
        self.resource._log.info(
            "{route}: the client's request body failed after the response started "
            "({status} {reason}): response cut (activityId {activity_id})",
            route=self.entry.label,
            status=error.status,
            reason=error.message,
            activity_id=self.activity_id,
        )

    def client_gone(self, reason: TwistedFailure) -> None:
        """The client disconnected first: stop the backend side and any retry wait."""
        if self.done:
            return
        self._cancel_backend()
        self._stop_timer()
        self._end(499)

    # -- answering -----------------------------------------------------------

    def _send(self, response: PolicyResponse) -> None:
        """Answer with ``response`` (a literal body, or APIM's envelope)."""
        if self.done:
            return
        request = self.request
        try:
            encoded = [
                (text_bytes(n), text_bytes(v))
                for n, v in response.headers
                if n not in _FRAMING_TEXT
            ]
            reason = _reason_bytes(response.reason)
        except ValueError as error:
            self._bug(error)
            return
        body = response.body
        if body is None:
            if response.message is None:
                body = b""
            elif response.status >= 500:
                body = envelope(response.status, response.message, activityId=self.activity_id)
            else:
                # APIM's refusals (ip-filter, check-header, validate-jwt,
                # subscription keys) carry no activityId; its 5xx do.
                body = envelope(response.status, response.message)
        request.setResponseCode(response.status, reason or None)
        headers = request.responseHeaders
        for name, value in encoded:
            headers.addRawHeader(name, value)
        if response.status in _NO_BODY:
            body = b""
        else:
            headers.setRawHeaders(b"content-length", [b"%d" % len(body)])
        if not headers.hasHeader(b"x-request-id"):
            headers.setRawHeaders(b"x-request-id", [self.request_id])
        content = request.content
        if content.__class__ is StreamedBody and not content.complete:  # type: ignore[union-attr]
            # Answered before the body is complete (a policy's 401, 429,
            # return-response): the rest is dropped as the client sends it,
            # and the answer closes the connection, as an early backend
            # answer does on the plain path.
            content.discard()  # type: ignore[union-attr]
        request.write(body)
        request.finish()
        self._end(response.status)

    def _outbound(self, response: PolicyResponse) -> None:
        """Outbound on a response the gateway made itself (no forward-request)."""
        outcome = run_outbound(self.pipeline.outbound, self.ctx, response)
        if isinstance(outcome, Failure):
            outcome = self._on_error(outcome)
        self._send(response if outcome is PROCEED else outcome)  # type: ignore[arg-type]

    def _bug(self, error: Exception) -> None:
        """Something the pipeline must not do, or a bug: 500, logged, never skipped."""
        self.resource._log.error(
            "{route}: the policy pipeline cannot run this request: {error} (activityId {activity_id})",
            route=self.entry.label,
            error=error,
            activity_id=self.activity_id,
        )
        if self.streaming:
            cut(self.request)
            self._end(self.request.code)
            return
        self._send(
            PolicyResponse(
                500, None, [("content-type", "application/json")], None, "Internal server error"
            )
        )

    def _end(self, status: int) -> None:
        if self.done:
            return
        self.done = True
        request = self.request
        request.on_client_gone = None
        self._unwatch_body()
        # Let go of the backend exchange (it points back here): freed by
        # reference counting, not the cyclic collector (see _Exchange._end).
        self.backend_exchange = None
        if self.spool is not None:
            self.spool.close()
        resource = self.resource
        ctx = self.ctx
        if ctx.postponed and resource._counters is not None:
            ctx.response_status = status
            # (A streamed body's size is what arrived: the whole body
            # unless it failed or was dropped early.)
            content = request.content
            sent = (content.size if content is not None else 0) + request.sentLength
            for problem in apply_postponed(ctx, resource._counters, sent):
                resource._log.warn("{route}: {problem} (activityId {activity_id})",
                                   route=self.entry.label, problem=problem,
                                   activity_id=self.activity_id)
        if self.counted:
            resource._request_ended()
        resource._observer.request_done(
            request,
            status,
            request.sentLength,
            resource._clock.seconds() - self.started,
            self.entry.label,
            self._reported().url if self.plan is not None else "-",
            self.activity_id,
        )


def _body_error(content: object) -> BodyError | None:
    """Why a streamed request body cannot complete, if it failed (else ``None``)."""
    if content.__class__ is StreamedBody:
        return content.error  # type: ignore[attr-defined, no-any-return]
    return None


class _Collector:
    """
    Receives a :class:`StreamedBody` into a :class:`BoundedBody` for
    ``buffer-request-body="true"``; hands it to its run at the end.
    """

    __slots__ = ("run", "source", "spool")

    def __init__(self, run: PolicyRun, spool: BoundedBody, source: StreamedBody) -> None:
        self.run: PolicyRun | None = run
        self.spool = spool
        self.source: StreamedBody | None = source

    def body_received(self, data: bytes) -> None:
        self.spool.write(data)

    def body_finished(self) -> None:
        self._end(None)

    def body_failed(self, error: BodyError) -> None:
        self._end(error)

    def _end(self, error: BodyError | None) -> None:
        run, source = self.run, self.source
        # Neither the run nor the source keeps the other through this one.
        self.run = self.source = None
        if source is not None:
            source.detach(self)
        if run is not None:
            run._collected(self.spool, error)
