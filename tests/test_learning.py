"""Training learns: on the shipped pretrained tiny backbone, a short D³SR fine-tune makes held-out photos better.

This is the test a random model cannot pass: a wrong sign, the wrong ᾱ, a detached graph or a loss that does nothing
leaves the held-out PSNR-Y where it starts (or lowers it). The run is experiment=demo (LoRA on the generator,
SDXL-style discriminator, MSE + EA-DISTS + adversarial loss) with the bicubic degradation, and it is scored on the
fixed validation crops of the held-out photos (chelsea, coffee, rocket), which no training stage has seen.
"""

from __future__ import annotations

import warnings

import lightning as L
import pytest
import torch
from hydra.utils import instantiate

from d3sr.images import generator_input, to_model_range
from d3sr.models import D3SRModule
from d3sr.psnr_ssim import psnr_y
from d3sr.train import build_trainer

ITERATIONS = 10
# Backbone v3 (the linear-codec VAE): the start, one step from the VAE latents, is 1.5 dB under bicubic and 10
# iterations win back a good part of it. Measured on 1 thread: PSNR-Y 26.69 → 27.29 dB (+0.60), loss 0.0787 → 0.0569
# (0.72×); 20 iterations: 27.38 dB, 0.61×.
MARGIN_DB = 0.3
LOSS_RATIO = 0.85


@torch.no_grad()
def held_out_scores(module: D3SRModule, batches: list[dict]) -> tuple[float, float]:
    """(mean PSNR-Y in dB, mean generator reconstruction loss MSE + λ2·EA-DISTS) on fixed held-out crops."""
    module.eval()
    psnr, loss = [], []
    for batch in batches:
        sr, _ = module.generator(generator_input(batch["lq"]))
        terms = module.loss.reconstruction(sr, to_model_range(batch["gt"]))
        loss.append(float(module.loss.lambda_mse * terms["mse"] + module.loss.lambda_ea_dists * terms["ea_dists"]))
        psnr += psnr_y(module.super_resolve(batch["lq"]), batch["gt"]).tolist()
    module.train()
    return sum(psnr) / len(psnr), sum(loss) / len(loss)


@pytest.mark.filterwarnings("ignore")
def test_short_finetune_raises_held_out_psnr_and_lowers_the_loss(compose, tmp_path):
    """Measured: PSNR-Y 26.69 → 27.70 dB, loss 0.0787 → 0.0594 (printed with -s). Thresholds: +0.3 dB, loss × 0.85."""
    cfg = compose(["experiment=demo", "degradation=bicubic", f"iterations={ITERATIONS}", "logger=none",
                   "callbacks=none", "++trainer.enable_progress_bar=false", "++trainer.enable_model_summary=false",
                   "++trainer.limit_val_batches=0", f"paths.output_dir={tmp_path}"])  # fmt: skip
    L.seed_everything(cfg.seed)
    module, datamodule = D3SRModule.from_config(cfg), instantiate(cfg.data)
    batches = [datamodule.on_after_batch_transfer(batch, 0) for batch in datamodule.val_dataloader()]
    psnr_before, loss_before = held_out_scores(module, batches)
    trainer = build_trainer(cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, datamodule=datamodule)
    psnr_after, loss_after = held_out_scores(module, batches)
    print(f"held-out PSNR-Y {psnr_before:.2f} → {psnr_after:.2f} dB; loss {loss_before:.4f} → {loss_after:.4f}")
    assert module.iteration == ITERATIONS
    assert psnr_after > psnr_before + MARGIN_DB, (psnr_before, psnr_after)
    assert loss_after < LOSS_RATIO * loss_before, (loss_before, loss_after)
