"""The callbacks read the Lightning module through D3SRModule's own attributes, never a getattr fallback."""

from __future__ import annotations

import ast
from pathlib import Path

from d3sr.models import D3SRModule

CALLBACKS = Path(__file__).resolve().parents[2] / "src" / "d3sr" / "callbacks"
FAST = ["experiment=demo", "model/generator=tiny", "model/discriminator=tiny", "degradation=bicubic"]


def module_reads(path: Path) -> set[str]:
    """Every attribute a callback file reads from `pl_module`, and the names it reads through getattr/hasattr."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "pl_module":
            names.add(node.attr)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr"):
            if node.args and isinstance(node.args[0], ast.Name) and node.args[0].id == "pl_module":
                names.add(f"{node.func.id}(pl_module, ...)")
    return names


def test_every_attribute_the_callbacks_read_is_one_the_module_has(compose, tmp_path):
    module = D3SRModule.from_config(compose([*FAST, f"paths.output_dir={tmp_path}"]))
    reads = {path.name: module_reads(path) for path in sorted(CALLBACKS.glob("*.py"))}
    assert {"accumulate_grad_batches", "iteration"} <= reads["preemption.py"]
    assert {"generator", "iteration"} <= reads["ema.py"] and "super_resolve" in reads["image_logger.py"]
    # dir() of an nn.Module lists its class attributes (methods, properties), instance attributes and sub-modules.
    missing = {name: sorted(n for n in names if n not in dir(module)) for name, names in reads.items()}
    assert not any(missing.values()), missing
