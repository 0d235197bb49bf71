"""The figures users compare first, in one command on one GPU (≤ 8 minutes on an H100/H200): JSON + a Markdown table.

    python bench/gpu_suite.py                      # full size on CUDA; writes bench/results/gpu_suite.{json,md}
    python bench/gpu_suite.py --quick              # tiny models, small sizes, any device (what the test runs)
    python bench/gpu_suite.py --only inference training

Sections (full-size networks with random weights: no download; the speed and memory of a step do not depend on the
weights' values):
- inference: seconds per 512² output, untiled, fp32 / bf16 / bf16 + torch.compile, batch 1 and 8, and the share of
  the device's matmul peak this reaches (FLOPs of one call counted with FlopCounterMode, per second, over a 2048²
  matmul's GFLOP/s in the same dtype, measured in the same run; 256² with --quick; see bench/inference.py);
- tiled: a 2048² output with the default 512-px tiles against a 512² output, time and peak memory;
- training: the paper's recipe (SD 2.1 G, SDXL D, bf16-mixed, bf16 frozen weights, batch 8 of 512²) and
  experiment=sdxl_disc_lowmem (batch 2 × accumulation 4, gradient checkpointing): s/iteration and peak memory;
- degradation: the Real-ESRGAN device pipeline, batch 8 of 512² crops, images/s.
Each section is timed after warm-up with device synchronisation; a section that fails is recorded with its error
and the others still run. Peak memory is torch.cuda.max_memory_allocated (not measured on the CPU).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader
from torch.utils.data._utils.collate import default_collate

from d3sr.inference import D3SRPipeline
from d3sr.inference.options import InferenceOptions
from d3sr.losses import EADISTS, D3SRLoss
from d3sr.losses.dists import DISTS
from d3sr.models import D3SRModule, DiffusionDiscriminator, OneStepGenerator
from d3sr.models.loading import tiny
from d3sr.models.saved_generator import fuse_lora

sys.path.insert(0, str(Path(__file__).resolve().parent))
from degradation import hr_crops, load_degradation, timed  # noqa: E402
from inference import count_flops, matmul_peak  # noqa: E402
from train_step import RandomPairs, StepTimer, build_module, random_backbone  # noqa: E402

SECTIONS = ("inference", "tiled", "training", "degradation")


@dataclass
class Sizes:
    """What each section runs at: the full-size suite, or `--quick` (tiny models, small images)."""

    output: int = 512  # inference output side
    batches: tuple[int, ...] = (1, 8)
    tiled_output: int = 2048
    tile_size: int = 512
    crop: int = 512  # training crop
    train_batch: int = 8
    train_iters: int = 3
    degradation_size: int = 512
    degradation_batch: int = 8
    repeats: int = 3
    compile: bool = True
    matmul: int = 2048  # side of the matmul that measures the peak


QUICK = Sizes(output=64, batches=(1, 2), tiled_output=128, tile_size=64, crop=64, train_batch=2, train_iters=1,
              degradation_size=64, degradation_batch=2, repeats=1, compile=False, matmul=256)  # fmt: skip


def reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None


# ----------------------------------------------------------------------------------------------------------------
# Sections. Each returns a list of rows (dicts); the Markdown table shows them as they are.


def generator(quick: bool, device: str) -> OneStepGenerator:
    """The SD 2.1-base generator (or its tiny preset with --quick) with random weights, LoRA fused."""
    backbone = tiny("sd") if quick else random_backbone("sd21", True, device, torch.float32)
    model = OneStepGenerator(backbone)
    fuse_lora(model.unet)
    return model.to(device)


def compiled(pipe: D3SRPipeline) -> D3SRPipeline:
    """The pipeline with inference.compile on (torch.compile of the UNet and the VAE at its first call)."""
    pipe.options = pipe.options.replace(compile=True)
    return pipe


def inference(sizes: Sizes, device: str, quick: bool) -> list[dict]:
    rows = []
    variants = [("fp32", torch.float32, False), ("bf16", torch.bfloat16, False)]
    variants += [("bf16 + compile", torch.bfloat16, True)] if sizes.compile else []
    peaks: dict[torch.dtype, float] = {}  # GFLOP/s of a 2048² matmul per dtype
    flops: dict[int, int] = {}  # FLOPs of one call per batch size (counted eagerly, the same in every dtype)
    for name, dtype, compile_ in variants:
        pipe = D3SRPipeline(generator(quick, device), InferenceOptions(tile_size=0)).to(device, dtype)
        pipe = compiled(pipe) if compile_ else pipe
        if dtype not in peaks:
            peaks[dtype] = matmul_peak(torch.device(device), dtype, sizes.matmul)
        for batch in sizes.batches:
            lq = torch.rand(batch, 3, sizes.output // 4, sizes.output // 4, device=device)
            if batch not in flops:
                flops[batch] = count_flops(lambda lq=lq, pipe=pipe: pipe.super_resolve(lq))
            reset_peak(device)
            seconds = timed(lambda lq=lq, pipe=pipe: pipe.super_resolve(lq), sizes.repeats, 2 if compile_ else 1,
                            device)  # fmt: skip
            rows.append({"variant": name, "output": f"{sizes.output}²", "batch": batch,
                         "channels_last": pipe.options.tiling(pipe.device)["channels_last"],
                         "s_per_image": seconds / batch, "peak_gib": peak_gib(device),
                         "gflop_per_image": flops[batch] / batch / 1e9, "matmul_peak_gflops": peaks[dtype],
                         "share_of_peak": flops[batch] / seconds / 1e9 / peaks[dtype]})  # fmt: skip
        del pipe
    return rows


def tiled(sizes: Sizes, device: str, quick: bool) -> list[dict]:
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    pipe = D3SRPipeline(
        generator(quick, device), InferenceOptions(tile_size=sizes.tile_size, tile_overlap=sizes.tile_size // 4)
    ).to(device, dtype)
    rows = []
    for output in (sizes.tile_size, sizes.tiled_output):
        lq = torch.rand(1, 3, output // 4, output // 4, device=device)
        reset_peak(device)
        seconds = timed(lambda lq=lq: pipe.super_resolve(lq), 1, 1, device)
        rows.append({"output": f"{output}²", "tile_size": sizes.tile_size, "dtype": str(dtype).removeprefix("torch."),
                     "seconds": seconds, "peak_gib": peak_gib(device)})  # fmt: skip
    if rows[0]["peak_gib"]:
        rows[1]["peak_vs_one_tile"] = rows[1]["peak_gib"] / rows[0]["peak_gib"]
    return rows


def training_module(quick: bool, device: str, lowmem: bool) -> D3SRModule:
    """The paper's module (full size, bf16 frozen weights) or, with --quick, the same classes at tiny size."""
    accumulate = 4 if lowmem else 1
    if not quick:
        module = build_module("sdxl", device, "bf16", checkpointing=lowmem, accumulate_grad_batches=accumulate)
    else:
        g = OneStepGenerator(tiny("sd"), lora_rank=4, gradient_checkpointing=lowmem)
        d = DiffusionDiscriminator(tiny("sdxl", with_vae=False), lora_rank=4, gradient_checkpointing=lowmem)
        loss = D3SRLoss(EADISTS(DISTS(pretrained_backbone=False)), lambda_ea_dists=1.0, lambda_adv=0.005)
        module = D3SRModule(g, d, loss, torch.optim.AdamW, torch.optim.AdamW, accumulate_grad_batches=accumulate)
        module.optimizer_g = module.optimizer_d = lambda params: torch.optim.AdamW(params, lr=5e-5)
    return module


