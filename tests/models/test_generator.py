"""OneStepGenerator: the x0 formula against diffusers' scheduler, LoRA placement, shapes and errors."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDPMScheduler

from d3sr.models import architectures as arch
from d3sr.models.generator import OneStepGenerator, predict_x0
from d3sr.models.loading import tiny


def lora_parameters(module: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {name: p for name, p in module.named_parameters() if "lora_" in name}


@pytest.fixture(scope="module")
def generator() -> OneStepGenerator:
    torch.manual_seed(0)
    return OneStepGenerator(tiny("sd", seed=0), timestep=399).eval()


def test_x0_formula_matches_the_diffusers_scheduler():
    scheduler = DDPMScheduler(**arch.SCHEDULER, clip_sample=False)
    scheduler.set_timesteps(1000)
    gen = torch.Generator().manual_seed(0)
    z_t, eps = torch.randn(2, 4, 8, 8, generator=gen), torch.randn(2, 4, 8, 8, generator=gen)
    for t in (0, 399, 999):
        expected = scheduler.step(eps, t, z_t).pred_original_sample
        torch.testing.assert_close(predict_x0(z_t, eps, scheduler.alphas_cumprod[t]), expected, rtol=1e-5, atol=1e-5)


def test_denoise_is_one_unet_call_at_t_l_then_the_schedulers_x0(generator):
    scheduler = DDPMScheduler(**arch.SCHEDULER, clip_sample=False)
    scheduler.set_timesteps(1000)
    z_lq = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        eps = generator.unet(z_lq, torch.tensor([399]), encoder_hidden_states=generator.prompt_embeds).sample
        expected = scheduler.step(eps, 399, z_lq).pred_original_sample
        torch.testing.assert_close(generator.denoise(z_lq), expected, rtol=1e-5, atol=1e-5)


def test_only_lora_parameters_train(generator):
    trainable = {name for name, p in generator.named_parameters() if p.requires_grad}
    assert trainable and trainable == set(lora_parameters(generator))
    assert all(name.startswith("unet.") for name in trainable)
    assert all(p.dtype == torch.float32 for p in lora_parameters(generator).values())
    assert not any(p.requires_grad for p in generator.vae.parameters())
    # LoRA sits on every target layer type of the paper's list, in down, mid and up blocks alike.
    lora_layers = {name.split(".lora_")[0] for name in trainable}
    assert any(".attn1.to_q" in n for n in lora_layers) and any(n.endswith("conv_shortcut") for n in lora_layers)
    assert {n.split(".")[1] for n in lora_layers} >= {"down_blocks", "mid_block", "up_blocks"}


def test_fresh_lora_leaves_the_base_unet_unchanged():
    """peft initialises LoRA's B to zero, so a new generator reproduces its base UNet exactly."""
    base = tiny("sd", seed=3)
    generator = OneStepGenerator(tiny("sd", seed=3)).eval()
    z, t = torch.randn(1, 4, 8, 8), torch.tensor([399])
    with torch.no_grad():
        expected = base.unet(z, t, encoder_hidden_states=base.embeds["prompt_embeds"]).sample
        got = generator.unet(z, t, encoder_hidden_states=generator.prompt_embeds).sample
        torch.testing.assert_close(got, expected)
        for p in lora_parameters(generator).values():
            p.add_(0.05 * torch.randn_like(p))
        assert (
            generator.unet(z, t, encoder_hidden_states=generator.prompt_embeds).sample - expected
        ).abs().max() > 1e-4


def test_forward_shapes_ranges_and_gradients(generator):
    lq = torch.rand(2, 3, 64, 48) * 2 - 1
    generator.train()
    sr, z_sr = generator(lq)
    assert sr.shape == lq.shape and z_sr.shape == (2, 4, 8, 6)
    assert sr.min() >= -1 and sr.max() <= 1
    sr.mean().backward()
    grads = {name for name, p in generator.named_parameters() if p.grad is not None}
    assert grads and grads <= set(lora_parameters(generator))
    generator.zero_grad(set_to_none=True)
    generator.eval()
    assert not generator.vae.training


def test_learnable_embedding_is_a_parameter():
    generator = OneStepGenerator(tiny("sd", seed=0), learnable_embedding=True)
    assert isinstance(generator.prompt_embeds, torch.nn.Parameter) and generator.prompt_embeds.requires_grad


@pytest.mark.parametrize("shape", [(1, 3, 60, 64), (1, 1, 64, 64), (3, 64, 64)])
def test_bad_input_shapes_are_refused(generator, shape):
    with pytest.raises(ValueError, match="lq"):
        generator(torch.zeros(shape))


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="timestep"):
        OneStepGenerator(tiny("sd"), timestep=1000)
    with pytest.raises(ValueError, match="rank"):
        OneStepGenerator(tiny("sd"), lora_rank=0)
    with pytest.raises(ValueError, match="VAE"):
        OneStepGenerator(tiny("sd", with_vae=False))


def test_vae_factor_is_read_from_the_vae_config_as_diffusers_pipelines_do():
    """8 for SD's VAE and the random tiny one, 4 for the demo's ×4 VAE; the encoder's own downsamplers agree."""
    from diffusers import AutoencoderKL

    from d3sr.inference.tiled_vae import encoder_factor
    from d3sr.models import architectures as arch

    for config, factor in ((arch.VAE_SD, 8), (arch.TINY_VAE, 8), (arch.DEMO_VAE, 4)):
        assert arch.vae_factor(config) == factor
        with torch.device("meta"):
            vae = AutoencoderKL(**config)
        assert encoder_factor(vae.encoder) == factor
