"""Colour correction: AdaIN transfers channel statistics, the wavelet fix transfers the low-frequency band,
back-projection makes the output consistent with the LQ."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from d3sr.images import downscale, upsample_lq
from d3sr.inference.color_fix import adain, backproject, color_fix, wavelet, wavelet_decomposition
from d3sr.psnr_ssim import color_error, psnr_y


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


def test_backprojection_makes_the_output_consistent_with_the_lq_keeps_the_luma_detail_and_takes_the_lq_chroma():
    from kornia.color import rgb_to_ycbcr

    from d3sr.images import embedded_photo

    hr = embedded_photo("chelsea")[None, :, :128, :128]
    lq = downscale(hr)
    # An SR with a regional colour cast (what the demo generator's one step adds), luma detail of its own (grain) and
    # chroma detail of its own (tint).
    g = torch.Generator().manual_seed(0)
    grain, tint = 0.05 * torch.randn(1, 1, 128, 128, generator=g), 0.03 * torch.randn(1, 3, 128, 128, generator=g)
    ramp = torch.linspace(0, 1, 128).view(1, 1, 1, 128)
    sr = (hr + torch.tensor([0.06, -0.04, 0.02]).view(1, 3, 1, 1) * ramp + grain + tint).clamp(0, 1)
    fixed = backproject(sr, lq)
    before, after = (downscale(sr) - lq).abs().mean(), (downscale(fixed) - lq).abs().mean()
    assert after < 0.1 * before  # measured 0.022 -> 0.0007
    assert color_error(fixed, hr) < color_error(upsample_lq(lq), hr) < 0.1 * color_error(sr, hr)  # 0.096 < 0.11 < 6.7

    def above_lq_band(image):  # what the LQ does not hold
        return image - F.interpolate(downscale(image), scale_factor=4, mode="bicubic")

    assert psnr_y(above_lq_band(fixed) + 0.5, above_lq_band(sr) + 0.5) > 40  # luma detail kept: measured 48.9 dB
    chroma_detail = [above_lq_band(rgb_to_ycbcr(image)[:, 1:]).abs().mean() for image in (sr, fixed)]
    assert chroma_detail[1] < 0.1 * chroma_detail[0]  # the SR's own chroma detail dropped: measured 0.015 -> 0.0007
    torch.testing.assert_close(color_fix(sr, lq, "backproject"), fixed.clamp(0, 1))


@pytest.mark.parametrize("method", ["adain", "wavelet", "backproject"])
def test_fix_moves_the_sr_mean_colour_towards_the_lq(pipe, method):
    from d3sr.images import embedded_lq
    from d3sr.images import upsample_lq as upsample

    lq = embedded_lq("chelsea")[None, :, :32, :32]
    target = upsample(lq).mean((2, 3))
    raw = pipe.super_resolve(lq, color_fix="none").mean((2, 3))
    fixed = pipe.super_resolve(lq, color_fix=method).mean((2, 3))
    assert (fixed - target).abs().max() < 0.5 * (raw - target).abs().max()


def test_none_is_identity_and_bad_names_and_sizes_fail(images):
    sr, _ = images
    lq = downscale(sr)
    assert color_fix(sr, lq, "none") is sr
    assert 0 <= color_fix(sr, lq, "adain").min() and color_fix(sr, lq, "adain").max() <= 1
    with pytest.raises(ValueError, match="color_fix"):
        color_fix(sr, lq, "histogram")
    with pytest.raises(ValueError, match="×4 the size of lq"):
        color_fix(sr, sr, "adain")
