"""D3SRModule: the generator and a discriminator trained adversarially with manual optimization.

Per batch (BasicSR-style): the data module has already degraded the batch on the device; then one generator
step, then `d_steps_per_g_step` discriminator steps on the same batch. Images: `gt` (B, 3, H, W) and the small `lq`
(B, 3, H/4, W/4) arrive in [0, 1], with `gt_usm` (the USM-sharpened target) when the degradation sharpens: as
Real-ESRGAN, MSE and the perceptual term aim at `gt_usm` and the discriminator's real images are the plain `gt`.
`d3sr.images.generator_input` makes the generator's input (bicubic ×4, [-1, 1]), the same function inference calls.
Gradient accumulation and clipping are done by hand (Lightning refuses them under manual optimization).
A step whose loss is NaN or inf is skipped (no backward, no update; all DDP ranks agree); `max_skipped_steps`
iterations in a row with a skipped step stop the run. Checkpoints hold only the trainable state, the fixed embeddings
and the RNG states (see `on_save_checkpoint`), so a resumed run draws the same t and ε as an uninterrupted one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch
from torch import nn

from d3sr.errors import ConfigError, D3SRError, user_error
from d3sr.images import from_model_range, generator_input, to_model_range
from d3sr.losses.adversarial import discriminator_adversarial_loss, generator_adversarial_loss
from d3sr.losses.objective import D3SRLoss
from d3sr.models.discriminator import DiffusionDiscriminator
from d3sr.models.generator import OneStepGenerator
from d3sr.models.lora import cast_frozen
from d3sr.models.nan_skips import NanSkips
from d3sr.models.rng_states import rng_states_of_every_rank, set_rng_states
from d3sr.models.saved_generator import checkpoint_record, load_checkpoint
from d3sr.options import parse_dtype
from d3sr.psnr_ssim import block_grid, color_error, psnr_y, sharpness, ssim_y

log = logging.getLogger(__name__)

# Buffers that are not trainable but must travel with checkpoints: the fixed text embeddings.
EMBEDDING_BUFFERS = ("generator.prompt_embeds", "discriminator.prompt_embeds", "discriminator.pooled_prompt_embeds")
# Checkpoint entries: the global RNG states of every process; the skipped-step counters.
RNG_KEY, SKIPPED_KEY = "rng_states", "skipped_steps"


def _as_list(objects) -> list:
    """Lightning returns a bare optimizer / scheduler, not a list, when there is only one (no discriminator)."""
    return objects if isinstance(objects, list) else [objects]


class D3SRModule(L.LightningModule):
    """Both networks, the losses, the G/D alternation and logging.

    discriminator: a latent one (DiffusionDiscriminator: sees ẑ_H and E(x_H)), a pixel one (PixelDiscriminator: sees
    x̂_H and x_H), or None: no adversarial term and no D optimizer (`d_steps_per_g_step` must then be 0).

    optimizer_g / optimizer_d: partial optimizers (Hydra `_partial_: true`) completed with the trainable parameters.
    lr_scheduler: None (constant learning rates, the paper's) or a partial torch LR scheduler, built once per
    optimizer and stepped once per iteration (e.g. CosineAnnealingLR with T_max = iterations).
    accumulate_grad_batches: micro-batches per optimizer step (by hand, with no DDP gradient sync in between).
    frozen_dtype: dtype of the frozen base weights ('float32' or 'bf16' with trainer.precision=bf16-mixed).
    max_skipped_steps: iterations in a row whose G or D loss is NaN/inf (their steps skipped) that stop the run.
    """

    def __init__(
        self,
        generator: OneStepGenerator,
        discriminator: nn.Module | None,
        loss: D3SRLoss,
        optimizer_g: Callable[..., torch.optim.Optimizer],
        optimizer_d: Callable[..., torch.optim.Optimizer],
        d_steps_per_g_step: int = 1,
        grad_clip: float | None = 1.0,
        accumulate_grad_batches: int = 1,
        frozen_dtype: str = "float32",
        lr_scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        max_skipped_steps: int = 10,
    ) -> None:
        super().__init__()
        if discriminator is None and d_steps_per_g_step != 0:
            raise ConfigError(
                f"model.discriminator is null, so model.d_steps_per_g_step must be 0, got {d_steps_per_g_step} "
                "(select model/discriminator=none, which sets both)"
            )
        if discriminator is not None and d_steps_per_g_step < 1:
            raise ConfigError(f"model.d_steps_per_g_step must be >= 1, got {d_steps_per_g_step}")
        if accumulate_grad_batches < 1:
            raise ConfigError(f"model.accumulate_grad_batches must be >= 1, got {accumulate_grad_batches}")
        if accumulate_grad_batches > 1 and d_steps_per_g_step > 1:
            raise ConfigError("model.accumulate_grad_batches > 1 needs model.d_steps_per_g_step = 1")
        if grad_clip is not None and grad_clip <= 0:
            raise ConfigError(f"model.grad_clip must be > 0 or null, got {grad_clip}")
        self.automatic_optimization = False
        self.strict_loading = False  # checkpoints hold the trainable state only; frozen weights come from the base
        self.generator, self.discriminator, self.loss = generator, discriminator, loss
        self.optimizer_g, self.optimizer_d, self.lr_scheduler = optimizer_g, optimizer_d, lr_scheduler
        self.d_steps_per_g_step, self.grad_clip = int(d_steps_per_g_step), grad_clip
        self.accumulate_grad_batches = int(accumulate_grad_batches)
        self.frozen_dtype = parse_dtype(frozen_dtype, "model.frozen_dtype")
        self.config: dict | None = None  # the resolved run config (from_config), stored in checkpoints
        self.nan_skips = NanSkips(max_skipped_steps)  # the NaN/inf-skip policy and its counters
        self._rng_to_restore: list | None = None
        if self.frozen_dtype != torch.float32:
            cast_frozen(self.generator, self.frozen_dtype)
            if isinstance(discriminator, DiffusionDiscriminator):
                cast_frozen(self.discriminator.unet, self.frozen_dtype)
        named_buffers = dict(self.named_buffers())
        self.checkpoint_keys = sorted(
            [name for name, p in self.named_parameters() if p.requires_grad]
            + [name for name in EMBEDDING_BUFFERS if name in named_buffers]
        )

    # ----------------------------------------------------------------------------------------------------------
    # Construction from a run config or a checkpoint.

    @classmethod
    def from_config(cls, cfg) -> D3SRModule:
        """The module described by a run config's `model` node with its `loss` node; remembers the resolved config."""
        from hydra.utils import instantiate
        from omegaconf import OmegaConf

        # Build the three weight-bearing parts separately, so that missing weights (the loss network's, SD's,
        # SDXL's) are reported together in one message instead of one per attempt.
        parts, problems = {}, []
        for name, node in (("loss", cfg.loss), ("generator", cfg.model.generator),
                           ("discriminator", cfg.model.get("discriminator"))):  # fmt: skip
            if node is None:
                parts[name] = None
                continue
            try:
                parts[name] = instantiate(node)
            except Exception as error:  # noqa: BLE001 - the user's errors are gathered, others re-raised
                cause = user_error(error)
                if cause is None:
                    raise
                problems.append((name if name == "loss" else f"model.{name}", cause))
        if problems:
            # The first problem as it would be said alone, then the others, each named by its config node.
            others = "".join(f"\n[{where}] {cause}" for where, cause in problems[1:])
            more = f"\n{len(problems) - 1} more part(s) of this run cannot be built:{others}" if others else ""
            raise D3SRError(f"{problems[0][1]}{more}")
        module = instantiate(cfg.model, **parts)
        module.config = OmegaConf.to_container(cfg, resolve=True)
        return module

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> D3SRModule:
        """The training module of a checkpoint, rebuilt from the config stored in it, with its trained weights."""
        from omegaconf import OmegaConf

        checkpoint = load_checkpoint(path)
        config = checkpoint["d3sr"].get("config")
        if not config or "model" not in config or "loss" not in config:
            raise D3SRError(f"{path} stores no run config; rebuild the module with the config it was trained with")
        module = cls.from_config(OmegaConf.create(config))
        module.on_load_checkpoint(checkpoint)
        module.load_state_dict(checkpoint["state_dict"], strict=False)
        return module

    @property
    def validation_metrics(self) -> list[str]:
        """Names validation_step logs (train.py checks `optimized_metric` against them at start-up)."""
        always = ["val/psnr_y", "val/ssim_y", "val/color_error", "val/sharpness", "val/grid"]
        return always + (["val/dists"] if self._validation_dists is not None else [])

    @property
    def _validation_dists(self) -> nn.Module | None:
        return getattr(self.loss.perceptual, "dists", None)

    # ----------------------------------------------------------------------------------------------------------
    # Setup.

    def setup(self, stage: str) -> None:
        precision = str(self.trainer.precision)
        if self.frozen_dtype == torch.bfloat16 and "bf16" not in precision:
            raise ValueError(f"model.frozen_dtype=bf16 needs trainer.precision=bf16-mixed (got {precision})")
        if self.frozen_dtype == torch.float16 and not precision.startswith("16"):
            raise ValueError(f"model.frozen_dtype=fp16 needs trainer.precision=16-mixed (got {precision})")

    def configure_optimizers(self):
        params_g = [p for p in self.generator.parameters() if p.requires_grad]
        optimizers = [self.optimizer_g(params=params_g)]
        if self.discriminator is not None:
            params_d = [p for p in self.discriminator.parameters() if p.requires_grad]
            optimizers.append(self.optimizer_d(params=params_d))
        if self.lr_scheduler is None:
            return optimizers
        return optimizers, [self.lr_scheduler(optimizer=optimizer) for optimizer in optimizers]

    def _optimizer(self, index: int):
        """Optimizer 0 (G) or 1 (D)."""
        return _as_list(self.optimizers())[index]

    def _fake(self, sr: torch.Tensor, z_sr: torch.Tensor) -> torch.Tensor:
        """What the discriminator judges of the generator's output: the image x̂_H (pixel D) or the latent ẑ_H."""
        return sr if self.discriminator.space == "pixel" else z_sr

    @property
    def iteration(self) -> int:
        """Generator updates done so far (Lightning's global_step counts G and D optimizer steps alike)."""
        return self.trainer.global_step // (1 + self.d_steps_per_g_step)

    # ----------------------------------------------------------------------------------------------------------
    # Training.

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        # Images in [-1, 1]: the generator's input, the loss target (sharpened if USM is on) and the plain target.
        lq, gt = generator_input(batch["lq"]), to_model_range(batch["gt"])
        target = to_model_range(batch["gt_usm"]) if "gt_usm" in batch else gt
        if lq.shape[-2:] != gt.shape[-2:]:
            raise ValueError(
                f"lq ×4 {tuple(lq.shape[-2:])} does not match gt {tuple(gt.shape[-2:])}: crop a multiple of 8"
            )
        step_now = (batch_idx + 1) % self.accumulate_grad_batches == 0
        logs, sr, z_sr = self._generator_step(lq, target, step_now)
        if self.discriminator is not None:
            # The discriminator's fake and real inputs: latents ẑ_H and E(x_H), or the images x̂_H and x_H.
            fake = self._fake(sr, z_sr).detach()
            if self.discriminator.space == "pixel":
                real = gt
            else:
                with torch.no_grad():
                    real = self.generator.encode(gt).float()
            for _ in range(self.d_steps_per_g_step):
                logs.update(self._discriminator_step(fake, real, step_now))
        # One learning-rate step per iteration for every optimizer (manual optimization steps them by hand).
        if step_now and self.lr_scheduler is not None:
            for scheduler in _as_list(self.lr_schedulers()):
                scheduler.step()
            logs["train/lr_g"] = torch.tensor(self._optimizer(0).param_groups[0]["lr"])
        # Non-finite losses: count the skipped steps; `max_skipped_steps` iterations in a row stop the run.
        if step_now:
            last = getattr(self.trainer.checkpoint_callback, "last_model_path", "")
            self.nan_skips.end_iteration(self.iteration, last)
        logs["train/skipped_steps"] = torch.tensor(float(self.nan_skips.total))
        self.log("train/g/loss", logs.pop("train/g/loss"), prog_bar=True, batch_size=lq.shape[0])
        self.log_dict(logs, batch_size=lq.shape[0])
        self.log("iteration", float(self.iteration), logger=False, batch_size=lq.shape[0])  # checkpoint file names

    def _step(self, index: int, loss: torch.Tensor, step_now: bool) -> None:
        """Backward (scaled for accumulation); on the last micro-batch: clip, step, zero the gradients.

        A NaN/inf loss gets no backward (no NaN gradient is synced), and its accumulation window no update.
        """
        optimizer = self._optimizer(index)
        finite = self._finite_on_every_rank(loss)
        self.nan_skips.record(index, float(loss) if not finite else 0.0, finite)
        if not self.nan_skips.poisoned(index):
            self.manual_backward(loss / self.accumulate_grad_batches)
        if not step_now:
            return
        if self.nan_skips.close_window(index):
            self._skip_update(optimizer)
        else:
            if self.grad_clip is not None:
                self.clip_gradients(optimizer, gradient_clip_val=self.grad_clip, gradient_clip_algorithm="norm")
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def _finite_on_every_rank(self, loss: torch.Tensor) -> bool:
        """Whether the loss is finite on every DDP rank: one all-reduce of a flag, so all ranks skip together."""
        bad = not bool(torch.isfinite(loss.detach()).all())
        return not self.trainer.strategy.reduce_boolean_decision(bad, all=False)

    def _skip_update(self, optimizer) -> None:
        """An optimizer step that changes nothing, so Lightning's step count (iterations, checkpoints) goes on.

        Without gradients AdamW/Adam/SGD leave the weights and their state as they are. A GradScaler (16-mixed) needs
        gradients to inspect: NaN ones make it skip the step itself (and lower its scale, as on an fp16 overflow).
        """
        optimizer.zero_grad(set_to_none=True)
        if getattr(self.trainer.precision_plugin, "scaler", None) is not None:
            for group in optimizer.param_groups:
                for param in group["params"]:
                    param.grad = torch.full_like(param, float("nan"))
        optimizer.step()

    def _generator_step(
        self, lq: torch.Tensor, target: torch.Tensor, step_now: bool
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """L_gen = MSE + λ2·EA-DISTS + λ1·L_G with D frozen (toggle_model); returns logs, x̂_H and ẑ_H."""
        optimizer = self._optimizer(0)
        with optimizer.toggle_model(sync_grad=step_now):
            # Super-resolve in one UNet call.
            sr, z_sr = self.generator(lq)
            # Reconstruction terms and the adversarial term through the (frozen) discriminator, if there is one.
            terms = self.loss.reconstruction(sr, target)
            if self.discriminator is None:
                adversarial = sr.new_zeros((), dtype=torch.float32)
            else:
                adversarial = generator_adversarial_loss(self.discriminator(self._fake(sr, z_sr)))
            total = self.loss.total(terms, adversarial)
            self._step(0, total, step_now)
        logs = {"train/g/loss": total, "train/g/mse": terms["mse"], "train/g/ea_dists": terms["ea_dists"],
                "train/g/adv": adversarial}  # fmt: skip
        return {k: v.detach() for k, v in logs.items()}, sr, z_sr

    def _discriminator_step(self, fake: torch.Tensor, real: torch.Tensor, step_now: bool) -> dict[str, torch.Tensor]:
        """L_D on fake (ẑ_H or x̂_H) and real (z_H or x_H); a diffusion D diffuses each with its own t and ε."""
        optimizer = self._optimizer(1)
        with optimizer.toggle_model(sync_grad=step_now):
            logits_fake = self.discriminator(fake)
            logits_real = self.discriminator(real)
            fake, real = discriminator_adversarial_loss(logits_fake, logits_real)
            self._step(1, fake + real, step_now)
        logits_fake, logits_real = logits_fake.detach().float(), logits_real.detach().float()
        return {
            "train/d/loss": (fake + real).detach(),
            "train/d/fake": fake.detach(),
            "train/d/real": real.detach(),
            "train/d/acc_real": (logits_real > 0).float().mean(),
            "train/d/acc_fake": (logits_fake < 0).float().mean(),
            "train/d/score_real": torch.sigmoid(logits_real).mean(),
            "train/d/score_fake": torch.sigmoid(logits_fake).mean(),
        }

    # ----------------------------------------------------------------------------------------------------------
    # Validation.

    @torch.no_grad()
    def super_resolve(self, lq: torch.Tensor) -> torch.Tensor:
        """SR (B, 3, 4h, 4w) in [0, 1] from an LQ batch (B, 3, h, w) in [0, 1] (no tiling, no colour fix)."""
        sr, _ = self.generator(generator_input(lq))
        return from_model_range(sr[..., : lq.shape[-2] * 4, : lq.shape[-1] * 4])

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        sr, gt = self.super_resolve(batch["lq"]), batch["gt"].float()
        metrics = {"val/psnr_y": psnr_y(sr, gt), "val/ssim_y": ssim_y(sr, gt), "val/color_error": color_error(sr, gt),
                   "val/sharpness": sharpness(sr, gt),
                   # Gradient energy across the VAE's latent-pixel block edges ÷ inside (≈ 1: no block grid).
                   "val/grid": block_grid(sr, self.generator.vae_factor)}  # fmt: skip
        metrics = {name: value.mean() for name, value in metrics.items()}
        if self._validation_dists is not None:
            metrics["val/dists"] = self._validation_dists(sr, gt).mean()
        self.log_dict(metrics, batch_size=sr.shape[0], sync_dist=True)

    # ----------------------------------------------------------------------------------------------------------
    # Checkpoints: trainable state + fixed embeddings + config, never the frozen base weights.

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        keep = set(self.checkpoint_keys)
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}
        checkpoint["d3sr"] = checkpoint_record(self.generator, self.config, self.iteration)
        checkpoint[RNG_KEY] = rng_states_of_every_rank()
        checkpoint[SKIPPED_KEY] = self.nan_skips.state_dict()

    def on_train_start(self) -> None:
        # Resume: the checkpoint's RNG states (t, ε, posterior samples), set as late as possible, after set-up.
        states, self._rng_to_restore = self._rng_to_restore, None
        if states is None:
            return
        if len(states) != self.trainer.world_size:
            log.warning("The checkpoint holds the RNG states of %d processes and this run has %d: not restored, so "
                        "the resumed run draws other t and ε than an uninterrupted one", len(states),
                        self.trainer.world_size)  # fmt: skip
            return
        set_rng_states(states[self.trainer.global_rank])

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._rng_to_restore = checkpoint.get(RNG_KEY)
        self.nan_skips.load_state_dict(checkpoint.get(SKIPPED_KEY, {}))
        missing = sorted(set(self.checkpoint_keys) - set(checkpoint.get("state_dict", {})))
        if missing:
            raise D3SRError(
                f"checkpoint does not match this model: {len(missing)} trainable tensors missing "
                f"(e.g. {', '.join(missing[:3])}). Was it trained with another model/generator, "
                "model/discriminator or LoRA setting?"
            )
        own = self.state_dict()
        mismatched = [
            f"{k}: {tuple(v.shape)} in the checkpoint, {tuple(own[k].shape)} here"
            for k, v in checkpoint["state_dict"].items()
            if k in own and v.shape != own[k].shape
        ]
        if mismatched:
            raise D3SRError(
                f"checkpoint does not match this model: {len(mismatched)} tensors differ in shape (e.g. "
                f"{mismatched[0]}). Was it trained with another LoRA rank or model/generator, model/discriminator?"
            )
