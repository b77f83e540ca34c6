"""
Policy elements → steps: APIM's attributes, their defaults and checks.

One function per policy kind reads its element through :class:`_Element`,
which substitutes ``{{named values}}``, compiles ``@(...)`` expressions
where a value may be one, converts and checks each attribute, and reports
unknown attributes and children. Every problem carries the element path
(``policies/inbound/set-header[2]/@exists-action``). An element with a
problem compiles to nothing; the document's problems tell the caller not
to serve a partial pipeline.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from ._expressions import BOOL, Expression, ExpressionError, compile_expression, is_expression
from ._steps import (
    BASE,
    REQUEST,
    RESPONSE,
    SECTIONS,
    Base,
    CheckHeader,
    Choose,
    Condition,
    Cors,
    ForwardRequest,
    IpFilter,
    JwtClaim,
    JwtKey,
    LimitTarget,
    MockResponse,
    Quota,
    RateLimit,
    RateLimitByKey,
    RedactedStr,
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
    When,
    keep_secret,
)
from ._xml import Node, XmlError, parse_xml

__all__ = [
    "INVALID",
    "NOT_ENFORCED",
    "UNSUPPORTED",
    "CompiledDocument",
    "PolicyProblem",
    "compile_document",
    "referenced_named_values",
]

#: :attr:`PolicyProblem.kind`: the document is wrong (APIM would refuse it).
INVALID = "invalid"
#: An APIM policy or attribute apimgw does not implement.
UNSUPPORTED = "unsupported"
#: Parsed and valid, but not enforced yet (rate limits and quotas).
NOT_ENFORCED = "not-enforced"

_NAMED_VALUE = re.compile(r"\{\{([A-Za-z0-9._-]+)\}\}")

#: An HTTP field name (RFC 9110 §5.1: a token). A header name a policy
#: sets is checked here, once, so none can split a message at run time.
_FIELD_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


@dataclass(frozen=True, slots=True)
class PolicyProblem:
    """
    Something wrong in one policy document.

    :ivar scope: the scope whose document it is (``global``, ``product``,
        ``api``, ``operation``), or ``""`` for a document compiled alone;
        the caller turns it into a :class:`~gateway.model.Problem` on that
        scope's object.
    :ivar path: the element (``policies/inbound/set-header[2]``) or
        attribute (``.../@exists-action``) the problem is about.
    """

    path: str
    message: str
    kind: str = INVALID
    scope: str = ""

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass(frozen=True, slots=True)
class CompiledDocument:
    """
    One scope's document, compiled: each section's steps with
    :data:`~gateway.translate.policy.BASE` where ``<base/>`` stood, or
    ``None`` for a section the document does not have (it inherits the
    parent's section whole). Assembled with its parents by
    :func:`~gateway.translate.policy.assemble`.
    """

    inbound: tuple[Step | Base, ...] | None = None
    backend: tuple[Step | Base, ...] | None = None
    outbound: tuple[Step | Base, ...] | None = None
    on_error: tuple[Step | Base, ...] | None = None
    problems: tuple[PolicyProblem, ...] = ()

    def section(self, name: str) -> tuple[Step | Base, ...] | None:
        return getattr(self, name.replace("-", "_"))  # type: ignore[no-any-return]


def referenced_named_values(text: str) -> frozenset[str]:
    """
    The ``{{names}}`` a document uses, found without parsing it: with their
    values and which of them are secret (secrecy changes how the compiled
    steps show), the key under which a compiled document can be reused.
    """
    return frozenset(_NAMED_VALUE.findall(text))


# --- reading one element ----------------------------------------------------


@dataclass
class _Compiler:
    """
    The state of one document's compilation.

    :ivar secrets: the names in :attr:`named_values` whose values are
        secret: substituted for real, shown as ``{{name}}``.
    """

    named_values: Mapping[str, str]
    secrets: Collection[str] = frozenset()
    problems: list[PolicyProblem] = field(default_factory=list)
    #: the document's scope id (``global``, ``products/p``, ``apis/a``,
    #: ``apis/a/operations/o``) when known: the limit policies' counters
    #: are per scope, and some policies are allowed at some scopes only
    scope: str | None = None

    def problem(self, path: str, message: str, kind: str = INVALID) -> None:
        self.problems.append(PolicyProblem(path, self.scrub(message), kind))

    def scrub(self, message: str) -> str:
        """
        ``message`` with each secret value replaced by ``{{name}}``:
        problems quote bad values (``must be an integer, not '…'``, an
        expression's unknown name), and problems are logged and served on
        ``/config``. Longest values first, so one secret inside another
        is not half replaced.
        """
        values = sorted(((self.named_values[name], name) for name in self.secrets
                         if self.named_values.get(name)), key=lambda item: -len(item[0]))
        for value, name in values:
            message = message.replace(value, "{{" + name + "}}")
        return message

    def substitute(self, value: str, path: str) -> str | None:
        """
        ``{{name}}`` → its value; ``None`` (and a problem) for an unknown
        name. When a secret went in, the result is a :class:`RedactedStr`
        that shows the text with that ``{{name}}`` left as written.
        """
        if "{{" not in value:
            return value
        missing: list[str] = []
        secret = False

        def replace(match: re.Match[str]) -> str:
            nonlocal secret
            name = match.group(1)
            if name not in self.named_values:
                missing.append(name)
                return ""
            secret = secret or name in self.secrets
            return self.named_values[name]

        def show(match: re.Match[str]) -> str:
            name = match.group(1)
            return match.group(0) if name in self.secrets else self.named_values[name]

        out = _NAMED_VALUE.sub(replace, value)
        if missing:
            for name in missing:
                self.problem(path, f"unknown named value {name!r}")
            return None
        return RedactedStr(out, _NAMED_VALUE.sub(show, value)) if secret else out


class _Element:
    """
    One policy element being read: attribute accessors that convert,
    check and report with the attribute's path, and a final check that
    nothing unread remains.
    """

    def __init__(self, node: Node, compiler: _Compiler) -> None:
        self.node = node
        self.compiler = compiler
        self.used: set[str] = set()
        self.before = len(compiler.problems)

    @property
    def failed(self) -> bool:
        return len(self.compiler.problems) > self.before

    def problem(self, message: str, attribute: str | None = None, kind: str = INVALID) -> None:
        path = self.node.path if attribute is None else f"{self.node.path}/@{attribute}"
        self.compiler.problem(path, message, kind)

    def raw(self, name: str, required: bool = False) -> str | None:
        self.used.add(name)
        value = self.node.attributes.get(name)
        if value is None:
            if required:
                self.problem("is required", name)
            return None
        return self.compiler.substitute(value, f"{self.node.path}/@{name}")

    def string(self, name: str, required: bool = False) -> str | None:
        """A literal string (no expression)."""
        value = self.raw(name, required)
        if value is not None and is_expression(value):
            self.problem("policy expressions are not supported here", name, UNSUPPORTED)
            return None
        if value is not None and required and not value.strip():
            self.problem("must not be empty", name)
            return None
        return value

    def text(self, name: str, required: bool = False) -> Text | None:
        """A string or an expression."""
        value = self.raw(name, required)
        if value is None:
            return None
        return _text(value, f"{self.node.path}/@{name}", self.compiler)

    def enum(self, name: str, choices: tuple[str, ...], default: str | None) -> str | None:
        value = self.string(name, required=default is None)
        if value is None:
            return default
        if value not in choices:
            self.problem(f"must be one of {', '.join(choices)}", name)
            return default
        return value

    def integer(self, name: str, default: int | None = None, *, required: bool = False,
                low: int | None = None, high: int | None = None) -> int | None:
        value = self.string(name, required)
        if value is None:
            return default
        text = value.strip()
        if not (text.isdigit() or (text.startswith("-") and text[1:].isdigit())):
            self.problem(f"must be an integer, not {value!r}", name)
            return default
        number = int(text)
        if (low is not None and number < low) or (high is not None and number > high):
            bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
            self.problem(f"must be {bounds}, not {number}", name)
            return default
        return number

    def status(self, name: str, default: int | None = None, required: bool = False) -> int | None:
        return self.integer(name, default, required=required, low=100, high=599)

    def boolean(self, name: str, default: bool | None, required: bool = False) -> bool | None:
        value = self.string(name, required)
        if value is None:
            return default
        lowered = value.strip().lower()
        if lowered not in ("true", "false"):
            self.problem(f"must be true or false, not {value!r}", name)
            return default
        return lowered == "true"

    def condition(self, name: str) -> Condition | None:
        value = self.raw(name, required=True)
        if value is None:
            return None
        return _condition(value, f"{self.node.path}/@{name}", self.compiler)

    def unsupported(self, *names: str) -> None:
        """APIM attributes apimgw does not implement: a problem when present."""
        for name in names:
            self.used.add(name)
            if name in self.node.attributes:
                self.problem("is not supported by apimgw", name, UNSUPPORTED)

    def children(self, allowed: tuple[str, ...]) -> list[Node]:
        for child in self.node.children:
            if child.tag not in allowed:
                expected = ", ".join(allowed) if allowed else "none"
                self.compiler.problem(child.path, f"unexpected element in {self.node.tag} "
                                                  f"(expected: {expected})")
        return [c for c in self.node.children if c.tag in allowed]

    def body_text(self) -> Text | None:
        """The element's text (named values substituted; an expression compiled)."""
        if self.node.children:
            self.children(())
            return None
        value = self.compiler.substitute(self.node.text.strip(), self.node.path)
        if value is None:
            return None
        return _text(value, self.node.path, self.compiler)

    def finish(self) -> None:
        for name in self.node.attributes:
            if name not in self.used:
                self.problem(f"unknown attribute of {self.node.tag}", name)


def _text(value: str, path: str, compiler: _Compiler) -> Text | None:
    """A literal as it is, or an expression compiled (``None`` and a problem if it does not)."""
    if not is_expression(value):
        return value
    return _expression(value, path, compiler)


def _expression(value: str, path: str, compiler: _Compiler) -> Expression | None:
    """
    ``value`` (known to be ``@(...)`` or ``@{...}``) compiled, or ``None``
    and a problem. An expression a secret went into keeps the secret in its
    closures and shows the ``{{name}}`` form as its :attr:`~Expression.source`.
    """
    try:
        compiled = compile_expression(value)
    except ExpressionError as error:
        compiler.problem(path, str(error))
        return None
    if isinstance(value, RedactedStr):
        return dataclasses.replace(compiled, source=value.shown)
    return compiled


def _condition(value: str, path: str, compiler: _Compiler) -> Condition | None:
    lowered = value.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if not is_expression(value):
        compiler.problem(path, "must be true, false or a policy expression")
        return None
    compiled = _expression(value, path, compiler)
    if compiled is not None and compiled.type != BOOL:
        compiler.problem(path, f"must be a bool expression, not {compiled.type}"
                         + (" (cast it with (bool))" if compiled.type == "object" else ""))
        return None
    return compiled


def _texts(nodes: list[Node], compiler: _Compiler) -> tuple[Text, ...] | None:
    """The texts of ``value``-like children; ``None`` if any failed."""
    out: list[Text] = []
    ok = True
    for node in nodes:
        element = _Element(node, compiler)
        value = element.body_text()
        element.finish()
        if value is None:
            ok = False
        else:
            out.append(value)
    return tuple(out) if ok else None


def _literals(nodes: list[Node], compiler: _Compiler, what: str) -> tuple[str, ...] | None:
    values = _texts(nodes, compiler)
    if values is None:
        return None
    for node, value in zip(nodes, values):
        if isinstance(value, Expression):
            compiler.problem(node.path, f"policy expressions are not supported in {what}",
                             UNSUPPORTED)
            return None
    return values  # type: ignore[return-value]


# --- the policies -----------------------------------------------------------


def _named_values(e: _Element) -> tuple[str, str, tuple[Text, ...]] | None:
    """
    ``name``, ``exists-action`` and the ``<value>`` children that
    ``set-header`` and ``set-query-parameter`` share, checked alike.
    """
    name = e.string("name", required=True)
    action = e.enum("exists-action", ("override", "skip", "append", "delete"), "override")
    values = _texts(e.children(("value",)), e.compiler)
    if name is None or action is None or values is None or e.failed:
        return None
    if action != "delete" and not values:
        e.problem("needs at least one value element (or exists-action=\"delete\")")
        return None
    return name, action, values


def _set_header(e: _Element, section: str) -> SetHeader | None:
    parts = _named_values(e)
    if parts is None:
        return None
    if not _FIELD_NAME.fullmatch(parts[0]):
        e.problem(f"must be an HTTP header name (a token), not {parts[0][:40]!r}", "name")
        return None
    target = REQUEST if section in ("inbound", "backend") else RESPONSE
    return SetHeader(target, *parts)


def _set_query_parameter(e: _Element, section: str) -> SetQueryParameter | None:
    parts = _named_values(e)
    return None if parts is None else SetQueryParameter(*parts)


def _rewrite_uri(e: _Element, section: str) -> RewriteUri | None:
    template = e.text("template", required=True)
    copy = e.boolean("copy-unmatched-params", True)
    e.children(())
    if template is None or copy is None:
        return None
    if isinstance(template, str) and not template.startswith("/"):
        e.problem("must start with /", "template")
        return None
    return RewriteUri(template, copy)


def is_loopback_url(url: str) -> bool:
    """Whether ``url``'s host is this machine (tests, a local identity provider)."""
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _set_backend_service(e: _Element, section: str) -> SetBackendService | None:
    e.unsupported("backend-id", "sf-partition-key", "sf-replica-type", "sf-resolve-condition",
                  "sf-service-instance-name", "sf-listener-name", "dapr-app-id", "dapr-method",
                  "dapr-namespace")
    base_url = e.text("base-url", required="backend-id" not in e.node.attributes)
    e.children(())
    if base_url is None:
        return None
    if isinstance(base_url, str):
        if not base_url.startswith(("http://", "https://")):
            e.problem("must be an http:// or https:// URL", "base-url")
            return None
        try:
            parts = urlsplit(base_url)
            parts.port  # noqa: B018 (raises on a bad port)
        except ValueError:
            e.problem("is not a valid URL", "base-url")
            return None
        if not parts.hostname:
            e.problem("has no host", "base-url")
            return None
        if parts.query or parts.fragment:
            # A query here would reach logs and error messages with the URL
            # (a key in it too): set-query-parameter is the place for it.
            e.problem("must not have a query or fragment (use set-query-parameter)", "base-url")
            return None
    return SetBackendService(base_url)


def _set_method(e: _Element, section: str) -> SetMethod | None:
    method = e.body_text()
    if method is None:
        return None
    if isinstance(method, str):
        method = keep_secret(method, method.strip().upper())
        if not method or not method.isalpha():
            e.problem(f"must be an HTTP method, not {method!r}")
            return None
    return SetMethod(method)


def _set_status(e: _Element, section: str) -> SetStatus | None:
    code = e.status("code", required=True)
    reason = e.text("reason", required=True)
    e.children(())
    if code is None or reason is None:
        return None
    return SetStatus(code, reason)


def _set_body(e: _Element, section: str) -> SetBody | None:
    e.unsupported("template")
    e.enum("xsi-nil", ("blank", "null"), "blank")
    body = e.body_text()
    if body is None:
        if e.node.children:
            e.problem("markup inside set-body is not supported: escape it or wrap it in CDATA",
                      kind=UNSUPPORTED)
        return None
    return SetBody(body)


def _return_response(e: _Element, section: str) -> ReturnResponse | None:
    e.unsupported("response-variable-name")
    status: SetStatus | None = None
    headers: list[SetHeader] = []
    body: SetBody | None = None
    for child in e.children(("set-status", "set-header", "set-body")):
        step = _compile_one(child, "outbound", e.compiler)
        if isinstance(step, SetStatus):
            status = step
        elif isinstance(step, SetHeader):
            headers.append(step)
        elif isinstance(step, SetBody):
            body = step
    return ReturnResponse(status, tuple(headers), body)


def _mock_response(e: _Element, section: str) -> MockResponse | None:
    code = e.status("status-code", 200)
    content_type = e.string("content-type")
    e.children(())
    return MockResponse(code if code is not None else 200, content_type)


def _check_header(e: _Element, section: str) -> CheckHeader | None:
    name = e.string("name", required=True)
    code = e.status("failed-check-httpcode", required=True)
    message = e.string("failed-check-error-message", required=True)
    ignore_case = e.boolean("ignore-case", None, required=True)
    values = _literals(e.children(("value",)), e.compiler, "check-header values")
    if None in (name, code, message, ignore_case) or values is None:
        return None
    return CheckHeader(name, code, message, ignore_case, values)  # type: ignore[arg-type]


def _address(text: str, path: str, compiler: _Compiler) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        compiler.problem(path, f"{text!r} is not an IP address")
        return None


def _ip_filter(e: _Element, section: str) -> IpFilter | None:
    action = e.enum("action", ("allow", "forbid"), None)
    ranges: list[tuple[int, int, int]] = []
    children = e.children(("address", "address-range"))
    for child in children:
        sub = _Element(child, e.compiler)
        if child.tag == "address":
            text = sub.body_text()
            if isinstance(text, Expression):
                sub.problem("policy expressions are not supported here", kind=UNSUPPORTED)
            elif text is not None:
                ip = _address(text, child.path, e.compiler)
                if ip is not None:
                    ranges.append((ip.version, int(ip), int(ip)))
        else:
            first = sub.string("from", required=True)
            last = sub.string("to", required=True)
            sub.children(())
            low = None if first is None else _address(first, f"{child.path}/@from", e.compiler)
            high = None if last is None else _address(last, f"{child.path}/@to", e.compiler)
            if low is not None and high is not None:
                if low.version != high.version:
                    sub.problem("from and to must be of the same IP version")
                elif int(low) > int(high):
                    sub.problem("from must not be after to")
                else:
                    ranges.append((low.version, int(low), int(high)))
        sub.finish()
    if not children:
        e.problem("needs at least one address or address-range element")
    if action is None or e.failed:
        return None
    return IpFilter(action, tuple(ranges))


def _list(parent: _Element, node: Node, item: str, what: str, required: bool,
          read: tuple[str, ...] = ()) -> tuple[str, ...] | None:
    """The literal texts of ``node``'s ``item`` children (``read``: attributes already read)."""
    element = _Element(node, parent.compiler)
    element.used.update(read)
    values = _literals(element.children((item,)), parent.compiler, what)
    element.finish()
    if values is not None and required and not values:
        element.problem(f"needs at least one {item} element")
        return None
    return values


def _cors(e: _Element, section: str) -> Cors | None:
    credentials = e.boolean("allow-credentials", False)
    terminate = e.boolean("terminate-unmatched-request", False)
    origins: tuple[str, ...] | None = None
    methods: tuple[str, ...] | None = ("GET", "POST")
    headers: tuple[str, ...] | None = ()
    expose: tuple[str, ...] | None = ()
    max_age: int | None = 0
    for child in e.children(("allowed-origins", "allowed-methods", "allowed-headers",
                             "expose-headers")):
        if child.tag == "allowed-origins":
            origins = _list(e, child, "origin", "origins", True)
        elif child.tag == "allowed-methods":
            sub = _Element(child, e.compiler)
            max_age = sub.integer("preflight-result-max-age", 0, low=0)
            methods = _list(e, child, "method", "methods", True, read=("preflight-result-max-age",))
            if methods is not None:
                methods = tuple(keep_secret(m, m.strip().upper()) for m in methods)
        elif child.tag == "allowed-headers":
            headers = _list(e, child, "header", "headers", True)
        else:
            expose = _list(e, child, "header", "headers", True)
    if origins is None and not e.failed:
        e.problem("needs an allowed-origins element")
    if origins is not None:
        if "*" in origins and len(origins) > 1:
            e.problem("allowed-origins: * must be the only origin")
        elif "*" in origins and credentials:
            e.problem("allow-credentials cannot be true with the * origin")
        for origin in origins:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                e.problem(f"allowed-origins: {origin!r} is not * or a URI with a scheme")
    if e.failed or None in (origins, methods, headers, expose, max_age, credentials, terminate):
        return None
    return Cors(
        allowed_origins=tuple(keep_secret(o, o.rstrip("/")) for o in origins),  # type: ignore[union-attr]
        allowed_methods=methods,  # type: ignore[arg-type]
        allowed_headers=headers,  # type: ignore[arg-type]
        expose_headers=expose,  # type: ignore[arg-type]
        allow_credentials=credentials,  # type: ignore[arg-type]
        preflight_result_max_age=max_age,  # type: ignore[arg-type]
        terminate_unmatched_request=terminate,  # type: ignore[arg-type]
    )


def _validate_jwt(e: _Element, section: str) -> ValidateJwt | None:
    header = e.text("header-name")
    query = e.text("query-parameter-name")
    token = e.text("token-value")
    given = [n for n in ("header-name", "query-parameter-name", "token-value")
             if n in e.node.attributes]
    if len(given) != 1:
        e.problem("needs exactly one of header-name, query-parameter-name, token-value"
                  + (f" (found {', '.join(given)})" if given else ""))
    code = e.status("failed-validation-httpcode", 401)
    message = e.string("failed-validation-error-message")
    require_exp = e.boolean("require-expiration-time", True)
    scheme = e.string("require-scheme")
    require_signed = e.boolean("require-signed-tokens", True)
    skew = e.integer("clock-skew", 0, low=0)
    output = e.string("output-token-variable-name")
    urls: list[str] = []
    keys: list[JwtKey] = []
    audiences: tuple[Text, ...] | None = ()
    issuers: tuple[Text, ...] | None = ()
    claims: list[JwtClaim] = []
    for child in e.children(("openid-config", "issuer-signing-keys", "decryption-keys",
                             "audiences", "issuers", "required-claims")):
        sub = _Element(child, e.compiler)
        if child.tag == "openid-config":
            url = sub.string("url", required=True)
            sub.unsupported("validate-connectivity")
            sub.children(())
            if url is not None:
                if url.startswith("http://") and not is_loopback_url(url):
                    # Keys fetched in clear could be replaced on the way:
                    # accepted tokens would be forged ones (IdentityModel
                    # also requires https).
                    sub.problem("must be an https:// URL (http:// only on a loopback host)",
                                "url")
                elif url.startswith(("http://", "https://")):
                    urls.append(url)
                else:
                    sub.problem("must be an http:// or https:// URL", "url")
        elif child.tag == "decryption-keys":
            sub.problem("encrypted tokens (decryption-keys) are not supported", kind=UNSUPPORTED)
        elif child.tag == "issuer-signing-keys":
            for key_node in sub.children(("key",)):
                key = _Element(key_node, e.compiler)
                kid = key.string("id")
                certificate = key.string("certificate-id")
                n, exponent = key.string("n"), key.string("e")
                text = key.body_text()
                value: str | None = None
                if isinstance(text, Expression):
                    key.problem("policy expressions are not supported in keys", kind=UNSUPPORTED)
                else:
                    value = text
                if certificate is not None:
                    key.problem("certificate-id is not supported (give n and e, or the key)",
                                "certificate-id", UNSUPPORTED)
                if (n is None) != (exponent is None):
                    key.problem("n and e go together")
                if not value and n is None and certificate is None:
                    key.problem("needs a base64 key, or n and e")
                key.finish()
                if not key.failed:
                    keys.append(JwtKey(value or None, kid, n, exponent, certificate))
        elif child.tag == "audiences":
            audiences = _texts(sub.children(("audience",)), e.compiler)
        elif child.tag == "issuers":
            issuers = _texts(sub.children(("issuer",)), e.compiler)
        else:
            for claim_node in sub.children(("claim",)):
                claim = _Element(claim_node, e.compiler)
                name = claim.string("name", required=True)
                match = claim.enum("match", ("all", "any"), "all")
                separator = claim.string("separator")
                values = _literals(claim.children(("value",)), e.compiler, "claim values")
                claim.finish()
                if name is not None and match is not None and values is not None:
                    claims.append(JwtClaim(name, match, separator, values))
        sub.finish()
    if e.failed or audiences is None or issuers is None:
        return None
    return ValidateJwt(
        header_name=header,
        query_parameter_name=query,
        token_value=token,
        failed_validation_httpcode=code,  # type: ignore[arg-type]
        failed_validation_error_message=message,
        require_expiration_time=require_exp,  # type: ignore[arg-type]
        require_scheme=scheme,
        require_signed_tokens=require_signed,  # type: ignore[arg-type]
        clock_skew=skew,  # type: ignore[arg-type]
        output_token_variable_name=output,
        openid_config_urls=tuple(urls),
        issuer_signing_keys=tuple(keys),
        audiences=audiences,
        issuers=issuers,
        required_claims=tuple(claims),
    )


def _forward_request(e: _Element, section: str) -> ForwardRequest | None:
    timeout = e.integer("timeout", 300, low=0)
    follow = e.boolean("follow-redirects", False)
    buffer_request = e.boolean("buffer-request-body", False)
    buffer_response = e.boolean("buffer-response", True)
    fail = e.boolean("fail-on-error-status-code", False)
    e.unsupported("http-version")
    e.children(())
    if follow:
        e.problem("following redirects is not supported", "follow-redirects", UNSUPPORTED)
    if e.failed:
        return None
    return ForwardRequest(timeout, follow, buffer_request, buffer_response, fail)  # type: ignore[arg-type]


def _set_variable(e: _Element, section: str) -> SetVariable | None:
    name = e.string("name", required=True)
    value = e.text("value", required=True)
    e.children(())
    if name is None or value is None:
        return None
    return SetVariable(name, value)


def _steps(nodes: list[Node], section: str, compiler: _Compiler) -> tuple[Step, ...]:
    out: list[Step] = []
    for node in nodes:
        if node.tag == "base":
            compiler.problem(node.path, "base may appear only directly in a section")
            continue
        step = _compile_one(node, section, compiler)
        if step is not None and not isinstance(step, Base):
            out.append(step)
    return tuple(out)


def _choose(e: _Element, section: str) -> Choose | None:
    branches: list[When] = []
    otherwise: tuple[Step, ...] = ()
    children = e.children(("when", "otherwise"))
    for index, child in enumerate(children):
        sub = _Element(child, e.compiler)
        if child.tag == "when":
            if otherwise or any(c.tag == "otherwise" for c in children[:index]):
                sub.problem("when must come before otherwise")
            condition = sub.condition("condition")
            steps = _steps(child.children, section, e.compiler)
            if condition is not None:
                branches.append(When(condition, steps))
        else:
            if any(c.tag == "otherwise" for c in children[:index]):
                sub.problem("only one otherwise is allowed")
            otherwise = _steps(child.children, section, e.compiler)
        sub.finish()
    if not any(c.tag == "when" for c in children):
        e.problem("needs at least one when element")
    if e.failed:
        return None
    return Choose(tuple(branches), otherwise)


def _retry(e: _Element, section: str) -> Retry | None:
    condition = e.condition("condition")
    count = e.integer("count", required=True, low=1, high=50)
    interval = e.integer("interval", required=True, low=0)
    max_interval = e.integer("max-interval", low=0)
    delta = e.integer("delta", low=0)
    first_fast = e.boolean("first-fast-retry", False)
    steps = _steps(e.node.children, section, e.compiler)
    if max_interval is not None and delta is None:
        e.problem("max-interval needs delta (the exponential algorithm uses both)", "max-interval")
    if e.failed:
        return None
    return Retry(condition, count, interval, max_interval, delta, first_fast, steps)  # type: ignore[arg-type]


_LIMIT_NAMES = ("retry-after-header-name", "retry-after-variable-name",
                "remaining-calls-header-name", "remaining-calls-variable-name",
                "total-calls-header-name")


def _targets(e: _Element, quota: bool) -> tuple[LimitTarget, ...]:
    """
    The nested ``<api>`` elements (each maybe with ``<operation>``
    elements) of ``rate-limit`` or ``quota``. APIM names an API or an
    operation by ``id`` or ``name`` (``id`` wins); apimgw's ids are the
    names, so either is compared with the API's id / the operation's name.
    """
    out: list[LimitTarget] = []

    def one(node: Node, api: str | None) -> str | None:
        sub = _Element(node, e.compiler)
        ident = sub.string("id")
        name = sub.string("name")
        target = ident or name
        if not target:
            sub.problem("needs id or name")
        calls = sub.integer("calls", low=1, required=not quota)
        period = sub.integer("renewal-period", low=0 if quota else 1,
                             high=None if quota else 300, required=not quota)
        bandwidth = sub.integer("bandwidth", low=1) if quota else None
        if quota and calls is None and bandwidth is None and not sub.failed:
            sub.problem("needs calls, bandwidth, or both")
        children = sub.children(("operation",) if api is None else ())
        sub.finish()
        if target and not sub.failed:
            if api is None:
                out.append(LimitTarget(target, None, calls, period, bandwidth))
            else:
                out.append(LimitTarget(api, target, calls, period, bandwidth))
        if api is None and target:
            for child in children:
                one(child, target)
        return target

    for node in e.children(("api",)):
        one(node, None)
    return tuple(out)


def _limit_names(e: _Element) -> list[str | None]:
    """The header and variable names of a rate limit; header names must be HTTP tokens."""
    names = [e.string(n) for n in _LIMIT_NAMES]
    for attribute, value in zip(_LIMIT_NAMES, names, strict=True):
        if value is not None and attribute.endswith("-header-name") and not _FIELD_NAME.fullmatch(value):
            e.problem(f"must be an HTTP header name (a token), not {value[:40]!r}", attribute)
    return names


def _scope_allows(e: _Element, allowed: tuple[str, ...]) -> None:
    """APIM's scopes for the limit policies (the compiler's scope id, when known)."""
    scope = e.compiler.scope
    if scope is None:
        return
    kind = "global" if scope == "global" else scope.split("/")[0]
    kind = {"products": "product", "apis": "operation" if "/operations/" in scope else "api"}.get(
        kind, kind)
    if kind not in allowed:
        e.problem(f"{e.node.tag} is allowed at {', '.join(allowed)} scope only (APIM), "
                  f"not at {kind} scope")


def _rate_limit(e: _Element, section: str) -> RateLimit | None:
    calls = e.integer("calls", required=True, low=1)
    period = e.integer("renewal-period", required=True, low=1, high=300)
    names = _limit_names(e)
    targets = _targets(e, quota=False)
    _scope_allows(e, ("product", "api", "operation"))
    if e.failed:
        return None
    return RateLimit(calls, period, *names, targets=targets,  # type: ignore[arg-type, misc]
                     scope=e.compiler.scope or "")


def _rate_limit_by_key(e: _Element, section: str) -> RateLimitByKey | None:
    calls = e.integer("calls", required=True, low=1)
    period = e.integer("renewal-period", required=True, low=1, high=300)
    key = e.text("counter-key", required=True)
    condition = e.condition("increment-condition") if "increment-condition" in e.node.attributes \
        else None
    e.used.add("increment-condition")
    increment = e.integer("increment-count", 1, low=1)
    names = _limit_names(e)
    e.children(())
    if e.failed:
        return None
    return RateLimitByKey(calls, period, key, condition, increment, *names)  # type: ignore[arg-type]


def _quota(e: _Element, section: str) -> Quota | None:
    calls = e.integer("calls", low=1)
    bandwidth = e.integer("bandwidth", low=1)
    period = e.integer("renewal-period", required=True, low=0)
    if calls is None and bandwidth is None and not e.failed:
        e.problem("needs calls, bandwidth, or both")
    targets = _targets(e, quota=True)
    _scope_allows(e, ("product",))
    if e.failed:
        return None
    return Quota(period, calls, bandwidth, targets, e.compiler.scope or "")  # type: ignore[arg-type]


_ALL = SECTIONS
#: Policy → (compiler, the sections APIM allows it in).
POLICIES: dict[str, tuple[Callable[[_Element, str], Step | None], tuple[str, ...]]] = {
    "set-header": (_set_header, _ALL),
    "set-query-parameter": (_set_query_parameter, ("inbound", "backend")),
    "rewrite-uri": (_rewrite_uri, ("inbound",)),
    "set-backend-service": (_set_backend_service, ("inbound", "backend")),
    "set-method": (_set_method, ("inbound", "on-error")),
    "set-status": (_set_status, _ALL),
    "set-body": (_set_body, _ALL),
    "return-response": (_return_response, _ALL),
    "mock-response": (_mock_response, ("inbound", "outbound", "on-error")),
    "check-header": (_check_header, ("inbound",)),
    "ip-filter": (_ip_filter, ("inbound",)),
    "cors": (_cors, ("inbound",)),
    "validate-jwt": (_validate_jwt, ("inbound",)),
    "forward-request": (_forward_request, ("backend",)),
    "retry": (_retry, _ALL),
    "choose": (_choose, _ALL),
    "set-variable": (_set_variable, _ALL),
    "rate-limit": (_rate_limit, ("inbound",)),
    "rate-limit-by-key": (_rate_limit_by_key, ("inbound",)),
    "quota": (_quota, ("inbound",)),
}


def _compile_one(node: Node, section: str, compiler: _Compiler) -> Step | None:
    entry = POLICIES.get(node.tag)
    if entry is None:
        compiler.problem(node.path, f"unsupported policy {node.tag!r}", UNSUPPORTED)
        return None
    compile_, sections = entry
    if section not in sections:
        compiler.problem(node.path, f"{node.tag} is not allowed in {section} "
                                    f"(allowed in: {', '.join(sections)})")
        return None
    element = _Element(node, compiler)
    step = compile_(element, section)
    element.finish()
    return None if element.failed and not isinstance(step, (RateLimit, RateLimitByKey, Quota)) \
        else step


def _section(node: Node, compiler: _Compiler) -> tuple[Step | Base, ...]:
    out: list[Step | Base] = []
    if node.attributes:
        for name in node.attributes:
            compiler.problem(f"{node.path}/@{name}", f"unknown attribute of {node.tag}")
    if node.text.strip():
        compiler.problem(node.path, "text is not allowed directly in a section")
    bases = 0
    for child in node.children:
        if child.tag == "base":
            bases += 1
            if child.attributes or child.children:
                compiler.problem(child.path, "base takes no attributes or content")
            if bases > 1:
                compiler.problem(child.path, "base may appear only once in a section")
                continue
            out.append(BASE)
            continue
        step = _compile_one(child, node.tag, compiler)
        if step is not None:
            out.append(step)
    return tuple(out)


def compile_document(text: str, named_values: Mapping[str, str] = {},
                     secrets: Collection[str] = frozenset(),
                     scope: str | None = None) -> CompiledDocument:
    """
    Compile one scope's policy document. Never raises: whatever is wrong is
    in :attr:`CompiledDocument.problems`, and a document with any
    problem must not be served as a partial pipeline.

    :param named_values: name → value, substituted for ``{{name}}``.
    :param secrets: the names among them whose values are secret
        (:attr:`gateway.model.NamedValue.secret`): steps hold the real
        value, but their ``repr``, :func:`describe` and problem messages
        show ``{{name}}``. A secret that becomes a number, a boolean or an
        IP address (``count="{{n}}"``) is converted and shows as that.
    :param scope: the document's scope id (:attr:`gateway.model.PolicyScope.id`):
        stamped on ``rate-limit`` and ``quota`` steps (their counters are per
        scope) and checked against the scopes APIM allows them at.
    """
    compiler = _Compiler(named_values, secrets, scope=scope)
    try:
        root = parse_xml(text)
    except XmlError as error:
        return CompiledDocument(problems=(PolicyProblem("policies", str(error)),))
    sections: dict[str, tuple[Step | Base, ...]] = {}
    if root.tag != "policies":
        compiler.problem(root.path, "the root element must be policies")
    else:
        if root.attributes:
            for name in root.attributes:
                compiler.problem(f"{root.path}/@{name}", "unknown attribute of policies")
        for child in root.children:
            if child.tag not in SECTIONS:
                compiler.problem(child.path, "unexpected element in policies "
                                             "(expected: inbound, backend, outbound, on-error)")
            elif child.tag in sections:
                compiler.problem(child.path, f"{child.tag} may appear only once")
            else:
                sections[child.tag] = _section(child, compiler)
    return CompiledDocument(
        inbound=sections.get("inbound"),
        backend=sections.get("backend"),
        outbound=sections.get("outbound"),
        on_error=sections.get("on-error"),
        problems=tuple(compiler.problems),
    )
