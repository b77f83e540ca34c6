"""
The compiled form of a policy document: frozen data an executor runs.

One dataclass per policy kind, with APIM's attribute names in snake case
and APIM's defaults. Every value is already validated and converted
(status codes are ``int``, IP ranges are integers, booleans are ``bool``);
a value that may be a policy expression is a :data:`Text`: a ``str``, or
an :class:`~gateway.translate.policy.Expression` to evaluate on the
request (``value if isinstance(value, str) else value.text(context)``).
Nothing here is parsed again on the request path.

A string that a secret named value went into is a :class:`RedactedStr`:
a real ``str`` (the executor uses it as any other) whose ``repr`` shows
``{{name}}`` instead of the secret, so printing a step, a pipeline or a
test failure does not leak it. Use
:func:`~gateway.translate.policy.describe` for anything shown to people.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Self, Union

from ._expressions import Expression

__all__ = [
    "REQUEST",
    "RESPONSE",
    "SECTIONS",
    "Base",
    "BASE",
    "CheckHeader",
    "Condition",
    "Choose",
    "Cors",
    "ForwardRequest",
    "IpFilter",
    "JwtClaim",
    "JwtKey",
    "MockResponse",
    "Pipeline",
    "Quota",
    "RateLimit",
    "RateLimitByKey",
    "RedactedStr",
    "Retry",
    "ReturnResponse",
    "RewriteUri",
    "SetBackendService",
    "SetBody",
    "SetHeader",
    "SetMethod",
    "SetQueryParameter",
    "SetStatus",
    "SetVariable",
    "Step",
    "Text",
    "ValidateJwt",
    "When",
]

#: The four sections of a policy document, in execution order.
SECTIONS = ("inbound", "backend", "outbound", "on-error")

#: :attr:`SetHeader.target`: in ``inbound`` and ``backend`` a header of the
#: request to the backend; in ``outbound`` and ``on-error`` of the response.
REQUEST = "request"
RESPONSE = "response"

class RedactedStr(str):
    """
    A string built from one or more secret named values.

    It *is* the real value (``str`` operations, ``==``, hashing, writing
    it into a header all see the secret), because the executor must send
    it. Only ``repr`` differs: it shows :attr:`shown`, the same text with
    ``{{name}}`` where each secret went, so a step's dataclass ``repr``
    (logs, test failures, debuggers) never carries the secret. ``str()``
    and f-strings still give the value: show steps with
    :func:`~gateway.translate.policy.describe`, which uses :attr:`shown`.

    :ivar shown: the displayable form; ``***`` when nothing better is known.
    """

    shown: str

    def __new__(cls, value: str, shown: str = "***") -> Self:
        self = super().__new__(cls, value)
        object.__setattr__(self, "shown", shown)
        return self

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __repr__(self) -> str:
        return repr(self.shown)

    def __reduce__(self) -> tuple[type[RedactedStr], tuple[str, str]]:
        """Copies and pickles rebuild it with :attr:`shown` (``str``'s own would drop it)."""
        return (type(self), (str(self), self.shown))


def keep_secret(original: str, derived: str) -> str:
    """
    ``derived`` (``original`` stripped, upper-cased, …) still secret when
    ``original`` was: ``str`` methods return plain ``str``, which would
    otherwise drop the redaction of a value a compiler normalizes.
    """
    if isinstance(original, RedactedStr) and not isinstance(derived, RedactedStr):
        return RedactedStr(derived, "***")
    return derived


#: A literal string, or an expression evaluated per request.
Text = Union[str, Expression]
#: A condition: a literal ``true``/``false``, or a ``bool`` expression.
Condition = Union[bool, Expression]


@dataclass(frozen=True, slots=True)
class Base:
    """``<base/>``: where the parent scope's section goes (never in a :class:`Pipeline`)."""


BASE = Base()


@dataclass(frozen=True, slots=True)
class SetHeader:
    """``set-header``: ``exists_action`` is override, skip, append or delete."""

    target: str
    name: str
    exists_action: str = "override"
    values: tuple[Text, ...] = ()


@dataclass(frozen=True, slots=True)
class SetQueryParameter:
    """``set-query-parameter`` (inbound, backend)."""

    name: str
    exists_action: str = "override"
    values: tuple[Text, ...] = ()


@dataclass(frozen=True, slots=True)
class RewriteUri:
    """``rewrite-uri``: ``{name}`` in the template takes the operation's captured parameter."""

    template: Text
    copy_unmatched_params: bool = True


@dataclass(frozen=True, slots=True)
class SetBackendService:
    """``set-backend-service base-url=...`` (``backend-id`` is not supported)."""

    base_url: Text


@dataclass(frozen=True, slots=True)
class SetMethod:
    """``set-method``: the element's text is the method (upper-cased when literal)."""

    method: Text


@dataclass(frozen=True, slots=True)
class SetStatus:
    """``set-status code reason``."""

    code: int
    reason: Text


@dataclass(frozen=True, slots=True)
class SetBody:
    """``set-body`` with a literal (or expression) body; no Liquid templates."""

    body: Text


@dataclass(frozen=True, slots=True)
class ReturnResponse:
    """``return-response``: stop the pipeline and answer with these parts."""

    status: SetStatus | None = None
    headers: tuple[SetHeader, ...] = ()
    body: SetBody | None = None


@dataclass(frozen=True, slots=True)
class MockResponse:
    """``mock-response``: answer without calling the backend (no body: there are no examples)."""

    status_code: int = 200
    content_type: str | None = None


@dataclass(frozen=True, slots=True)
class CheckHeader:
    """``check-header``: the header must exist and, when values are given, equal one of them."""

    name: str
    failed_check_httpcode: int
    failed_check_error_message: str
    ignore_case: bool
    values: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class IpFilter:
    """
    ``ip-filter``: ``action`` allow or forbid; ``ranges`` are inclusive
    ``(version, first, last)`` integer triples, a single ``address`` being a
    range of one, so the executor compares integers.
    :attr:`addresses` is the same list as people write it.
    """

    action: str
    ranges: tuple[tuple[int, int, int], ...]

    @property
    def addresses(self) -> tuple[str, ...]:
        """
        :attr:`ranges` as text (``10.0.0.1``, ``10.0.0.0-10.0.0.255``):
        derived from the integers, so what is shown is exactly what is
        matched, in the order of the document.
        """
        return tuple(_range_text(*triple) for triple in self.ranges)


def _range_text(version: int, first: int, last: int) -> str:
    """One ``(version, first, last)`` triple as an address or ``first-last``."""
    address = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
    if first == last:
        return str(address(first))
    return f"{address(first)}-{address(last)}"


@dataclass(frozen=True, slots=True)
class Cors:
    """
    ``cors``. ``allowed_origins``/``allowed_methods``/``allowed_headers``
    may hold ``*``; ``allowed_methods`` is ``("GET", "POST")`` when the
    element is absent (APIM's default).
    """

    allowed_origins: tuple[str, ...]
    allowed_methods: tuple[str, ...] = ("GET", "POST")
    allowed_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    allow_credentials: bool = False
    preflight_result_max_age: int = 0
    terminate_unmatched_request: bool = False


@dataclass(frozen=True, slots=True)
class JwtKey:
    """One ``issuer-signing-keys/key``: a base64 symmetric key, or ``n``/``e``, with an optional ``id`` (kid)."""

    value: str | None = None
    id: str | None = None
    n: str | None = None
    e: str | None = None
    certificate_id: str | None = None


@dataclass(frozen=True, slots=True)
class JwtClaim:
    """One ``required-claims/claim``: ``match`` all or any."""

    name: str
    match: str = "all"
    separator: str | None = None
    values: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ValidateJwt:
    """
    ``validate-jwt`` as data; the token source is exactly one of
    ``header_name``, ``query_parameter_name``, ``token_value``. Keys from
    ``openid_config_urls`` are fetched and cached at run time, not here.
    """

    header_name: Text | None = None
    query_parameter_name: Text | None = None
    token_value: Text | None = None
    failed_validation_httpcode: int = 401
    failed_validation_error_message: str | None = None
    require_expiration_time: bool = True
    require_scheme: str | None = None
    require_signed_tokens: bool = True
    clock_skew: int = 0
    output_token_variable_name: str | None = None
    openid_config_urls: tuple[str, ...] = ()
    issuer_signing_keys: tuple[JwtKey, ...] = ()
    audiences: tuple[Text, ...] = ()
    issuers: tuple[Text, ...] = ()
    required_claims: tuple[JwtClaim, ...] = ()


@dataclass(frozen=True, slots=True)
class ForwardRequest:
    """``forward-request``: ``timeout`` in seconds for the response headers."""

    timeout: int = 300
    follow_redirects: bool = False
    buffer_request_body: bool = False
    buffer_response: bool = True
    fail_on_error_status_code: bool = False


@dataclass(frozen=True, slots=True)
class SetVariable:
    """``set-variable name value``."""

    name: str
    value: Text


@dataclass(frozen=True, slots=True)
class When:
    """One ``choose/when``."""

    condition: Condition
    steps: tuple[Step, ...] = ()


@dataclass(frozen=True, slots=True)
class Choose:
    """``choose``: the first ``when`` whose condition holds, else ``otherwise``."""

    branches: tuple[When, ...]
    otherwise: tuple[Step, ...] = ()


@dataclass(frozen=True, slots=True)
class Retry:
    """
    ``retry``: run ``steps``, then again while ``condition`` holds, at most
    ``count`` more times. Waits: ``interval`` alone is fixed; with
    ``delta`` linear; with ``delta`` and ``max_interval`` exponential (APIM's
    formulas, applied by the executor).
    """

    condition: Condition
    count: int
    interval: int
    max_interval: int | None = None
    delta: int | None = None
    first_fast_retry: bool = False
    steps: tuple[Step, ...] = ()


@dataclass(frozen=True, slots=True)
class LimitTarget:
    """
    A nested ``<api>`` (and its ``<operation>``) of ``rate-limit`` or
    ``quota``: a limit of its own for the calls of one API or operation,
    counted independently of the enclosing one.

    :ivar api: the API's id (APIM's ``id``, else ``name``: apimgw's API
        ids are their names).
    :ivar operation: the operation's name, ``None`` for the whole API.
    """

    api: str
    operation: str | None
    calls: int | None
    renewal_period: int | None
    bandwidth: int | None = None


@dataclass(frozen=True, slots=True)
class RateLimit:
    """
    ``rate-limit``: ``calls`` per sliding ``renewal_period`` seconds, per
    subscription, counted per policy scope (:attr:`scope`, e.g.
    ``products/starter``), plus the nested :attr:`targets`.
    """

    calls: int
    renewal_period: int
    retry_after_header_name: str | None = None
    retry_after_variable_name: str | None = None
    remaining_calls_header_name: str | None = None
    remaining_calls_variable_name: str | None = None
    total_calls_header_name: str | None = None
    targets: tuple[LimitTarget, ...] = ()
    scope: str = ""


@dataclass(frozen=True, slots=True)
class RateLimitByKey:
    """
    ``rate-limit-by-key``: ``calls`` per sliding ``renewal_period`` per
    value of ``counter_key``, one counter per key value for every scope
    (APIM). An ``increment_condition`` that is an expression is evaluated,
    and the call counted, after the response (APIM postpones it to the end
    of outbound so that it may read ``context.Response``).
    """

    calls: int
    renewal_period: int
    counter_key: Text
    increment_condition: Condition | None = None
    increment_count: int = 1
    retry_after_header_name: str | None = None
    retry_after_variable_name: str | None = None
    remaining_calls_header_name: str | None = None
    remaining_calls_variable_name: str | None = None
    total_calls_header_name: str | None = None


@dataclass(frozen=True, slots=True)
class Quota:
    """
    ``quota``: ``calls`` and/or ``bandwidth`` (kilobytes) per fixed
    ``renewal_period`` (0: never renews), per subscription, at product
    scope, plus the nested :attr:`targets`.
    """

    renewal_period: int
    calls: int | None = None
    bandwidth: int | None = None
    targets: tuple[LimitTarget, ...] = ()
    scope: str = ""


Step = Union[
    SetHeader, SetQueryParameter, RewriteUri, SetBackendService, SetMethod, SetStatus, SetBody,
    ReturnResponse, MockResponse, CheckHeader, IpFilter, Cors, ValidateJwt, ForwardRequest,
    SetVariable, Choose, Retry, RateLimit, RateLimitByKey, Quota,
]


@dataclass(frozen=True, slots=True)
class Pipeline:
    """
    One operation's effective policies, scopes already merged: what the
    executor runs, section by section. An empty ``backend`` means the
    request is not forwarded (APIM: without ``forward-request`` nothing is
    sent); without a global document the global scope is
    :data:`~gateway.translate.policy.DEFAULT_GLOBAL_POLICY`, which forwards.
    """

    inbound: tuple[Step, ...] = ()
    backend: tuple[Step, ...] = ()
    outbound: tuple[Step, ...] = ()
    on_error: tuple[Step, ...] = ()

    def section(self, name: str) -> tuple[Step, ...]:
        """A section by its XML name (``on-error`` → :attr:`on_error`)."""
        return getattr(self, name.replace("-", "_"))  # type: ignore[no-any-return]
