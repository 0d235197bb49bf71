"""D3SRModule: the generator and the diffusion discriminator trained adversarially with manual optimization.

Per batch (BasicSR-style): the data module has already degraded the batch on the device; then one generator
step, then `d_steps_per_g_step` discriminator steps on the same batch. Images: `lq`, `gt` arrive in [0, 1] and are
mapped to the VAE's [-1, 1]. Gradient accumulation and clipping are done by hand (Lightning refuses them under
manual optimization). Checkpoints hold only the trainable state and the fixed embeddings (see `on_save_checkpoint`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import lightning as L
import torch
from torch import nn

from d3sr.config import D3SRError
from d3sr.losses.adversarial import discriminator_adversarial_loss, generator_adversarial_loss
from d3sr.losses.perceptual import D3SRLoss
from d3sr.models.discriminator import DiffusionDiscriminator
from d3sr.models.generator import OneStepGenerator
from d3sr.models.loading import parse_dtype
from d3sr.models.lora import cast_frozen

log = logging.getLogger(__name__)

# Buffers that are not trainable but must travel with checkpoints: the fixed text embeddings.
EMBEDDING_BUFFERS = ("generator.prompt_embeds", "discriminator.prompt_embeds", "discriminator.pooled_prompt_embeds")


class D3SRModule(L.LightningModule):
    """Both networks, the losses, the G/D alternation and logging.

    optimizer_g / optimizer_d: partial optimizers (Hydra `_partial_: true`) completed with the trainable parameters.
    accumulate_grad_batches: micro-batches per optimizer step (by hand, with no DDP gradient sync in between).
    frozen_dtype: dtype of the frozen base weights ('float32' or 'bf16' with trainer.precision=bf16-mixed).
    """

    def __init__(
        self,
        generator: OneStepGenerator,
        discriminator: DiffusionDiscriminator,
        loss: D3SRLoss,
        optimizer_g: Callable[..., torch.optim.Optimizer],
        optimizer_d: Callable[..., torch.optim.Optimizer],
        d_steps_per_g_step: int = 1,
        grad_clip: float | None = 1.0,
        accumulate_grad_batches: int = 1,
        frozen_dtype: str = "float32",
    ) -> None:
        super().__init__()
        if d_steps_per_g_step < 1:
            raise ValueError(f"model.d_steps_per_g_step must be >= 1, got {d_steps_per_g_step}")
        if accumulate_grad_batches < 1:
            raise ValueError(f"model.accumulate_grad_batches must be >= 1, got {accumulate_grad_batches}")
        if accumulate_grad_batches > 1 and d_steps_per_g_step > 1:
            raise ValueError("model.accumulate_grad_batches > 1 needs model.d_steps_per_g_step = 1")
        if grad_clip is not None and grad_clip <= 0:
            raise ValueError(f"model.grad_clip must be > 0 or null, got {grad_clip}")
        self.automatic_optimization = False
        self.strict_loading = False  # checkpoints hold the trainable state only; frozen weights come from the base
        self.generator, self.discriminator, self.loss = generator, discriminator, loss
        self.optimizer_g, self.optimizer_d = optimizer_g, optimizer_d
        self.d_steps_per_g_step, self.grad_clip = int(d_steps_per_g_step), grad_clip
        self.accumulate_grad_batches = int(accumulate_grad_batches)
        self.frozen_dtype = parse_dtype(frozen_dtype)
        self.run_config: dict | None = None  # the resolved Hydra config, stored in checkpoints (set by d3sr.train)
        if self.frozen_dtype != torch.float32:
            cast_frozen(self.generator, self.frozen_dtype)
            cast_frozen(self.discriminator.unet, self.frozen_dtype)
        named_buffers = dict(self.named_buffers())
        self.checkpoint_keys = sorted(
            [name for name, p in self.named_parameters() if p.requires_grad]
            + [name for name in EMBEDDING_BUFFERS if name in named_buffers]
        )

    # ----------------------------------------------------------------------------------------------------------
    # Setup.

    def setup(self, stage: str) -> None:
        precision = str(self.trainer.precision)
        if self.frozen_dtype == torch.bfloat16 and "bf16" not in precision:
            raise ValueError(f"model.frozen_dtype=bf16 needs trainer.precision=bf16-mixed (got {precision})")
        if self.frozen_dtype == torch.float16 and not precision.startswith("16"):
            raise ValueError(f"model.frozen_dtype=fp16 needs trainer.precision=16-mixed (got {precision})")

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        params_g = [p for p in self.generator.parameters() if p.requires_grad]
        params_d = [p for p in self.discriminator.parameters() if p.requires_grad]
        return [self.optimizer_g(params=params_g), self.optimizer_d(params=params_d)]

    @property
    def iteration(self) -> int:
        """Generator updates done so far (Lightning's global_step counts G and D optimizer steps alike)."""
        return self.trainer.global_step // (1 + self.d_steps_per_g_step)

    # ----------------------------------------------------------------------------------------------------------
    # Training.

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        lq, gt = batch["lq"] * 2 - 1, batch["gt"] * 2 - 1
        step_now = (batch_idx + 1) % self.accumulate_grad_batches == 0
        logs, z_sr = self._generator_step(lq, gt, step_now)
        with torch.no_grad():
            z_gt = self.generator.encode(gt).float()
        for _ in range(self.d_steps_per_g_step):
            logs.update(self._discriminator_step(z_sr.detach(), z_gt, step_now))
        self.log("train/g/loss", logs.pop("train/g/loss"), prog_bar=True, batch_size=lq.shape[0])
        self.log_dict(logs, batch_size=lq.shape[0])
        self.log("iteration", float(self.iteration), logger=False, batch_size=lq.shape[0])  # checkpoint file names

    def _step(self, optimizer, loss: torch.Tensor, step_now: bool) -> None:
        """Backward (scaled for accumulation); on the last micro-batch: clip, step, zero the gradients."""
        self.manual_backward(loss / self.accumulate_grad_batches)
        if step_now:
            if self.grad_clip is not None:
                self.clip_gradients(optimizer, gradient_clip_val=self.grad_clip, gradient_clip_algorithm="norm")
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    def _generator_step(
        self, lq: torch.Tensor, gt: torch.Tensor, step_now: bool
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """L_gen = MSE + λ2·EA-DISTS + λ1·L_G with D frozen (toggle_model); returns logs and ẑ_H."""
        optimizer = self.optimizers()[0]
        with optimizer.toggle_model(sync_grad=step_now):
            # Super-resolve in one UNet call.
            sr, z_sr = self.generator(lq)
            # Reconstruction terms and the adversarial term through the (frozen) discriminator.
            terms = self.loss.reconstruction(sr, gt)
            adversarial = generator_adversarial_loss(self.discriminator(z_sr))
            total = self.loss.total(terms, adversarial)
            self._step(optimizer, total, step_now)
        logs = {"train/g/loss": total, "train/g/mse": terms["mse"], "train/g/ea_dists": terms["ea_dists"],
                "train/g/adv": adversarial}  # fmt: skip
        return {k: v.detach() for k, v in logs.items()}, z_sr

    def _discriminator_step(self, z_sr: torch.Tensor, z_gt: torch.Tensor, step_now: bool) -> dict[str, torch.Tensor]:
        """L_D on F(ẑ_H, t) (fake) and F(z_H, t) (real), independent t and ε for each."""
        optimizer = self.optimizers()[1]
        with optimizer.toggle_model(sync_grad=step_now):
            logits_fake = self.discriminator(z_sr)
            logits_real = self.discriminator(z_gt)
            fake, real = discriminator_adversarial_loss(logits_fake, logits_real)
            self._step(optimizer, fake + real, step_now)
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
        """SR in [0, 1] from an LQ batch in [0, 1] already at the HR size."""
        sr, _ = self.generator(lq * 2 - 1)
        return ((sr.float() + 1) / 2).clamp(0, 1)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        from d3sr.evaluation.metrics import psnr_y, ssim_y

        sr, gt = self.super_resolve(batch["lq"]), batch["gt"].float()
        metrics = {"val/psnr_y": psnr_y(sr, gt).mean(), "val/ssim_y": ssim_y(sr, gt).mean()}
        perceptual = getattr(self.loss.perceptual, "dists", None)
        if perceptual is not None:
            metrics["val/dists"] = perceptual(sr, gt).mean()
        self.log_dict(metrics, batch_size=sr.shape[0], sync_dist=True)

    # ----------------------------------------------------------------------------------------------------------
    # Checkpoints: trainable state + fixed embeddings + config, never the frozen base weights.

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        keep = set(self.checkpoint_keys)
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}
        checkpoint["d3sr"] = {
            "version": __import__("d3sr").__version__,
            "config": self.run_config,
            "iteration": self.iteration,
            "generator": {
                "timestep": self.generator.timestep,
                "lora_rank": self.generator.lora_rank,
                "lora_alpha": self.generator.lora_alpha,
                "lora_targets": self.generator.lora_targets,
                "scaling_factor": self.generator.scaling_factor,
                "backbone": self.generator.backbone_description,
            },
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
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


def trainable_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
