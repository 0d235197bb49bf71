"""Blur kernels against their closed-form definitions (Real-ESRGAN Sec. 3), and the per-image kernel sampler."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special

from d3sr.data import kernels as K

# Real-ESRGAN set A: each stage's kernel distribution (random_blur_kernel's arguments) and the final sinc probability.
BLUR1 = dict(kernel_list=K.KERNEL_TYPES, kernel_prob=(0.45, 0.25, 0.12, 0.03, 0.12, 0.03), sinc_prob=0.1,
             sigma_range=(0.2, 3.0), betag_range=(0.5, 4.0), betap_range=(1.0, 2.0))  # fmt: skip
SET_A = dict(blur1=BLUR1, blur2={**BLUR1, "sigma_range": (0.2, 1.5)}, final_sinc_prob=0.8)


def quadratic_form(size: int, sigma_x: float, sigma_y: float, theta: float) -> np.ndarray:
    """xᵀΣ⁻¹x written out: rotate each tap by −θ into the kernel's axes, then (u/σ_x)² + (v/σ_y)²."""
    c = (size - 1) / 2
    rows, cols = np.mgrid[0:size, 0:size]
    x, y = cols - c, rows - c
    u = math.cos(theta) * x + math.sin(theta) * y
    v = -math.sin(theta) * x + math.cos(theta) * y
    return (u / sigma_x) ** 2 + (v / sigma_y) ** 2


def test_gaussian_matches_the_density_and_is_symmetric():
    kernel = K.gaussian_kernel(21, 2.0)
    rows, cols = np.mgrid[-10:11, -10:11]
    expected = np.exp(-(rows**2 + cols**2) / (2 * 2.0**2))
    np.testing.assert_allclose(kernel, expected / expected.sum(), rtol=1e-12)
    assert kernel.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(kernel, kernel.T)
    np.testing.assert_allclose(kernel, kernel[::-1, ::-1])
    assert kernel.argmax() == 10 * 21 + 10


def test_anisotropic_kernels_rotate_with_theta():
    sigma_x, sigma_y, theta = 3.0, 1.0, 0.6
    kernel = K.gaussian_kernel(21, sigma_x, sigma_y, theta)
    expected = np.exp(-0.5 * quadratic_form(21, sigma_x, sigma_y, theta))
    np.testing.assert_allclose(kernel, expected / expected.sum(), rtol=1e-10)
    # A quarter turn of the rotation is the θ = 0 kernel turned by 90° on the pixel grid.
    np.testing.assert_allclose(K.gaussian_kernel(21, sigma_x, sigma_y, math.pi / 2),
                               np.rot90(K.gaussian_kernel(21, sigma_x, sigma_y, 0.0)), atol=1e-15)  # fmt: skip
    # Point symmetry: k(x) = k(−x) for every θ.
    np.testing.assert_allclose(kernel, kernel[::-1, ::-1], atol=1e-15)
    assert K.sigma_matrix(sigma_x, sigma_y, theta) == pytest.approx(K.sigma_matrix(sigma_x, sigma_y, theta + math.pi))


def test_generalized_gaussian_at_beta_one_is_the_gaussian_and_follows_its_formula():
    np.testing.assert_allclose(K.generalized_gaussian_kernel(21, 2.5, 1.2, 0.3, beta=1.0),
                               K.gaussian_kernel(21, 2.5, 1.2, 0.3), rtol=1e-12)  # fmt: skip
    beta = 2.0
    kernel = K.generalized_gaussian_kernel(15, 2.5, 1.2, 0.3, beta=beta)
    expected = np.exp(-0.5 * quadratic_form(15, 2.5, 1.2, 0.3) ** beta)
    np.testing.assert_allclose(kernel, expected / expected.sum(), rtol=1e-10)
    # Larger β: flatter top, faster fall-off (more mass near the centre than far away, relative to β = 1).
    assert kernel.sum() == pytest.approx(1.0)


def test_plateau_follows_its_formula():
    beta = 1.5
    kernel = K.plateau_kernel(21, 2.0, 1.0, -1.1, beta=beta)
    expected = 1 / (1 + quadratic_form(21, 2.0, 1.0, -1.1) ** beta)
    np.testing.assert_allclose(kernel, expected / expected.sum(), rtol=1e-10)
    iso = K.plateau_kernel(11, 1.5, beta=1.0)
    rows, cols = np.mgrid[-5:6, -5:6]
    expected = 1 / (1 + (rows**2 + cols**2) / 1.5**2)
    np.testing.assert_allclose(iso, expected / expected.sum(), rtol=1e-12)


def test_sinc_is_the_circular_lowpass_with_bessel_j1():
    cutoff, size = 2.0, 13
    kernel = K.sinc_kernel(size, cutoff)
    rows, cols = np.mgrid[-6:7, -6:7]
    r = np.hypot(rows, cols)
    expected = np.where(
        r == 0,
        cutoff**2 / (4 * np.pi),
        cutoff * special.j1(cutoff * np.maximum(r, 1e-12)) / (2 * np.pi * np.maximum(r, 1e-12)),
    )
    np.testing.assert_allclose(kernel, expected / expected.sum(), rtol=1e-10)
    np.testing.assert_allclose(kernel, kernel.T)
    assert kernel.sum() == pytest.approx(1.0) and (kernel < 0).any()  # ringing lobes
    # The centre value is the r → 0 limit of the formula.
    tiny = 1e-6
    assert cutoff * special.j1(cutoff * tiny) / (2 * np.pi * tiny) == pytest.approx(cutoff**2 / (4 * np.pi))


