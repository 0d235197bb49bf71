"""Image-quality metrics: pure-torch PSNR-Y / SSIM-Y for validation during training, and the paper's metric suite.

`psnr_y` and `ssim_y` need nothing but torch (training validation uses them). The suite (`MetricSuite`,
`evaluate_folders`) wraps pyiqa, imported lazily: PSNR and SSIM on Y of YCbCr, LPIPS (AlexNet), DISTS, NIQE, MUSIQ,
MANIQA (PIPAL), CLIPIQA and optional FID, with each metric's weight files checked before it is built (weights.py).

Conventions (BasicSR / pyiqa, the ones SR papers report): images (B, 3, H, W) in [0, 1]; Y of YCbCr by ITU-R BT.601
with the studio range (Y = 16 + 65.481·R + 128.553·G + 24.966·B, /255); optional `crop_border` pixels removed.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import torch
import torch.nn.functional as F

from d3sr.config import D3SRError, check_choice, check_positive

log = logging.getLogger(__name__)


def rgb_to_y(image: torch.Tensor) -> torch.Tensor:
    """BT.601 luma (studio range) of (B, 3, H, W) RGB in [0, 1] → (B, 1, H, W) in [16/255, 235/255]."""
    weights = image.new_tensor([65.481, 128.553, 24.966]).view(1, 3, 1, 1)
    return (image * weights).sum(1, keepdim=True) / 255.0 + 16.0 / 255.0


def _crop(image: torch.Tensor, border: int) -> torch.Tensor:
    return image[..., border:-border, border:-border] if border > 0 else image


def psnr_y(sr: torch.Tensor, gt: torch.Tensor, crop_border: int = 0) -> torch.Tensor:
    """PSNR (dB) on the Y channel, per image (B,); inf for identical images."""
    sr, gt = _crop(rgb_to_y(sr.double()), crop_border), _crop(rgb_to_y(gt.double()), crop_border)
    mse = (sr - gt).pow(2).mean(dim=(1, 2, 3))
    return (10 * torch.log10(1.0 / mse)).float()


def _gaussian_window(size: int = 11, sigma: float = 1.5, device=None) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).view(1, 1, size, size)


def ssim_y(sr: torch.Tensor, gt: torch.Tensor, crop_border: int = 0) -> torch.Tensor:
    """SSIM on the Y channel (Wang et al. 2004; 11×11 Gaussian σ=1.5, 'valid' filtering, on the 0–255 scale), (B,)."""
    x = _crop(rgb_to_y(sr.double()), crop_border) * 255.0
    y = _crop(rgb_to_y(gt.double()), crop_border) * 255.0
    window = _gaussian_window(device=x.device)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_x, mu_y = F.conv2d(x, window), F.conv2d(y, window)
    sigma_x = F.conv2d(x * x, window) - mu_x**2
    sigma_y = F.conv2d(y * y, window) - mu_y**2
    sigma_xy = F.conv2d(x * y, window) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * sigma_xy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sigma_x + sigma_y + c2))
    return ssim_map.mean(dim=(1, 2, 3)).float()


# ---------------------------------------------------------------------------------------------------------------------
# The paper's metric suite (pyiqa-backed; pyiqa is imported only here, so training never needs it).
# ---------------------------------------------------------------------------------------------------------------------

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
ALIGNS = ("error", "crop")


def metric_names(metrics: Iterable[str] | str) -> list[str]:
    """Canonical metric names (aliases resolved, order kept, duplicates dropped); ValueError naming unknown ones."""
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    names = []
    for metric in metrics:
        name = ALIASES.get(str(metric).lower(), str(metric).lower())
        if name not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; choose from {', '.join(METRICS)}")
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


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' → CUDA if available else CPU; anything else as torch.device."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


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


@contextlib.contextmanager
def _maniqa_backbone_without_download(pyiqa_name: str):
    """MANIQA asks timm for ImageNet ViT-B/8 weights only to overwrite them with its checkpoint (loaded strict, so
    every backbone weight comes from the checkpoint): build the backbone without fetching them."""
    if not pyiqa_name.startswith("maniqa"):
        yield
        return
    import pyiqa.archs.maniqa_arch as maniqa_arch

    timm = maniqa_arch.timm

    def create_model(model_name, pretrained=False, **kwargs):
        return timm.create_model(model_name, pretrained=False, **kwargs)

    with mock.patch.object(maniqa_arch, "timm", SimpleNamespace(create_model=create_model)):
        yield


def build_metric(name: str, device: str | torch.device = "cpu", color: str = "y") -> torch.nn.Module:
    """The pyiqa metric `name`, after checking its weight files are in place (D3SRError if not); never downloads."""
    from d3sr.evaluation.weights import no_downloads, require_weights

    name = metric_names([name])[0]
    check_choice("color", color, COLORS)
    pyiqa = import_pyiqa()
    require_weights(name)
    pyiqa_name, options = _pyiqa_options(name, color)
    messages = io.StringIO()
    try:
        with no_downloads(), contextlib.redirect_stdout(messages), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
            with _maniqa_backbone_without_download(pyiqa_name):
                metric = pyiqa.create_metric(pyiqa_name, device=resolve_device(device), **options)
    except ModuleNotFoundError as error:
        raise D3SRError(
            f"metric {name} needs the Python package {error.name!r}, a dependency of pyiqa: pip install {error.name}"
        ) from error
    finally:
        for line in messages.getvalue().splitlines():
            log.debug("pyiqa: %s", line)
    return metric.eval()


def crop_border_of(image: torch.Tensor, border: int) -> torch.Tensor:
    """`image` (…, H, W) without `border` pixels on each side (ValueError if nothing would be left)."""
    if border < 0:
        raise ValueError(f"crop_border must be >= 0, got {border}")
    if border and (image.shape[-1] <= 2 * border or image.shape[-2] <= 2 * border):
        raise ValueError(f"crop_border={border} leaves nothing of a {image.shape[-1]}×{image.shape[-2]} image")
    return _crop(image, border)


class MetricSuite:
    """The paper's metric suite on image pairs: `suite(sr, hr=None) -> {metric: value}` for (1, 3, H, W) in [0, 1].

    Full-reference metrics (PSNR, SSIM, LPIPS, DISTS) need `hr`; no-reference ones (NIQE, MUSIQ, MANIQA, CLIPIQA)
    use `sr` only. `crop_border` pixels are removed from each side of both images before every metric.
    FID is folder-level: see `evaluate_folders`.
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
        for name, model in self.models.items():
            if METRICS[name].full_reference:
                if hr is None:
                    raise ValueError(f"{name} is a full-reference metric: it needs the HR image")
                scores[name] = float(model(sr, hr).flatten()[0])
            else:
                scores[name] = float(model(sr).flatten()[0])
        return scores


