"""
Compiled policies as plain data, for people: golden files, ``/config``, logs.

Steps are frozen dataclasses whose fields are made for the executor
(integer IP ranges, expression closures, secrets in clear for sending).
:func:`describe` turns them into lists, dicts, strings, numbers and
booleans that ``yaml.safe_dump`` and ``json.dumps`` accept, and it is the
one place that decides how a compiled value is shown:

* an :class:`~gateway.translate.policy.Expression` as its source;
* a :class:`~gateway.translate.policy.RedactedStr` (a secret named value
  went into it) as its ``{{name}}`` form, never the secret;
* :class:`~gateway.translate.policy.IpFilter` ranges as addresses;
* fields left at their default are omitted, so the output reads like the
  document that produced it.
"""

from __future__ import annotations

from dataclasses import MISSING, fields, is_dataclass
from typing import Any

from ._expressions import Expression
from ._policies import CompiledDocument
from ._steps import SECTIONS, Base, IpFilter, Pipeline, RedactedStr

__all__ = ["describe"]


def describe(value: object) -> Any:
    """
    ``value`` (a step, a section's tuple of steps, a :class:`Pipeline` or a
    :class:`CompiledDocument`) as plain data without secrets.

    A step is ``{"policy": <class name>, <field>: <value>, ...}`` without
    the fields at their default; a pipeline or a document maps each
    section's XML name to its steps (a document's section it does not have
    is ``"inherited"``) and a document adds its ``problems`` as
    ``"<kind>: <path>: <message>"``.
    """
    if isinstance(value, RedactedStr):
        return value.shown
    if isinstance(value, str):
        return str(value)
    if isinstance(value, Expression):
        return value.source
    if isinstance(value, Base):
        return "<base/>"
    if isinstance(value, (tuple, list)):
        return [describe(item) for item in value]
    if isinstance(value, Pipeline):
        return {name: describe(value.section(name)) for name in SECTIONS}
    if isinstance(value, CompiledDocument):
        out: dict[str, Any] = {}
        for name in SECTIONS:
            section = value.section(name)
            out[name] = "inherited" if section is None else describe(section)
        out["problems"] = [f"{p.kind}: {p}" for p in value.problems]
        return out
    if is_dataclass(value) and not isinstance(value, type):
        step: dict[str, Any] = {"policy": type(value).__name__}
        for f in fields(value):
            item = getattr(value, f.name)
            if f.default is not MISSING and item == f.default:
                continue
            step[f.name] = describe(item)
        if isinstance(value, IpFilter):
            del step["ranges"]
            step["addresses"] = list(value.addresses)
        return step
    return value
