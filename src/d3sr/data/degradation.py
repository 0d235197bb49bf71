"""Degradations that turn a batch of HQ crops into LQ inputs, on the batch's device (BasicSR-style split).

Every degradation has the same two halves:
- `sample(rng) -> dict[str, Tensor]`: per-image random parameters, drawn on the CPU in the dataset workers from the
  sample's own `numpy.random.Generator` (kernels, scales, noise seeds, ...). Collated into the batch.
- `__call__(batch) -> batch`: batched, no-grad, on the device (`SRDataModule.on_after_batch_transfer`); reads
  `gt` (B, 3, H, W) in [0, 1] and the sampled parameters, adds `lq` (B, 3, H/scale, W/scale) in [0, 1], 8-bit
  quantised, and drops the sampled parameters; with USM it also adds `gt_usm`, the sharpened target (`gt` itself is
  never changed). The generator's input is made from this small `lq` by `d3sr.images.generator_input`, the one
  owner of that contract.
Determinism comes from the sampled parameters alone: no global RNG is used on the device side.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import InitVar, asdict, dataclass, fields, is_dataclass
from typing import Any, TypeVar

import kornia
import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch.utils.data import default_collate

from d3sr.commands import CONFIG_DIR
from d3sr.data.kernels import KERNEL_TYPES, odd_sizes, sample_kernels
from d3sr.errors import ConfigError
from d3sr.images import downscale
from d3sr.options import check_choice, check_positive


def quantize(image: torch.Tensor) -> torch.Tensor:
    """8-bit quantisation: round(x·255)/255, clamped to [0, 1]."""
    return (image.clamp(0, 1) * 255).round() / 255


def check_scale(scale: int) -> int:
    """`scale` as an int >= 1, else ConfigError naming degradation.scale."""
    if int(scale) != scale or scale < 1:
        raise ConfigError(f"degradation.scale must be an integer >= 1, got {scale!r}")
    return int(scale)


def check_divisible(gt: torch.Tensor, scale: int) -> tuple[int, int]:
    """The LQ size (H/scale, W/scale) of `gt` (..., H, W), else ValueError when H or W is not a multiple of scale."""
    height, width = gt.shape[-2:]
    if height % scale or width % scale:
        raise ValueError(f"gt size {height}×{width} is not divisible by the scale {scale}")
    return height // scale, width // scale


class BicubicDegradation:
    """Classic ×scale bicubic down-sampling (antialiased, `d3sr.images.downscale`), 8-bit quantised: clean SR."""

    def __init__(self, scale: int = 4) -> None:
        self.scale = check_scale(scale)

    def sample(self, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """No per-image parameters."""
        return {}

    @torch.no_grad()
    def __call__(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """`batch` with `lq` (B, 3, H/scale, W/scale) in [0, 1] added."""
        check_divisible(batch["gt"], self.scale)
        return {**batch, "lq": quantize(downscale(batch["gt"], self.scale))}


# ---------------------------------------------------------------------------------------------------------------------
# Real-ESRGAN second-order degradation.

DEGRADATION_RESIZE_MODES = ("area", "bilinear", "bicubic")  # Real-ESRGAN draws each resize mode from these
RESIZE_BY = ("size", "scale_factor")  # how the stage-1 random resize samples: `interpolate` / `resize_by_scale_factor`
STAGE_KEYS = ("blur", "resize_scale", "resize_mode", "gaussian_noise", "noise_sigma", "poisson_scale", "gray_noise",
              "jpeg_quality")  # fmt: skip
PARAM_KEYS = (
    "kernel1", "kernel2", "sinc_kernel", *(f"{k}1" for k in STAGE_KEYS), *(f"{k}2" for k in STAGE_KEYS),
    "final_resize_first", "final_resize_mode", "no_degradation", "noise_seed",
)  # fmt: skip


def border_type(image: torch.Tensor, kernel_size: int) -> str:
    """BasicSR's 'reflect' padding for a kernel_size filter of (..., H, W); 'replicate' when H or W is not larger than
    the kernel radius (reflection needs more pixels than the pad)."""
    return "reflect" if kernel_size // 2 < min(image.shape[-2:]) else "replicate"


def filter2d(image: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Correlate each image of (B, C, H, W) with its own (B, k, k) kernel (odd k), padded by `border_type`.

    BasicSR's filter2D (reflect pad, then F.conv2d: correlation, the kernel not flipped) is kornia's filter2d with
    its default behaviour='corr' (tests/data/test_realesrgan_parity.py checks the two agree exactly).
    """
    return kornia.filters.filter2d(image, kernel, border_type=border_type(image, kernel.shape[-1]))


