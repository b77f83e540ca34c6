"""
Scopes: the effective pipeline from global → product → API → operation.

APIM ("Policies in Azure API Management", *Policy evaluation order*):
"Place the ``base`` element within a section to inherit all policies from
the corresponding section at the parent (broader) scope"; "To prevent
inheriting policies from the corresponding section in the parent scope,
remove the ``base`` element"; "A globally scoped policy has no parent scope,
and using the ``base`` element in it has no effect." A section a document
does not have at all inherits the parent's section unchanged (as if it
held only ``<base/>``), which is what the portal's stored documents with
``<inbound><base/></inbound>`` sections amount to.

Products: an API can belong to several products, and APIM runs the product
scope of the product whose subscription the request used (none when the
request has no subscription). Each scope's document is compiled once
(:func:`compile_document`); :func:`assemble` then only splices tuples, so
the translator can build the pipeline of every (product or none,
operation) pair eagerly and the proxy picks one by the subscription's
product with a dictionary lookup.

Without a global document, :data:`DEFAULT_GLOBAL_POLICY` applies: APIM's
default global policy, whose ``backend`` forwards the request (a backend
section without ``forward-request`` forwards nothing).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from ._policies import CompiledDocument, PolicyProblem, compile_document
from ._steps import SECTIONS, Base, Pipeline, Step

__all__ = [
    "API",
    "DEFAULT_GLOBAL_POLICY",
    "GLOBAL",
    "OPERATION",
    "PRODUCT",
    "SCOPES",
    "assemble",
    "compile_scopes",
]

GLOBAL, PRODUCT, API, OPERATION = "global", "product", "api", "operation"
#: The scopes from broad to narrow.
SCOPES = (GLOBAL, PRODUCT, API, OPERATION)

#: APIM's default global policy: forward the request, nothing else.
DEFAULT_GLOBAL_POLICY = (
    "<policies><inbound/><backend><forward-request/></backend><outbound/><on-error/></policies>"
)

_DEFAULT_GLOBAL = compile_document(DEFAULT_GLOBAL_POLICY)


def _merge(parent: tuple[Step, ...], own: tuple[Step | Base, ...] | None) -> tuple[Step, ...]:
    if own is None:
        return parent
    out: list[Step] = []
    for step in own:
        if isinstance(step, Base):
            out.extend(parent)
        else:
            out.append(step)
    return tuple(out)


def assemble(documents: Sequence[CompiledDocument | None]) -> Pipeline:
    """
    The effective pipeline of compiled documents from broad to narrow
    (``None``: no document at that scope, which inherits everything).
    Problems are not looked at here: the caller refuses to serve a
    pipeline whose documents have any.
    """
    merged: dict[str, tuple[Step, ...]] = {name: () for name in SECTIONS}
    for document in documents:
        if document is None:
            continue
        for name in SECTIONS:
            merged[name] = _merge(merged[name], document.section(name))
    return Pipeline(merged["inbound"], merged["backend"], merged["outbound"], merged["on-error"])


def compile_scopes(
    documents: Mapping[str, str | None],
    named_values: Mapping[str, str] = {},
    secrets: Collection[str] = frozenset(),
) -> tuple[Pipeline, tuple[PolicyProblem, ...]]:
    """
    Compile and assemble the documents of one (product or none, operation)
    pair, keyed by scope (:data:`GLOBAL`, :data:`PRODUCT`, :data:`API`,
    :data:`OPERATION`; a missing key or ``None``: no document there; no
    global document: :data:`DEFAULT_GLOBAL_POLICY`).

    Never raises. Each problem names its scope; with any problem the
    pipeline is incomplete and must not be served (the API answers 500).
    ``named_values`` and ``secrets`` are as for :func:`compile_document`.
    """
    compiled: list[CompiledDocument | None] = []
    problems: list[PolicyProblem] = []
    for scope in SCOPES:
        text = documents.get(scope)
        if text is None:
            compiled.append(_DEFAULT_GLOBAL if scope == GLOBAL else None)
            continue
        document = compile_document(text, named_values, secrets)
        compiled.append(document)
        problems.extend(
            PolicyProblem(p.path, p.message, p.kind, scope) for p in document.problems
        )
    unknown = sorted(set(documents) - set(SCOPES))
    for scope in unknown:
        problems.append(PolicyProblem("policies", f"unknown scope {scope!r}", scope=scope))
    return assemble(compiled), tuple(problems)
