"""The library's layers (docs/architecture.md): no module imports a module of a layer above its own."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.paths import REPO

# lowest first; a module may import its own layer and those below
LAYERS: tuple[tuple[str, ...], ...] = (
    ("vocabulary", "fsutil", "download", "config"),
    ("maps", "trilinear", "network", "losses", "metrics", "optimize", "testing"),
    ("io", "register", "jobs", "weights", "tracking"),
    ("data", "records"),
    ("train", "evaluate", "learn2reg"),
    ("tables",),
    ("cli", "__init__"),
)
LAYER = {name: level for level, names in enumerate(LAYERS) for name in names}
# upward imports made inside a function, on purpose: the config's cross-checks call the layers that know what a
# preset, a synthetic dataset, a manifest or a released checkpoint is (nothing of them loads with the config)
CALL_TIME = {"config": {"network", "data", "io", "weights"}}


def _part(path: Path) -> str:
    """The top-level part of mgicon a file belongs to: ``maps``, ``data``, ... (``__init__`` for the package)."""
    relative = path.relative_to(REPO / "mgicon").with_suffix("")
    return relative.parts[0]


def _imports(path: Path) -> list[tuple[str, bool]]:
    """``(part, at module level)`` for every import of another part of mgicon in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "mgicon":
            modules = [f"{node.module}.{a.name}" for a in node.names] if node.module == "mgicon" else [node.module]
        elif isinstance(node, ast.Import):
            modules = [a.name for a in node.names if a.name.split(".")[0] == "mgicon"]
        else:
            continue
        found += [(m.split(".")[1], id(node) in top) for m in modules if "." in m]
    return found


@pytest.mark.parametrize("path", sorted((REPO / "mgicon").rglob("*.py")), ids=lambda p: str(p.relative_to(REPO)))
def test_no_module_imports_a_layer_above_its_own(path):
    part = _part(path)
    assert part in LAYER, f"{part}: add it to a layer of LAYERS (and to docs/architecture.md)"
    for target, module_level in _imports(path):
        if target == part or LAYER[target] <= LAYER[part]:
            continue
        assert not module_level and target in CALL_TIME.get(part, ()), f"{part} imports {target}, a layer above it"
