"""The paper's metric suite on image pairs, backed by pyiqa (imported only here, inside functions).

PSNR and SSIM on Y of YCbCr, LPIPS (AlexNet), DISTS, NIQE, MUSIQ, MANIQA (PIPAL), CLIPIQA and optional FID, each
built with the options the SR papers use and only after its weight files are checked (weights.py); never downloads.
Images are (B, 3, H, W) in [0, 1]. The torch-only PSNR-Y / SSIM-Y of training validation live in d3sr.psnr_ssim.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from d3sr.errors import ConfigError, D3SRError
from d3sr.evaluation.weights import maniqa_backbone_offline, no_downloads, require_weights
from d3sr.options import check_choice, check_positive, resolve_device
from d3sr.psnr_ssim import psnr_ssim_y_pyiqa

log = logging.getLogger(__name__)

PYIQA_INSTALL = (
    "pyiqa is not installed. Install the evaluation extra: pip install 'd3sr[metrics]' "
    "(pyiqa is licensed PolyForm Noncommercial; setuptools<81 keeps CLIPIQA's `pkg_resources` import working)."
)


@dataclass(frozen=True)
class MetricSpec:
    """One metric of the suite: the pyiqa model it uses, whether it needs the HR image, its direction and variant."""

    name: str
    pyiqa_name: str
    full_reference: bool
    lower_better: bool
    label: str
    variant: str


METRICS: dict[str, MetricSpec] = {
    "psnr": MetricSpec("psnr", "psnr", True, False, "PSNR", "pyiqa psnr, no epsilon (identical images: inf)"),
    "ssim": MetricSpec("ssim", "ssim", True, False, "SSIM", "pyiqa ssim: 11×11 Gaussian σ=1.5, no downsampling"),
    "lpips": MetricSpec("lpips", "lpips", True, True, "LPIPS", "LPIPS v0.1, AlexNet (pyiqa lpips)"),
    "dists": MetricSpec("dists", "dists", True, True, "DISTS", "DISTS (pyiqa dists)"),
    "niqe": MetricSpec("niqe", "niqe", False, True, "NIQE", "NIQE, original model, Y of YIQ (pyiqa niqe)"),
    "musiq": MetricSpec("musiq", "musiq", False, False, "MUSIQ", "MUSIQ trained on KonIQ-10k (pyiqa musiq)"),
    "maniqa": MetricSpec("maniqa", "maniqa-pipal", False, False, "MANIQA", "MANIQA, PIPAL (pyiqa maniqa-pipal)"),
    "clipiqa": MetricSpec("clipiqa", "clipiqa", False, False, "CLIPIQA", "CLIP-IQA, RN50 (pyiqa clipiqa)"),
    "fid": MetricSpec("fid", "fid", True, True, "FID", "clean-FID, Inception-v3, SR folder vs HR folder (pyiqa fid)"),
}  # fmt: skip

# The paper's Table 1 columns, in order (FID is optional and folder-level).
DEFAULT_METRICS = ("psnr", "ssim", "lpips", "dists", "niqe", "musiq", "maniqa", "clipiqa")
ALIASES = {"maniqa-pipal": "maniqa", "psnry": "psnr", "psnr_y": "psnr", "ssim_y": "ssim"}
COLORS = ("y", "rgb")


def metric_names(metrics: Iterable[str] | str) -> list[str]:
    """Canonical metric names (aliases resolved, order kept, duplicates dropped); ConfigError naming unknown ones."""
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    names = []
    for metric in metrics:
        name = ALIASES.get(str(metric).lower(), str(metric).lower())
        if name not in METRICS:
            raise ConfigError(f"metrics: unknown metric {metric!r}; choose from {', '.join(METRICS)}")
        if name not in names:
            names.append(name)
    return names


def metric_variant(name: str, color: str = "y") -> str:
    """The exact variant of metric `name` as stated in reports (PSNR/SSIM say which channel)."""
    spec = METRICS[name]
    if name in ("psnr", "ssim"):
        channel = "Y of YCbCr (BT.601, studio range)" if color == "y" else "RGB, all three channels"
        rounding = ", Y rounded to 8-bit levels as in MATLAB" if name == "ssim" and color == "y" else ""
        return f"{spec.variant}; {channel}{rounding}"
    return spec.variant


def import_pyiqa():
    """The pyiqa module, or D3SRError saying how to install it."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
            import pyiqa
    except ImportError as error:
        raise D3SRError(PYIQA_INSTALL) from error
    # pyiqa logs every metric it creates at INFO through its own handler: keep it to warnings.
    from pyiqa.utils import get_root_logger

    get_root_logger().setLevel(logging.WARNING)
    return pyiqa


def pyiqa_version() -> str:
    """Installed pyiqa version, or 'not installed'."""
    try:
        from importlib.metadata import version

        return version("pyiqa")
    except Exception:  # noqa: BLE001 - any metadata problem means we cannot tell
        return "not installed"