# ---------------------------------------------------------------------------------------------------------------------
# Folder evaluation: pairs by file stem, size checks, per-image scores and means.
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class Evaluation:
    """Result of `evaluate_folders`: per-image rows, per-metric means, folder-level scores and the protocol used."""

    rows: list[dict]
    means: dict[str, float]
    protocol: dict
    notes: list[str] = field(default_factory=list)


def list_images(folder: str | Path) -> tuple[dict[str, Path], list[Path]]:
    """Images directly inside `folder` keyed by file stem, and the other files there (D3SRError for a missing
    folder or two images with one stem)."""
    from d3sr.data.datasets import IMAGE_EXTENSIONS

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise D3SRError(f"image folder {folder} does not exist")
    images: dict[str, Path] = {}
    others = []
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
            if path.stem in images:
                raise D3SRError(
                    f"{folder} holds two images with the stem {path.stem!r}: {images[path.stem].name}, {path.name}"
                )
            images[path.stem] = path
        elif path.is_file() and not path.name.startswith("."):
            others.append(path)
    if not images:
        raise D3SRError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {folder}")
    return images, others


def pair_images(
    sr_dir: str | Path, hr_dir: str | Path | None
) -> tuple[list[tuple[str, Path, Path | None]], list[str]]:
    """(stem, sr path, hr path) for every image of the test set, and notes on extra files.

    The HR folder defines the test set when given: every HR image needs an SR image of the same stem (D3SRError
    listing the missing ones); SR images without an HR image are noted and skipped.
    """
    sr, sr_others = list_images(sr_dir)
    notes = [f"ignored non-image file in the SR folder: {p.name}" for p in sr_others]
    if hr_dir is None:
        return [(stem, path, None) for stem, path in sr.items()], notes
    hr, hr_others = list_images(hr_dir)
    notes += [f"ignored non-image file in the HR folder: {p.name}" for p in hr_others]
    missing = [stem for stem in hr if stem not in sr]
    if missing:
        shown = ", ".join(hr[s].name for s in missing[:20]) + (
            f", … ({len(missing)} in all)" if len(missing) > 20 else ""
        )
        raise D3SRError(
            f"{len(missing)} HR image(s) in {hr_dir} have no SR image of the same file stem in {sr_dir}: {shown}"
        )
    extra = [stem for stem in sr if stem not in hr]
    if extra:
        notes.append(
            f"{len(extra)} SR image(s) without an HR image, not evaluated: {', '.join(sr[s].name for s in extra)}"
        )
    return [(stem, sr[stem], hr[stem]) for stem in hr], notes


