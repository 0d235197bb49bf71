"""Architecture configs of the base models, so full-size networks can be built without their weights.

The full-size dicts are the `config.json` files published with the diffusers weights (only the keys that differ
from the diffusers defaults). They are used for parameter/MAC counts on the meta device and to check loaded
weights; real training always loads the published weights. The tiny presets build the same classes with a few
thousand parameters for tests and the demo.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Noise schedule shared by SD 1.5, SD 2.1-base and SDXL: "scaled_linear", beta 0.00085 → 0.012, 1000 steps.
SCHEDULER = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}

VAE_SD = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 512,
    "scaling_factor": 0.18215,
}

UNET_SD21_BASE = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [320, 640, 1280, 1280],
    "layers_per_block": 2,
    "attention_head_dim": [5, 10, 20, 20],
    "cross_attention_dim": 1024,
    "use_linear_projection": True,
}

UNET_SD15 = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [320, 640, 1280, 1280],
    "layers_per_block": 2,
    "attention_head_dim": 8,
    "cross_attention_dim": 768,
}

UNET_SDXL_BASE = {
    "sample_size": 128,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [320, 640, 1280],
    "layers_per_block": 2,
    "attention_head_dim": [5, 10, 20],
    "transformer_layers_per_block": [1, 2, 10],
    "cross_attention_dim": 2048,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
}

# Text conditioning shapes of each base model: (tokens, hidden size, pooled size or None).
TEXT_SHAPES = {"sd21": (77, 1024, None), "sd15": (77, 768, None), "sdxl": (77, 2048, 1280)}

FULL_SIZE_UNETS = {"sd21": UNET_SD21_BASE, "sd15": UNET_SD15, "sdxl": UNET_SDXL_BASE}

# Tiny presets: same classes, small widths. The VAE keeps the real ×8 down-sampling so shapes match full size.
TINY_VAE = {**VAE_SD, "block_out_channels": [16, 32, 32, 32], "layers_per_block": 1, "norm_num_groups": 8,
            "sample_size": 64}  # fmt: skip

TINY_UNET_SD = {
    "sample_size": 16,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [32, 64],
    "layers_per_block": 1,
    "attention_head_dim": [2, 4],
    "cross_attention_dim": 32,
    "norm_num_groups": 16,
    "use_linear_projection": True,
}

TINY_UNET_SDXL = {
    "sample_size": 16,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [32, 64],
    "layers_per_block": 1,
    "attention_head_dim": [2, 4],
    "transformer_layers_per_block": [1, 2],
    "cross_attention_dim": 64,
    "norm_num_groups": 16,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 8,
    "projection_class_embeddings_input_dim": 32 + 6 * 8,
}

TINY_TEXT_SHAPES = {"sd": (77, 32, None), "sdxl": (77, 64, 32)}


def vae_factor(config: Mapping[str, Any]) -> int:
    """Pixels per latent pixel of an AutoencoderKL config (8 for SD's VAEs, 4 for DEMO_VAE), as diffusers' pipelines
    compute `vae_scale_factor`: each block but the last halves the resolution."""
    return 2 ** (len(config["block_out_channels"]) - 1)


def unet_config(arch: str) -> dict[str, Any]:
    """Full-size UNet config for `arch` in {'sd21', 'sd15', 'sdxl'}."""
    if arch not in FULL_SIZE_UNETS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {sorted(FULL_SIZE_UNETS)}")
    return dict(FULL_SIZE_UNETS[arch])


# Demo presets: the same classes, wide enough to learn the embedded photos and small enough to fine-tune on 2 CPU
# cores and ship in a few MB. `python -m d3sr.pretrain_tiny` pretrains them; `d3sr.models.loading.pretrained_tiny`
# loads the result. The UNets keep the test presets' widths (the size of the shipped folder is the limit) and differ
# from them only in being pretrained.
# The demo VAE is a documented deviation of the miniature: ×4 with 12 latent channels instead of SD's ×8 with 4. A
# ×8 VAE this small stays 2 dB *below* bicubic ×4 on the held-out photos however it is trained in the CPU budget
# (BENCHMARKS.md, "Demo backbone levers"), so it would cap every SR result; the ×4 one reconstructs above bicubic,
# which is the full-size regime (the VAE above the SR, the generator and discriminator deciding the quality). The
# UNets take and predict its 12 channels through the same one-step code path; the pipeline reads the factor from the
# VAE's config (`vae_factor`).
DEMO_LATENT_CHANNELS = 12
DEMO_VAE = {
    **TINY_VAE,
    "down_block_types": ["DownEncoderBlock2D"] * 3,
    "up_block_types": ["UpDecoderBlock2D"] * 3,
    "latent_channels": DEMO_LATENT_CHANNELS,
    "block_out_channels": [32, 32, 64],
    "norm_num_groups": 8,  # GroupNorm groups of 4 and 8 channels: the linear codec's channel pairs (linear_vae)
    "sample_size": 128,
    "scaling_factor": 1.0,  # replaced by 1 / std of the training latents after pretraining, as Stable Diffusion did
}
DEMO_UNET_SD = {**TINY_UNET_SD, "in_channels": DEMO_LATENT_CHANNELS, "out_channels": DEMO_LATENT_CHANNELS}
DEMO_UNET_SDXL = {**TINY_UNET_SDXL, "in_channels": DEMO_LATENT_CHANNELS, "out_channels": DEMO_LATENT_CHANNELS}
DEMO_TEXT_SHAPES = dict(TINY_TEXT_SHAPES)
