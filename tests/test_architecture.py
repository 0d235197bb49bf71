"""The layering of src/d3sr, read from the import statements (the table in docs/architecture.md).

Ground floor (images, errors, options, psnr_ssim, resolvers, atomic_files, commands, run_results) → losses/, data/,
models/, callbacks/ → inference/ → evaluation/ → entry points. Arrows point down only; entry points are leaves that
nothing imports.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "d3sr"
ENTRY_POINTS = {
    "train",
    "infer",
    "export",
    "evaluate",
    "synth",
    "pretrain_tiny",
    "check_weights",
    "complexity",
    "held_out",
    "app",
    "sweep_report",
}
GROUND = {"images", "errors", "options", "psnr_ssim", "resolvers", "atomic_files", "commands", "run_results"}
# What each part may import from d3sr (besides itself); the ground floor may import only the ground floor.
ALLOWED = {
    "ground": GROUND,
    "losses": GROUND,
    "data": GROUND,
    "models": GROUND | {"losses"},
    "callbacks": GROUND | {"models"},
    "inference": GROUND | {"models"},
    "evaluation": GROUND | {"models", "inference"},
}


def d3sr_imports(path: Path) -> set[str]:
    """First component below `d3sr` of every `d3sr.*` module imported by a file (`d3sr` itself → '__init__')."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
            if node.module == "d3sr":
                names = [f"d3sr.{alias.name}" for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "d3sr":
                found.add(parts[1] if len(parts) > 1 else "__init__")
    return found


def part_of(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    if len(relative.parts) > 1:
        return relative.parts[0]
    return relative.stem


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "conf" not in p.relative_to(PACKAGE).parts)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path):
    part = part_of(path)
    imported = d3sr_imports(path) - {part, "__init__"}
    assert not imported & ENTRY_POINTS, f"{path.name} imports the entry point(s) {imported & ENTRY_POINTS}"
    if part in ENTRY_POINTS or part == "__init__":
        return
    layer = "ground" if part in GROUND else part
    assert layer in ALLOWED, f"{part} is not placed in the layering table of this test"
    assert imported <= ALLOWED[layer], f"{path.relative_to(PACKAGE)} imports {sorted(imported - ALLOWED[layer])}"


def test_every_package_says_what_lives_there():
    for init in PACKAGE.rglob("__init__.py"):
        if "conf" in init.relative_to(PACKAGE).parts:
            continue
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc) > 20, f"{init} has no docstring saying what lives there"
