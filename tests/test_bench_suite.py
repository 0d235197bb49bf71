"""The benchmark scripts that carry checks: the GPU suite's --quick run, and the full-size bf16 training smoke."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
import time
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"


def bench_module(name: str):
    """Import bench/<name>.py (the bench folder is scripts, not a package)."""
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


def test_gpu_suite_quick_runs_every_section_on_the_cpu(tmp_path):
    suite = bench_module("gpu_suite")
    status = suite.main(["--quick", "--device", "cpu", "--out", str(tmp_path)])
    results = json.loads((tmp_path / "gpu_suite.json").read_text())
    errors = {name: entry.get("error") for name, entry in results["sections"].items() if "error" in entry}
    assert status == 0 and not errors, errors
    assert set(results["sections"]) == set(suite.SECTIONS)
    sections = {name: entry["rows"] for name, entry in results["sections"].items()}
    assert {row["variant"] for row in sections["inference"]} == {"fp32", "bf16"}  # compile: not in --quick
    assert all(row["s_per_image"] > 0 for row in sections["inference"])
    assert [row["output"] for row in sections["tiled"]] == ["64²", "128²"]
    assert [row["batch"] for row in sections["training"]] == ["2 × 1", "1 × 4"]
    assert all(row["finite_losses"] and row["s_per_iteration"] > 0 for row in sections["training"])
    assert sections["degradation"][0]["images_per_s"] > 0
    table = (tmp_path / "gpu_suite.md").read_text()
    assert "## training" in table and "sdxl_disc_lowmem" in table


def cpu_without_bf16() -> bool:
    """Whether this CPU lacks bf16 instructions (AVX512-BF16 / AMX), so torch emulates its bf16 kernels."""
    return torch.backends.cpu.get_cpu_capability() in ("DEFAULT", "AVX2", "AVX512")


@pytest.mark.slow
def test_full_size_bf16_step():
    """Full-size SD 2.1 G + SDXL D, random weights, bf16 frozen weights under bf16 autocast, on CUDA when available.

    Losses are finite; trainable weights, head and optimizer states are fp32; gradient checkpointing gives the
    gradients of the plain backward (threshold 1e-2). The crop is 128², except on a CPU without bf16 instructions:
    there torch's emulated bf16 kernels are 75-115× slower than fp32 (measured on a 2-core AVX2 machine: a 320-channel
    3×3 conv at 16², 0.46 s against 0.004 s; a 1280² linear forward + backward, 6.7 s against 0.09 s), one G pass at
    128² took over 20 minutes, and the crop is 32² (a 4² latent: the same layers and dtypes; SDXL's down path ends at
    1²). oneDNN is off on such CPUs (its emulated bf16 conv was 15× slower still at 640 channels, 32²).
    Measured there: 4.0 min in all (212 s from building the module), gradient gap with/without checkpointing 0.0 for
    both networks over 1260 tensors, loss_g 0.863, loss_d 1.402.
    """
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and cpu_without_bf16():
        with torch.backends.mkldnn.flags(enabled=False):
            _full_size_bf16_step(device, crop=32)
    else:
        _full_size_bf16_step(device, crop=128)


def _full_size_bf16_step(device: str, crop: int) -> None:
    import lightning as L
    from torch.utils.data import DataLoader

    step = bench_module("train_step")
    torch.manual_seed(0)
    start = time.perf_counter()
    module = step.build_module("sdxl", device, "bf16", checkpointing=False)
    batch = {k: v[None].to(device) for k, v in step.RandomPairs(crop, 1)[0].items() if k != "index"}

    gap = step.checkpointing_gap(module, batch, torch.bfloat16)
    assert math.isfinite(gap["loss_g"]) and math.isfinite(gap["loss_d"])
    assert gap["tensors"] > 1000  # G's and D's LoRA tensors and the head
    assert gap["generator"] < 1e-2 and gap["discriminator"] < 1e-2, gap

    # One real iteration through Lightning with bf16-mixed: finite losses, fp32 trainable state.
    trainer = L.Trainer(accelerator=device, devices=1, precision="bf16-mixed", max_steps=2, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(module, train_dataloaders=DataLoader(step.RandomPairs(crop, 1), batch_size=1))
    losses = {k: float(v) for k, v in trainer.callback_metrics.items() if k in ("train/g/loss", "train/d/loss")}
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses.values()), losses
    trainable = [p for p in module.parameters() if p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)
    frozen = [p for p in module.generator.unet.parameters() if not p.requires_grad]
    assert frozen and all(p.dtype == torch.bfloat16 for p in frozen)  # the frozen base in bf16
    for optimizer in trainer.optimizers:
        states = [s for s in optimizer.state.values() if s]
        assert states and all(s["exp_avg"].dtype == torch.float32 for s in states)
    print(f"\nfull-size bf16 step on {device}, {crop}² crop: {time.perf_counter() - start:.0f} s, gap {gap}")
