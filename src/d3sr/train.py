"""Training entry point: `python -m d3sr.train [experiment=...] [key=value ...]` (Hydra; `-m` for sweeps)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from d3sr.cli import run_reporting_errors
from d3sr.config import D3SRError

log = logging.getLogger("d3sr.train")

# Expected by design, so not worth a warning on every run: the frozen VAE and loss networks stay in eval mode, and
# checkpoints hold the post-step state of a manual-optimization step.
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
warnings.filterwarnings("ignore", message=r"Using ModelCheckpoint with manual optimization")
warnings.filterwarnings("ignore", message=r".*LeafSpec.* is deprecated")


def build_module(cfg: DictConfig):
    """The D3SRModule described by cfg.model with the loss in cfg.loss."""
    return instantiate(cfg.model, loss=instantiate(cfg.loss))


def build_trainer(cfg: DictConfig) -> L.Trainer:
    """The Lightning Trainer with the configured callbacks and loggers."""
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)


def train(cfg: DictConfig) -> dict:
    """Train (or resume) as configured; returns final metrics and where the outputs are."""
    if cfg.iterations < 1:
        raise D3SRError(f"iterations must be >= 1, got {cfg.iterations}")
    if cfg.get("ckpt_path") and not Path(cfg.ckpt_path).expanduser().is_file():
        raise D3SRError(f"ckpt_path={cfg.ckpt_path} does not exist")
    L.seed_everything(cfg.seed, workers=True)
    if cfg.get("matmul_precision"):
        torch.set_float32_matmul_precision(cfg.matmul_precision)

    log.info("Building the model (%s generator, %s discriminator)", cfg.model.generator.backbone._target_.split(".")[-1],
             cfg.model.discriminator.backbone._target_.split(".")[-1])  # fmt: skip
    module = build_module(cfg)
    module.run_config = OmegaConf.to_container(cfg, resolve=True)
    datamodule = instantiate(cfg.data)
    trainer = build_trainer(cfg)

    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metric_name = cfg.get("optimized_metric")
    if metric_name and metric_name not in trainer.callback_metrics and datamodule.val_set is not None:
        trainer.validate(module, datamodule=datamodule, verbose=False)

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    checkpoint = getattr(trainer.checkpoint_callback, "last_model_path", "") or None
    result = {"metrics": metrics, "checkpoint": checkpoint, "output_dir": str(cfg.paths.output_dir),
              "iterations": module.iteration}  # fmt: skip
    log.info("Finished %d iterations. Metrics: %s", module.iteration,
             ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()) if k.startswith("val/")) or "none")  # fmt: skip
    log.info("Logs: %s  (view: tensorboard --logdir %s)", cfg.paths.output_dir, cfg.paths.output_dir)
    if checkpoint:
        log.info("Checkpoint: %s", checkpoint)
    return result


@hydra.main(version_base="1.3", config_path="../../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns cfg.optimized_metric for sweepers."""
    result = run_reporting_errors(train, cfg)
    name = cfg.get("optimized_metric")
    return result["metrics"].get(name) if name else None


if __name__ == "__main__":
    main()