def training(sizes: Sizes, device: str, quick: bool) -> list[dict]:
    rows = []
    precision = "bf16-mixed" if not quick or device.startswith("cuda") else "32-true"
    for name, lowmem in (("paper recipe (sdxl_disc)", False), ("sdxl_disc_lowmem", True)):
        module = training_module(quick, device, lowmem)
        micro = max(1, sizes.train_batch // 4) if lowmem else sizes.train_batch
        per_iteration = module.accumulate_grad_batches
        batches = (1 + sizes.train_iters) * per_iteration
        timer = StepTimer(device)
        trainer = L.Trainer(accelerator="gpu" if device.startswith("cuda") else "cpu", devices=1, precision=precision,
                            max_steps=2 * (1 + sizes.train_iters), logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, callbacks=[timer],
                            num_sanity_val_steps=0)  # fmt: skip
        reset_peak(device)
        loader = DataLoader(RandomPairs(sizes.crop, batches * micro), batch_size=micro)
        trainer.fit(module, train_dataloaders=loader)
        # One iteration = `per_iteration` micro-batches; the first iteration is warm-up.
        seconds = sum(timer.times[per_iteration:]) / max(1, len(timer.times[per_iteration:])) * per_iteration
        losses = {k: float(v) for k, v in trainer.callback_metrics.items() if k in ("train/g/loss", "train/d/loss")}
        rows.append({"run": name, "crop": f"{sizes.crop}²", "batch": f"{micro} × {per_iteration}",
                     "precision": precision, "s_per_iteration": seconds, "peak_gib": peak_gib(device),
                     "finite_losses": all(np.isfinite(v) for v in losses.values()) and len(losses) == 2})  # fmt: skip
        del module, trainer
    return rows


def degradation(sizes: Sizes, device: str, quick: bool) -> list[dict]:
    pipeline = load_degradation("realesrgan")
    crops = hr_crops(sizes.degradation_batch, sizes.degradation_size)
    samples = [{"gt": g, **pipeline.sample(np.random.default_rng(i))} for i, g in enumerate(crops)]
    batch = {k: v.to(device) for k, v in default_collate(samples).items()}
    seconds = timed(lambda: pipeline(batch), sizes.repeats, 1, device)
    return [{"pipeline": "Real-ESRGAN (device, batched)", "size": f"{sizes.degradation_size}²",
             "batch": sizes.degradation_batch, "images_per_s": sizes.degradation_batch / seconds}]  # fmt: skip


RUNNERS = {"inference": inference, "tiled": tiled, "training": training, "degradation": degradation}


# ----------------------------------------------------------------------------------------------------------------
# Report.


def markdown(results: dict) -> str:
    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
        return "—" if value is None else str(value)

    env = results["environment"]
    lines = [f"# GPU suite ({'quick' if results['quick'] else 'full size'}): {env['device_name']}, "
             f"torch {env['torch']}, {env['date']}", ""]  # fmt: skip
    for section in SECTIONS:
        if section not in results["sections"]:
            continue
        entry = results["sections"][section]
        lines.append(f"## {section} ({entry['seconds']:.0f} s)")
        if "error" in entry:
            lines += [f"failed: {entry['error']}", ""]
            continue
        rows = entry["rows"]
        keys = list(dict.fromkeys(k for row in rows for k in row))
        lines += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        lines += ["| " + " | ".join(cell(row.get(k)) for k in keys) + " |" for row in rows]
        lines.append("")
    return "\n".join(lines)


def run_suite(device: str, quick: bool, only: list[str], out: Path) -> dict:
    sizes = QUICK if quick else Sizes()
    torch.manual_seed(0)
    torch.set_float32_matmul_precision("high")
    results = {
        "quick": quick,
        "environment": {
            "device": device,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "device_name": torch.cuda.get_device_name()
            if device.startswith("cuda")
            else f"CPU ({torch.get_num_threads()} threads)",
            "date": time.strftime("%Y-%m-%d %H:%M"),
        },  # fmt: skip
        "sections": {},
    }
    for section in only:
        start = time.perf_counter()
        print(f"[gpu_suite] {section} ...", file=sys.stderr, flush=True)
        try:
            entry = {"rows": RUNNERS[section](sizes, device, quick)}
        except Exception as error:  # noqa: BLE001 - one failing section must not lose the others' figures
            traceback.print_exc()
            entry = {"error": f"{type(error).__name__}: {error}"}
        entry["seconds"] = time.perf_counter() - start
        results["sections"][section] = entry
        # Written after every section, so a run cut short by a time limit keeps what it measured.
        out.mkdir(parents=True, exist_ok=True)
        (out / "gpu_suite.json").write_text(json.dumps(results, indent=2))
        (out / "gpu_suite.md").write_text(markdown(results))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="tiny models and small images (a smoke run)")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    if not args.quick and not args.device.startswith("cuda"):
        print("note: the full-size suite on the CPU takes hours; use --quick, or run it on a GPU", file=sys.stderr)
    results = run_suite(args.device, args.quick, args.only, args.out)
    print(markdown(results))
    print(f"\nwritten: {args.out / 'gpu_suite.json'}, {args.out / 'gpu_suite.md'}")
    return 1 if any("error" in entry for entry in results["sections"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
