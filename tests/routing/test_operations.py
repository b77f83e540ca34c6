"""
Tests for API operations in :class:`gateway.routing.RouteTable`: URL
templates, parameter captures, method matching, the ``rest`` of an API
match, and a property-based comparison with a brute-force operation
matcher.
"""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from gateway.model import Route
from gateway.routing import Match, RouteTable
from gateway.translate import OperationSpec, parse_template

from . import BACKEND, api, build, entries


def _lookup(table: RouteTable, path: str, method: str = "GET") -> Match | None:
    return table.lookup("gw.example.com", path, method)


def _found(table: RouteTable, path: str, method: str = "GET") -> tuple[str, dict[str, str]] | None:
    """The matched operation's name and captured params, or ``None``."""
    match = _lookup(table, path, method)
    if match is None:
        return None
    assert match.operation is not None
    return match.operation.name, dict(match.params)


class TemplateTests(SynchronousTestCase):
    """URL templates: captures, literal-over-param precedence, slashes."""

    def test_captures_param(self) -> None:
        """A ``{param}`` segment captures the request's segment by name."""
        table = build(api("echo", "echo", (("GET", "/users/{id}"),)))
        match = _lookup(table, "/echo/users/42")
        assert match is not None
        assert match.operation is not None
        self.assertEqual(match.operation.template, "/users/{id}")
        self.assertEqual(dict(match.params), {"id": "42"})
        self.assertEqual(match.rest, "/users/42")

    def test_captures_several_params(self) -> None:
        """Every ``{param}`` of a template is captured under its own name."""
        table = build(api("shop", "shop", (("GET", "/{tenant}/orders/{order-id}/lines"),)))
        self.assertEqual(
            _found(table, "/shop/acme/orders/7/lines"),
            ("op0", {"tenant": "acme", "order-id": "7"}),
        )

    def test_param_needs_nonempty_segment(self) -> None:
        """A ``{param}`` never captures an empty segment."""
        table = build(api("echo", "echo", (("GET", "/users/{id}"),)))
        self.assertIsNone(_lookup(table, "/echo/users/"))
        self.assertIsNone(_lookup(table, "/echo/users"))
        self.assertIsNone(_lookup(table, "/echo/users/42/more"))

    def test_literal_beats_param(self) -> None:
        """A literal segment beats a ``{param}`` segment in the same place."""
        table = build(api("echo", "echo", (("GET", "/users/{id}"), ("GET", "/users/me"))))
        self.assertEqual(_found(table, "/echo/users/me"), ("op1", {}))
        self.assertEqual(_found(table, "/echo/users/you"), ("op0", {"id": "you"}))

    def test_literal_beats_param_left_to_right(self) -> None:
        """The leftmost differing segment decides: a literal there wins even
        when the other template has more literals further right."""
        table = build(api("echo", "echo", (("GET", "/{y}/b"), ("GET", "/a/{x}"))))
        self.assertEqual(_found(table, "/echo/a/b"), ("op1", {"x": "b"}))

    def test_backtracks_to_param(self) -> None:
        """When the literal branch leads nowhere, the param branch is tried."""
        table = build(api("echo", "echo", (("GET", "/a/{x}/c"), ("GET", "/{y}/b/d"))))
        self.assertEqual(_found(table, "/echo/a/b/d"), ("op1", {"y": "a"}))
        self.assertEqual(_found(table, "/echo/a/b/c"), ("op0", {"x": "b"}))

    def test_trailing_slash_is_significant(self) -> None:
        """A template's trailing slash must be in the request, and a request's
        trailing slash must be in the template."""
        table = build(api("echo", "echo", (("GET", "/users"), ("GET", "/items/"))))
        self.assertEqual(_found(table, "/echo/users"), ("op0", {}))
        self.assertIsNone(_lookup(table, "/echo/users/"))
        self.assertEqual(_found(table, "/echo/items/"), ("op1", {}))
        self.assertIsNone(_lookup(table, "/echo/items"))

    def test_empty_rest_is_root(self) -> None:
        """The API path alone, with or without a slash, matches the ``/``
        template."""
        table = build(api("echo", "echo", (("GET", "/"),)))
        self.assertEqual(_found(table, "/echo"), ("op0", {}))
        self.assertEqual(_found(table, "/echo/"), ("op0", {}))
        self.assertIsNone(_lookup(table, "/echo/x"))

    def test_query_in_template_ignored(self) -> None:
        """A query part in a template does not take part in matching."""
        table = build(api("echo", "echo", (("GET", "/search?q={q}"),)))
        self.assertEqual(_found(table, "/echo/search"), ("op0", {}))

    def test_no_operations_match_everything_below(self) -> None:
        """An API without operations matches every method and sub-path below
        its path, with no operation and no params."""
        table = build(api("echo", "echo"))
        for method, path in [("GET", "/echo"), ("DELETE", "/echo/a/b/"), ("PATCH", "/echo//")]:
            match = _lookup(table, path, method)
            assert match is not None, (method, path)
            self.assertEqual((match.operation, dict(match.params)), (None, {}))
        self.assertIsNone(_lookup(table, "/echoes"))