def _pyiqa_options(name: str, color: str) -> tuple[str, dict]:
    """pyiqa model name and options for metric `name` (PSNR/SSIM: pyiqa's defaults are YIQ, so ask for YCbCr)."""
    spec = METRICS[name]
    if name == "psnr":
        # eps=0: identical images give inf, not pyiqa's 10·log10(1/1e-8) = 80 dB.
        return "psnr", {"test_y_channel": color == "y", "color_space": "ycbcr", "eps": 0.0}
    if name == "ssim":
        if color == "y":
            return "ssim", {"test_y_channel": True, "color_space": "ycbcr", "downsample": False}
        return "ssimc", {"test_y_channel": False, "downsample": False}
    return spec.pyiqa_name, {}


def build_metric(name: str, device: str | torch.device = "cpu", color: str = "y") -> torch.nn.Module:
    """The pyiqa metric `name`, after checking its weight files are in place (D3SRError if not); never downloads."""
    name = metric_names([name])[0]
    check_choice("color", color, COLORS)
    device = resolve_device(device)
    pyiqa = import_pyiqa()
    require_weights(name)
    pyiqa_name, options = _pyiqa_options(name, color)
    messages = io.StringIO()
    try:
        with no_downloads(), contextlib.redirect_stdout(messages), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
            with maniqa_backbone_offline() if name == "maniqa" else contextlib.nullcontext():
                metric = pyiqa.create_metric(pyiqa_name, device=device, **options)
    except ModuleNotFoundError as error:
        raise D3SRError(
            f"metric {name} needs the Python package {error.name!r}, a dependency of pyiqa: pip install {error.name}"
        ) from error
    finally:
        for line in messages.getvalue().splitlines():
            log.debug("pyiqa: %s", line)
    return metric.eval()


def crop_border_of(image: torch.Tensor, border: int) -> torch.Tensor:
    """`image` (…, H, W) without `border` pixels on each side (ConfigError if nothing would be left)."""
    check_positive("crop_border", border, allow_zero=True)
    if not border:
        return image
    if image.shape[-1] <= 2 * border or image.shape[-2] <= 2 * border:
        raise ConfigError(f"crop_border={border} leaves nothing of a {image.shape[-1]}×{image.shape[-2]} image")
    return image[..., border:-border, border:-border]


class MetricSuite:
    """The paper's metric suite on image pairs: `suite(sr, hr=None) -> {metric: value}` for (1, 3, H, W) in [0, 1].

    Full-reference metrics (PSNR, SSIM, LPIPS, DISTS) need `hr`; no-reference ones (NIQE, MUSIQ, MANIQA, CLIPIQA)
    use `sr` only. `crop_border` pixels are removed from each side of both images before every metric.
    FID is folder-level: see `d3sr.evaluation.folders.evaluate_folders`.
    """

    def __init__(
        self,
        metrics: Iterable[str] = DEFAULT_METRICS,
        device: str | torch.device = "auto",
        color: str = "y",
        crop_border: int = 0,
    ) -> None:
        self.names = [m for m in metric_names(metrics) if m != "fid"]
        self.device = resolve_device(device)
        self.color = check_choice("color", color, COLORS)
        self.crop_border = int(check_positive("crop_border", crop_border, allow_zero=True))
        require_weights(self.names)  # every missing file of every metric in one message
        self.models = {name: build_metric(name, self.device, color) for name in self.names}

    @property
    def needs_reference(self) -> bool:
        return any(METRICS[n].full_reference for n in self.names)

    @torch.no_grad()
    def __call__(self, sr: torch.Tensor, hr: torch.Tensor | None = None) -> dict[str, float]:
        if sr.ndim == 3:
            sr, hr = sr[None], (hr[None] if hr is not None else None)
        if hr is not None and sr.shape != hr.shape:
            raise ValueError(f"sr {tuple(sr.shape)} and hr {tuple(hr.shape)} differ in shape")
        sr = crop_border_of(sr.float().clamp(0, 1), self.crop_border).to(self.device)
        hr = crop_border_of(hr.float().clamp(0, 1), self.crop_border).to(self.device) if hr is not None else None
        scores = {}
        if self.color == "y" and hr is not None and {"psnr", "ssim"} & set(self.models):
            # pyiqa's PSNR-Y/SSIM-Y to the bit (same Y, 8-bit rounding and window), about 10× faster on a CPU.
            psnr, ssim = psnr_ssim_y_pyiqa(sr, hr)
            fast = {"psnr": float(psnr[0]), "ssim": float(ssim[0])}
        else:
            fast = {}
        for name, model in self.models.items():
            if name in fast:
                scores[name] = fast[name]
            elif METRICS[name].full_reference:
                if hr is None:
                    raise ValueError(f"{name} is a full-reference metric: it needs the HR image")
                scores[name] = float(model(sr, hr).flatten()[0])
            else:
                scores[name] = float(model(sr).flatten()[0])
        return scores
