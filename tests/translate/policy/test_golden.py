"""
Golden files: APIM policy documents written in APIM's published syntax
(``testdata/<case>.xml``), compiled, and compared as canonical YAML with
``testdata/<case>.out.yaml``. One generated test method per case.

Set ``APIMGW_REGENERATE_GOLDEN=1`` to rewrite the ``.out.yaml`` files, then
review the diff: a golden file is a claim about behaviour.

Each case's first line is an XML comment saying what it shows. Every case
is compiled with :data:`NAMED_VALUES`.
"""

from __future__ import annotations

import os
from dataclasses import MISSING, fields, is_dataclass
from pathlib import Path
from typing import Any, Callable

import yaml
from twisted.trial.unittest import SynchronousTestCase

from gateway.translate.policy import SECTIONS, Base, CompiledDocument, Expression, compile_document

TESTDATA = Path(__file__).parent / "testdata"
REGENERATE = "APIMGW_REGENERATE_GOLDEN"

NAMED_VALUES = {
    "backend-url": "https://orders.internal.example/v2",
    "tenant": "contoso",
    "jwt-signing-key": "c2VjcmV0LXNpZ25pbmcta2V5",
    "idp": "https://login.example.com/contoso",
}


def _plain(value: Any) -> Any:
    if isinstance(value, Expression):
        return value.source
    if isinstance(value, Base):
        return "<base/>"
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {"policy": type(value).__name__}
        for f in fields(value):
            item = getattr(value, f.name)
            if f.default is not MISSING and item == f.default:
                continue
            out[f.name] = _plain(item)
        return out
    return value


def canonical(document: CompiledDocument) -> str:
    """Sections in order (absent ones shown as ``inherited``), then problems."""
    doc: dict[str, Any] = {}
    for name in SECTIONS:
        section = document.section(name)
        doc[name] = "inherited" if section is None else _plain(section)
    doc["problems"] = [f"{p.kind}: {p}" for p in document.problems]
    return yaml.safe_dump(doc, sort_keys=False, width=1000, allow_unicode=True)


def _cases() -> list[Path]:
    return sorted(TESTDATA.glob("*.xml"))


def _description(case: Path) -> str:
    first = case.read_text().splitlines()[0].strip()
    return first[4:-3].strip() if first.startswith("<!--") and first.endswith("-->") else ""


class PolicyGoldenTests(SynchronousTestCase):
    """Generated below: one ``test_<case>`` per ``testdata/*.xml``."""

    def test_cases_found(self) -> None:
        """Cases exist, each described on its first line, and no golden file is orphaned."""
        self.assertNotEqual(_cases(), [])
        self.assertEqual([c.name for c in _cases() if not _description(c)], [])
        orphans = [p.name for p in TESTDATA.glob("*.out.yaml")
                   if not p.with_name(p.name.removesuffix(".out.yaml") + ".xml").exists()]
        self.assertEqual(orphans, [])


def _golden_test(case: Path) -> Callable[[PolicyGoldenTests], None]:
    def test(self: PolicyGoldenTests) -> None:
        got = canonical(compile_document(case.read_text(), NAMED_VALUES))
        expected = case.with_name(case.stem + ".out.yaml")
        if os.environ.get(REGENERATE):
            expected.write_text(got)
        if not expected.exists():
            self.fail(f"{expected.name} is missing: run with {REGENERATE}=1 and review it")
        self.assertEqual(got, expected.read_text())

    test.__doc__ = f"{_description(case)} (golden file {case.stem}.out.yaml)."
    return test


for _case in _cases():
    setattr(PolicyGoldenTests, "test_" + _case.stem.replace("-", "_"), _golden_test(_case))
