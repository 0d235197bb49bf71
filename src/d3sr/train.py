"""Training entry point: `python -m d3sr.train [experiment=...] [key=value ...]` (Hydra; `-m` for sweeps)."""

from __future__ import annotations

import logging
import math
import sys
import warnings
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from d3sr.callbacks import check_checkpoint_folders, use_atomic_checkpoints
from d3sr.commands import hydra_command
from d3sr.errors import ConfigError, D3SRError
from d3sr.models import D3SRModule
from d3sr.models.saved_generator import load_checkpoint
from d3sr.run_results import write_run_result

log = logging.getLogger("d3sr.train")

# Expected by design, so not worth a warning on every run: the frozen VAE and loss networks stay in eval mode, and
# checkpoints hold the post-step state of a manual-optimization step.
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
warnings.filterwarnings("ignore", message=r"Using ModelCheckpoint with manual optimization")
warnings.filterwarnings("ignore", message=r".*LeafSpec.* is deprecated")


def check_optimized_metric(cfg: DictConfig, module: D3SRModule, has_validation: bool) -> None:
    """ConfigError at start-up when `optimized_metric` names a value this run will not compute."""
    name = cfg.get("optimized_metric")
    if not name:
        return
    available = module.validation_metrics if has_validation else []
    if name not in available:
        why = "this run has no validation set" if not has_validation else f"this run logs {', '.join(available)}"
        raise ConfigError(
            f"optimized_metric={name} is not computed: {why}. Set optimized_metric to one of those, or null "
            "(e.g. loss=mse_only has no perceptual network, so no val/dists)"
        )


def build_trainer(cfg: DictConfig) -> L.Trainer:
    """The Lightning Trainer with the configured callbacks and loggers."""
    callbacks = [instantiate(c) for c in _configured_objects(cfg, "callbacks")]
    loggers = [instantiate(c) for c in _configured_objects(cfg, "logger")]
    trainer = build_lightning_trainer(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    use_atomic_checkpoints(trainer)  # a failed or interrupted save leaves the previous last.ckpt intact
    return trainer


DDP_STRATEGIES = ("ddp", "ddp_spawn", "ddp_fork", "ddp_notebook")  # Lightning's names of its DDP strategies
UNUSED_SUFFIX = "_find_unused_parameters_true"  # the registered variant of each that sets find_unused_parameters


def ddp_allowing_unused(strategy: object) -> object:
    """The registered `<name>_find_unused_parameters_true` strategy for a DDP strategy name, else `strategy` as is.

    The G step's backward reaches the generator's LoRA only and the D step's the discriminator's, so DDP must look
    for unused parameters, or it stops at the first step. This is the one place that says so: `trainer=ddp` and
    `trainer.strategy=ddp` (or ddp_spawn, ddp_fork, ddp_notebook) both get the flag here.
    """
    return f"{strategy}{UNUSED_SUFFIX}" if isinstance(strategy, str) and strategy in DDP_STRATEGIES else strategy


def build_lightning_trainer(trainer_cfg: DictConfig, **objects) -> L.Trainer:
    """instantiate(trainer_cfg, **objects), with DDP allowed unused parameters whichever way DDP was chosen.

    With `strategy: auto` and several devices Lightning picks DDP itself (ddp, or ddp_notebook in an interactive
    session); the trainer is then built again with the registered variant that finds unused parameters.
    """
    from lightning.pytorch.strategies import DDPStrategy

    strategy = ddp_allowing_unused(trainer_cfg.get("strategy", "auto"))
    trainer = instantiate(trainer_cfg, strategy=strategy, **objects)
    if strategy == "auto" and isinstance(trainer.strategy, DDPStrategy):
        interactive = hasattr(sys, "ps1") or bool(sys.flags.interactive)
        strategy = ddp_allowing_unused("ddp_notebook" if interactive else "ddp")
        trainer = instantiate(trainer_cfg, strategy=strategy, **objects)
    if isinstance(strategy, str) and strategy.endswith(UNUSED_SUFFIX):
        log.info("DDP on %d processes: find_unused_parameters=True (G and D steps each use one network)",
                 trainer.world_size)  # fmt: skip
    return trainer


def _configured_objects(cfg: DictConfig, group: str) -> list[DictConfig]:
    """The entries of cfg.<group> that describe an object.

    An entry without `_target_` is what an experiment's settings leave behind when the group option that defines the
    object is not selected (e.g. `experiment=demo callbacks=none`): it is skipped, and said so.
    """
    objects = []
    for name, node in (cfg.get(group) or {}).items():
        if node is None:
            continue
        if "_target_" not in node:
            log.info("%s.%s has settings but no _target_ (not selected in this run): skipped", group, name)
            continue
        objects.append(node)
    return objects


def _describe(node: DictConfig | None) -> str:
    """A network's config in a word: its backbone's builder (pretrained, tiny, ...), its class, or 'no'."""
    if node is None:
        return "no"
    target = node.backbone._target_ if "backbone" in node else node._target_
    return target.split(".")[-1]


def train(cfg: DictConfig) -> dict:
    """Train (or resume) as configured; returns final metrics and where the outputs are."""
    if cfg.iterations < 1:
        raise D3SRError(f"iterations must be >= 1, got {cfg.iterations}")
    if cfg.get("ckpt_path"):
        if not Path(cfg.ckpt_path).expanduser().is_file():
            raise D3SRError(f"ckpt_path={cfg.ckpt_path} does not exist")
        load_checkpoint(cfg.ckpt_path)  # a truncated file or another project's checkpoint: one error line, before work
    L.seed_everything(cfg.seed, workers=True)
    if cfg.get("matmul_precision"):
        torch.set_float32_matmul_precision(cfg.matmul_precision)

    log.info("Building the model (%s generator, %s discriminator)", _describe(cfg.model.generator),
             _describe(cfg.model.discriminator))  # fmt: skip
    module = D3SRModule.from_config(cfg)
    datamodule = instantiate(cfg.data)
    check_optimized_metric(cfg, module, datamodule.val_set is not None)
    trainer = build_trainer(cfg)
    check_checkpoint_folders(trainer)  # a folder that cannot be written stops the run now, not at the first save

    # SIGTERM/SIGUSR1 (d3sr.callbacks.Preemption: last.ckpt saved first) end `fit` with Lightning's SIGTERMException.
    preempted = False
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    except SIGTERMException:
        preempted = True
    metric_name = cfg.get("optimized_metric")
    has_val = datamodule.val_set is not None
    if metric_name and metric_name not in trainer.callback_metrics and has_val and not preempted:
        trainer.validate(module, datamodule=datamodule, verbose=False)

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    checkpoint = getattr(trainer.checkpoint_callback, "last_model_path", "") or None
    result = {"metrics": metrics, "checkpoint": checkpoint, "output_dir": str(cfg.paths.output_dir),
              "iterations": module.iteration, "preempted": preempted}  # fmt: skip
    if trainer.is_global_zero:
        if preempted:
            log.info("Stopped by a signal at iteration %d; resume with ckpt_path=%s", module.iteration,
                     checkpoint or "(no checkpoint was saved: callbacks.preemption is off)")  # fmt: skip
        shown = ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()) if k.startswith("val/"))
        log.info("Finished %d iterations. Metrics: %s", module.iteration, shown or "none")
        log.info("Logs: %s  (view: tensorboard --logdir %s)", cfg.paths.output_dir, cfg.paths.output_dir)
        if checkpoint:
            log.info("Checkpoint: %s", checkpoint)
    return result


