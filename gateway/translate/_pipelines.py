"""
Policies → each operation's effective pipelines, once per configuration.

Each policy document is compiled once (:func:`compile_policy`, memoized by
the policy object's identity and the named values it references, so a
rebuild after an unrelated change compiles nothing); each API then
assembles, per product context and per operation, the documents from broad
to narrow (global → product → API → operation) with
:func:`~gateway.translate.policy.assemble`, which only splices tuples.

Which policies apply where (``docs/policies.md``, "How a pipeline is
compiled and where it lives"):

* APIs only. Plain routes (Ingress rules, the file's ``routes:``) are not
  APIM APIs: no policy, not even the global one, applies to them.
* An API none of whose scopes (global, its products, itself, its
  operations) has a document gets no pipelines at all (``None``): the
  proxy's plain path, at no extra cost. As soon as one applies, every
  operation gets the full pipeline, with APIM's default global policy
  (forward the request) where no global document exists.
* A document with any problem makes every API whose pipelines it is part of
  answer 500 (:attr:`~gateway.translate.RouteEntry.policy_error`): a
  partial pipeline (an ``ip-filter`` or ``validate-jwt`` left out) would
  fail open.
* A policy whose target (product, API, operation) does not exist is a
  problem on the policy and applies nowhere.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from typing import Any

from gateway.memo import BuildMemo
from gateway.model import Api, NamedValue, ObjectRef, Policy, Problem, Product, SourceObject

from .policy import (
    DEFAULT_GLOBAL_POLICY,
    SECTIONS,
    CompiledDocument,
    Expression,
    Pipeline,
    assemble,
    compile_document,
    referenced_named_values,
)

__all__ = [
    "CompiledPolicy",
    "PolicyTable",
    "api_pipelines",
    "build_policy_table",
    "compile_policy",
    "describe_pipeline",
]

_DEFAULT_GLOBAL = compile_document(DEFAULT_GLOBAL_POLICY)

#: How a secret value is shown by :func:`describe_pipeline`.
MASK = "***"


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    """
    One policy object, compiled.

    :ivar problems: the document's problems as :class:`Problem`\\ s on the
        policy object, with element paths, secret values masked.
    :ivar secrets: the secret named values substituted into the document.
    """

    ref: ObjectRef
    document: CompiledDocument
    problems: tuple[Problem, ...] = ()
    secrets: frozenset[str] = field(default=frozenset(), repr=False)


def _mask(text: str, secrets: Mapping[str, str]) -> str:
    """Each secret value in ``text`` written ``{{name}}`` instead (longest first)."""
    for name, value in sorted(secrets.items(), key=lambda kv: -len(kv[1])):
        if value:
            text = text.replace(value, "{{" + name + "}}")
    return text


def compile_policy(
    obj: SourceObject, named_values: Mapping[str, NamedValue], memo: BuildMemo | None = None
) -> CompiledPolicy:
    """
    Compile one policy object with the named values it references.

    Memoized by the object's identity plus the (name, value, secret) of the
    named values it uses: another named value changing, or any other
    object, does not recompile it. The memo's entry holds the object, so
    its ``id`` cannot be reused while the entry lives.
    """
    body = obj.body
    assert isinstance(body, Policy)
    used = tuple(
        (name, named_values[name].value, named_values[name].secret)
        for name in sorted(referenced_named_values(body.xml))
        if name in named_values
    )

    def compute() -> tuple[SourceObject, CompiledPolicy]:
        document = compile_document(
            body.xml, {name: value for name, value, _ in used}, scope=body.scope.id
        )
        secrets = {name: value for name, value, secret in used if secret}
        problems = tuple(
            Problem(obj.ref, _mask(f"{body.scope.id}: {p}" + (
                f" ({p.kind})" if p.kind != "invalid" else ""), secrets))
            for p in document.problems
        )
        return obj, CompiledPolicy(obj.ref, document, problems, frozenset(
            v for v in secrets.values() if v))

    if memo is None:
        return compute()[1]
    return memo.get(("policy", id(obj), used), compute)[1]


@dataclass(frozen=True, slots=True)
class PolicyTable:
    """The compiled policies of one configuration, by scope target."""

    global_: CompiledPolicy | None = None
    products: Mapping[str, CompiledPolicy] = field(default_factory=dict)
    apis: Mapping[str, CompiledPolicy] = field(default_factory=dict)
    operations: Mapping[tuple[str, str], CompiledPolicy] = field(default_factory=dict)

    @property
    def secrets(self) -> frozenset[str]:
        """Every secret value the applied documents hold."""
        out: set[str] = set()
        for compiled in self.all():
            out |= compiled.secrets
        return frozenset(out)

    def all(self) -> Iterable[CompiledPolicy]:
        if self.global_ is not None:
            yield self.global_
        yield from self.products.values()
        yield from self.apis.values()
        yield from self.operations.values()


def _newest_first(obj: SourceObject) -> tuple[float, tuple[str, str, str]]:
    return (-obj.modified, obj.ref.order)


def build_policy_table(
    policies: Iterable[SourceObject],
    named_values: Mapping[str, NamedValue],
    apis: Mapping[str, Api],
    products: Mapping[str, Product],
    problems: list[Problem],
    memo: BuildMemo | None = None,
) -> PolicyTable:
    """
    Compile every policy whose target exists (the newest one per scope, as
    for routes: "last one wins", then the smallest ref) and report the
    others.
    """
    by_scope: dict[str, list[SourceObject]] = {}
    for obj in policies:
        assert isinstance(obj.body, Policy)
        by_scope.setdefault(obj.body.scope.id, []).append(obj)
    table: dict[str, Any] = {"products": {}, "apis": {}, "operations": {}}
    for scope_id in sorted(by_scope):
        ranked = sorted(by_scope[scope_id], key=_newest_first)
        winner = ranked[0]
        for loser in ranked[1:]:
            problems.append(Problem(loser.ref, f"{scope_id}: {winner.ref} is newer for the same "
                                               "scope; this policy is not applied"))
        policy = winner.body
        assert isinstance(policy, Policy)
        scope = policy.scope
        missing = None
        if scope.scope == "product" and scope.product_id not in products:
            missing = f"no product {scope.product_id!r}"
        elif scope.scope in ("api", "operation") and scope.api_id not in apis:
            missing = f"no API {scope.api_id!r}"
        elif scope.scope == "operation" and scope.operation_id not in {
            op.name for op in apis[scope.api_id].operations
        }:
            missing = f"API {scope.api_id!r} has no operation {scope.operation_id!r}"
        if missing is not None:
            problems.append(Problem(winner.ref, f"{scope_id}: {missing}; the policy applies "
                                                "nowhere"))
            continue
        compiled = compile_policy(winner, named_values, memo)
        problems.extend(compiled.problems)
        if scope.scope == "global":
            table["global_"] = compiled
        elif scope.scope == "product":
            table["products"][scope.product_id] = compiled
        elif scope.scope == "api":
            table["apis"][scope.api_id] = compiled
        else:
            table["operations"][(scope.api_id, scope.operation_id)] = compiled
    return PolicyTable(**table)


def api_pipelines(
    api: Api,
    contexts: tuple[str, ...],
    involved: tuple[CompiledPolicy | None, ...],
) -> tuple[dict[str, Mapping[str | None, Pipeline]] | None, str | None]:
    """
    The pipelines of one API: ``({operation name, and "" for the API
    level: {product or None: pipeline}}, None)``, or ``(None, None)`` when no document applies, or
    ``(None, error)`` when one that applies has problems.

    :param contexts: the API's published products (besides no product).
    :param involved: the compiled policies, in this order: global, one per
        context, the API's, one per operation of ``api`` (``None``: no
        document there).
    """
    present = [c for c in involved if c is not None]
    if not present:
        return None, None
    broken = sorted({str(c.ref) for c in present if c.problems})
    if broken:
        return None, "policy problems in " + ", ".join(broken)
    global_ = involved[0].document if involved[0] is not None else _DEFAULT_GLOBAL
    by_product = involved[1:1 + len(contexts)]
    api_doc = involved[1 + len(contexts)]
    op_docs = involved[2 + len(contexts):]
    api_document = api_doc.document if api_doc is not None else None
    out: dict[str, Mapping[str | None, Pipeline]] = {}
    # "" is the API level (no operation scope): the pipeline of an API
    # without operations, and for one with operations the pipeline of a
    # CORS preflight no operation accepts (APIM answers it at the API).
    targets = [(op.name, op_doc) for op, op_doc in zip(api.operations, op_docs, strict=True)]
    targets.append(("", None))
    for name, op_doc in targets:
        op_document = op_doc.document if op_doc is not None else None
        plain = assemble([global_, None, api_document, op_document])
        pipelines: dict[str | None, Pipeline] = {None: plain}
        for product_id, product_doc in zip(contexts, by_product, strict=True):
            pipelines[product_id] = plain if product_doc is None else assemble(
                [global_, product_doc.document, api_document, op_document])
        out[name] = pipelines
    return out, None


# --- showing a pipeline -------------------------------------------------


def _kind(step: Any) -> str:
    name = type(step).__name__
    return "".join("-" + c.lower() if c.isupper() else c for c in name).lstrip("-")


def _show(value: Any, secrets: frozenset[str]) -> str:
    if isinstance(value, Expression):
        return _masked(value.source, secrets)
    if isinstance(value, str):
        return json.dumps(_masked(value, secrets))
    if isinstance(value, tuple):
        return "[" + ", ".join(_show(v, secrets) for v in value) + "]"
    if is_dataclass(value) and not isinstance(value, type):
        return _step(value, secrets)
    return repr(value)


def _masked(text: str, secrets: frozenset[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def _step(step: Any, secrets: frozenset[str]) -> str:
    parts = []
    for f in fields(step):
        value = getattr(step, f.name)
        if f.default is not MISSING and value == f.default:
            continue
        if value == () or value is None:
            continue
        parts.append(f"{f.name.replace('_', '-')}={_show(value, secrets)}")
    return _kind(step) + ("(" + ", ".join(parts) + ")" if parts else "")


def describe_pipeline(pipeline: Pipeline, secrets: frozenset[str] = frozenset()) -> tuple[str, ...]:
    """
    A pipeline as readable lines (``inbound: set-header(target="request",
    name="X-Id", values=["1"])``): what ``/config`` and the golden files
    show. Attributes at their default are left out; the values in
    ``secrets`` (:attr:`~gateway.translate.GatewayConfig.secrets`) are
    shown as ``***``. Computed on demand, never on the request path.
    """
    return tuple(
        f"{section}: {_step(step, secrets)}"
        for section in SECTIONS
        for step in pipeline.section(section)
    )
