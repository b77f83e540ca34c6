"""
Golden files: APIM policy documents written in APIM's published syntax
(``testdata/<case>.xml``), compiled, and compared as canonical YAML with
``testdata/<case>.out.yaml``. One generated test method per case.

Set ``APIMGW_REGENERATE_GOLDEN=1`` to rewrite the ``.out.yaml`` files, then
review the diff: a golden file is a claim about behaviour.

Each case's first line is an XML comment saying what it shows. Every case
is compiled with :data:`NAMED_VALUES`, those in :data:`SECRETS` secret, and
shown with :func:`~gateway.translate.policy.describe` (the helper ``/config``
uses), so the golden files also pin how steps are shown.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import yaml
from twisted.trial.unittest import SynchronousTestCase

from gateway.translate.policy import CompiledDocument, compile_document, describe

TESTDATA = Path(__file__).parent / "testdata"
REGENERATE = "APIMGW_REGENERATE_GOLDEN"

NAMED_VALUES = {
    "backend-url": "https://orders.internal.example/v2",
    "tenant": "contoso",
    "jwt-signing-key": "c2VjcmV0LXNpZ25pbmcta2V5",
    "idp": "https://login.example.com/contoso",
}
#: The named values that are secret, as a signing key is in APIM.
SECRETS = frozenset({"jwt-signing-key"})


def canonical(document: CompiledDocument) -> str:
    """Sections in order (absent ones shown as ``inherited``), then problems."""
    return yaml.safe_dump(describe(document), sort_keys=False, width=1000, allow_unicode=True)


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
        got = canonical(compile_document(case.read_text(), NAMED_VALUES, SECRETS))
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
