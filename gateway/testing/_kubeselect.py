"""
Label and field selectors as the Kubernetes API server parses them, for
:mod:`gateway.testing.fakekube`.

Only the parts of the grammar that clients send are implemented, but those
exactly: a selector the real server rejects is rejected here too (as a
:class:`SelectorError`, which the fake answers with ``400 BadRequest``), so a
client that builds a wrong selector fails against the fake, not only in a
cluster.

Label selectors (``k8s.io/apimachinery/pkg/labels``): requirements separated
by commas, each one of ``key``, ``!key``, ``key=value``, ``key==value``,
``key!=value``, ``key in (a,b)``, ``key notin (a,b)``. Field selectors
(``k8s.io/apimachinery/pkg/fields``): ``field=value``, ``field==value``,
``field!=value``, separated by commas; which fields are allowed depends on
the kind.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "FieldSelector",
    "LabelSelector",
    "SelectorError",
    "parse_field_selector",
    "parse_label_selector",
]

# A qualified label key: optional DNS-subdomain prefix and "/", then a name
# of up to 63 characters (alphanumerics, "-", "_", "."; alphanumeric ends).
_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_KEY_RE = re.compile(rf"^([a-z0-9]([-a-z0-9.]{{0,251}}[a-z0-9])?/)?{_NAME}$")
_VALUE_RE = re.compile(rf"^({_NAME})?$")


class SelectorError(ValueError):
    """A selector the API server would refuse to parse."""


@dataclass(frozen=True)
class _Requirement:
    key: str
    operator: str  # exists, !exists, =, !=, in, notin
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.operator == "exists":
            return present
        if self.operator == "!exists":
            return not present
        if self.operator in ("=", "in"):
            return present and labels[self.key] in self.values
        # "!=" and "notin" also match objects without the label, as upstream.
        return not present or labels[self.key] not in self.values


@dataclass(frozen=True)
class LabelSelector:
    """A parsed label selector: every requirement must hold."""

    requirements: tuple[_Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        """Whether an object with these labels is selected."""
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside ``( )``."""
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise SelectorError("unbalanced parentheses")
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if depth != 0:
        raise SelectorError("unbalanced parentheses")
    parts.append("".join(current))
    return parts


def _check_key(key: str) -> str:
    if not _KEY_RE.match(key):
        raise SelectorError(f"invalid label key {key!r}")
    return key


def _check_value(value: str) -> str:
    if not _VALUE_RE.match(value):
        raise SelectorError(f"invalid label value {value!r}")
    return value


_SET_RE = re.compile(r"^(?P<key>\S+)\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)$")


def _parse_requirement(text: str) -> _Requirement:
    text = text.strip()
    if not text:
        raise SelectorError("empty requirement")
    m = _SET_RE.match(text)
    if m:
        values = tuple(_check_value(v.strip()) for v in m.group("values").split(","))
        return _Requirement(_check_key(m.group("key")), m.group("op"), values)
    for op in ("!=", "==", "="):
        if op in text:
            key, _, value = text.partition(op)
            return _Requirement(
                _check_key(key.strip()),
                "!=" if op == "!=" else "=",
                (_check_value(value.strip()),),
            )
    if text.startswith("!"):
        return _Requirement(_check_key(text[1:].strip()), "!exists")
    return _Requirement(_check_key(text), "exists")


def parse_label_selector(text: str | None) -> LabelSelector:
    """
    Parse a ``labelSelector`` query parameter; empty or ``None`` selects
    everything.

    :raises SelectorError: for a selector the API server rejects.
    """
    if not text or not text.strip():
        return LabelSelector()
    return LabelSelector(tuple(_parse_requirement(p) for p in _split_top_level(text)))


@dataclass(frozen=True)
class FieldSelector:
    """A parsed field selector: ``(field, operator, value)`` terms, all must hold."""

    terms: tuple[tuple[str, str, str], ...] = ()

    def matches(self, fields: Mapping[str, str]) -> bool:
        """Whether an object whose selectable fields are ``fields`` is selected."""
        for field, op, value in self.terms:
            actual = fields.get(field, "")
            if (actual == value) != (op == "="):
                return False
        return True


def parse_field_selector(text: str | None, allowed: Callable[[str], bool]) -> FieldSelector:
    """
    Parse a ``fieldSelector`` query parameter.

    :param allowed: whether a field label is selectable for the kind; the
        real server answers an unsupported one with ``field label not
        supported``.
    :raises SelectorError: for a malformed term or an unsupported field.
    """
    if not text or not text.strip():
        return FieldSelector()
    terms = []
    for part in text.split(","):
        part = part.strip()
        for op in ("!=", "==", "="):
            if op in part:
                field, _, value = part.partition(op)
                field = field.strip()
                if not allowed(field):
                    raise SelectorError(f"field label not supported: {field}")
                terms.append((field, "!=" if op == "!=" else "=", value.strip()))
                break
        else:
            raise SelectorError(f"invalid selector: {part!r}; can't understand")
    return FieldSelector(tuple(terms))


def dig(obj: Mapping[str, Any], dotted: str) -> str:
    """The string value at a dotted path of ``obj`` (``""`` when absent)."""
    node: Any = obj
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return ""
        node = node[part]
    return "" if node is None else str(node)
