"""
A safe, small XML reader for policy documents, with element paths.

Why not :mod:`xml.etree.ElementTree` or ``defusedxml``: a policy document
comes from the configuration service, so it is untrusted input, and a
problem must name the element it is about. Expat (the parser under
ElementTree) is driven here directly: a ``<!DOCTYPE`` is refused before
anything in it is read, and since entities can only be declared in a DTD,
that one refusal rules out entity expansion bombs and external entities
(an undeclared ``&name;`` is a plain parse error). Building our own small
tree also lets every node carry its path (``policies/inbound/set-header[2]``)
and its line, which ElementTree would not. No new dependency is needed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from xml.parsers import expat

__all__ = ["Node", "XmlError", "parse_xml"]


class XmlError(ValueError):
    """The document is not well-formed XML, or it holds a DTD."""


@dataclass(slots=True, eq=False)
class Node:
    """
    One element: its tag, attributes in document order, element children,
    and the text directly inside it (character data between its children,
    joined; CDATA included).

    :ivar path: where it is, in the XPath-like form problems use: tags from
        the root joined with ``/``, with a 1-based ``[n]`` after a tag that
        several siblings share (``policies/inbound/set-header[2]``).
    :ivar line: the 1-based line of its start tag.
    """

    tag: str
    attributes: dict[str, str]
    line: int
    path: str = ""
    children: list[Node] = field(default_factory=list)
    text: str = ""


class _Builder:
    """Expat callbacks building :class:`Node` trees."""

    def __init__(self, parser: expat.XMLParserType) -> None:
        self._parser = parser
        self.root: Node | None = None
        self._stack: list[Node] = []
        self._texts: list[list[str]] = []

    def start(self, tag: str, attributes: dict[str, str]) -> None:
        node = Node(tag, dict(attributes), self._parser.CurrentLineNumber)
        if self._stack:
            self._stack[-1].children.append(node)
        else:
            self.root = node
        self._stack.append(node)
        self._texts.append([])

    def end(self, tag: str) -> None:
        node = self._stack.pop()
        node.text = "".join(self._texts.pop())

    def data(self, text: str) -> None:
        if self._texts:
            self._texts[-1].append(text)

    def doctype(self, *args: object) -> None:
        raise XmlError("a DOCTYPE (DTD) is not allowed in a policy document")

    def entity(self, *args: object) -> None:
        raise XmlError("entity declarations are not allowed in a policy document")


def _assign_paths(node: Node, path: str) -> None:
    node.path = path
    counts: dict[str, int] = {}
    for child in node.children:
        counts[child.tag] = counts.get(child.tag, 0) + 1
    seen: dict[str, int] = {}
    for child in node.children:
        seen[child.tag] = seen.get(child.tag, 0) + 1
        step = child.tag if counts[child.tag] == 1 else f"{child.tag}[{seen[child.tag]}]"
        _assign_paths(child, f"{path}/{step}")


def parse_xml(text: str) -> Node:
    """
    Parse one document into a :class:`Node` tree with paths assigned.

    Comments and processing instructions are dropped; namespaces are not
    interpreted (policy documents use none; a prefixed tag stays as
    written, and so is an unknown policy).

    :raises XmlError: not well-formed (with line and column), or a DTD.
    """
    parser = expat.ParserCreate()
    builder = _Builder(parser)
    parser.StartElementHandler = builder.start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.data
    parser.StartDoctypeDeclHandler = builder.doctype
    parser.EntityDeclHandler = builder.entity
    parser.buffer_text = True
    try:
        parser.Parse(text, True)
    except expat.ExpatError as error:
        message = expat.ErrorString(error.code)
        raise XmlError(f"not well-formed XML: {message} (line {error.lineno}, column {error.offset + 1})")
    if builder.root is None:  # pragma: no cover - expat reports "no element found"
        raise XmlError("no element found")
    _assign_paths(builder.root, builder.root.tag)
    return builder.root