def crop_kernel(kernel: torch.Tensor, size: int) -> torch.Tensor:
    """The central (size, size) taps of a zero-padded (..., k, k) kernel."""
    start = (kernel.shape[-1] - size) // 2
    return kernel[..., start : start + size, start : start + size]


def interpolate(image: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """`F.interpolate` to `size` without antialiasing, like Real-ESRGAN (the aliasing is part of the degradation)."""
    check_choice("degradation resize mode", mode, DEGRADATION_RESIZE_MODES)
    size = (max(1, int(size[0])), max(1, int(size[1])))
    kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    return F.interpolate(image, size=size, mode=mode, **kwargs)


def resize_by_scale_factor(image: torch.Tensor, scale: float, mode: str) -> torch.Tensor:
    """BasicSR's stage-1 resize, `F.interpolate(image, scale_factor=scale, mode=mode)`, without antialiasing.

    The output is ⌊H·s⌋ × ⌊W·s⌋ (as `interpolate` to (H·s, W·s) gives), but bilinear/bicubic output pixel i samples the
    source at (i + ½)/s − ½, the grid of s itself, not (i + ½)·H/⌊H·s⌋ − ½: the last (H·s − ⌊H·s⌋)/s source pixels are
    dropped and the rest is later stretched to the LQ size, up to 1/s HR pixels of LQ/GT misalignment at the far edge.
    Area resizing averages over the whole image either way.
    """
    check_choice("degradation resize mode", mode, DEGRADATION_RESIZE_MODES)
    height, width = image.shape[-2:]
    if math.floor(height * scale) < 1 or math.floor(width * scale) < 1:
        raise ValueError(f"resizing a {height}×{width} image by scale_factor={scale} leaves no pixels")
    kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    return F.interpolate(image, scale_factor=float(scale), mode=mode, **kwargs)


def gaussian_noise(image: torch.Tensor, sigma: float, gray: bool, generator: torch.Generator) -> torch.Tensor:
    """Additive Gaussian noise N(0, σ²) for (1, C, H, W) in [0, 1]; `gray`: one noise map shared by all channels."""
    _, channels, height, width = image.shape
    shape = (1, 1 if gray else channels, height, width)
    return torch.randn(shape, generator=generator, device=image.device, dtype=image.dtype) * sigma


def poisson_noise(image: torch.Tensor, scale: float, gray: bool, generator: torch.Generator) -> torch.Tensor:
    """Poisson (shot) noise of (1, C, H, W) in [0, 1] (BasicSR's generate_poisson_noise_pt).

    The photon count per unit intensity is 2^⌈log₂ n⌉ with n the number of distinct 8-bit values; `gray`: the noise of
    the luma (ITU-R 601), shared by all channels. Returned × scale.
    """
    if gray:
        image = kornia.color.rgb_to_grayscale(image)
    image = (image * 255).round().clamp(0, 255) / 255
    levels = 2 ** math.ceil(math.log2(len(torch.unique(image))))
    return (torch.poisson(image * levels, generator=generator) / levels - image) * scale


# JPEG: the IJG (libjpeg) standard quantisation tables in libjpeg's natural order, row = vertical frequency.
JPEG_LUMA_TABLE = (
    (16, 11, 10, 16, 24, 40, 51, 61), (12, 12, 14, 19, 26, 58, 60, 55), (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62), (18, 22, 37, 56, 68, 109, 103, 77), (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101), (72, 92, 95, 98, 112, 100, 103, 99),
)  # fmt: skip
JPEG_CHROMA_TABLE = (  # symmetric: both orientations below share it
    (17, 18, 24, 47, 99, 99, 99, 99), (18, 21, 26, 66, 99, 99, 99, 99), (24, 26, 56, 99, 99, 99, 99, 99),
    (47, 66, 99, 99, 99, 99, 99, 99), *((99,) * 8 for _ in range(4)),
)  # fmt: skip
# The luma table per orientation (`jpeg_table`). BasicSR's DiffJPEG, which Real-ESRGAN trains with, defines
# `y_table = np.array(<the IJG table>).T` and divides the coefficient [vertical u, horizontal v] by y_table[u, v]: the
# IJG table transposed (its chroma table is transposed too, a no-op). libjpeg (PIL, OpenCV) uses the table as written.
# Measured against PIL-encoded JPEGs (4 skimage photos, qualities 30/50/75/95, PSNR of our decode vs PIL's decode):
# libjpeg 39.8/42.7/41.9/41.8 dB, diffjpeg 35.3/36.6/37.6/40.9 dB (docs/degradations.md, "Parity with Real-ESRGAN").
JPEG_LUMA_TABLES = {"diffjpeg": tuple(zip(*JPEG_LUMA_TABLE)), "libjpeg": JPEG_LUMA_TABLE}
RGB_TO_YCBCR = ((0.299, 0.587, 0.114), (-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312))  # JFIF
YCBCR_TO_RGB = ((1.0, 0.0, 1.402), (1.0, -0.344136, -0.714136), (1.0, 1.772, 0.0))


def jpeg_quality_factor(quality: torch.Tensor) -> torch.Tensor:
    """IJG quality → quantisation-table scale: (5000/q if q < 50 else 200 − 2q) / 100, at least 0.01 (q = 99.5)."""
    return (torch.where(quality < 50, 5000 / quality, 200 - 2 * quality) / 100).clamp_min(0.01)


def _dct_matrix(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The orthonormal 8-point DCT-II matrix D (coefficients = D·X·Dᵀ for an 8×8 block X)."""
    n = torch.arange(8, dtype=torch.float64)
    matrix = torch.cos((2 * n[None, :] + 1) * n[:, None] * math.pi / 16) / 2
    matrix[0] /= math.sqrt(2)
    return matrix.to(device, dtype)


def _transform_blocks(blocks: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """matrix · X · matrixᵀ for every 8×8 block X of (..., 8, 8), as two plain matrix products over all blocks."""
    return ((blocks @ matrix.T).transpose(-1, -2) @ matrix.T).transpose(-1, -2)


def _jpeg_plane(plane: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Code (N, H, W) level-shifted samples (H, W multiples of 8) by 8×8 DCT, rounding to `table` (N, 8, 8), IDCT."""
    n, height, width = plane.shape
    dct = _dct_matrix(plane.device, plane.dtype)
    blocks = plane.reshape(n, height // 8, 8, width // 8, 8).transpose(2, 3)
    table = table[:, None, None]
    coefficients = torch.round(_transform_blocks(blocks, dct) / table) * table
    return _transform_blocks(coefficients, dct.T).transpose(2, 3).reshape(n, height, width)


def jpeg(image: torch.Tensor, quality: torch.Tensor, table: str = "diffjpeg") -> torch.Tensor:
    """JPEG compression round trip of (B, 3, H, W) in [0, 1] with per-image quality (B,) in [1, 100].

    Baseline JPEG without entropy coding, like Real-ESRGAN's DiffJPEG (differentiable=False): JFIF YCbCr, 4:2:0
    chroma by 2×2 averaging, 8×8 DCT, rounding to the IJG tables scaled by `jpeg_quality_factor`, nearest chroma
    up-sampling; zero-padded to multiples of 16 and cropped back. `table`: the luma table's orientation,
    'diffjpeg' (transposed, as Real-ESRGAN trains) or 'libjpeg' (as real JPEG files; see `JPEG_LUMA_TABLES`).
    """
    luma_table = JPEG_LUMA_TABLES[check_choice("jpeg table", table, JPEG_LUMA_TABLES)]
    batch, _, height, width = image.shape
    factor = jpeg_quality_factor(quality.to(image.device, image.dtype).reshape(batch))[:, None, None]
    x = F.pad(image.clamp(0, 1) * 255, (0, -width % 16, 0, -height % 16))
    ycc = torch.einsum("ij,bjhw->bihw", x.new_tensor(RGB_TO_YCBCR), x)
    luma = _jpeg_plane(ycc[:, 0] - 128, x.new_tensor(luma_table) * factor)
    chroma = F.avg_pool2d(ycc[:, 1:], 2)
    chroma_table = (x.new_tensor(JPEG_CHROMA_TABLE) * factor).repeat_interleave(2, dim=0)
    chroma = _jpeg_plane(chroma.reshape(batch * 2, *chroma.shape[-2:]), chroma_table).reshape(chroma.shape)
    chroma = chroma.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)
    rgb = torch.einsum("ij,bjhw->bihw", x.new_tensor(YCBCR_TO_RGB), torch.cat([luma[:, None] + 128, chroma], 1))
    return (rgb.clamp(0, 255) / 255)[..., :height, :width]


def usm_sharp(image: torch.Tensor, weight: float = 0.5, radius: int = 50, threshold: float = 10) -> torch.Tensor:
    """Unsharp masking of (B, C, H, W) in [0, 1] as Real-ESRGAN sharpens its targets (BasicSR's USMSharp).

    blur = G∗x (Gaussian, kernel radius+1 if even, σ = OpenCV's default for that size); r = x − blur;
    mask = G∗[|r|·255 > threshold]; out = mask·clip(x + weight·r, 0, 1) + (1 − mask)·x.
    """
    size = radius + 1 if radius % 2 == 0 else radius
    sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8  # cv2.getGaussianKernel(size, 0)
    kernel = kornia.filters.get_gaussian_kernel1d(size, sigma, device=image.device, dtype=image.dtype)

    def blur(x: torch.Tensor) -> torch.Tensor:
        return kornia.filters.filter2d_separable(x, kernel, kernel, border_type=border_type(x, size))

    residual = image - blur(image)
    soft_mask = blur((residual.abs() * 255 > threshold).to(image.dtype))
    sharp = (image + weight * residual).clamp(0, 1)
    return soft_mask * sharp + (1 - soft_mask) * image


# Settings: one dataclass per config node, validated once where it is built; errors name the full config key.


def _probability(key: str, value: float) -> float:
    if not 0 <= value <= 1:
        raise ConfigError(f"{key} must be a probability in [0, 1], got {value!r}")
    return float(value)


def _distribution(key: str, value: Sequence[float], length: int) -> tuple[float, ...]:
    """`value` as `length` probabilities summing to 1, else ConfigError naming `key`."""
    value = tuple(float(v) for v in value)
    if len(value) != length or min(value) < 0 or abs(sum(value) - 1) > 1e-6:
        raise ConfigError(f"{key} must be {length} probabilities summing to 1, got {list(value)}")
    return value


def _interval(key: str, value: Sequence[float], low: float = 0.0, high: float = math.inf) -> tuple[float, float]:
    """`value` as (min, max) with low <= min <= max <= high, else ConfigError naming `key`."""
    value = tuple(float(v) for v in value)
    if len(value) != 2 or not low <= value[0] <= value[1] <= high:
        raise ConfigError(f"{key} must be [min, max] with {low} <= min <= max <= {high}, got {list(value)}")
    return value


def _interval_around_one(key: str, value: Sequence[float]) -> tuple[float, float]:
    """A positive (min, max) with min <= 1 <= max: the ranges drawn U(min, 1) or U(1, max) (resize, kernel β)."""
    value = _interval(key, value, low=1e-6)
    if not value[0] <= 1 <= value[1]:
        raise ConfigError(f"{key} must contain 1 (drawn as U(min, 1) or U(1, max)), got {list(value)}")
    return value


@dataclass
class BlurSettings:
    """One stage's blur-kernel distribution (Real-ESRGAN Sec. 3.2); the keyword arguments of `random_blur_kernel`."""

    kernel_list: tuple[str, ...]  # kernel types, from d3sr.data.kernels.KERNEL_TYPES
    kernel_prob: tuple[float, ...]  # probability of each type
    sinc_prob: float  # a sinc kernel instead of the types above
    sigma_range: tuple[float, float]  # σ_x, σ_y ~ U(range), pixels
    betag_range: tuple[float, float]  # generalized Gaussian β ~ U(min, 1) or U(1, max)
    betap_range: tuple[float, float]  # plateau β, drawn the same way
    key: InitVar[str] = "blur"  # the config key named in error messages

    def __post_init__(self, key: str) -> None:
        self.kernel_list = tuple(check_choice(f"{key}.kernel_list entry", k, KERNEL_TYPES) for k in self.kernel_list)
        if not self.kernel_list:
            raise ConfigError(f"{key}.kernel_list must name at least one kernel type")
        self.kernel_prob = _distribution(f"{key}.kernel_prob", self.kernel_prob, len(self.kernel_list))
        self.sinc_prob = _probability(f"{key}.sinc_prob", self.sinc_prob)
        self.sigma_range = _interval(f"{key}.sigma_range", self.sigma_range, low=1e-6)
        self.betag_range = _interval_around_one(f"{key}.betag_range", self.betag_range)
        self.betap_range = _interval_around_one(f"{key}.betap_range", self.betap_range)


@dataclass
class StageSettings:
    """One degradation stage: blur (with probability) → resize → noise → JPEG.

    Stage 2 resizes relative to the final size, and its JPEG is the final one (before or after the final resize).
    """

    blur_prob: float  # blur at all (Real-ESRGAN: stage 1 always, stage 2 with second_blur_prob)
    blur: BlurSettings
    resize_prob: tuple[float, float, float]  # up, down, keep
    resize_range: tuple[float, float]  # scale ~ U(1, max) up, U(min, 1) down
    gaussian_noise_prob: float  # Gaussian noise, else Poisson
    noise_range: tuple[float, float]  # Gaussian σ in 8-bit levels (/255)
    poisson_scale_range: tuple[float, float]
    gray_noise_prob: float  # the same noise on all three channels
    jpeg_range: tuple[float, float]  # JPEG quality in [1, 100]
    key: InitVar[str] = "stage"

    def __post_init__(self, key: str) -> None:
        self.blur_prob = _probability(f"{key}.blur_prob", self.blur_prob)
        if not isinstance(self.blur, BlurSettings):
            raise ConfigError(f"{key}.blur must be a BlurSettings, got {type(self.blur).__name__}")
        self.resize_prob = _distribution(f"{key}.resize_prob (up, down, keep)", self.resize_prob, 3)
        self.resize_range = _interval_around_one(f"{key}.resize_range", self.resize_range)
        self.gaussian_noise_prob = _probability(f"{key}.gaussian_noise_prob", self.gaussian_noise_prob)
        self.noise_range = _interval(f"{key}.noise_range", self.noise_range)
        self.poisson_scale_range = _interval(f"{key}.poisson_scale_range", self.poisson_scale_range)
        self.gray_noise_prob = _probability(f"{key}.gray_noise_prob", self.gray_noise_prob)
        self.jpeg_range = _interval(f"{key}.jpeg_range", self.jpeg_range, low=1, high=100)


@dataclass
class FinalSettings:
    """The final stage: [resize to H/scale + sinc filter] and stage 2's JPEG, in random order."""

    sinc_prob: float  # final sinc filter, else identity
    resize_first_prob: float  # resize + sinc before the JPEG (else after)
    key: InitVar[str] = "final"

    def __post_init__(self, key: str) -> None:
        self.sinc_prob = _probability(f"{key}.sinc_prob", self.sinc_prob)
        self.resize_first_prob = _probability(f"{key}.resize_first_prob", self.resize_first_prob)


@dataclass
class UsmSettings:
    """Unsharp masking of the target (`usm_sharp`) into `gt_usm`, which is degraded instead of `gt` (Real-ESRGAN)."""

    enabled: bool
    weight: float
    radius: int  # Gaussian kernel size (+1 if even)
    threshold: float  # in 8-bit levels
    key: InitVar[str] = "usm"

    def __post_init__(self, key: str) -> None:
        self.enabled = bool(self.enabled)
        self.weight = float(check_positive(f"{key}.weight", self.weight, allow_zero=True))
        if int(self.radius) != self.radius or self.radius < 1:
            raise ConfigError(f"{key}.radius must be an integer >= 1, got {self.radius!r}")
        self.radius = int(self.radius)
        self.threshold = float(check_positive(f"{key}.threshold", self.threshold, allow_zero=True))


# Real-ESRGAN's train_realesrgan_x4plus ("set A"), the defaults: their one owner is conf/degradation/realesrgan.yaml,
# which training composes; `set_a` reads it. StableSR's set B is conf/degradation/stablesr.yaml.
SET_A_FILE = CONFIG_DIR / "degradation" / "realesrgan.yaml"


def stage_settings(node: Mapping[str, Any], key: str) -> StageSettings:
    """StageSettings from a complete stage node (its `blur` node included), validated; errors name `key`."""
    return StageSettings(**{**node, "blur": BlurSettings(**node["blur"], key=f"{key}.blur")}, key=key)


def set_a() -> dict[str, Any]:
    """Set A as RealESRGANDegradation's keyword arguments (settings nodes as settings objects), read from
    conf/degradation/realesrgan.yaml."""
    node = OmegaConf.to_container(OmegaConf.load(SET_A_FILE))
    node.pop("_target_")
    return {
        **node,
        "stage1": stage_settings(node["stage1"], "degradation.stage1"),
        "stage2": stage_settings(node["stage2"], "degradation.stage2"),
        "final": FinalSettings(**node["final"], key="degradation.final"),
        "usm": UsmSettings(**node["usm"], key="degradation.usm"),
    }


Settings = TypeVar("Settings", BlurSettings, StageSettings, FinalSettings, UsmSettings)


def merge_settings(default: Settings, node: Settings | Mapping[str, Any] | None, key: str) -> Settings:
    """`default` with the values that the config node `node` sets (nested nodes merge likewise), validated.

    `node` may be a Hydra DictConfig, a dict naming only the values to change, or a finished settings object (taken
    as it is). Unknown keys raise ConfigError naming the full key.
    """
    if node is None:
        return default
    if isinstance(node, type(default)):
        return node
    if not isinstance(node, Mapping):
        raise ConfigError(f"{key} must be a mapping of settings, got {node!r}")
    values = {f.name: getattr(default, f.name) for f in fields(default)}
    unknown = [name for name in node if name not in values]
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]} is not a setting; choose from {', '.join(values)}")
    for name, value in node.items():
        values[name] = merge_settings(values[name], value, f"{key}.{name}") if is_dataclass(values[name]) else value
    return type(default)(**values, key=key)


