"""Colour correction: AdaIN transfers channel statistics, the wavelet fix transfers the low-frequency band."""

from __future__ import annotations

import pytest
import torch

from d3sr.inference.color_fix import adain, color_fix, wavelet, wavelet_decomposition


@pytest.fixture
def images():
    g = torch.Generator().manual_seed(0)
    sr = torch.rand(2, 3, 48, 40, generator=g) * 0.5 + torch.tensor([0.4, 0.1, 0.3]).view(1, 3, 1, 1)
    reference = torch.rand(2, 3, 48, 40, generator=g) * 0.3 + 0.2
    return sr, reference


def test_adain_gives_the_reference_channel_mean_and_std(images):
    sr, reference = images
    fixed = adain(sr, reference)
    torch.testing.assert_close(fixed.mean((2, 3)), reference.mean((2, 3)), rtol=0, atol=1e-5)
    torch.testing.assert_close(fixed.std((2, 3)), reference.std((2, 3)), rtol=1e-3, atol=1e-4)


def test_wavelet_bands_sum_to_the_image_and_the_fix_takes_the_reference_low_band(images):
    sr, reference = images
    high, low = wavelet_decomposition(sr)
    torch.testing.assert_close(high + low, sr)
    fixed_high, fixed_low = wavelet_decomposition(wavelet(sr, reference))
    torch.testing.assert_close(wavelet_decomposition(reference)[1], fixed_low, rtol=0, atol=0.05)
    assert (fixed_high - high).abs().mean() < (fixed_low - low).abs().mean()


@pytest.mark.parametrize("method", ["adain", "wavelet"])
def test_fix_moves_the_sr_mean_colour_towards_the_lq(pipe, method):
    from d3sr.images import embedded_lq
    from d3sr.images import upsample_lq as upsample

    lq = embedded_lq("chelsea")[None, :, :32, :32]
    target = upsample(lq).mean((2, 3))
    raw = pipe.super_resolve(lq, color_fix="none").mean((2, 3))
    fixed = pipe.super_resolve(lq, color_fix=method).mean((2, 3))
    assert (fixed - target).abs().max() < 0.5 * (raw - target).abs().max()


def test_none_is_identity_and_bad_names_fail(images):
    sr, reference = images
    assert color_fix(sr, reference, "none") is sr
    assert 0 <= color_fix(sr, reference, "adain").min() and color_fix(sr, reference, "adain").max() <= 1
    with pytest.raises(ValueError, match="color_fix"):
        color_fix(sr, reference, "histogram")