def check_sweep(cfg: DictConfig, multirun: bool) -> None:
    """ConfigError before any job runs when a searching sweeper (Optuna) has no optimized_metric to search on.

    cfg: the composed config with its `hydra` node (d3sr.commands runs this on the command line first).
    """
    sweeper = OmegaConf.select(cfg, "hydra.sweeper._target_", default="")
    _refuse_search_without_metric(sweeper, cfg.get("optimized_metric"), multirun)
    if multirun:
        make_sqlite_folder(OmegaConf.select(cfg, "hydra.sweeper.storage", default=None))


def make_sqlite_folder(storage: str | None) -> None:
    """Create the folder of a `sqlite:///DIR/study.db` sweeper storage (SQLite cannot create it), or say why not."""
    if not storage or not str(storage).startswith("sqlite:///"):
        return
    folder = Path(str(storage)[len("sqlite:///") :]).expanduser().parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(
            f"hydra.sweeper.storage={storage}: cannot create the folder {folder} for the study database "
            f"({error.strerror or error})"
        ) from None


def _refuse_search_without_metric(sweeper_target: str | None, optimized_metric: str | None, multirun: bool) -> None:
    if multirun and "optuna" in str(sweeper_target or "").lower() and not optimized_metric:
        raise ConfigError(
            "optimized_metric is null, but the Optuna sweeper needs a value to optimise: set optimized_metric (e.g. "
            "optimized_metric=val/psnr_y) and keep a validation set"
        )


def _check_sweep_in_job(cfg: DictConfig) -> None:
    """check_sweep inside a Hydra job (for command lines the up-front check leaves to Hydra, e.g. --config-dir)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        _refuse_search_without_metric(hydra_cfg.sweeper.get("_target_"), cfg.get("optimized_metric"),
                                      hydra_cfg.mode == RunMode.MULTIRUN)  # fmt: skip


def train_for_sweeper(cfg: DictConfig) -> float | None:
    """Train, then return the value of cfg.optimized_metric (what a Hydra sweeper minimises or maximises).

    Either way the run leaves output_dir/result.json (d3sr.run_results, written by rank 0), which
    `python -m d3sr.sweep_report` reads: the metrics and checkpoint of a finished run, or the error of a failed one.
    A run whose optimized metric is NaN or infinite counts as failed (Optuna marks the trial failed too).
    """
    from lightning.pytorch.utilities import rank_zero_only

    _check_sweep_in_job(cfg)
    try:
        result = train(cfg)
    except Exception as error:
        if rank_zero_only.rank == 0:
            write_run_result(cfg.paths.output_dir, {"status": "failed", "error": f"{type(error).__name__}: {error}"})
        raise
    name = cfg.get("optimized_metric")
    value = result["metrics"].get(name) if name else None
    status = {"status": "completed"}
    if value is not None and not math.isfinite(value):
        status = {"status": "failed", "error": f"optimized_metric {name} is {value}"}
        log.warning("optimized_metric %s is %s: this run counts as failed", name, value)
    if rank_zero_only.rank == 0:
        write_run_result(cfg.paths.output_dir, {**status, **result})
    return value


main = hydra_command("train", train_for_sweeper, check=check_sweep)


if __name__ == "__main__":
    main()