def align_pair(sr: torch.Tensor, hr: torch.Tensor, sr_path: Path, hr_path: Path, align: str) -> tuple:
    """SR and HR (3, H, W) of one size: D3SRError naming both sizes (align='error') or the common top-left crop
    (align='crop'). Returns (sr, hr, note or None)."""
    if sr.shape == hr.shape:
        return sr, hr, None
    (h1, w1), (h2, w2) = sr.shape[-2:], hr.shape[-2:]
    if align == "error":
        raise D3SRError(
            f"size mismatch: SR {sr_path} is {w1}×{h1} but HR {hr_path} is {w2}×{h2} (W×H). "
            "Use align=crop to compare the common top-left region (stated in the report)."
        )
    h, w = min(h1, h2), min(w1, w2)
    note = f"{sr_path.stem}: SR {w1}×{h1}, HR {w2}×{h2} → both cropped to the top-left {w}×{h}"
    return sr[..., :h, :w], hr[..., :h, :w], note


def protocol_of(names: list[str], color: str, crop_border: int, align: str, test_set: str | None, images: str) -> dict:
    """Everything a number depends on, as written into every report."""
    return {
        "test_set": test_set,
        "images": images,
        "color": "Y of YCbCr (BT.601)" if color == "y" else "RGB",
        "crop_border": crop_border,
        "align": align,
        "pyiqa": pyiqa_version(),
        "torch": torch.__version__,
        "metrics": {name: metric_variant(name, color) for name in names},
    }


def _mean(values: list[float]) -> float:
    return float(sum(values) / len(values)) if values else float("nan")


def evaluate_folders(
    sr_dir: str | Path,
    hr_dir: str | Path | None = None,
    metrics: Iterable[str] = DEFAULT_METRICS,
    crop_border: int = 0,
    color: str = "y",
    align: str = "error",
    device: str | torch.device = "auto",
    test_set: str | None = None,
    images: str = "whole",
    progress: bool = True,
) -> Evaluation:
    """Score every SR image (against the HR image of the same file stem for full-reference metrics).

    Images are read as RGB in [0, 1]. Means are plain averages over images (inf if any PSNR is inf).
    `images` ('whole' | 'crops') only describes the folders' content in the protocol; nothing is cropped here.
    """
    from tqdm import tqdm

    from d3sr.data.datasets import read_image

    names = metric_names(metrics)
    check_choice("color", color, COLORS)
    check_choice("align", align, ALIGNS)
    check_choice("images", images, ("whole", "crops"))
    needs_hr = any(METRICS[n].full_reference for n in names)
    if needs_hr and hr_dir is None:
        fr = [n for n in names if METRICS[n].full_reference]
        raise D3SRError(f"full-reference metric(s) {', '.join(fr)} need hr=<folder of ground-truth images>")
    pairs, notes = pair_images(sr_dir, hr_dir if needs_hr else None)
    suite = MetricSuite(names, device=device, color=color, crop_border=crop_border)

    rows = []
    for stem, sr_path, hr_path in tqdm(
        pairs, desc=f"evaluating {test_set or Path(sr_dir).name}", disable=not progress
    ):
        try:
            sr = read_image(sr_path)
            hr = read_image(hr_path) if hr_path is not None else None
        except OSError as error:
            raise D3SRError(f"cannot read image: {error}") from error
        note = None
        if hr is not None:
            sr, hr, note = align_pair(sr, hr, sr_path, hr_path, align)
            if note:
                notes.append(note)
        row = {"image": stem, "sr": sr_path.name, "hr": hr_path.name if hr_path else "",
               "width": sr.shape[-1], "height": sr.shape[-2], "aligned": "cropped" if note else ""}  # fmt: skip
        row.update(suite(sr, hr))
        rows.append(row)

    means = {name: _mean([row[name] for row in rows]) for name in suite.names}
    if "fid" in names:
        means["fid"] = folder_fid(sr_dir, hr_dir, device=suite.device)
        notes.append("FID is computed over the whole SR and HR folders (pyiqa scans them recursively).")
    protocol = protocol_of(names, color, crop_border, align, test_set, images)
    protocol["images_evaluated"] = len(rows)
    return Evaluation(rows, means, protocol, notes)


def folder_fid(sr_dir: str | Path, hr_dir: str | Path, device: str | torch.device = "auto") -> float:
    """Clean-FID between the SR and HR folders (pyiqa fid; weights checked first, never downloads)."""
    model = build_metric("fid", device)
    with contextlib.redirect_stdout(io.StringIO()):
        return float(model(str(sr_dir), str(hr_dir), device=resolve_device(device), num_workers=0, verbose=False))
