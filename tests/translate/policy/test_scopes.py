"""
The scope table: how ``<base/>`` and missing sections combine the global,
product, API and operation documents into one pipeline.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from gateway.translate.policy import (
    API,
    GLOBAL,
    OPERATION,
    PRODUCT,
    ForwardRequest,
    SetHeader,
    assemble,
    compile_document,
    compile_scopes,
    referenced_named_values,
)


def doc(inbound: str | None = None, backend: str | None = None) -> str:
    """A document with the given inbound/backend content; ``None`` leaves the section out."""
    parts = ["<policies>"]
    if inbound is not None:
        parts.append(f"<inbound>{inbound}</inbound>")
    if backend is not None:
        parts.append(f"<backend>{backend}</backend>")
    parts.append("</policies>")
    return "".join(parts)


def h(name: str) -> str:
    return f'<set-header name="{name}"><value>1</value></set-header>'


def names(documents: dict[str, str | None]) -> list[str]:
    """The header names the effective inbound section sets, in order."""
    pipeline, problems = compile_scopes(documents)
    assert problems == (), problems
    return [s.name for s in pipeline.inbound if isinstance(s, SetHeader)]


class ScopeTests(SynchronousTestCase):
    """The <base/> table."""

    def test_no_base_drops_the_parents(self) -> None:
        """A section without <base/> replaces every broader scope's section."""
        self.assertEqual(names({GLOBAL: doc(h("g")), API: doc(h("a"))}), ["a"])

    def test_base_first(self) -> None:
        """<base/> first: the parents run before."""
        self.assertEqual(names({GLOBAL: doc(h("g")), PRODUCT: doc("<base/>" + h("p")),
                                API: doc("<base/>" + h("a")),
                                OPERATION: doc("<base/>" + h("o"))}), ["g", "p", "a", "o"])

    def test_base_in_the_middle(self) -> None:
        """<base/> between two policies inlines the parent's section exactly there."""
        self.assertEqual(names({GLOBAL: doc(h("g1") + h("g2")),
                                API: doc(h("a1") + "<base/>" + h("a2"))}),
                         ["a1", "g1", "g2", "a2"])

    def test_base_last(self) -> None:
        """<base/> last: the narrow scope runs first."""
        self.assertEqual(names({GLOBAL: doc(h("g")), OPERATION: doc(h("o") + "<base/>")}),
                         ["o", "g"])

    def test_base_at_global_has_no_effect(self) -> None:
        """The global scope has no parent: its <base/> inlines nothing."""
        self.assertEqual(names({GLOBAL: doc("<base/>" + h("g"))}), ["g"])

    def test_missing_section_inherits(self) -> None:
        """A document without a section inherits the parent's section whole."""
        self.assertEqual(names({GLOBAL: doc(h("g")), API: doc(None, "<base/>"),
                                OPERATION: doc(h("o") + "<base/>")}), ["o", "g"])

    def test_missing_scope_inherits(self) -> None:
        """A scope without a document (None or absent) is transparent."""
        self.assertEqual(names({GLOBAL: doc(h("g")), PRODUCT: None,
                                OPERATION: doc("<base/>" + h("o"))}), ["g", "o"])

    def test_empty_section_drops(self) -> None:
        """An empty section (no <base/>) runs nothing of the parents."""
        self.assertEqual(names({GLOBAL: doc(h("g")), API: doc("")}), [])

    def test_skipped_level_passes_through(self) -> None:
        """A product without <base/> cuts global off for the API below it that keeps <base/>."""
        self.assertEqual(names({GLOBAL: doc(h("g")), PRODUCT: doc(h("p")),
                                API: doc("<base/>" + h("a"))}), ["p", "a"])

    def test_default_global_forwards(self) -> None:
        """Without a global document, APIM's default applies: backend forwards."""
        pipeline, problems = compile_scopes({})
        self.assertEqual(pipeline.backend, (ForwardRequest(),))
        self.assertEqual(problems, ())

    def test_backend_without_base_does_not_forward(self) -> None:
        """An operation backend section without <base/> and without forward-request forwards nothing."""
        pipeline, _ = compile_scopes({OPERATION: doc(None, "")})
        self.assertEqual(pipeline.backend, ())

    def test_problems_name_their_scope(self) -> None:
        """Each problem says which scope's document it is in."""
        _, problems = compile_scopes({GLOBAL: doc("<nope/>"), API: "<policies"})
        self.assertEqual([(p.scope, p.path) for p in problems],
                         [(GLOBAL, "policies/inbound/nope"), (API, "policies")])

    def test_unknown_scope(self) -> None:
        """A key that is not a scope is a problem, not silently ignored."""
        _, problems = compile_scopes({"workspace": doc("")})
        self.assertEqual([str(p) for p in problems], ["policies: unknown scope 'workspace'"])

    def test_assemble_reuses_compiled_documents(self) -> None:
        """assemble splices compiled documents: one compile serves every product's pipeline."""
        api = compile_document(doc("<base/>" + h("a")))
        products = {name: compile_document(doc("<base/>" + h(name))) for name in ("p1", "p2")}
        for name, product in products.items():
            pipeline = assemble([None, product, api])
            self.assertEqual([s.name for s in pipeline.inbound], [name, "a"])  # type: ignore[union-attr]
        self.assertEqual([s.name for s in assemble([None, None, api]).inbound], ["a"])  # type: ignore[union-attr]

    def test_referenced_named_values(self) -> None:
        """The named values a document uses are found without parsing (a memo key)."""
        self.assertEqual(referenced_named_values("<x a='{{one}}'>{{two.v}} {{one}}</x>"),
                         frozenset({"one", "two.v"}))
