"""
The wheel ships every package of the source tree.

``pyproject.toml`` lists its packages by name (the twistd plugin directory
is a namespace package, so automatic discovery would not find it); a new
package folder missing from that list installs fine in an editable checkout
and is silently absent from ``pip install .`` and the container image.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

ROOT = Path(__file__).resolve().parent.parent


class PackageListTests(SynchronousTestCase):
    """pyproject.toml names exactly the packages on disk."""

    def test_every_package_is_listed(self) -> None:
        """Each folder with an ``__init__.py`` under our packages is in ``[tool.setuptools] packages``."""
        listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
        on_disk = {
            ".".join(init.parent.relative_to(ROOT).parts)
            for top in ("gateway", "configservice", "cloudproto")
            for init in (ROOT / top).rglob("__init__.py")
        }
        self.assertEqual(on_disk - listed, set())
        self.assertEqual(listed - on_disk - {"twisted.plugins"}, set())
