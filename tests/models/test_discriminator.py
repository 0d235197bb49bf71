"""DiffusionDiscriminator: the truncated UNet equals the full UNet's down path + mid block; forward diffusion."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDPMScheduler

from d3sr.models import architectures as arch
from d3sr.models.discriminator import DiffusionDiscriminator
from d3sr.models.loading import meta, tiny


def capture_mid_block(unet) -> dict:
    seen = {}
    unet.mid_block.register_forward_hook(lambda module, args, output: seen.__setitem__("h", output))
    return seen


@pytest.mark.parametrize("kind", ["sdxl", "sd"])
def test_truncated_path_equals_the_full_unets_mid_block(kind):
    full = tiny(kind, seed=5)
    disc = DiffusionDiscriminator(tiny(kind, seed=5)).eval()
    full_seen, disc_seen = capture_mid_block(full.unet), capture_mid_block(disc.unet)
    gen = torch.Generator().manual_seed(0)
    z_t, t = torch.randn(2, 4, 16, 16, generator=gen), torch.tensor([10, 900])
    context = full.embeds["prompt_embeds"].expand(2, -1, -1)
    added = None
    if kind == "sdxl":  # SDXL's added conditioning: pooled text embedding and (H, W, 0, 0, H, W) time ids
        added = {"text_embeds": full.embeds["pooled_prompt_embeds"].expand(2, -1),
                 "time_ids": torch.tensor([[128.0, 128, 0, 0, 128, 128]]).expand(2, -1)}  # fmt: skip
    with torch.no_grad():
        full.unet(z_t, t, encoder_hidden_states=context, added_cond_kwargs=added)
        logits = disc.score(z_t, t)
    torch.testing.assert_close(disc_seen["h"], full_seen["h"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits, disc.head(full_seen["h"]))


def test_up_path_is_deleted_and_lora_sits_in_down_and_mid_blocks_only():
    disc = DiffusionDiscriminator(tiny("sdxl", seed=0))
    assert not hasattr(disc.unet, "up_blocks") and not hasattr(disc.unet, "conv_out")
    trainable = [name for name, p in disc.named_parameters() if p.requires_grad]
    lora = [n for n in trainable if "lora_" in n]
    assert lora and all(n.startswith(("unet.down_blocks.", "unet.mid_block.")) for n in lora)
    assert any(n.startswith("unet.mid_block.") for n in lora)
    assert set(trainable) == set(lora) | {n for n, _ in disc.head.named_parameters(prefix="head")}
    assert not any("conv_in" in n or "time_embedding" in n for n in lora)


@pytest.mark.parametrize("kind", ["sdxl", "sd"])
def test_patch_logits_shape(kind):
    disc = DiffusionDiscriminator(tiny(kind, seed=0))
    logits = disc(torch.randn(3, 4, 16, 16))
    k = disc.downsampling
    assert k == 2 and logits.shape == (3, 1, 16 // k, 16 // k)


@pytest.mark.parametrize("name, k", [("sdxl", 4), ("sd21", 8), ("sd15", 8)])
def test_full_size_patch_grid(name, k):
    """A 512² crop (64² latent) gives 16² patch logits with SDXL, 8² with SD 1.5 / 2.1 (built on the meta device)."""
    disc = DiffusionDiscriminator(meta(name, with_vae=False)).to("meta")
    assert disc.downsampling == k
    with torch.device("meta"):
        assert disc(torch.randn(1, 4, 64, 64)).shape == (1, 1, 64 // k, 64 // k)


def test_diffuse_matches_the_schedulers_add_noise():
    disc = DiffusionDiscriminator(tiny("sd", seed=0))
    scheduler = DDPMScheduler(**arch.SCHEDULER)
    z, eps, t = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8), torch.tensor([0, 500, 999])
    torch.testing.assert_close(disc.diffuse(z, t, eps), scheduler.add_noise(z, eps, t), rtol=1e-5, atol=1e-5)


def test_timesteps_are_drawn_per_sample_in_range():
    disc = DiffusionDiscriminator(tiny("sd", seed=0), t_min=100, t_max=300)
    t = disc.sample_t(4096, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert t.min() >= 100 and t.max() <= 300 and len(t.unique()) > 150
    with pytest.raises(ValueError, match="t_min"):
        DiffusionDiscriminator(tiny("sd"), t_min=10, t_max=5)


def test_gradients_reach_the_fake_latent_and_only_trainable_weights():
    disc = DiffusionDiscriminator(tiny("sdxl", seed=0))
    z = torch.randn(2, 4, 16, 16, requires_grad=True)
    disc(z).mean().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    with_grad = {n for n, p in disc.named_parameters() if p.grad is not None}
    assert with_grad == {n for n, p in disc.named_parameters() if p.requires_grad}
