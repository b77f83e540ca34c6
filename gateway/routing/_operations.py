"""
The operations of one API, compiled once per configuration into a segment
trie, so a request finds its operation without a regex and without trying
each operation in turn.

Precedence among the operations that accept a request, as one total order:

1. path, segment by segment from the left: a literal segment beats a
   ``{param}`` segment (``/users/me`` beats ``/users/{id}`` for
   ``/users/me``; ``/a/{x}`` beats ``/{y}/b`` for ``/a/b``);
2. then method: an operation for the request's method beats a ``*`` one.

An operation whose method does not accept the request is not a candidate at
all: with ``GET /users/me`` and ``* /users/{id}``, ``POST /users/me`` matches
the second one (``id`` = ``me``). Translation rejects two operations with the
same method and the same template shape, so the order is total; for entries
built by hand the first such operation listed wins.

A ``{param}`` captures one whole, non-empty segment. Segments are compared
as sent (no percent-decoding), so ``%2F`` never splits a segment.
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway.translate import OperationSpec

_PARAM_OPEN = "{"
_PARAM_CLOSE = "}"
_ANY_METHOD = "*"


def _is_param(segment: str) -> bool:
    return segment.startswith(_PARAM_OPEN) and segment.endswith(_PARAM_CLOSE)


class CompiledOperation:
    """
    An operation with the names of its parameters in template order, so the
    captured values (collected in the same order while walking) zip into the
    params mapping without re-reading the template.
    """

    __slots__ = ("names", "spec")

    def __init__(self, spec: OperationSpec) -> None:
        self.spec = spec
        self.names = tuple(s[1:-1] for s in spec.segments if _is_param(s))


class _OpNode:
    """One segment position: literal children, at most one param child, and
    the operations whose template ends here, by method."""

    __slots__ = ("literals", "methods", "param")

    def __init__(self) -> None:
        self.literals: dict[str, _OpNode] = {}
        self.param: _OpNode | None = None
        self.methods: dict[str, CompiledOperation] = {}


class OperationTrie:
    """The compiled operations of one route entry. Never mutated after
    :meth:`compile`."""

    __slots__ = ("_root",)

    def __init__(self, root: _OpNode) -> None:
        self._root = root

    @classmethod
    def compile(cls, operations: Iterable[OperationSpec]) -> OperationTrie:
        root = _OpNode()
        for spec in operations:
            node = root
            for segment in spec.segments:
                if _is_param(segment):
                    if node.param is None:
                        node.param = _OpNode()
                    node = node.param
                else:
                    node = node.literals.setdefault(segment, _OpNode())
            node.methods.setdefault(spec.method, CompiledOperation(spec))
        return cls(root)

    def match(self, rest: str, method: str) -> tuple[CompiledOperation, list[str]] | None:
        """
        Find the operation for ``rest`` (the request path below the API's
        path; ``""`` counts as ``"/"``) and ``method``.

        :return: the operation and the captured values in template order, or
            ``None`` when no operation accepts the request.
        """
        segments = rest[1:].split("/") if len(rest) > 1 else []
        values: list[str] = []
        found = _walk(self._root, segments, 0, method, values)
        if found is None:
            return None
        return found, values

    def lists_path(self, rest: str) -> bool:
        """Whether an operation of any method accepts the path ``rest``."""
        segments = rest[1:].split("/") if len(rest) > 1 else []
        return _walk(self._root, segments, 0, None, []) is not None


def _walk(
    node: _OpNode, segments: list[str], index: int, method: str | None, values: list[str]
) -> CompiledOperation | None:
    """
    Depth-first, literal child before param child: the first operation found
    is the greatest in the precedence order. The trie is a tree, so each node
    is visited at most once: the cost is bounded by the number of segments
    times the branching actually configured, never by a combinatorial search.
    """
    if index == len(segments):
        if method is None:
            # Any method: is the path listed at all?
            return next(iter(node.methods.values()), None)
        found = node.methods.get(method)
        if found is None:
            found = node.methods.get(_ANY_METHOD)
        return found
    segment = segments[index]
    child = node.literals.get(segment)
    if child is not None:
        found = _walk(child, segments, index + 1, method, values)
        if found is not None:
            return found
    child = node.param
    if child is not None and segment:
        values.append(segment)
        found = _walk(child, segments, index + 1, method, values)
        if found is not None:
            return found
        values.pop()
    return None
