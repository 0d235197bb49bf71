"""Folder evaluation: SR and HR images paired by file stem, sizes aligned, per-image scores, means and FID.

The HR folder defines the test set; every number comes with the protocol it depends on (`Evaluation.protocol`),
which the reports (report.py) print as their header. Images are read as RGB in [0, 1] by d3sr.images.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from d3sr.errors import D3SRError
from d3sr.evaluation.suite import (
    COLORS,
    DEFAULT_METRICS,
    METRICS,
    MetricSuite,
    build_metric,
    metric_names,
    metric_variant,
    pyiqa_version,
)
from d3sr.evaluation.weights import require_weights
from d3sr.images import IMAGE_EXTENSIONS, UNREADABLE, list_image_files, read_image
from d3sr.options import check_choice, check_positive, resolve_device

ALIGNS = ("error", "crop")  # SR/HR size mismatch: an error, or both cropped to the common top-left region
IMAGE_KINDS = ("whole", "crops")  # what the folders hold (the paper: whole images; StableSR test sets: 512² crops)


@dataclass
class Evaluation:
    """Result of `evaluate_folders`: per-image rows, per-metric means, folder-level scores and the protocol used."""

    rows: list[dict]
    means: dict[str, float]
    protocol: dict
    notes: list[str] = field(default_factory=list)


def check_protocol(color: str = "y", crop_border: int = 0, align: str = "error", images: str = "whole") -> None:
    """ConfigError naming the key unless every protocol value is valid (so a run fails before any work)."""
    check_choice("color", color, COLORS)
    check_positive("crop_border", crop_border, allow_zero=True)
    check_choice("align", align, ALIGNS)
    check_choice("images", images, IMAGE_KINDS)


def list_images(folder: str | Path) -> tuple[dict[str, Path], list[Path]]:
    """Images directly inside `folder` keyed by file stem, and the other files there (D3SRError for a missing
    folder, an empty one, or two images with one stem)."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise D3SRError(f"image folder {folder} does not exist")
    files = list_image_files(folder)
    if not files:
        raise D3SRError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {folder}")
    images: dict[str, Path] = {}
    for path in files:
        if path.stem in images:
            raise D3SRError(
                f"{folder} holds two images with the stem {path.stem!r}: {images[path.stem].name}, {path.name}"
            )
        images[path.stem] = path
    others = [p for p in sorted(folder.iterdir()) if p.is_file() and p not in files and not p.name.startswith(".")]
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


def _read(path: Path) -> torch.Tensor:
    try:
        return read_image(path)
    except UNREADABLE as error:
        raise D3SRError(f"cannot read image {path}: {error}") from error


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

    names = metric_names(metrics)
    check_protocol(color, crop_border, align, images)
    needs_hr = any(METRICS[n].full_reference for n in names)
    if needs_hr and hr_dir is None:
        fr = [n for n in names if METRICS[n].full_reference]
        raise D3SRError(f"full-reference metric(s) {', '.join(fr)} need hr=<folder of ground-truth images>")
    pairs, notes = pair_images(sr_dir, hr_dir if needs_hr else None)
    require_weights(names)  # FID's files too: everything missing in one message, before any metric is built
    suite = MetricSuite(names, device=device, color=color, crop_border=crop_border)

    rows = []
    for stem, sr_path, hr_path in tqdm(
        pairs, desc=f"evaluating {test_set or Path(sr_dir).name}", disable=not progress
    ):
        sr = _read(sr_path)
        hr = _read(hr_path) if hr_path is not None else None
        note = None
        if hr is not None:
            sr, hr, note = align_pair(sr, hr, sr_path, hr_path, align)
            if note:
                notes.append(note)
        row = {"image": stem, "sr": sr_path.name, "hr": hr_path.name if hr_path else "",
               "width": sr.shape[-1], "height": sr.shape[-2], "aligned": "cropped" if note else ""}  # fmt: skip
        try:
            row.update(suite(sr, hr))
        except RuntimeError as error:  # e.g. an image smaller than SSIM's 11×11 window
            raise D3SRError(
                f"cannot score {sr_path} ({sr.shape[-1]}×{sr.shape[-2]} px, crop_border={crop_border}): "
                f"{str(error).splitlines()[0]}. Images must be larger than every metric's window (SSIM: 11 px "
                "after crop_border); remove this image or the metric"
            ) from error
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
    device = resolve_device(device)
    model = build_metric("fid", device)
    with contextlib.redirect_stdout(io.StringIO()):
        return float(model(str(sr_dir), str(hr_dir), device=device, num_workers=0, verbose=False))
