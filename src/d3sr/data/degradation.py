"""Degradations that turn a batch of HQ crops into LQ inputs, on the batch's device (BasicSR-style split).

Every degradation has the same two halves:
- `sample(rng) -> dict[str, Tensor]`: per-image random parameters, drawn on the CPU in the dataset workers from the
  sample's own `numpy.random.Generator` (kernels, scales, noise seeds, ...). Collated into the batch.
- `__call__(batch) -> batch`: batched, no-grad, on the device (`SRDataModule.on_after_batch_transfer`); reads
  `gt` (B, 3, H, W) in [0, 1] and the sampled parameters, adds `lq` (B, 3, H, W) in [0, 1] — the ×scale-smaller
  LQ image resized back to the HR size, as SD-based generators take it — and may replace `gt` (e.g. USM sharpening).
  `degrade(batch)` returns the small LQ (B, 3, H/scale, W/scale) before the resize back.
Determinism comes from the sampled parameters alone: no global RNG is used on the device side.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import kornia
import numpy as np
import torch
import torch.nn.functional as F

from d3sr.config import check_choice, check_positive
from d3sr.data.kernels import KERNEL_TYPES, odd_sizes, sample_kernels

RESIZE_MODES = ("bicubic", "bilinear", "area", "nearest")


def resize(image: torch.Tensor, size: tuple[int, int], mode: str = "bicubic") -> torch.Tensor:
    """Resize (B, C, H, W) to `size`; antialiased when shrinking with bicubic/bilinear (like MATLAB's imresize)."""
    check_choice("resize mode", mode, RESIZE_MODES)
    shrinking = size[0] < image.shape[-2] or size[1] < image.shape[-1]
    kwargs = {"align_corners": False} if mode in ("bicubic", "bilinear") else {}
    if mode in ("bicubic", "bilinear") and shrinking:
        kwargs["antialias"] = True
    return F.interpolate(image, size=size, mode=mode, **kwargs)


def quantize(image: torch.Tensor) -> torch.Tensor:
    """8-bit quantisation: round(x·255)/255, clamped to [0, 1]."""
    return (image.clamp(0, 1) * 255).round() / 255


class BicubicDegradation:
    """Classic ×scale bicubic down-sampling (antialiased), 8-bit quantised: the clean-SR setting."""

    def __init__(self, scale: int = 4, resize_back: bool = True, resize_back_mode: str = "bicubic") -> None:
        if scale < 1:
            raise ValueError(f"degradation.scale must be >= 1, got {scale}")
        self.scale, self.resize_back = int(scale), resize_back
        self.resize_back_mode = check_choice("degradation.resize_back_mode", resize_back_mode, RESIZE_MODES)

    def sample(self, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """No per-image parameters."""
        return {}

    def degrade(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """LQ (B, 3, H/scale, W/scale) in [0, 1]."""
        gt = batch["gt"]
        height, width = gt.shape[-2:]
        if height % self.scale or width % self.scale:
            raise ValueError(f"gt size {height}×{width} is not divisible by the scale {self.scale}")
        return quantize(resize(gt, (height // self.scale, width // self.scale), "bicubic"))

    @torch.no_grad()
    def __call__(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        batch = dict(batch)
        batch["lq"] = resize_lq(self.degrade(batch), batch["gt"].shape[-2:], self.resize_back, self.resize_back_mode)
        return batch


def resize_lq(lq: torch.Tensor, size: tuple[int, int], resize_back: bool, mode: str = "bicubic") -> torch.Tensor:
    """The generator's input: the small LQ resized back to the HR `size` (clamped to [0, 1]), or kept small."""
    if not resize_back:
        return lq
    return resize(lq, tuple(size), mode).clamp_(0, 1)


# ---------------------------------------------------------------------------------------------------------------------
# Real-ESRGAN second-order degradation.

DEGRADATION_RESIZE_MODES = ("area", "bilinear", "bicubic")  # Real-ESRGAN draws each resize mode from these
STAGE_KEYS = ("resize_scale", "resize_mode", "gaussian_noise", "noise_sigma", "poisson_scale", "gray_noise",
              "jpeg_quality")  # fmt: skip
PARAM_KEYS = (
    "kernel1", "kernel2", "sinc_kernel", *(f"{k}1" for k in STAGE_KEYS), "second_blur", *(f"{k}2" for k in STAGE_KEYS),
    "final_resize_first", "final_resize_mode", "no_degradation", "noise_seed",
)  # fmt: skip


def filter2d(image: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Correlate each image of (B, C, H, W) with its own (B, k, k) kernel (odd k), reflect-padded (BasicSR's filter2D).

    Images smaller than the kernel radius are replicate-padded instead (reflection needs more pixels than the pad).
    """
    batch, channels, height, width = image.shape
    pad = kernel.shape[-1] // 2
    mode = "reflect" if pad < height and pad < width else "replicate"
    padded = F.pad(image, (pad, pad, pad, pad), mode=mode)
    weight = kernel.to(image.dtype)[:, None].repeat_interleave(channels, dim=0)
    out = F.conv2d(padded.reshape(1, batch * channels, *padded.shape[-2:]), weight, groups=batch * channels)
    return out.reshape(batch, channels, height, width)


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


# JPEG: the IJG (libjpeg) standard quantisation tables, row = vertical frequency.
JPEG_LUMA_TABLE = (
    (16, 11, 10, 16, 24, 40, 51, 61), (12, 12, 14, 19, 26, 58, 60, 55), (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62), (18, 22, 37, 56, 68, 109, 103, 77), (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101), (72, 92, 95, 98, 112, 100, 103, 99),
)  # fmt: skip
JPEG_CHROMA_TABLE = (
    (17, 18, 24, 47, 99, 99, 99, 99), (18, 21, 26, 66, 99, 99, 99, 99), (24, 26, 56, 99, 99, 99, 99, 99),
    (47, 66, 99, 99, 99, 99, 99, 99), *((99,) * 8 for _ in range(4)),
)  # fmt: skip
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


def jpeg(image: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """JPEG compression round trip of (B, 3, H, W) in [0, 1] with per-image quality (B,) in [1, 100].

    Baseline JPEG without entropy coding, like Real-ESRGAN's DiffJPEG (differentiable=False): JFIF YCbCr, 4:2:0
    chroma by 2×2 averaging, 8×8 DCT, rounding to the IJG tables scaled by `jpeg_quality_factor`, nearest chroma
    up-sampling; zero-padded to multiples of 16 and cropped back. Within ~1 dB of libjpeg's PSNR at equal quality.
    """
    batch, _, height, width = image.shape
    factor = jpeg_quality_factor(quality.to(image.device, image.dtype).reshape(batch))[:, None, None]
    x = F.pad(image.clamp(0, 1) * 255, (0, -width % 16, 0, -height % 16))
    ycc = torch.einsum("ij,bjhw->bihw", x.new_tensor(RGB_TO_YCBCR), x)
    luma = _jpeg_plane(ycc[:, 0] - 128, x.new_tensor(JPEG_LUMA_TABLE) * factor)
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
    border = "reflect" if size // 2 < min(image.shape[-2:]) else "replicate"

    def blur(x: torch.Tensor) -> torch.Tensor:
        return kornia.filters.filter2d_separable(x, kernel, kernel, border_type=border)

    residual = image - blur(image)
    soft_mask = blur((residual.abs() * 255 > threshold).to(image.dtype))
    sharp = (image + weight * residual).clamp(0, 1)
    return soft_mask * sharp + (1 - soft_mask) * image


def _probabilities(key: str, value: Sequence[float], length: int) -> list[float]:
    """`value` as a list of `length` probabilities summing to 1, else ValueError naming `key`."""
    value = [float(v) for v in value]
    if len(value) != length or min(value) < 0 or abs(sum(value) - 1) > 1e-6:
        raise ValueError(f"degradation.{key} must be {length} probabilities summing to 1, got {value}")
    return value


def _probability(key: str, value: float) -> float:
    if not 0 <= value <= 1:
        raise ValueError(f"degradation.{key} must be a probability in [0, 1], got {value!r}")
    return float(value)


def _interval(key: str, value: Sequence[float], low: float = 0.0, high: float = math.inf) -> tuple[float, float]:
    """`value` as (min, max) with low <= min <= max <= high, else ValueError naming `key`."""
    value = tuple(float(v) for v in value)
    if len(value) != 2 or not low <= value[0] <= value[1] <= high:
        raise ValueError(f"degradation.{key} must be [min, max] with {low} <= min <= max <= {high}, got {list(value)}")
    return value


class RealESRGANDegradation:
    """Real-ESRGAN's second-order degradation (Wang et al., ICCVW 2021), on the fly on the batch's device.

    The order of operations and every parameter follow Real-ESRGAN's `train_realesrgan_x4plus` (set A; the defaults)
    and StableSR's lighter set (set B, conf/degradation/stablesr.yaml):
    USM (optional, on the target) → blur k1 → resize → noise → JPEG → blur k2 (prob.) → resize → noise → final
    [resize to H/scale + sinc, JPEG] in random order → 8-bit quantisation.

    Per-image determinism: `sample(rng)` draws every random choice of one image on the CPU, noise included (as an
    integer seed for a `torch.Generator`), so an image gets the same degradation whatever the batch size, order or
    number of workers. Real-ESRGAN draws one resize scale and mode per batch (a batch must share one size); here each
    image has its own, so the stages between the first resize and the final resize to H/scale run image by image
    (a loop over the batch); the same-size stages (USM, blur with k1, final sinc) run batched. Results are
    reproducible on one device type; CPU and CUDA draw different noise from the same seed.

    Images: `gt` (B, 3, H, W) in [0, 1] with H, W divisible by `scale`; `degrade` returns the LQ
    (B, 3, H/scale, W/scale) in [0, 1], 8-bit quantised.
    """

    def __init__(
        self,
        scale: int = 4,
        # Stage 1.
        kernel_list: Sequence[str] = KERNEL_TYPES,
        kernel_prob: Sequence[float] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03),
        sinc_prob: float = 0.1,
        blur_sigma: Sequence[float] = (0.2, 3.0),
        betag_range: Sequence[float] = (0.5, 4.0),
        betap_range: Sequence[float] = (1.0, 2.0),
        resize_prob: Sequence[float] = (0.2, 0.7, 0.1),
        resize_range: Sequence[float] = (0.15, 1.5),
        gaussian_noise_prob: float = 0.5,
        noise_range: Sequence[float] = (1.0, 30.0),
        poisson_scale_range: Sequence[float] = (0.05, 3.0),
        gray_noise_prob: float = 0.4,
        jpeg_range: Sequence[float] = (30.0, 95.0),
        # Stage 2.
        second_blur_prob: float = 0.8,
        kernel_list2: Sequence[str] = KERNEL_TYPES,
        kernel_prob2: Sequence[float] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03),
        sinc_prob2: float = 0.1,
        blur_sigma2: Sequence[float] = (0.2, 1.5),
        betag_range2: Sequence[float] = (0.5, 4.0),
        betap_range2: Sequence[float] = (1.0, 2.0),
        resize_prob2: Sequence[float] = (0.3, 0.4, 0.3),
        resize_range2: Sequence[float] = (0.3, 1.2),
        gaussian_noise_prob2: float = 0.5,
        noise_range2: Sequence[float] = (1.0, 25.0),
        poisson_scale_range2: Sequence[float] = (0.05, 2.5),
        gray_noise_prob2: float = 0.4,
        jpeg_range2: Sequence[float] = (30.0, 95.0),
        # Final stage.
        final_sinc_prob: float = 0.8,
        resize_first_prob: float = 0.5,
        kernel_range: Sequence[int] = (7, 21),
        # Target sharpening, clean samples, generator input.
        usm: bool = False,
        usm_weight: float = 0.5,
        usm_radius: int = 50,
        usm_threshold: float = 10.0,
        no_degradation_prob: float = 0.0,
        resize_back: bool = True,
        resize_back_mode: str = "bicubic",
    ) -> None:
        if scale < 1:
            raise ValueError(f"degradation.scale must be >= 1, got {scale}")
        self.scale = int(scale)
        odd_sizes(kernel_range)
        self.kernel_range = tuple(int(k) for k in kernel_range)
        self.blur1 = self._blur_settings("", kernel_list, kernel_prob, sinc_prob, blur_sigma, betag_range, betap_range)
        self.blur2 = self._blur_settings("2", kernel_list2, kernel_prob2, sinc_prob2, blur_sigma2, betag_range2,
                                         betap_range2)  # fmt: skip
        self.stage1 = self._stage_settings("", resize_prob, resize_range, gaussian_noise_prob, noise_range,
                                           poisson_scale_range, gray_noise_prob, jpeg_range)  # fmt: skip
        self.stage2 = self._stage_settings("2", resize_prob2, resize_range2, gaussian_noise_prob2, noise_range2,
                                           poisson_scale_range2, gray_noise_prob2, jpeg_range2)  # fmt: skip
        self.second_blur_prob = _probability("second_blur_prob", second_blur_prob)
        self.final_sinc_prob = _probability("final_sinc_prob", final_sinc_prob)
        self.resize_first_prob = _probability("resize_first_prob", resize_first_prob)
        self.usm, self.usm_weight, self.usm_threshold = bool(usm), float(usm_weight), float(usm_threshold)
        self.usm_radius = int(check_positive("degradation.usm_radius", usm_radius))
        self.no_degradation_prob = _probability("no_degradation_prob", no_degradation_prob)
        self.resize_back = resize_back
        self.resize_back_mode = check_choice("degradation.resize_back_mode", resize_back_mode, RESIZE_MODES)

    @staticmethod
    def _blur_settings(suffix, kernel_list, kernel_prob, sinc_prob, blur_sigma, betag_range, betap_range) -> dict:
        kernel_list = list(kernel_list)
        for kind in kernel_list:
            check_choice(f"degradation.kernel_list{suffix} entry", kind, KERNEL_TYPES)
        return {
            "kernel_list": kernel_list,
            "kernel_prob": _probabilities(f"kernel_prob{suffix}", kernel_prob, len(kernel_list)),
            "sinc_prob": _probability(f"sinc_prob{suffix}", sinc_prob),
            "blur_sigma": _interval(f"blur_sigma{suffix}", blur_sigma, low=1e-6),
            "betag_range": _interval(f"betag_range{suffix}", betag_range, low=1e-6),
            "betap_range": _interval(f"betap_range{suffix}", betap_range, low=1e-6),
        }

    @staticmethod
    def _stage_settings(suffix, resize_prob, resize_range, gaussian_noise_prob, noise_range, poisson_scale_range,
                        gray_noise_prob, jpeg_range) -> dict:  # fmt: skip
        resize_range = _interval(f"resize_range{suffix}", resize_range, low=1e-6)
        if not resize_range[0] <= 1 <= resize_range[1]:
            raise ValueError(f"degradation.resize_range{suffix} must contain 1, got {list(resize_range)}")
        return {
            "resize_prob": _probabilities(f"resize_prob{suffix} (up, down, keep)", resize_prob, 3),
            "resize_range": resize_range,
            "gaussian_noise_prob": _probability(f"gaussian_noise_prob{suffix}", gaussian_noise_prob),
            "noise_range": _interval(f"noise_range{suffix}", noise_range),
            "poisson_scale_range": _interval(f"poisson_scale_range{suffix}", poisson_scale_range),
            "gray_noise_prob": _probability(f"gray_noise_prob{suffix}", gray_noise_prob),
            "jpeg_range": _interval(f"jpeg_range{suffix}", jpeg_range, low=1, high=100),
        }

    # CPU side -------------------------------------------------------------------------------------------------------

    @staticmethod
    def _sample_stage(rng: np.random.Generator, settings: dict) -> dict[str, float]:
        """One stage's resize (scale, mode), noise (type, σ, Poisson scale, gray) and JPEG quality."""
        direction = int(rng.choice(3, p=settings["resize_prob"]))  # up, down, keep
        low, high = settings["resize_range"]
        up, down = rng.uniform(1, high), rng.uniform(low, 1)
        return {
            "resize_scale": (up, down, 1.0)[direction],
            "resize_mode": int(rng.integers(len(DEGRADATION_RESIZE_MODES))),
            "gaussian_noise": rng.random() < settings["gaussian_noise_prob"],
            "noise_sigma": rng.uniform(*settings["noise_range"]) / 255,
            "poisson_scale": rng.uniform(*settings["poisson_scale_range"]),
            "gray_noise": rng.random() < settings["gray_noise_prob"],
            "jpeg_quality": rng.uniform(*settings["jpeg_range"]),
        }

    def sample(self, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """Every random choice of one image's degradation, as fixed-shape tensors (default collation stacks them)."""
        kernels = sample_kernels(rng, **self.blur1, **{f"{k}2": v for k, v in self.blur2.items()},
                                 final_sinc_prob=self.final_sinc_prob, kernel_range=self.kernel_range)  # fmt: skip
        values = {f"{k}1": v for k, v in self._sample_stage(rng, self.stage1).items()}
        values["second_blur"] = rng.random() < self.second_blur_prob
        values.update({f"{k}2": v for k, v in self._sample_stage(rng, self.stage2).items()})
        values["final_resize_first"] = rng.random() < self.resize_first_prob
        values["final_resize_mode"] = int(rng.integers(len(DEGRADATION_RESIZE_MODES)))
        values["no_degradation"] = rng.random() < self.no_degradation_prob
        values["noise_seed"] = int(rng.integers(0, 2**62))
        params = {name: torch.from_numpy(kernel) for name, kernel in kernels.items()}
        for name, value in values.items():
            dtype = torch.bool if isinstance(value, bool) else torch.int64 if isinstance(value, int) else torch.float32
            params[name] = torch.tensor(value, dtype=dtype)
        return params

    # Device side ----------------------------------------------------------------------------------------------------

    @staticmethod
    def _stage(image: torch.Tensor, p: dict, stage: int, size: tuple[int, int], generator: torch.Generator):
        """Resize to `size` × the stage's scale with its mode, then Gaussian or Poisson noise, clamped to [0, 1]."""
        scale = p[f"resize_scale{stage}"]
        image = interpolate(
            image, (size[0] * scale, size[1] * scale), DEGRADATION_RESIZE_MODES[p[f"resize_mode{stage}"]]
        )
        if p[f"gaussian_noise{stage}"]:
            noise = gaussian_noise(image, p[f"noise_sigma{stage}"], p[f"gray_noise{stage}"], generator)
        else:
            noise = poisson_noise(image, p[f"poisson_scale{stage}"], p[f"gray_noise{stage}"], generator)
        return (image + noise).clamp(0, 1)

    def _degrade(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(LQ (B, 3, H/scale, W/scale), target (B, 3, H, W), USM-sharpened if configured)."""
        missing = [key for key in PARAM_KEYS if key not in batch]
        if missing:
            raise ValueError(
                f"the batch lacks {', '.join(missing)}: RealESRGANDegradation needs the per-image parameters drawn "
                "by its sample(rng) (SRSamples(sample_degradation=degradation.sample) does this)"
            )
        gt = batch["gt"].float()
        height, width = gt.shape[-2:]
        if height % self.scale or width % self.scale:
            raise ValueError(f"gt size {height}×{width} is not divisible by the scale {self.scale}")
        final_size = (height // self.scale, width // self.scale)
        # One host transfer for every scalar parameter; the kernels stay on the device.
        scalars = [key for key in PARAM_KEYS if batch[key].ndim == 1]
        columns = {key: batch[key].tolist() for key in scalars}
        params = [{key: columns[key][i] for key in scalars} for i in range(gt.shape[0])]
        support2 = (batch["kernel2"].abs().sum(dim=-1) > 0).sum(dim=-1).tolist()

        # 1. Sharpen the target (Real-ESRGAN degrades the sharpened image too).
        if self.usm:
            gt = usm_sharp(gt, self.usm_weight, self.usm_radius, self.usm_threshold)
        # 2. Stage 1 blur, batched (every image has the HR size).
        blurred = filter2d(gt, batch["kernel1"])
        small = []
        for i, p in enumerate(params):
            if p["no_degradation"]:
                small.append(gt.new_zeros(1, 3, *final_size))  # replaced below
                continue
            generator = torch.Generator(device=gt.device).manual_seed(p["noise_seed"])
            # Stage 1: resize, noise, JPEG.
            x = self._stage(blurred[i : i + 1], p, 1, (height, width), generator)
            x = jpeg(x, batch["jpeg_quality1"][i : i + 1])
            # Stage 2: blur (with probability), resize relative to the final size, noise.
            if p["second_blur"]:
                x = filter2d(x, crop_kernel(batch["kernel2"][i : i + 1], support2[i]))
            x = self._stage(x, p, 2, final_size, generator)
            # Final stage, JPEG-first order: JPEG before the resize to H/scale (the sinc filter follows, batched).
            if not p["final_resize_first"]:
                x = jpeg(x, batch["jpeg_quality2"][i : i + 1])
            small.append(interpolate(x, final_size, DEGRADATION_RESIZE_MODES[p["final_resize_mode"]]))
        # 3. Final sinc filter, batched (identity pulse where it is not applied).
        lq = filter2d(torch.cat(small), batch["sinc_kernel"])
        # Final stage, resize-first order: JPEG last.
        lq = torch.cat([jpeg(lq[i : i + 1], batch["jpeg_quality2"][i : i + 1])
                        if p["final_resize_first"] and not p["no_degradation"] else lq[i : i + 1]
                        for i, p in enumerate(params)])  # fmt: skip
        # 4. Clean samples (no_degradation_prob): the plain bicubic ×scale down-sampling of the target.
        clean = [i for i, p in enumerate(params) if p["no_degradation"]]
        if clean:
            lq[clean] = resize(gt[clean], final_size, "bicubic")
        return quantize(lq), gt

    def degrade(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """LQ (B, 3, H/scale, W/scale) in [0, 1], 8-bit quantised."""
        return self._degrade(batch)[0]

    @torch.no_grad()
    def __call__(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Adds `lq` (the LQ resized back to the HR size unless resize_back is false); `gt` becomes the USM target if
        configured; the sampled parameters are dropped from the batch."""
        lq, gt = self._degrade(batch)
        batch = {key: value for key, value in batch.items() if key not in PARAM_KEYS}
        batch["gt"] = gt if self.usm else batch["gt"]
        batch["lq"] = resize_lq(lq, gt.shape[-2:], self.resize_back, self.resize_back_mode)
        return batch