class MethodTests(SynchronousTestCase):
    """Methods: exact, ``*``, and which one wins."""

    def test_wrong_method(self) -> None:
        """A request whose method no operation accepts matches nothing."""
        table = build(api("echo", "echo", (("GET", "/resource"),)))
        self.assertIsNone(_lookup(table, "/echo/resource", "POST"))
        self.assertIsNotNone(_lookup(table, "/echo/resource", "GET"))

    def test_any_method(self) -> None:
        """A ``*`` operation accepts every method."""
        table = build(api("echo", "echo", (("*", "/resource"),)))
        for method in ("GET", "POST", "PURGE"):
            self.assertEqual(_found(table, "/echo/resource", method), ("op0", {}))

    def test_specific_method_beats_any(self) -> None:
        """For one template, the operation of the request's method beats the
        ``*`` operation."""
        table = build(api("echo", "echo", (("*", "/resource"), ("POST", "/resource"))))
        self.assertEqual(_found(table, "/echo/resource", "POST"), ("op1", {}))
        self.assertEqual(_found(table, "/echo/resource", "PUT"), ("op0", {}))

    def test_method_filters_before_path_precedence(self) -> None:
        """An operation of another method is no candidate, so a less literal
        template that accepts the method wins."""
        table = build(api("echo", "echo", (("GET", "/users/me"), ("*", "/users/{id}"))))
        self.assertEqual(_found(table, "/echo/users/me", "GET"), ("op0", {}))
        self.assertEqual(_found(table, "/echo/users/me", "POST"), ("op1", {"id": "me"}))

    def test_literal_path_beats_specific_method(self) -> None:
        """Path precedence comes before method: a literal ``*`` template
        beats a ``{param}`` template for the request's method."""
        table = build(api("echo", "echo", (("GET", "/users/{id}"), ("*", "/users/me"))))
        self.assertEqual(_found(table, "/echo/users/me", "GET"), ("op1", {}))


class ApiRestTests(SynchronousTestCase):
    """The ``rest`` of an API match, and an API owning its path."""

    def test_rest_below_api_path(self) -> None:
        """For an API at ``/echo``, ``rest`` is what follows ``/echo``."""
        table = build(api("echo", "echo"))
        cases = {"/echo/resource": "/resource", "/echo": "", "/echo/": "/", "/echo/a/b/": "/a/b/"}
        for path, rest in cases.items():
            match = _lookup(table, path)
            assert match is not None, path
            self.assertEqual(match.rest, rest, path)

    def test_rest_of_root_api(self) -> None:
        """For an API at ``/``, ``rest`` is the whole path."""
        table = build(api("root", "", (("GET", "/"), ("GET", "/users/{id}"))))
        match = _lookup(table, "/users/7")
        assert match is not None
        self.assertEqual((match.rest, dict(match.params)), ("/users/7", {"id": "7"}))
        match = _lookup(table, "/")
        assert match is not None
        self.assertEqual(match.rest, "/")

    def test_api_owns_its_path(self) -> None:
        """When an API's path matches but no operation does, the lookup
        finds nothing rather than a shorter prefix or another host tier."""
        table = build(
            api("echo", "echo", (("GET", "/resource"),), hostnames=("gw.example.com",)),
            Route("/", BACKEND, host="*.example.com"),
            Route("/", BACKEND),
        )
        self.assertIsNone(_lookup(table, "/echo/other"))
        self.assertIsNone(_lookup(table, "/echo/resource", "POST"))
        match = _lookup(table, "/other")
        assert match is not None
        self.assertEqual(match.entry.host, "*.example.com")

    def test_longer_route_beats_api(self) -> None:
        """A longer prefix below an API's path is matched before the API."""
        table = build(api("echo", "echo", (("GET", "/resource"),)), Route("/echo/legacy", BACKEND))
        match = _lookup(table, "/echo/legacy/x", "DELETE")
        assert match is not None
        self.assertEqual((match.entry.path, match.operation), ("/echo/legacy", None))


