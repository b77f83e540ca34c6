"""
What the golden-file tests share: the case files (``<name>.in.yaml``
beside ``<name>.out.yaml``, described by a first ``# `` line), strict
loading, and comparing with (or, with ``APIMGW_REGENERATE_GOLDEN=1``,
rewriting) the golden file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

REGENERATE = "APIMGW_REGENERATE_GOLDEN"


def cases(folder: Path) -> list[Path]:
    """The case files of ``folder``, sorted."""
    return sorted(folder.glob("*.in.yaml"))


def out_path(case: Path) -> Path:
    """The golden file of ``case``."""
    return case.with_name(case.name.removesuffix(".in.yaml") + ".out.yaml")


def test_name(case: Path) -> str:
    """``some-case.in.yaml`` → ``test_some_case``."""
    return "test_" + case.name.removesuffix(".in.yaml").replace("-", "_")


def description(case: Path) -> str:
    """The case's first line, a ``# `` comment saying what it shows."""
    lines = case.read_text().splitlines()
    first = lines[0] if lines else ""
    return first[2:].strip() if first.startswith("# ") else ""


def keys(doc: Mapping[str, Any], where: str, required: set[str], optional: set[str]) -> None:
    """Refuse a misspelt key: a typo would otherwise silently test a default."""
    if not isinstance(doc, Mapping):
        raise ValueError(f"{where}: expected a mapping, not {doc!r}")
    missing = required - doc.keys()
    unknown = doc.keys() - required - optional
    if missing or unknown:
        raise ValueError(f"{where}: missing {sorted(missing)}, unknown {sorted(unknown)}")


def check_cases(test: SynchronousTestCase, folder: Path) -> None:
    """``folder`` holds cases, each described, and no golden file is orphaned."""
    found = cases(folder)
    test.assertNotEqual(len(found), 0, f"no cases in {folder}")
    test.assertEqual([c.name for c in found if not description(c)], [],
                     "cases whose first line is not a '# ' description")
    orphans = sorted(
        p.name for p in folder.glob("*.out.yaml")
        if not p.with_name(p.name.removesuffix(".out.yaml") + ".in.yaml").exists()
    )
    test.assertEqual(orphans, [])


def compare(test: SynchronousTestCase, case: Path, got: str, regenerate: bool = True) -> None:
    """
    ``got`` must equal the golden file of ``case``; with
    ``APIMGW_REGENERATE_GOLDEN=1`` (and ``regenerate``) it is written first.
    """
    expected = out_path(case)
    if regenerate and os.environ.get(REGENERATE):
        expected.write_text(got)
    if not expected.exists():
        test.fail(f"{expected.name} is missing: run with {REGENERATE}=1 and review it")
    test.assertEqual(got, expected.read_text())
