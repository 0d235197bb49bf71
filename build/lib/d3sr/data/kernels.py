"""Blur kernels of the Real-ESRGAN degradation (Wang et al., ICCVW 2021, Sec. 3.2), drawn per image on the CPU.

Every kernel is a pure NumPy function of its parameters, odd-sized, float64 and normalised to sum 1. Coordinates are
x (column offset) and y (row offset) from the centre; Σ = R(θ) diag(σ_x², σ_y²) R(θ)ᵀ. `sample_kernels` draws one
image's `kernel1`, `kernel2` and `sinc_kernel` (all zero-padded to 21×21) from a `numpy.random.Generator`, with the
same distributions as Real-ESRGAN's `RealESRGANDataset` (BasicSR's `random_mixed_kernels`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import special

KERNEL_TYPES = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")


def mesh_grid(size: int) -> np.ndarray:
    """(size, size, 2) offsets (x, y) from the kernel centre; `size` must be odd."""
    if size < 1 or size % 2 == 0:
        raise ValueError(f"kernel size must be a positive odd number, got {size}")
    axis = np.arange(size, dtype=np.float64) - (size - 1) / 2
    xx, yy = np.meshgrid(axis, axis)
    return np.stack([xx, yy], axis=-1)


def sigma_matrix(sigma_x: float, sigma_y: float, theta: float) -> np.ndarray:
    """Covariance Σ = R(θ) diag(σ_x², σ_y²) R(θ)ᵀ."""
    rotation = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    return rotation @ np.diag([sigma_x**2, sigma_y**2]) @ rotation.T


def mahalanobis(size: int, sigma_x: float, sigma_y: float, theta: float) -> np.ndarray:
    """(size, size) squared Mahalanobis distance xᵀ Σ⁻¹ x of every kernel tap."""
    grid = mesh_grid(size)
    inverse = np.linalg.inv(sigma_matrix(sigma_x, sigma_y, theta))
    return np.einsum("hwi,ij,hwj->hw", grid, inverse, grid)


def normalize(kernel: np.ndarray) -> np.ndarray:
    """kernel / Σ kernel."""
    return kernel / kernel.sum()


def gaussian_kernel(size: int, sigma_x: float, sigma_y: float | None = None, theta: float = 0.0) -> np.ndarray:
    """Bivariate Gaussian k(x) ∝ exp(−½ xᵀΣ⁻¹x); isotropic when sigma_y is None (Real-ESRGAN Sec. 3.2)."""
    sigma_y = sigma_x if sigma_y is None else sigma_y
    return normalize(np.exp(-0.5 * mahalanobis(size, sigma_x, sigma_y, theta)))


def generalized_gaussian_kernel(
    size: int, sigma_x: float, sigma_y: float | None = None, theta: float = 0.0, beta: float = 1.0
) -> np.ndarray:
    """Generalized Gaussian k(x) ∝ exp(−½ (xᵀΣ⁻¹x)^β) (Real-ESRGAN Sec. 3.2); β = 1 is the Gaussian."""
    sigma_y = sigma_x if sigma_y is None else sigma_y
    return normalize(np.exp(-0.5 * mahalanobis(size, sigma_x, sigma_y, theta) ** beta))


def plateau_kernel(
    size: int, sigma_x: float, sigma_y: float | None = None, theta: float = 0.0, beta: float = 1.0
) -> np.ndarray:
    """Plateau-shaped k(x) ∝ 1 / (1 + (xᵀΣ⁻¹x)^β) (Real-ESRGAN Sec. 3.2)."""
    sigma_y = sigma_x if sigma_y is None else sigma_y
    return normalize(1.0 / (1.0 + mahalanobis(size, sigma_x, sigma_y, theta) ** beta))


def sinc_kernel(size: int, cutoff: float) -> np.ndarray:
    """2-D circular low-pass (sinc) k(r) ∝ ω_c J₁(ω_c r) / (2π r), k(0) = ω_c² / (4π) (Real-ESRGAN Sec. 3.3)."""
    radius = np.linalg.norm(mesh_grid(size), axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        kernel = cutoff * special.j1(cutoff * radius) / (2 * np.pi * radius)
    kernel[radius == 0] = cutoff**2 / (4 * np.pi)
    return normalize(kernel)


def pad_kernel(kernel: np.ndarray, size: int = 21) -> np.ndarray:
    """Zero-pad an odd (k, k) kernel to (size, size), keeping it centred."""
    pad = (size - kernel.shape[0]) // 2
    if pad < 0 or kernel.shape[0] != kernel.shape[1] or kernel.shape[0] % 2 != size % 2:
        raise ValueError(f"cannot pad a {kernel.shape} kernel to {size}×{size}")
    return np.pad(kernel, pad)


def to_float32(kernel: np.ndarray) -> np.ndarray:
    """float32 copy with taps below float32's normal range set to 0 (subnormal weights make CPU convolutions crawl)."""
    kernel = kernel.astype(np.float32)
    kernel[np.abs(kernel) < np.finfo(np.float32).tiny] = 0
    return kernel


