"""
Kubernetes label selectors (``matchLabels`` and ``matchExpressions``), as
``allowedRoutes.namespaces.selector`` uses them: a listener admits routes
from the namespaces whose labels the selector matches.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["InvalidSelector", "selector_matches"]


class InvalidSelector(ValueError):
    """A selector with an unknown operator or malformed values."""


def selector_matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """
    Whether ``labels`` satisfy ``selector`` (all terms ANDed, as in
    ``metav1.LabelSelector``). An empty selector matches everything,
    like Kubernetes'. Raises :class:`InvalidSelector` for a malformed one,
    which the listener reports instead of guessing.
    """
    for name, value in (selector.get("matchLabels") or {}).items():
        if labels.get(name) != value:
            return False
    for expression in selector.get("matchExpressions") or ():
        name = expression.get("key")
        operator = expression.get("operator")
        values = expression.get("values") or []
        if not isinstance(name, str):
            raise InvalidSelector("matchExpressions entry without a key")
        if operator == "In":
            if not values:
                raise InvalidSelector(f"operator In on {name!r} needs values")
            if labels.get(name) not in values:
                return False
        elif operator == "NotIn":
            if not values:
                raise InvalidSelector(f"operator NotIn on {name!r} needs values")
            if name in labels and labels[name] in values:
                return False
        elif operator == "Exists":
            if name not in labels:
                return False
        elif operator == "DoesNotExist":
            if name in labels:
                return False
        else:
            raise InvalidSelector(f"unknown operator {operator!r}")
    return True
