"""The diffusion discriminator: a pretrained diffusion UNet's down path + middle block with a patch head.

Input: forward-diffused latents F(z, t) = sqrt(ᾱ_t)·z + sqrt(1−ᾱ_t)·ε with t ~ U{t_min..t_max} per sample, for fake
ẑ_H and real z_H = E(x_H) (both in the generator's VAE latent space). The UNet's up path is deleted; a randomly
initialised per-location MLP on the middle block's feature map gives one realism logit per patch.
"""

from __future__ import annotations

import torch
from torch import nn

from d3sr.models.loading import Backbone
from d3sr.models.lora import DISCRIMINATOR_BLOCKS, LORA_TARGETS, add_lora, blocks_regex
from d3sr.options import check_choice

FINETUNE_MODES = ("lora", "full")


class PatchHead(nn.Sequential):
    """Per-location MLP: GroupNorm → SiLU → 1×1 conv C→hidden → SiLU → 1×1 conv hidden→1 (one logit per patch)."""

    def __init__(self, channels: int, hidden: int = 512, groups: int = 32) -> None:
        super().__init__(
            nn.GroupNorm(min(groups, channels), channels),
            nn.SiLU(),
            nn.Conv2d(channels, hidden, 1),
            nn.SiLU(),
            nn.Conv2d(hidden, 1, 1),
        )


class DiffusionDiscriminator(nn.Module):
    """forward(z: clean scaled latents (B, 4, h, w), t=None, eps=None) -> patch logits (B, 1, h/k, w/k).

    k = `downsampling`: 4 for SDXL (a 512² crop → 64² latent → 16² logits), 8 for SD 1.5 / 2.1 (→ 8² logits).
    The SDXL size embedding is the crop's size in pixels: the latent's size × backbone.vae_factor.
    finetune: 'lora' (the paper: frozen pretrained base + LoRA on the down/mid blocks) or 'full' (every weight of the
    down/mid path trains, no LoRA: the randomly initialised "Diffusion-GAN" baseline of Table 4b).
    """

    space = "latent"  # the module feeds it latents (the generator's ẑ_H and E(x_H))

    def __init__(
        self,
        backbone: Backbone,
        lora_rank: int = 16,
        lora_alpha: float = 16,
        lora_targets: list[str] | tuple[str, ...] = LORA_TARGETS,
        head_hidden: int = 512,
        t_min: int = 0,
        t_max: int = 999,
        gradient_checkpointing: bool = False,
        finetune: str = "lora",
    ) -> None:
        super().__init__()
        check_choice("model.discriminator.finetune", finetune, FINETUNE_MODES)
        num_steps = backbone.alphas_cumprod.shape[0]
        if not 0 <= t_min <= t_max < num_steps:
            raise ValueError(f"model.discriminator needs 0 <= t_min <= t_max <= {num_steps - 1}, got {t_min}, {t_max}")
        self.t_min, self.t_max = int(t_min), int(t_max)
        self.backbone_source = dict(backbone.source)
        unet = backbone.unet
        # Keep conv_in, time/added embeddings, down blocks and mid block; delete the up path to save memory.
        for name in ("up_blocks", "conv_norm_out", "conv_act", "conv_out"):
            if hasattr(unet, name):
                delattr(unet, name)
        if finetune == "lora":
            self.unet = add_lora(unet, lora_rank, lora_alpha, blocks_regex(DISCRIMINATOR_BLOCKS, lora_targets))
        else:
            self.unet = unet.float().requires_grad_(True)
        if gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
        self.uses_text_time = unet.config.addition_embed_type == "text_time"
        self.vae_factor = int(backbone.vae_factor)  # pixels per latent pixel, for SDXL's size embedding
        self.register_buffer("alphas_cumprod", backbone.alphas_cumprod.float(), persistent=False)
        self.register_buffer("prompt_embeds", backbone.embeds["prompt_embeds"].float().clone())
        if self.uses_text_time:
            if "pooled_prompt_embeds" not in backbone.embeds:
                raise ValueError("an SDXL-style discriminator needs pooled_prompt_embeds in its fixed embeddings")
            self.register_buffer("pooled_prompt_embeds", backbone.embeds["pooled_prompt_embeds"].float().clone())
        self.head = PatchHead(unet.config.block_out_channels[-1], head_hidden)

    @property
    def downsampling(self) -> int:
        """Latent pixels per patch logit along each side."""
        return 2 ** sum(1 for block in self.unet.down_blocks if block.downsamplers is not None)

    def sample_t(self, batch: int, device: torch.device, generator: torch.Generator | None = None) -> torch.Tensor:
        """t ~ U{t_min..t_max}, one per sample."""
        return torch.randint(self.t_min, self.t_max + 1, (batch,), device=device, generator=generator)

    def diffuse(self, z: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """F(z, t) = sqrt(ᾱ_t)·z + sqrt(1−ᾱ_t)·ε  (DDPM forward process q(z_t | z_0))."""
        alpha_bar = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        return alpha_bar.sqrt() * z + (1 - alpha_bar).sqrt() * eps

    def score(self, z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Patch logits for already-diffused latents z_t at timesteps t (B,)."""
        unet, batch = self.unet, z_t.shape[0]
        dtype = next(unet.conv_in.parameters()).dtype
        context = self.prompt_embeds.expand(batch, -1, -1).to(dtype)
        # Time embedding (+ SDXL's pooled-text and size embedding), as in UNet2DConditionModel.forward.
        emb = unet.time_embedding(unet.get_time_embed(sample=z_t, timestep=t).to(dtype))
        if self.uses_text_time:
            height, width = z_t.shape[-2] * self.vae_factor, z_t.shape[-1] * self.vae_factor  # (H, W, 0, 0, H, W)
            time_ids = torch.tensor([height, width, 0, 0, height, width], device=z_t.device, dtype=dtype)
            added = {"text_embeds": self.pooled_prompt_embeds.expand(batch, -1).to(dtype),
                     "time_ids": time_ids.expand(batch, -1)}  # fmt: skip
            emb = emb + unet.get_aug_embed(emb=emb, encoder_hidden_states=context, added_cond_kwargs=added)
        if unet.time_embed_act is not None:
            emb = unet.time_embed_act(emb)
        # Down path and middle block; the skip connections are not needed without the up path.
        h = unet.conv_in(z_t.to(dtype))
        for block in unet.down_blocks:
            if getattr(block, "has_cross_attention", False):
                h, _ = block(hidden_states=h, temb=emb, encoder_hidden_states=context)
            else:
                h, _ = block(hidden_states=h, temb=emb)
        h = unet.mid_block(h, emb, encoder_hidden_states=context)
        return self.head(h.float())

    def forward(self, z: torch.Tensor, t: torch.Tensor | None = None, eps: torch.Tensor | None = None) -> torch.Tensor:
        """Patch logits of clean latents z after forward diffusion to t (drawn per sample if None)."""
        t = self.sample_t(z.shape[0], z.device) if t is None else t
        eps = torch.randn_like(z) if eps is None else eps
        return self.score(self.diffuse(z.float(), t, eps.float()), t)