class RealESRGANDegradation:
    """Real-ESRGAN's second-order degradation (Wang et al., ICCVW 2021), on the fly on the batch's device.

    The order of operations and every parameter follow Real-ESRGAN's `train_realesrgan_x4plus` (set A; the defaults)
    and StableSR's lighter set (set B, conf/degradation/stablesr.yaml):
    USM (optional, on the target) → blur k1 → resize → noise → JPEG → blur k2 (prob.) → resize → noise → final
    [resize to H/scale + sinc, JPEG] in random order → 8-bit quantisation.

    Every setting left out is set A's, read from conf/degradation/realesrgan.yaml (`set_a`). `stage1`, `stage2`
    (StageSettings), `final` (FinalSettings), `usm` (UsmSettings): a mapping (a config node or a dict) changes only
    the keys it names, e.g. `stage2={"blur_prob": 0.5}`.
    `jpeg_table`: the JPEG luma table orientation, 'diffjpeg' (Real-ESRGAN's DiffJPEG, the default) or 'libjpeg'.
    `resize_by`: the stage-1 random resize, 'size' (to ⌊H·s⌋ × ⌊W·s⌋ by `interpolate`, the default: the sampling grid
    spans the whole image, so the LQ stays aligned with the GT) or 'scale_factor' (Real-ESRGAN's
    `F.interpolate(scale_factor=s)`, `resize_by_scale_factor`). Both give the same size; stage 2 resizes to
    ⌊H/scale·s⌋ × ⌊W/scale·s⌋ by size either way, as Real-ESRGAN does.

    Per-image determinism: `sample(rng)` draws every random choice of one image on the CPU, noise included (as an
    integer seed for a `torch.Generator`), so an image gets the same degradation whatever the batch size, order or
    number of workers. Real-ESRGAN draws one resize scale and mode per batch (a batch must share one size); here each
    image has its own, so the stages between the first resize and the final resize to H/scale run image by image
    (a loop over the batch); the same-size stages (USM, blur with k1, final sinc) run batched. Results are
    reproducible on one device type; CPU and CUDA draw different noise from the same seed.

    Images: `gt` (B, 3, H, W) in [0, 1] with H, W divisible by `scale`; `lq` (B, 3, H/scale, W/scale) in [0, 1],
    8-bit quantised. With `usm.enabled` (Real-ESRGAN): `gt_usm` = usm_sharp(gt) is added and `lq` is made from it;
    `gt` is passed through unchanged (Real-ESRGAN's L1/perceptual target is `gt_usm`, its GAN's real image `gt`).
    """

    def __init__(
        self,
        scale: int | None = None,
        stage1: StageSettings | Mapping[str, Any] | None = None,
        stage2: StageSettings | Mapping[str, Any] | None = None,
        final: FinalSettings | Mapping[str, Any] | None = None,
        kernel_range: Sequence[int] | None = None,
        usm: UsmSettings | Mapping[str, Any] | None = None,
        no_degradation_prob: float | None = None,
        jpeg_table: str | None = None,
        resize_by: str | None = None,
    ) -> None:
        # Every setting left out (None) is set A's.
        defaults = set_a()
        self.scale = check_scale(defaults["scale"] if scale is None else scale)
        self.stage1 = merge_settings(defaults["stage1"], stage1, "degradation.stage1")
        self.stage2 = merge_settings(defaults["stage2"], stage2, "degradation.stage2")
        self.final = merge_settings(defaults["final"], final, "degradation.final")
        kernel_range = defaults["kernel_range"] if kernel_range is None else kernel_range
        odd_sizes(kernel_range)
        self.kernel_range = tuple(int(k) for k in kernel_range)
        self.usm = merge_settings(defaults["usm"], usm, "degradation.usm")
        no_degradation_prob = defaults["no_degradation_prob"] if no_degradation_prob is None else no_degradation_prob
        self.no_degradation_prob = _probability("degradation.no_degradation_prob", no_degradation_prob)
        jpeg_table = defaults["jpeg_table"] if jpeg_table is None else jpeg_table
        self.jpeg_table = check_choice("degradation.jpeg_table", jpeg_table, JPEG_LUMA_TABLES)
        resize_by = defaults["resize_by"] if resize_by is None else resize_by
        self.resize_by = check_choice("degradation.resize_by", resize_by, RESIZE_BY)

    # CPU side -------------------------------------------------------------------------------------------------------

    @staticmethod
    def _sample_stage(rng: np.random.Generator, stage: StageSettings) -> dict[str, float]:
        """One stage's blur (yes/no), resize (scale, mode), noise (type, σ, Poisson scale, gray) and JPEG quality."""
        blur = rng.random() < stage.blur_prob
        direction = int(rng.choice(3, p=stage.resize_prob))  # up, down, keep
        low, high = stage.resize_range
        up, down = rng.uniform(1, high), rng.uniform(low, 1)
        return {
            "blur": blur,
            "resize_scale": (up, down, 1.0)[direction],
            "resize_mode": int(rng.integers(len(DEGRADATION_RESIZE_MODES))),
            "gaussian_noise": rng.random() < stage.gaussian_noise_prob,
            "noise_sigma": rng.uniform(*stage.noise_range) / 255,
            "poisson_scale": rng.uniform(*stage.poisson_scale_range),
            "gray_noise": rng.random() < stage.gray_noise_prob,
            "jpeg_quality": rng.uniform(*stage.jpeg_range),
        }

    def sample(self, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """Every random choice of one image's degradation, as fixed-shape tensors (default collation stacks them)."""
        blur1, blur2 = asdict(self.stage1.blur), asdict(self.stage2.blur)
        kernels = sample_kernels(rng, blur1, blur2, self.final.sinc_prob, self.kernel_range)
        values = {f"{k}1": v for k, v in self._sample_stage(rng, self.stage1).items()}
        values.update({f"{k}2": v for k, v in self._sample_stage(rng, self.stage2).items()})
        values["final_resize_first"] = rng.random() < self.final.resize_first_prob
        values["final_resize_mode"] = int(rng.integers(len(DEGRADATION_RESIZE_MODES)))
        values["no_degradation"] = rng.random() < self.no_degradation_prob
        values["noise_seed"] = int(rng.integers(0, 2**62))
        params = {name: torch.from_numpy(kernel) for name, kernel in kernels.items()}
        for name, value in values.items():
            dtype = torch.bool if isinstance(value, bool) else torch.int64 if isinstance(value, int) else torch.float32
            params[name] = torch.tensor(value, dtype=dtype)
        return params

    # Device side ----------------------------------------------------------------------------------------------------

    def _stage(self, image: torch.Tensor, p: dict, stage: int, size: tuple[int, int], generator: torch.Generator):
        """Resize to `size` × the stage's scale with its mode, then Gaussian or Poisson noise, clamped to [0, 1].

        Stage 1 with resize_by='scale_factor' resizes by the scale itself, as Real-ESRGAN does (same output size).
        """
        scale, mode = p[f"resize_scale{stage}"], DEGRADATION_RESIZE_MODES[p[f"resize_mode{stage}"]]
        if stage == 1 and self.resize_by == "scale_factor":
            image = resize_by_scale_factor(image, scale, mode)
        else:
            image = interpolate(image, (size[0] * scale, size[1] * scale), mode)
        if p[f"gaussian_noise{stage}"]:
            noise = gaussian_noise(image, p[f"noise_sigma{stage}"], p[f"gray_noise{stage}"], generator)
        else:
            noise = poisson_noise(image, p[f"poisson_scale{stage}"], p[f"gray_noise{stage}"], generator)
        return (image + noise).clamp(0, 1)

    def _degrade(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(LQ (B, 3, H/scale, W/scale), the image it is made from (B, 3, H, W): `gt`, USM-sharpened if configured)."""
        missing = [key for key in PARAM_KEYS if key not in batch]
        if missing:
            raise ValueError(
                f"the batch lacks {', '.join(missing)}: RealESRGANDegradation needs the per-image parameters drawn "
                "by its sample(rng) (SRSamples(sample_degradation=degradation.sample) does this)"
            )
        gt = batch["gt"].float()
        final_size = check_divisible(gt, self.scale)
        height, width = gt.shape[-2:]
        # One host transfer for every scalar parameter; the kernels stay on the device.
        scalars = [key for key in PARAM_KEYS if batch[key].ndim == 1]
        columns = {key: batch[key].tolist() for key in scalars}
        params = [{key: columns[key][i] for key in scalars} for i in range(gt.shape[0])]
        support2 = (batch["kernel2"].abs().sum(dim=-1) > 0).sum(dim=-1).tolist()

        # 1. Sharpen the target (Real-ESRGAN degrades the sharpened image: `filter2D(self.gt_usm, self.kernel1)`).
        source = usm_sharp(gt, self.usm.weight, self.usm.radius, self.usm.threshold) if self.usm.enabled else gt
        # 2. Stage 1 blur, batched (every image has the HR size); images drawn without it keep the target.
        blurred = torch.where(batch["blur1"].reshape(-1, 1, 1, 1), filter2d(source, batch["kernel1"]), source)
        small = []
        for i, p in enumerate(params):
            if p["no_degradation"]:
                small.append(source.new_zeros(1, 3, *final_size))  # replaced below
                continue
            generator = torch.Generator(device=source.device).manual_seed(p["noise_seed"])
            # Stage 1: resize, noise, JPEG.
            x = self._stage(blurred[i : i + 1], p, 1, (height, width), generator)
            x = jpeg(x, batch["jpeg_quality1"][i : i + 1], self.jpeg_table)
            # Stage 2: blur (with probability), resize relative to the final size, noise.
            if p["blur2"]:
                x = filter2d(x, crop_kernel(batch["kernel2"][i : i + 1], support2[i]))
            x = self._stage(x, p, 2, final_size, generator)
            # Final stage, JPEG-first order: JPEG before the resize to H/scale (the sinc filter follows, batched).
            if not p["final_resize_first"]:
                x = jpeg(x, batch["jpeg_quality2"][i : i + 1], self.jpeg_table)
            small.append(interpolate(x, final_size, DEGRADATION_RESIZE_MODES[p["final_resize_mode"]]))
        # 3. Final sinc filter, batched (identity pulse where it is not applied).
        lq = filter2d(torch.cat(small), batch["sinc_kernel"])
        # Final stage, resize-first order: JPEG last.
        lq = torch.cat([jpeg(lq[i : i + 1], batch["jpeg_quality2"][i : i + 1], self.jpeg_table)
                        if p["final_resize_first"] and not p["no_degradation"] else lq[i : i + 1]
                        for i, p in enumerate(params)])  # fmt: skip
        # 4. Clean samples (no_degradation_prob): the plain bicubic ×scale down-sampling of the (sharpened) target.
        clean = [i for i, p in enumerate(params) if p["no_degradation"]]
        if clean:
            lq[clean] = downscale(source[clean], self.scale)
        return quantize(lq), source

    @torch.no_grad()
    def __call__(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """`batch` with `lq` (B, 3, H/scale, W/scale) added, the sampled parameters dropped, `gt` unchanged; with
        `usm.enabled` also `gt_usm` (B, 3, H, W) in [0, 1], the sharpened `gt` that `lq` is made from."""
        lq, source = self._degrade(batch)
        out = {key: value for key, value in batch.items() if key not in PARAM_KEYS}
        if self.usm.enabled:
            out["gt_usm"] = source.to(batch["gt"].dtype)
        out["lq"] = lq
        return out


# ----------------------------------------------------------------------------------------------------------------
# One whole image, reproducibly (test-set synthesis, the held-out table).


def image_rng(seed: int, relative: str) -> np.random.Generator:
    """The generator of one image's degradation: from the seed and a stable hash of its relative name."""
    return np.random.default_rng([seed, zlib.crc32(relative.encode("utf-8"))])


@torch.no_grad()
def degrade_image(degradation, image: torch.Tensor, rng: np.random.Generator, device: str) -> torch.Tensor:
    """The LQ (3, H'/scale, W'/scale) of one HQ image (3, H, W) cropped to H' × W', multiples of the scale."""
    scale = degradation.scale
    height, width = (image.shape[-2] // scale) * scale, (image.shape[-1] // scale) * scale
    if height == 0 or width == 0:
        raise ValueError(f"the image ({image.shape[-2]}×{image.shape[-1]}) is smaller than the scale {scale}")
    batch = default_collate([{"gt": image[:, :height, :width].contiguous(), **degradation.sample(rng)}])
    batch = {key: value.to(device) for key, value in batch.items()}
    return degradation(batch)["lq"][0]
