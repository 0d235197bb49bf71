"""Learning curves of the demo-scale recipe: does D³SR training make the held-out photos better, and which term helps?

    python bench/learning.py [--iterations 300] [--every 25] [--variants paper mse_only no_adv no_disc] [--plot PNG]

Fine-tunes the shipped tiny pretrained backbone (`experiment=demo`) once per variant, from the same seed, and every
`--every` iterations scores the generator on the held-out validation crops (chelsea, coffee, rocket; never trained on):
PSNR-Y, SSIM-Y, DISTS with the demo's loss network (VGG16 layout with seeded random weights: no ImageNet weights
offline, so it is a texture/structure statistic, not the published DISTS), and the discriminator's accuracy on the
last training batch (real > 0 and fake < 0 logits). Variants:
- paper: loss=paper (MSE + 1.0·EA-DISTS + λ_adv·L_adv), as experiment=demo trains;
- mse_only: loss=mse_only (MSE + λ_adv·L_adv, no perceptual term);
- no_adv: loss=paper with loss.lambda_adv=0 (the discriminator still trains but the generator ignores it);
- no_disc: loss=paper with model/discriminator=none (Table 4b's first row: no discriminator at all).
Prints a Markdown table (iteration 0 and final values) and writes the curves as a PNG
(default docs/learning_curves.png).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from d3sr.losses import DISTS
from d3sr.models import D3SRModule
from d3sr.psnr_ssim import psnr_y, ssim_y
from d3sr.train import build_trainer

CONF = Path(__file__).resolve().parents[1] / "src" / "d3sr" / "conf"
VARIANTS = {
    "paper": ["loss=paper"],
    "mse_only": ["loss=mse_only"],
    "no_adv": ["loss=paper", "loss.lambda_adv=0"],
    "no_disc": ["loss=paper", "model/discriminator=none"],
}


class HeldOutCurves(L.Callback):
    """Scores the generator on the validation crops at iteration 0 and every `every` iterations."""

    def __init__(self, datamodule, every: int) -> None:
        self.every, self.rows = every, []
        self.batches = [datamodule.on_after_batch_transfer(batch, 0) for batch in datamodule.val_dataloader()]
        self.dists = DISTS(pretrained_backbone=False)  # the demo's loss network, the same for every variant

    @torch.no_grad()
    def record(self, trainer: L.Trainer, module: D3SRModule) -> None:
        was_training = module.training
        module.eval()
        scores = {"psnr_y": [], "ssim_y": [], "dists": []}
        for batch in self.batches:
            sr, gt = module.super_resolve(batch["lq"]), batch["gt"]
            scores["psnr_y"] += psnr_y(sr, gt).tolist()
            scores["ssim_y"] += ssim_y(sr, gt).tolist()
            scores["dists"] += self.dists(sr, gt).tolist()
        module.train(was_training)
        row = {"iteration": module.iteration, **{k: sum(v) / len(v) for k, v in scores.items()}}
        metrics = trainer.callback_metrics
        if "train/d/acc_real" in metrics:
            row["d_accuracy"] = float((metrics["train/d/acc_real"] + metrics["train/d/acc_fake"]) / 2)
            row["g_loss"] = float(metrics["train/g/loss"])
        self.rows.append(row)

    def on_train_start(self, trainer, module) -> None:
        self.record(trainer, module)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if module.iteration % self.every == 0 and module.iteration != self.rows[-1]["iteration"]:
            self.record(trainer, module)


def run_variant(name: str, overrides: list[str], iterations: int, every: int, output: Path) -> list[dict]:
    """Fine-tune one variant; returns its curve rows."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=demo", *overrides, f"iterations={iterations}",
                                          f"paths.output_dir={output / name}", "logger=none", "callbacks=none",
                                          "++trainer.limit_val_batches=0", "++trainer.enable_progress_bar=false",
                                          "++trainer.enable_model_summary=false"])  # fmt: skip
    L.seed_everything(cfg.seed, workers=True)
    module, datamodule = D3SRModule.from_config(cfg), instantiate(cfg.data)
    curves = HeldOutCurves(datamodule, every)
    trainer = build_trainer(cfg)
    trainer.callbacks.append(curves)
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    print(f"{name}: {iterations} iterations in {time.perf_counter() - start:.0f} s", flush=True)
    return curves.rows


def table(results: dict[str, list[dict]]) -> str:
    lines = ["| variant | PSNR-Y (dB) it. 0 → final | SSIM-Y it. 0 → final | DISTS (random VGG) it. 0 → final "
             "| D accuracy, final |", "|---|---|---|---|---|"]  # fmt: skip
    for name, rows in results.items():
        first, last = rows[0], rows[-1]
        cells = [f"{first[k]:.{d}f} → {last[k]:.{d}f}" for k, d in (("psnr_y", 2), ("ssim_y", 4), ("dists", 4))]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {last.get('d_accuracy', float('nan')):.2f} |")
    return "\n".join(lines)


def plot(results: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = (("psnr_y", "held-out PSNR-Y (dB)"), ("ssim_y", "held-out SSIM-Y"),
            ("dists", "held-out DISTS (random VGG)"), ("d_accuracy", "D accuracy (last batch)"))  # fmt: skip
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.4))
    for axis, (key, title) in zip(axes, keys):
        for name, rows in results.items():
            points = [(r["iteration"], r[key]) for r in rows if key in r]
            if points:
                axis.plot(*zip(*points), marker=".", label=name)
        axis.set_title(title, fontsize=10)
        axis.set_xlabel("iteration")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--every", type=int, default=25)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument(
        "--plot", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "learning_curves.png"
    )
    parser.add_argument("--json", type=Path, help="also write the curves as JSON")
    parser.add_argument(
        "overrides", nargs="*", help="extra config overrides for every variant, e.g. data.crop_size=64"
    )
    args = parser.parse_args()
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as folder:
        results = {
            name: run_variant(name, [*VARIANTS[name], *args.overrides], args.iterations, args.every, Path(folder))
            for name in args.variants
        }
    print(table(results))
    plot(results, args.plot)
    print(f"curves: {args.plot}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