def pulse_kernel(size: int = 21) -> np.ndarray:
    """The identity kernel: 1 at the centre, 0 elsewhere."""
    kernel = np.zeros((size, size))
    kernel[size // 2, size // 2] = 1.0
    return kernel


def odd_sizes(kernel_range: Sequence[int]) -> list[int]:
    """The odd sizes in [min, max] of `kernel_range`, e.g. (7, 21) → 7, 9, …, 21."""
    low, high = int(kernel_range[0]), int(kernel_range[1])
    if low % 2 == 0 or high % 2 == 0 or not 1 <= low <= high:
        raise ValueError(f"degradation.kernel_range must be two odd sizes min <= max, got {list(kernel_range)}")
    return list(range(low, high + 1, 2))


def two_sided_beta(rng: np.random.Generator, beta_range: Sequence[float]) -> float:
    """β ~ U(β_min, 1) or U(1, β_max) with probability ½ each (BasicSR's shape draw)."""
    return float(rng.uniform(beta_range[0], 1) if rng.random() < 0.5 else rng.uniform(1, beta_range[1]))


def random_mixed_kernel(
    rng: np.random.Generator,
    size: int,
    kernel_list: Sequence[str],
    kernel_prob: Sequence[float],
    sigma_range: Sequence[float],
    betag_range: Sequence[float],
    betap_range: Sequence[float],
) -> np.ndarray:
    """One (size, size) kernel: its type drawn from kernel_list with kernel_prob, then its shape parameters.

    Both shape exponents are drawn two-sided (`two_sided_beta`), as BasicSR's random_bivariate_generalized_Gaussian
    and random_bivariate_plateau do: with betap_range [1, 2] the plateau has β = 1 half the time.
    """
    kind = kernel_list[int(rng.choice(len(kernel_list), p=np.asarray(kernel_prob, dtype=np.float64)))]
    # All shape parameters are drawn whatever the type; the type decides which are used.
    sigma_x, sigma_y = rng.uniform(*sigma_range), rng.uniform(*sigma_range)
    theta = rng.uniform(-math.pi, math.pi)
    beta_g, beta_p = two_sided_beta(rng, betag_range), two_sided_beta(rng, betap_range)
    if kind.endswith("_iso") or kind == "iso":
        sigma_y, theta = sigma_x, 0.0
    if kind in ("iso", "aniso"):
        return gaussian_kernel(size, sigma_x, sigma_y, theta)
    if kind.startswith("generalized"):
        return generalized_gaussian_kernel(size, sigma_x, sigma_y, theta, beta_g)
    if kind.startswith("plateau"):
        return plateau_kernel(size, sigma_x, sigma_y, theta, beta_p)
    raise ValueError(f"degradation kernel type {kind!r} is not valid; choose from {', '.join(KERNEL_TYPES)}")


def random_blur_kernel(
    rng: np.random.Generator,
    kernel_list: Sequence[str],
    kernel_prob: Sequence[float],
    sinc_prob: float,
    sigma_range: Sequence[float],
    betag_range: Sequence[float],
    betap_range: Sequence[float],
    kernel_range: Sequence[int] = (7, 21),
) -> np.ndarray:
    """A stage's blur kernel, zero-padded to max(kernel_range): a sinc with prob. sinc_prob, else a mixed kernel.

    Size uniform over the odd sizes in kernel_range; sinc cutoff ω_c ~ U(π/3, π) if size < 13 else U(π/5, π).
    """
    sizes = odd_sizes(kernel_range)
    size = int(rng.choice(sizes))
    use_sinc = rng.random() < sinc_prob
    cutoff = rng.uniform(math.pi / 3, math.pi) if size < 13 else rng.uniform(math.pi / 5, math.pi)
    if use_sinc:
        kernel = sinc_kernel(size, cutoff)
    else:
        kernel = random_mixed_kernel(rng, size, kernel_list, kernel_prob, sigma_range, betag_range, betap_range)
    return pad_kernel(kernel, sizes[-1])


def random_final_sinc_kernel(
    rng: np.random.Generator, final_sinc_prob: float, kernel_range: Sequence[int] = (7, 21)
) -> np.ndarray:
    """The final sinc kernel (size uniform, ω_c ~ U(π/3, π)) with prob. final_sinc_prob, else the identity pulse."""
    sizes = odd_sizes(kernel_range)
    size, cutoff = int(rng.choice(sizes)), rng.uniform(math.pi / 3, math.pi)
    if rng.random() < final_sinc_prob:
        return pad_kernel(sinc_kernel(size, cutoff), sizes[-1])
    return pulse_kernel(sizes[-1])


def sample_kernels(
    rng: np.random.Generator,
    blur1: Mapping[str, Any],
    blur2: Mapping[str, Any],
    final_sinc_prob: float,
    kernel_range: Sequence[int] = (7, 21),
) -> dict[str, np.ndarray]:
    """One image's kernels {'kernel1', 'kernel2', 'sinc_kernel'}, each (21, 21) float32 summing to 1.

    blur1, blur2: each stage's kernel distribution, the keyword arguments of `random_blur_kernel` (kernel_list,
    kernel_prob, sinc_prob, sigma_range, betag_range, betap_range), e.g. `dataclasses.asdict` of a BlurSettings.
    """
    kernel1 = random_blur_kernel(rng, **blur1, kernel_range=kernel_range)
    kernel2 = random_blur_kernel(rng, **blur2, kernel_range=kernel_range)
    final = random_final_sinc_kernel(rng, final_sinc_prob, kernel_range)
    kernels = {"kernel1": kernel1, "kernel2": kernel2, "sinc_kernel": final}
    return {name: to_float32(kernel) for name, kernel in kernels.items()}
