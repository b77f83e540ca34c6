"""
Which variant of a Gateway API route serves a request: the first, in the
translated (precedence) order, whose scheme, method, header and query
conditions all hold.

Only entries with variants get here; the facts (headers, query) are asked
lazily and only for the conditions a variant has.
"""

from __future__ import annotations

from gateway.translate import ValueMatch, Variant

from ._facts import RequestFacts

__all__ = ["Conditions", "compile_variants", "select"]

#: One variant with its header names as bytes (what ``facts.header`` takes).
Conditions = tuple[Variant, tuple[tuple[bytes, ValueMatch], ...]]


def compile_variants(variants: tuple[Variant, ...]) -> tuple[Conditions, ...]:
    """The variants ready for :func:`select` (once per build)."""
    return tuple(
        (v, tuple((h.name.lower().encode("latin-1"), h) for h in v.headers)) for v in variants
    )


def select(
    compiled: tuple[Conditions, ...], method: str, scheme: bytes, facts: RequestFacts | None
) -> Variant | None:
    """
    The first variant whose conditions hold, or ``None``. Without
    ``facts``, a variant with header or query conditions never holds.
    """
    for variant, headers in compiled:
        schemes = variant.schemes
        if schemes is not None and scheme not in schemes:
            continue
        if variant.method is not None and variant.method != method:
            continue
        if headers or variant.query:
            if facts is None:
                continue
            if not all(m.holds(facts.header(name)) for name, m in headers):
                continue
            if not all(m.holds(facts.query(m.name)) for m in variant.query):
                continue
        return variant
    return None
