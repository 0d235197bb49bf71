"""The settings the paper does not state and that change reported numbers are config keys that do what they say."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from d3sr.losses import D3SRLoss
from d3sr.models import OneStepGenerator
from d3sr.models.loading import tiny
from d3sr.models.saved_generator import GeneratorSpec


class DtypeProbe(nn.Module):
    """A stand-in perceptual network that records the dtype its convolution computed in."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.seen = nn.Conv2d(3, 1, 3), None

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        out = self.conv(a) - self.conv(b)
        self.seen = out.dtype
        return out.float().abs().mean((1, 2, 3))


def images() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(2, 3, 16, 16, generator=g) * 2 - 1, torch.rand(2, 3, 16, 16, generator=g) * 2 - 1


def test_mse_range_unit_is_a_quarter_of_signed():
    sr, gt = images()
    signed = D3SRLoss(None, lambda_ea_dists=0).reconstruction(sr, gt)["mse"]
    unit = D3SRLoss(None, lambda_ea_dists=0, mse_range="unit").reconstruction(sr, gt)["mse"]
    torch.testing.assert_close(unit, torch.mean(((sr + 1) / 2 - (gt + 1) / 2) ** 2))
    torch.testing.assert_close(unit * 4, signed)
    with pytest.raises(ValueError, match="loss.mse_range"):
        D3SRLoss(None, lambda_ea_dists=0, mse_range="01")


@pytest.mark.parametrize("fp32, expected", [(True, torch.float32), (False, torch.bfloat16)])
def test_perceptual_network_runs_in_fp32_under_bf16_autocast_by_default(fp32, expected):
    probe = DtypeProbe()
    loss = D3SRLoss(probe, perceptual_fp32=fp32)
    sr, gt = images()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss.reconstruction(sr, gt)
    assert probe.seen == expected


def test_vae_posterior_mode_or_sample_and_it_travels_with_the_saved_generator():
    image = images()[0]
    by_mode = OneStepGenerator(tiny("sd"), lora_rank=4, lora_alpha=4)
    by_sample = OneStepGenerator(tiny("sd"), lora_rank=4, lora_alpha=4, posterior="sample")
    with torch.no_grad():
        assert torch.equal(by_mode.encode(image), by_mode.encode(image))  # deterministic
        torch.manual_seed(0)
        first = by_sample.encode(image)
        assert not torch.equal(first, by_sample.encode(image))  # a fresh draw each call
        assert not torch.equal(first, by_mode.encode(image))
    spec = GeneratorSpec.from_dict(GeneratorSpec.of(by_sample).to_dict(), "test")
    assert spec.posterior == "sample"
    older = {k: v for k, v in GeneratorSpec.of(by_mode).to_dict().items() if k != "posterior"}
    assert GeneratorSpec.from_dict(older, "test").posterior == "mode"  # specs written before the key existed
    with pytest.raises(ValueError, match="model.generator.posterior"):
        OneStepGenerator(tiny("sd"), lora_rank=4, lora_alpha=4, posterior="mean")
