"""
The import direction of the code base, checked from the code's own imports.

Configuration flows one way (DESIGN.md: sources → model → translate →
routing/tls → proxy, observability beside); a module that imports against
that flow ties a lower layer to a higher one and is how a design erodes.
This test reads every ``import`` statement of ``gateway``, ``configservice``
and ``cloudproto`` (including imports inside functions and under
``TYPE_CHECKING``: a type-only edge is still an edge) and fails on any edge
the tables below do not allow, naming the module and the line.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

ROOT = Path(__file__).resolve().parent.parent

#: Our top-level packages.
PACKAGES = ("gateway", "configservice", "cloudproto")

#: Everything: only composition (``tap``) and the rebuild (``reconcile``)
#: may import every layer.
ANY = frozenset({"*"})

#: Layer → the layers it may import. A layer is ``gateway.<name>`` (module
#: or package), or a top-level package. Imports within a layer are free.
ALLOWED: dict[str, frozenset[str]] = {
    # Leaves: plain data, helpers and settings import nothing of ours.
    "gateway.model": frozenset(),
    "gateway.memo": frozenset(),
    "gateway.ready": frozenset(),
    "gateway.dispatch": frozenset(),
    # The connections' writer holds writes for the dispatch's end of iteration.
    "gateway.netio": frozenset({"gateway.dispatch"}),
    "gateway.settings": frozenset(),
    "cloudproto": frozenset(),
    # The data flow.
    "gateway.translate": frozenset({"gateway.model", "gateway.memo"}),
    "gateway.routing": frozenset({"gateway.translate", "gateway.model", "gateway.memo"}),
    "gateway.tls": frozenset({"gateway.routing", "gateway.translate", "gateway.model"}),
    "gateway.upstream": frozenset(
        {"gateway.translate", "gateway.model", "gateway.ready", "gateway.netio"}
    ),
    # Runtime state of validate-jwt (the JWKS cache), beside the proxy.
    "gateway.jwt": frozenset({"gateway.translate"}),
    # Runtime state of rate-limit and quota (local and Redis counters).
    "gateway.counters": frozenset({"gateway.ready"}),
    "gateway.proxy": frozenset(
        {
            "gateway.routing",
            "gateway.tls",
            "gateway.upstream",
            "gateway.translate",
            "gateway.model",
            "gateway.ready",
            "gateway.netio",
        }
    ),
    # Sources see only the model (and the shared wire protocol).
    "gateway.sources": frozenset({"gateway.model", "gateway.ready", "cloudproto"}),
    # Beside the flow: they read generations, never write them.
    "gateway.observability": frozenset(
        {
            "gateway.routing",
            "gateway.tls",
            "gateway.translate",
            "gateway.model",
            "gateway.ready",
            "gateway.dispatch",
        }
    ),
    "gateway.status": frozenset(
        {
            "gateway.routing",
            "gateway.translate",
            "gateway.model",
            "gateway.sources",
            "gateway.ready",
        }
    ),
    "gateway.echo": frozenset({"gateway.ready"}),
    # Worker processes: the channel carries model objects; a worker's
    # listener is the proxy's drain-aware one on an inherited socket.
    "gateway.workers": frozenset({"gateway.model", "gateway.proxy"}),
    # Shipped fakes and builders for tests.
    "gateway.testing": frozenset({"gateway.model", "gateway.echo", "gateway.ready"}),
    # The other side of the wire shares only the protocol.
    "configservice": frozenset({"cloudproto"}),
    # Composition.
    "gateway.reconcile": ANY,
    "gateway.tap": ANY,
}

#: Inside ``gateway.sources``: each source stands alone, except that the
#: Ingress and Gateway API sources use the Kubernetes API client.
SOURCES_ALLOWED: dict[str, frozenset[str]] = {
    "file": frozenset(),
    "cloud": frozenset(),
    "kubernetes": frozenset(),
    "ingress": frozenset({"kubernetes"}),
    "gatewayapi": frozenset({"kubernetes"}),
}


@dataclass(frozen=True)
class Edge:
    """One import of ours: the importing module, the imported name, where."""

    importer: str
    imported: str
    path: str
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.importer} imports {self.imported}"


def module_name(path: Path, root: Path) -> str:
    """``gateway/proxy/_resource.py`` → ``gateway.proxy._resource``."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(source: str, module: str, is_package: bool, path: str = "") -> Iterator[Edge]:
    """Every import of one of :data:`PACKAGES` in ``source``, relative ones resolved."""
    tree = ast.parse(source)
    for node in sorted(ast.walk(tree), key=lambda n: getattr(n, "lineno", 0)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                if not is_package:
                    base = base[:-1]
                base = base[: len(base) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
                # ``from . import x`` may name a submodule: count it as one.
                names = [f"{stem}.{a.name}" for a in node.names] if not node.module else [stem]
            elif node.module:
                names = [node.module]
        for name in names:
            if name.split(".")[0] in PACKAGES:
                yield Edge(module, name, path, node.lineno)


def layer(module: str) -> str:
    """The layer a module belongs to (see :data:`ALLOWED`)."""
    parts = module.split(".")
    if parts[0] != "gateway" or len(parts) == 1:
        return parts[0]
    return ".".join(parts[:2])


def violations(edges: list[Edge]) -> list[str]:
    """The edges the tables do not allow, as readable lines."""
    found = []
    for edge in edges:
        source, target = layer(edge.importer), layer(edge.imported)
        if edge.importer == "gateway" or source == target:
            if source == target == "gateway.sources":
                found.extend(_sources_violation(edge))
            continue
        allowed = ALLOWED.get(source)
        if allowed is None:
            found.append(f"{edge} (layer {source} is not in the table: add it)")
        elif allowed is not ANY and target not in allowed:
            found.append(f"{edge} (layer {source} may import only {sorted(allowed)})")
    return found


def _sources_violation(edge: Edge) -> list[str]:
    source, target = edge.importer.split("."), edge.imported.split(".")
    if len(source) < 3 or len(target) < 3:
        return []
    own, other = source[2], target[2]
    # A shared private helper (``sources/_x.py``) may serve every source,
    # but it may not reach into one: that would bridge two sources.
    if own == other or other.startswith("_"):
        return []
    if other not in SOURCES_ALLOWED.get(own, frozenset()):
        return [f"{edge} (source {own} may not import source {other})"]
    return []


def scan(root: Path = ROOT) -> list[Edge]:
    """Every import edge of our packages under ``root``."""
    edges: list[Edge] = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            module = module_name(path, root)
            text = path.read_text(encoding="utf-8")
            edges.extend(
                imports(text, module, path.name == "__init__.py", str(path.relative_to(root)))
            )
    return edges


class LayerTests(SynchronousTestCase):
    """The code's imports follow the data flow."""

    def test_scan_sees_the_code(self) -> None:
        """The scanner finds the modules and the edges we know exist (so an empty scan fails)."""
        edges = scan()
        pairs = {(layer(e.importer), layer(e.imported)) for e in edges}
        for known in [
            ("gateway.reconcile", "gateway.routing"),
            ("gateway.tls", "gateway.translate"),
            ("gateway.routing", "gateway.translate"),
            ("gateway.translate", "gateway.model"),
            ("gateway.tap", "gateway.sources"),
        ]:
            self.assertIn(known, pairs)
        self.assertGreater(len(edges), 100)

    def test_no_edge_against_the_flow(self) -> None:
        """Every import of ours is one the layer table allows."""
        self.assertEqual(violations(scan()), [])

    def test_every_layer_is_known(self) -> None:
        """Every gateway module belongs to a layer of the table (a new one must be placed)."""
        unknown = {
            layer(module_name(p, ROOT))
            for p in (ROOT / "gateway").rglob("*.py")
            if module_name(p, ROOT) != "gateway"
        } - set(ALLOWED)
        self.assertEqual(unknown, set())

    def test_reversed_edge_is_reported(self) -> None:
        """A model module importing the proxy is reported with its line."""
        edges = list(
            imports(
                "import os\nfrom gateway.proxy import ProxyResource\n",
                "gateway.model._x",
                False,
                "m.py",
            )
        )
        self.assertEqual(
            violations(edges),
            [
                "m.py:2: gateway.model._x imports gateway.proxy (layer gateway.model may import only [])"
            ],
        )

    def test_type_checking_and_relative_imports_count(self) -> None:
        """Imports under TYPE_CHECKING and relative imports are resolved and checked."""
        text = (
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n"
            "    from ..tls import SNIMap\n"
            "from . import _trie\n"
        )
        edges = list(imports(text, "gateway.routing.generation", False))
        self.assertEqual([e.imported for e in edges], ["gateway.tls", "gateway.routing._trie"])
        self.assertEqual(len(violations(edges)), 1)

    def test_one_source_importing_another_is_reported(self) -> None:
        """The cloud source importing the Kubernetes client is reported; Ingress may."""
        cloud = list(
            imports(
                "from gateway.sources.kubernetes import KubeClient\n",
                "gateway.sources.cloud._x",
                False,
            )
        )
        ingress = list(
            imports("from ..kubernetes import KubeClient\n", "gateway.sources.ingress._x", False)
        )
        self.assertEqual(len(violations(cloud)), 1)
        self.assertEqual(violations(ingress), [])
