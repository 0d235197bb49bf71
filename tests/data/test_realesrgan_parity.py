"""Parity with Real-ESRGAN's own code (BasicSR's DiffJPEG, F.interpolate(scale_factor=...), USMSharp, the USM batch).

Every reference value here is derived from BasicSR's definitions or written out by hand, not taken from our output.
The plateau β draw is pinned in tests/data/test_kernels.py.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import default_collate

from d3sr.data import RealESRGANDegradation
from d3sr.data.datasets import random_crop
from d3sr.data.degradation import (
    DEGRADATION_RESIZE_MODES,
    JPEG_CHROMA_TABLE,
    JPEG_LUMA_TABLES,
    filter2d,
    interpolate,
    jpeg,
    jpeg_quality_factor,
    quantize,
    resize_by_scale_factor,
)
from d3sr.images import embedded_photo


def make_batch(degradation, images, seeds) -> dict[str, torch.Tensor]:
    samples = [{"gt": g, **degradation.sample(np.random.default_rng(s))} for g, s in zip(images, seeds)]
    return default_collate(samples)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(-10 * torch.log10(((a - b) ** 2).mean()))


# JPEG ---------------------------------------------------------------------------------------------------------------


def test_luma_tables_are_the_ijg_table_and_its_transpose():
    # The IJG table as libjpeg stores it (row = vertical frequency): first row and last column.
    assert JPEG_LUMA_TABLES["libjpeg"][0] == (16, 11, 10, 16, 24, 40, 51, 61)
    assert tuple(row[7] for row in JPEG_LUMA_TABLES["libjpeg"]) == (61, 55, 56, 62, 77, 92, 101, 99)
    # DiffJPEG's `y_table = np.array(...).T`: its first row is the IJG first column, its last row the IJG last column.
    assert JPEG_LUMA_TABLES["diffjpeg"][0] == (16, 12, 14, 14, 18, 24, 49, 72)
    assert JPEG_LUMA_TABLES["diffjpeg"][7] == (61, 55, 56, 62, 77, 92, 101, 99)
    # DiffJPEG transposes its chroma table too; the IJG chroma table is symmetric, so that changes nothing.
    assert JPEG_CHROMA_TABLE == tuple(zip(*JPEG_CHROMA_TABLE))
    # DiffJPEG's quality_to_factor: (5000/q if q < 50 else 200 − 2q) / 100.
    factors = jpeg_quality_factor(torch.tensor([30.0, 50.0, 75.0, 95.0]))
    torch.testing.assert_close(factors, torch.tensor([5 / 3, 1.0, 0.5, 0.1]))
    assert jpeg_quality_factor(torch.tensor([100.0])).item() == pytest.approx(0.01)  # ours: DiffJPEG divides by 0


def dct_basis_image(u: int, v: int, coefficient: float) -> torch.Tensor:
    """A gray (1, 3, 16, 16) image in [0, 1] whose 8×8 luma blocks hold `coefficient` on the one DCT-II basis (u, v).

    JPEG's DCT (DiffJPEG's dct_8x8): C[u, v] = ¼ α(u) α(v) Σ_x Σ_y X[x, y] cos((2x+1)uπ/16) cos((2y+1)vπ/16), x the
    row (so u is the vertical frequency), α(0) = 1/√2, else 1. X = A·cos_u(x)·cos_v(y) has C[u, v] = A·gain with
    gain = ¼ α(u) α(v) S(u) S(v), S(0) = 8, S(k > 0) = 4.
    """
    alpha = [1 / math.sqrt(2)] + [1.0] * 7
    gain = 0.25 * alpha[u] * alpha[v] * (8 if u == 0 else 4) * (8 if v == 0 else 4)
    n = torch.arange(8, dtype=torch.float64)
    pattern = torch.outer(torch.cos((2 * n + 1) * u * math.pi / 16), torch.cos((2 * n + 1) * v * math.pi / 16))
    luma = 128 + coefficient / gain * pattern.repeat(2, 2)
    return (luma / 255).float().expand(1, 3, 16, 16)


@pytest.mark.parametrize(
    ("u", "v", "table", "expected"),
    [
        # Quality 30: factor 5/3. Coefficient 47 at (u=0, v=1), a horizontal cosine: DiffJPEG divides by
        # y_table[0, 1] = IJG[1][0]·5/3 = 12·5/3 = 20 → round(2.35) = 2 → 40; libjpeg by IJG[0][1]·5/3 = 18.33 →
        # round(2.56) = 3 → 55. The vertical cosine (u=1, v=0) swaps the two steps.
        (0, 1, "diffjpeg", 40.0), (0, 1, "libjpeg", 55.0), (1, 0, "diffjpeg", 55.0), (1, 0, "libjpeg", 40.0),
        # Coefficient 170 at (0, 7): DiffJPEG's step IJG[7][0]·5/3 = 72·5/3 = 120 → 1 step → 120; libjpeg's
        # IJG[0][7]·5/3 = 61·5/3 = 101.67 → round(1.67) = 2 steps → 203.33.
        (0, 7, "diffjpeg", 120.0), (0, 7, "libjpeg", 2 * 61 * 5 / 3),
    ],
)  # fmt: skip
def test_jpeg_quantises_each_frequency_with_its_orientation_of_the_table(u, v, table, expected):
    coefficient = 47.0 if (u, v) in ((0, 1), (1, 0)) else 170.0
    out = jpeg(dct_basis_image(u, v, coefficient), torch.tensor([30.0]), table)
    torch.testing.assert_close(out[:, :1].expand(1, 3, 16, 16), out)  # gray in, gray out (chroma quantised to 0)
    torch.testing.assert_close(out, dct_basis_image(u, v, expected), rtol=0, atol=2e-5)
    if table == "diffjpeg":  # the default, as Real-ESRGAN trains
        assert torch.equal(jpeg(dct_basis_image(u, v, coefficient), torch.tensor([30.0])), out)


def test_libjpeg_orientation_is_closer_to_real_jpeg_files():
    """The measured fact behind docs/degradations.md's table (bench/degradation.py --jpeg-tables): vs PIL's JPEG."""
    from PIL import Image

    image = embedded_photo("astronaut")[:, :256, 128:384][None]
    array = (image[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=50)
    real = torch.from_numpy(np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")).copy())
    real = real.permute(2, 0, 1)[None].float() / 255
    image = quantize(image)
    scores = {table: psnr(quantize(jpeg(image, torch.tensor([50.0]), table)), real) for table in JPEG_LUMA_TABLES}
    assert scores["libjpeg"] > scores["diffjpeg"] + 3
    # Both make about as much error as the real codec; they differ in which direction gets the coarse steps.
    for table in JPEG_LUMA_TABLES:
        assert psnr(jpeg(image, torch.tensor([50.0]), table), image) == pytest.approx(psnr(real, image), abs=1.5)


# Resize -------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", DEGRADATION_RESIZE_MODES)
def test_scale_factor_resize_is_basicsrs_stage_1_resize(mode):
    image = torch.rand(2, 3, 37, 45, generator=torch.Generator().manual_seed(0))
    out = resize_by_scale_factor(image, 0.55, mode)
    assert out.shape[-2:] == (20, 24)  # ⌊37·0.55⌋ = ⌊20.35⌋, ⌊45·0.55⌋ = ⌊24.75⌋
    # Real-ESRGAN: `F.interpolate(out, scale_factor=scale, mode=mode)` (align_corners unset, i.e. False).
    assert torch.equal(out, F.interpolate(image, scale_factor=0.55, mode=mode))
    by_size = interpolate(image, (37 * 0.55, 45 * 0.55), mode)
    assert by_size.shape == out.shape  # the same size either way
    assert torch.equal(out, by_size) == (mode == "area")  # area pools the whole image; the others sample a grid


def test_scale_factor_and_size_sample_different_grids():
    """Bilinear of a row ramp returns the source row it samples: (j + ½)/s − ½ by scale factor, (j + ½)·H/H' − ½ by
    size (H = 37, s = 0.55, H' = 20)."""
    ramp = torch.arange(37, dtype=torch.float64)[:, None].expand(37, 45)[None, None]
    by_scale = resize_by_scale_factor(ramp, 0.55, "bilinear")[0, 0, :, 0]
    by_size = interpolate(ramp, (20, 24), "bilinear")[0, 0, :, 0]
    # Rows 0 and 19, by hand: 0.5/0.55 − 0.5 = 0.40909, 19.5/0.55 − 0.5 = 34.95455; 0.5·1.85 − 0.5 = 0.425,
    # 19.5·1.85 − 0.5 = 35.575.
    assert by_scale[[0, 19]].tolist() == pytest.approx([0.409091, 34.954545], abs=1e-6)
    assert by_size[[0, 19]].tolist() == pytest.approx([0.425, 35.575], abs=1e-9)
    with pytest.raises(ValueError, match="leaves no pixels"):
        resize_by_scale_factor(ramp[..., :4, :4], 0.15, "bilinear")


@pytest.mark.parametrize("resize_by", ["size", "scale_factor"])
def test_stage_resizes_follow_real_esrgan(monkeypatch, resize_by):
    """Stage 1 resizes the HR image by s₁ (132·0.55 → ⌊72.6⌋, 104·0.55 → ⌊57.2⌋); stage 2 to Real-ESRGAN's
    `size=(int(ori_h / scale * s₂), int(ori_w / scale * s₂))` = (int(23.1), int(18.2)); the final one to (33, 26)."""
    degradation = RealESRGANDegradation(resize_by=resize_by)
    gt = random_crop(embedded_photo("astronaut"), 132, np.random.default_rng(0))[..., :104]
    batch = make_batch(degradation, [gt], [0])
    batch.update(resize_scale1=torch.tensor([0.55]), resize_scale2=torch.tensor([0.7]))
    calls, original = [], F.interpolate

    def recording_interpolate(image, *args, **kwargs):
        out = original(image, *args, **kwargs)
        calls.append((kwargs.get("size"), kwargs.get("scale_factor"), tuple(out.shape[-2:])))
        return out

    monkeypatch.setattr(F, "interpolate", recording_interpolate)
    degradation(batch)
    stage1 = (None, pytest.approx(0.55), (72, 57)) if resize_by == "scale_factor" else ((72, 57), None, (72, 57))
    assert calls == [stage1, ((23, 18), None, (23, 18)), ((33, 26), None, (33, 26))]


@pytest.mark.parametrize(("mode", "same"), [(0, True), (2, False)])  # area, bicubic
def test_resize_by_reaches_stage_1_only(mode, same):
    gt = random_crop(embedded_photo("coffee"), 132, np.random.default_rng(1))[..., :104]
    outputs = []
    for resize_by in ("size", "scale_factor"):
        degradation = RealESRGANDegradation(resize_by=resize_by)
        batch = make_batch(degradation, [gt], [3])
        batch.update(resize_scale1=torch.tensor([0.55]), resize_mode1=torch.tensor([mode]))
        outputs.append(degradation(batch)["lq"])
    assert torch.equal(outputs[0], outputs[1]) == same


# Blur ---------------------------------------------------------------------------------------------------------------


def test_filter2d_is_basicsrs_filter2D_per_image_kernel_correlation():
    """BasicSR's filter2D: reflect pad by k // 2, then F.conv2d (correlation: the kernel is not flipped), one kernel
    per image shared by its channels. Asymmetric kernels, so a flipped (convolving) kernel would differ."""
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(2, 3, 37, 45, generator=generator)
    kernel = torch.rand(2, 21, 21, generator=generator)
    kernel /= kernel.sum(dim=(-2, -1), keepdim=True)
    padded = F.pad(image, (10,) * 4, mode="reflect")
    expected = torch.cat([F.conv2d(padded[i : i + 1], kernel[i].expand(3, 1, 21, 21), groups=3) for i in range(2)])
    assert torch.equal(filter2d(image, kernel), expected)
    assert not torch.equal(filter2d(image, kernel.flip(-1, -2)), expected)
    # An image not larger than the kernel radius is replicate-padded (reflection needs more pixels than the pad).
    small = image[..., :10, :10]
    expected = torch.cat([F.conv2d(F.pad(small[i : i + 1], (10,) * 4, mode="replicate"),
                                   kernel[i].expand(3, 1, 21, 21), groups=3) for i in range(2)])  # fmt: skip
    assert torch.equal(filter2d(small, kernel), expected)


# USM ----------------------------------------------------------------------------------------------------------------


def basicsr_usm_sharp(image: torch.Tensor, weight: float = 0.5, radius: int = 50, threshold: float = 10):
    """BasicSR's USMSharp written out: K = g gᵀ, g = cv2.getGaussianKernel(51, 0); filter2D = reflect pad + conv."""
    cv2 = pytest.importorskip("cv2")
    size = radius + 1 if radius % 2 == 0 else radius
    g = cv2.getGaussianKernel(size, 0)
    kernel = torch.from_numpy(g @ g.T).to(image.dtype)

    def filter2d(x: torch.Tensor) -> torch.Tensor:
        pad, channels = size // 2, x.shape[1]
        return F.conv2d(F.pad(x, (pad,) * 4, mode="reflect"), kernel.expand(channels, 1, size, size), groups=channels)

    residual = image - filter2d(image)
    soft_mask = filter2d((residual.abs() * 255 > threshold).to(image.dtype))
    sharp = (image + weight * residual).clamp(0, 1)
    return soft_mask * sharp + (1 - soft_mask) * image


def test_usm_batch_keeps_gt_adds_gt_usm_and_degrades_gt_usm():
    """Real-ESRGAN: gt_usm = USMSharp(gt); LQ = degrade(gt_usm); L1/perceptual on gt_usm, the GAN on gt."""
    photos = [random_crop(embedded_photo(name), 128, np.random.default_rng(0)) for name in ("astronaut", "chelsea")]
    sharpened = RealESRGANDegradation(usm={"enabled": True})
    batch = make_batch(sharpened, photos, [5, 6])
    gt = batch["gt"].clone()
    out = sharpened(batch)
    assert set(out) == {"gt", "gt_usm", "lq"}
    assert out["gt"] is batch["gt"] and torch.equal(out["gt"], gt)  # the plain target, bitwise unchanged
    torch.testing.assert_close(out["gt_usm"], basicsr_usm_sharp(gt), rtol=0, atol=1e-5)
    assert (out["gt_usm"] - gt).abs().max() > 0.05  # it does sharpen
    # The LQ is the plain degradation of gt_usm, with the same draws.
    plain = RealESRGANDegradation()
    assert torch.equal(out["lq"], plain({**batch, "gt": out["gt_usm"]})["lq"])
    # Without USM: no gt_usm, and the LQ is made from gt itself.
    without = plain(batch)
    assert "gt_usm" not in without and not torch.equal(without["lq"], out["lq"])