# -- the property: the operation trie agrees with a literal reading ----------

_LITERALS = ["a", "b", ""]
_TEMPLATE_SEGMENTS = st.sampled_from([*_LITERALS, "{p}", "{q}"])
_REQUEST_SEGMENTS = st.sampled_from([*_LITERALS, "c"])
_METHODS = ["GET", "POST"]


def _template(segments: list[str]) -> str:
    """A template from segments; parameter names are made unique by
    position, as translation requires names only to be well formed."""
    named = [f"{{{s[1:-1]}{i}}}" if s.startswith("{") else s for i, s in enumerate(segments)]
    return "/" + "/".join(named)


def _shape(operation: tuple[str, str]) -> tuple[str, tuple[str, ...]]:
    """What translation compares to reject duplicate operations."""
    method, template = operation
    return method, tuple("{}" if s.startswith("{") else s for s in parse_template(template))


# At least one operation: an API with none is the match-everything case.
_OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from([*_METHODS, "*"]),
        st.lists(_TEMPLATE_SEGMENTS, max_size=3).map(_template),
    ),
    min_size=1,
    max_size=8,
    unique_by=_shape,
).map(tuple)


def _accepts(spec: OperationSpec, segments: Sequence[str], method: str) -> bool:
    if spec.method not in (method, "*") or len(spec.segments) != len(segments):
        return False
    return all(
        (t.startswith("{") and bool(s)) or t == s
        for t, s in zip(spec.segments, segments, strict=True)
    )


def _reference(
    operations: Sequence[OperationSpec], rest: str, method: str
) -> tuple[OperationSpec, dict[str, str]] | None:
    """Every operation tried in turn; the best by (literal flags from the
    left, then a specific method) wins."""
    segments = [] if rest in ("", "/") else rest[1:].split("/")
    candidates = [op for op in operations if _accepts(op, segments, method)]
    if not candidates:
        return None
    best = max(
        candidates,
        key=lambda op: (tuple(not t.startswith("{") for t in op.segments), op.method != "*"),
    )
    params = {t[1:-1]: s for t, s in zip(best.segments, segments, strict=True) if t.startswith("{")}
    return best, params


class ReferenceTests(SynchronousTestCase):
    """The operation trie picks what a brute-force matcher picks."""

    @settings(max_examples=300, deadline=None)
    @given(
        operations=_OPERATIONS,
        segments=st.lists(_REQUEST_SEGMENTS, max_size=4),
        method=st.sampled_from([*_METHODS, "PUT"]),
    )
    def test_agrees_with_reference(
        self, operations: tuple[tuple[str, str], ...], segments: list[str], method: str
    ) -> None:
        """For random operations and requests, the trie finds the same
        operation and params as the reference, or neither finds one."""
        (entry,) = entries(api("echo", "echo", operations))
        assert entry.operations is not None
        rest = "/" + "/".join(segments) if segments else ""
        match = RouteTable.build([entry]).lookup("h", "/echo" + rest, method)
        expected = _reference(entry.operations, rest, method)
        if expected is None:
            self.assertIsNone(match)
        else:
            assert match is not None
            self.assertEqual((match.operation, dict(match.params)), expected)