def test_padding_pulse_and_sizes():
    padded = K.pad_kernel(K.gaussian_kernel(7, 1.0), 21)
    assert padded.shape == (21, 21) and padded[:7].sum() == 0 and padded.sum() == pytest.approx(1.0)
    np.testing.assert_array_equal(padded[7:14, 7:14], K.gaussian_kernel(7, 1.0))
    pulse = K.pulse_kernel(21)
    assert pulse.sum() == 1 and pulse[10, 10] == 1
    assert K.odd_sizes((7, 21)) == [7, 9, 11, 13, 15, 17, 19, 21]
    with pytest.raises(ValueError, match="odd"):
        K.mesh_grid(8)
    with pytest.raises(ValueError, match="kernel_range"):
        K.odd_sizes((6, 21))


def test_sampler_draws_normalised_21x21_kernels_deterministically():
    draws = [K.sample_kernels(np.random.default_rng(i), **SET_A) for i in range(200)]
    for kernels in draws:
        assert set(kernels) == {"kernel1", "kernel2", "sinc_kernel"}
        for kernel in kernels.values():
            assert kernel.shape == (21, 21) and kernel.dtype == np.float32
            assert kernel.sum() == pytest.approx(1.0, abs=1e-5)
            np.testing.assert_allclose(kernel, kernel[::-1, ::-1], atol=1e-7)
    # Sizes vary (zero borders; narrow Gaussians also underflow to 0 in float32 before their border), and the
    # final sinc is skipped ~20% of the time (identity pulse).
    supports = {int((np.abs(d["kernel1"]).sum(0) > 0).sum()) for d in draws}
    assert supports <= set(range(1, 22, 2)) and {15, 17, 19, 21} <= supports
    pulses = sum(bool(d["sinc_kernel"][10, 10] == 1) for d in draws)
    assert 20 <= pulses <= 60
    again = K.sample_kernels(np.random.default_rng(3), **SET_A)
    for name in again:
        np.testing.assert_array_equal(again[name], draws[3][name])


def test_shape_exponents_are_drawn_two_sided_like_basicsr():
    """β ~ U(β_min, 1) or U(1, β_max) with probability ½ each, for the plateau as for the generalized Gaussian.

    BasicSR's random_bivariate_plateau (like random_bivariate_generalized_Gaussian): `if np.random.uniform() < 0.5:
    beta = np.random.uniform(beta_range[0], 1) else: beta = np.random.uniform(1, beta_range[1])`. With betap_range
    [1, 2] the first branch is U(1, 1), the point β = 1, and the second hits 1 with probability 0, so
    P(β = 1) = ½ exactly; E[β] = ½·1 + ½·1.5 = 1.25, P(β ≤ b) = ½ + ½(b − 1) on [1, 2]. A one-sided U(1, 2) draw
    would give P(β = 1) = 0 and E[β] = 1.5.
    """
    rng = np.random.default_rng(0)
    betas = np.array([K.two_sided_beta(rng, (1.0, 2.0)) for _ in range(4000)])
    assert 1874 <= (betas == 1.0).sum() <= 2126  # Binomial(4000, ½): mean 2000, s.d. 31.6; ±4 s.d.
    assert betas.mean() == pytest.approx(1.25, abs=0.02)  # s.d. of the mean: √(5/3 − 1.25²)/√4000 = 0.005
    assert (betas <= 1.5).mean() == pytest.approx(0.75, abs=0.03)
    assert betas.min() == 1.0 and betas.max() <= 2.0
    # betag_range [0.5, 4]: P(β < 1) = ½, E[β] = ½·0.75 + ½·2.5 = 1.625.
    betas = np.array([K.two_sided_beta(rng, (0.5, 4.0)) for _ in range(4000)])
    assert (betas < 1).mean() == pytest.approx(0.5, abs=0.04) and betas.min() >= 0.5 and betas.max() <= 4
    assert betas.mean() == pytest.approx(1.625, abs=0.07)  # s.d. of the mean: √(1.15/4000) = 0.017
    # Through the sampler: with σ fixed, β alone shapes the kernel, so half the plateau kernels are the β = 1 one.
    beta_one = K.plateau_kernel(11, 1.5, beta=1.0)
    draws = [K.random_mixed_kernel(np.random.default_rng(seed), 11, ["plateau_iso"], [1.0], (1.5, 1.5), (0.5, 4),
                                   (1, 2)) for seed in range(400)]  # fmt: skip
    at_one = sum(np.allclose(kernel, beta_one, rtol=1e-12, atol=0) for kernel in draws)
    assert 160 <= at_one <= 240  # Binomial(400, ½): mean 200, s.d. 10


def test_sampler_rejects_unknown_kernel_types():
    with pytest.raises(ValueError, match="kernel type 'box'"):
        K.random_mixed_kernel(np.random.default_rng(0), 7, ["box"], [1.0], (1, 2), (0.5, 4), (1, 2))
