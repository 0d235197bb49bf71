"""Parameter and MAC counts of the full-size networks (meta device) against independent sums and the paper."""

from __future__ import annotations

import pytest
import torch

from d3sr.evaluation import model_complexity
from d3sr.models.loading import meta
from d3sr.models.lora import LORA_TARGETS


def lora_sum(unet: torch.nn.Module, targets, rank: int = 16, under=("",)) -> int:
    """LoRA parameters peft adds to the layers named `targets`: r·(in+out) per Linear, r·in·k·k + out·r per Conv2d."""
    total = 0
    for name, layer in unet.named_modules():
        if not name.startswith(under) or not any(name == t or name.endswith("." + t) for t in targets):
            continue
        if isinstance(layer, torch.nn.Linear):
            total += rank * (layer.in_features + layer.out_features)
        elif isinstance(layer, torch.nn.Conv2d):
            total += rank * layer.in_channels * layer.kernel_size[0] * layer.kernel_size[1] + layer.out_channels * rank
    return total


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_generator_parameters_match_the_architecture_and_the_paper():
    counts = model_complexity.generator_params()
    fresh = meta("sd21")
    assert counts.parts["unet"] == n_params(fresh.unet) == 865_910_724  # SD 2.1-base UNet
    assert counts.parts["vae"] == n_params(fresh.vae) == 83_653_863  # SD VAE
    assert counts.lora == counts.trainable == lora_sum(fresh.unet, LORA_TARGETS)
    assert counts.total == counts.parts["unet"] + counts.parts["vae"] + counts.lora
    assert counts.total / 1e6 == pytest.approx(966.3, abs=1.0)  # paper, Table 3


def test_defaults_are_the_configs(compose):
    # The complexity command and bench/ count the networks with model_complexity.py's defaults: the configured ones.
    generator = compose().model.generator
    assert tuple(generator.lora_targets) == LORA_TARGETS
    assert (generator.lora_rank, generator.lora_alpha, generator.timestep) == (16, 16, 399)
    for arch in ("sdxl", "sd21", "sd15"):
        disc = compose([f"model/discriminator={arch}"]).model.discriminator
        assert tuple(disc.lora_targets) == LORA_TARGETS
        assert (disc.lora_rank, disc.lora_alpha, disc.head_hidden) == (16, 16, 512)


@pytest.mark.parametrize("arch", ["sdxl", "sd21", "sd15"])
def test_discriminator_parameters_are_down_and_mid_blocks_plus_lora_and_head(arch):
    counts = model_complexity.discriminator_params(arch)
    fresh = meta(arch, with_vae=False).unet
    dropped = sum(n_params(getattr(fresh, n)) for n in ("up_blocks", "conv_norm_out", "conv_out"))
    assert counts.parts["unet"] == n_params(fresh) - dropped
    lora = lora_sum(fresh, LORA_TARGETS, under=("down_blocks", "mid_block"))
    assert counts.lora == lora > 0
    assert counts.parts["head"] == 2 * 1280 + (1280 * 512 + 512) + (512 + 1)
    assert counts.trainable == counts.lora + counts.parts["head"]


def test_generator_macs_at_512():
    macs = model_complexity.generator_macs(512)
    # Conv + linear layers reproduce the paper's 2,132 G; attention products add about 97 G on top.
    assert macs.conv_linear / 1e9 == pytest.approx(2132, rel=0.01)
    assert macs.total == macs.conv_linear + macs.attention and 50e9 < macs.attention < 150e9
    parts = macs.parts
    assert sum(parts.values()) == pytest.approx(macs.total, rel=0.001)  # the rest: the VAE's 1×1 quant convs
    assert parts["vae.decoder"] > parts["vae.encoder"] > parts["unet"] > macs.lora > 0
    # The UNet's input convolution alone: 64² positions × 320 outputs × 4·3·3 inputs.
    assert parts["unet"] > 64 * 64 * 320 * 4 * 9
