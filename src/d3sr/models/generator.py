"""The one-step generator G (the inference network of D³SR).

z_L = E(x_L) with no noise; ε̂ = UNet(z_L, T_L, c) with a fixed text embedding c;
ẑ_H = (z_L − sqrt(1−ᾱ_{T_L})·ε̂) / sqrt(ᾱ_{T_L})  (the DDPM x0-prediction); x̂_H = D(ẑ_H).
Images are in [-1, 1] (the VAE's range); latents are scaled by the VAE's scaling factor.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from d3sr.models.architectures import vae_factor
from d3sr.models.linear_vae import needs_float32
from d3sr.models.loading import Backbone
from d3sr.models.lora import LORA_TARGETS, add_lora
from d3sr.options import check_choice

POSTERIORS = ("mode", "sample")


def predict_x0(z_t: torch.Tensor, eps: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """x0 from an ε-prediction: (z_t − sqrt(1−ᾱ)·ε) / sqrt(ᾱ)  (Ho et al. 2020, eq. 15; D³SR eq. 2)."""
    return (z_t - (1 - alpha_bar).sqrt() * eps) / alpha_bar.sqrt()


class OneStepGenerator(nn.Module):
    """SD UNet + LoRA that maps a bicubic-upsampled LQ image to an SR image in one UNet call.

    forward(lq: (B, 3, H, W) in [-1, 1], H and W multiples of 8) -> (sr in [-1, 1], z_sr (B, C, H/f, W/f)), with
    f = vae_factor (8 for SD's VAE, 4 for the demo backbone's) and C the VAE's latent channels.
    posterior: how a latent is read from the VAE encoder's Gaussian posterior, for z_L and for the discriminator's
    real z_H alike: 'mode' (its mean: deterministic, our default) or 'sample' (a draw, as OSEDiff's code does).
    """

    def __init__(
        self,
        backbone: Backbone,
        timestep: int = 399,
        lora_rank: int = 16,
        lora_alpha: float = 16,
        lora_targets: list[str] | tuple[str, ...] = LORA_TARGETS,
        learnable_embedding: bool = False,
        gradient_checkpointing: bool = False,
        posterior: str = "mode",
    ) -> None:
        super().__init__()
        self.posterior = check_choice("model.generator.posterior", posterior, POSTERIORS)
        if backbone.vae is None:
            raise ValueError("the generator needs a backbone with a VAE (with_vae: true)")
        num_steps = backbone.alphas_cumprod.shape[0]
        if not 0 <= timestep < num_steps:
            raise ValueError(f"model.generator.timestep must be in [0, {num_steps - 1}], got {timestep}")
        self.timestep = int(timestep)
        self.lora_rank, self.lora_alpha, self.lora_targets = int(lora_rank), float(lora_alpha), list(lora_targets)
        self.scaling_factor = float(backbone.vae.config.scaling_factor)
        self.backbone_source = dict(backbone.source)

        # The VAE is frozen; only the UNet's LoRA (and optionally the embedding) trains.
        self.vae = backbone.vae.eval().requires_grad_(False)
        # The demo's linear-codec VAE computes in float32 whatever the precision (bf16 cannot hold its channel pairs).
        self.vae_float32 = needs_float32(self.vae)
        self.unet = add_lora(backbone.unet, lora_rank, lora_alpha, self.lora_targets)
        if gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
        self.register_buffer("alphas_cumprod", backbone.alphas_cumprod.float(), persistent=False)
        prompt_embeds = backbone.embeds["prompt_embeds"].float()
        if prompt_embeds.shape[-1] != self.unet.config.cross_attention_dim:
            raise ValueError(
                f"fixed embedding width {prompt_embeds.shape[-1]} does not match the UNet's cross_attention_dim "
                f"{self.unet.config.cross_attention_dim}"
            )
        if learnable_embedding:
            self.prompt_embeds = nn.Parameter(prompt_embeds.clone())
        else:
            self.register_buffer("prompt_embeds", prompt_embeds.clone())

    def train(self, mode: bool = True) -> OneStepGenerator:
        """Train mode for the UNet only; the frozen VAE stays in eval mode."""
        super().train(mode)
        self.vae.eval()
        return self

    @property
    def vae_factor(self) -> int:
        """Pixels per latent pixel of the VAE: 8 for SD's, 4 for the demo backbone's."""
        return vae_factor(self.vae.config)

    @property
    def alpha_bar(self) -> torch.Tensor:
        """ᾱ at the generator's fixed timestep T_L."""
        return self.alphas_cumprod[self.timestep]

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """Scaled VAE latent of an image in [-1, 1]: the posterior's mode (default) or a sample of it."""
        with self.vae_precision():
            return self.latent_from_posterior(self.vae.encode(image.to(self.vae.dtype)).latent_dist)

    def vae_precision(self) -> contextlib.AbstractContextManager:
        """Autocast off around the VAE when it must compute in float32 (`vae_float32`), else nothing."""
        if self.vae_float32:
            return torch.autocast(self.vae.device.type, enabled=False)
        return contextlib.nullcontext()

    def latent_from_posterior(self, posterior) -> torch.Tensor:
        """Scaled latent read from the VAE encoder's posterior (a DiagonalGaussianDistribution) as `posterior` says."""
        return (posterior.mode() if self.posterior == "mode" else posterior.sample()) * self.scaling_factor

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Image in [-1, 1] (clamped) from a scaled latent."""
        with self.vae_precision():
            return self.vae.decode(z.to(self.vae.dtype) / self.scaling_factor).sample.clamp(-1, 1)

    def denoise(self, z_lq: torch.Tensor) -> torch.Tensor:
        """ẑ_H from z_L with one UNet call at T_L."""
        batch = z_lq.shape[0]
        t = torch.full((batch,), self.timestep, device=z_lq.device, dtype=torch.long)
        context = self.prompt_embeds.expand(batch, -1, -1).to(self.unet.dtype)
        eps = self.unet(z_lq.to(self.unet.dtype), t, encoder_hidden_states=context).sample
        return predict_x0(z_lq.float(), eps.float(), self.alpha_bar)

    def forward(self, lq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """SR image in [-1, 1] and its latent ẑ_H, from the bicubic-upsampled LQ image in [-1, 1]."""
        if lq.ndim != 4 or lq.shape[1] != 3:
            raise ValueError(f"lq must be (B, 3, H, W), got {tuple(lq.shape)}")
        if lq.shape[-1] % 8 or lq.shape[-2] % 8:
            raise ValueError(f"lq height and width must be multiples of 8, got {tuple(lq.shape[-2:])}")
        # Nothing upstream of the frozen encoder trains: no graph for it.
        with torch.no_grad():
            z_lq = self.encode(lq)
        z_sr = self.denoise(z_lq)
        return self.decode(z_sr), z_sr
