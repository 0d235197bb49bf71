"""A trained-looking tiny D3SR checkpoint (and its bundles) shared by the inference tests."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from d3sr.models import D3SRModule
from d3sr.models.generator import OneStepGenerator
from d3sr.models.saved_generator import export_bundle
from d3sr.train import build_trainer

CONF = Path(__file__).resolve().parents[2] / "src" / "d3sr" / "conf"

# The demo experiment at toy scale; zero learning rates so the fit step keeps the randomised LoRA as it is.
FIT = ["experiment=demo", "model/generator=tiny", "model/discriminator=tiny", "degradation=bicubic",
       "data.crop_size=64", "data.crops_per_image=1", "data.batch_size=2",
       "logger=none", "callbacks=none", "iterations=1", "++trainer.limit_val_batches=0",
       "++trainer.enable_progress_bar=false", "++trainer.enable_model_summary=false",
       "model.optimizer_g.lr=0", "model.optimizer_g.weight_decay=0",
       "model.optimizer_d.lr=0", "model.optimizer_d.weight_decay=0"]  # fmt: skip


@dataclass
class Trained:
    checkpoint: Path  # Lightning checkpoint written by Trainer.save_checkpoint (D3SRModule.on_save_checkpoint)
    generator: OneStepGenerator  # the module's generator, in eval mode
    bundle: Path  # LoRA bundle exported from the checkpoint
    merged: Path  # merged-UNet bundle


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> Trained:
    """A tiny module with random non-zero LoRA weights, fitted for one (zero-lr) step, checkpointed and exported."""
    root = tmp_path_factory.mktemp("trained")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[*FIT, f"paths.output_dir={root}"])
    GlobalHydra.instance().clear()
    L.seed_everything(0)
    module = D3SRModule.from_config(cfg)
    # Trained LoRA weights are not zero: draw lora_B (zero at init) at random.
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in module.generator.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
    trainer = build_trainer(cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the frozen VAE/VGG in eval mode, zero learning rates: expected here
        trainer.fit(module, datamodule=instantiate(cfg.data))
    checkpoint = root / "last.ckpt"
    trainer.save_checkpoint(checkpoint)
    bundle = export_bundle(checkpoint, root / "bundle")
    merged = export_bundle(checkpoint, root / "merged", merge=True)
    return Trained(checkpoint, module.generator.eval(), bundle, merged)


@pytest.fixture(scope="session")
def pipe(trained):
    """The LoRA bundle as a CPU float32 pipeline (LoRA fused)."""
    from d3sr.inference import D3SRPipeline

    return D3SRPipeline.from_pretrained(trained.bundle, device="cpu", dtype=torch.float32)
