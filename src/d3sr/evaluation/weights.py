"""The weight files each evaluation metric needs, where they must be, and a guard that never downloads.

pyiqa (0.1.16) and the libraries it builds on fetch weights on first use. Offline that ends in a network traceback;
here every file is listed with its exact name, folder and URL, `check_weights` reports what is present, and
`require_weights` (called before a metric is built) raises a D3SRError naming what is missing and where to put it.
`no_downloads` turns any download attempted anyway into the same kind of error, and `maniqa_backbone_offline` builds
MANIQA's ViT backbone without the ImageNet weights its checkpoint overwrites. Both swap a few library attributes for
the duration of a `with` block (`swapped`) and put the originals back on exit.

Folders, all under torch's hub folder `torch.hub.get_dir()` ($TORCH_HOME/hub, default ~/.cache/torch/hub):
- `checkpoints/`: torchvision ImageNet backbones (AlexNet for LPIPS, VGG16 for DISTS), loaded by torch.hub;
- `pyiqa/`: pyiqa's own files (its DEFAULT_CACHE_DIR), from the Hugging Face repo chaofengc/IQA-PyTorch-Weights;
- `clip/`: OpenAI CLIP checkpoints (CLIPIQA's RN50), checked against the SHA-256 in their URL.
"""

from __future__ import annotations

import contextlib
import os
import urllib.request
from collections.abc import Iterable, Iterator, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from d3sr.errors import ConfigError, D3SRError

PYIQA_URL = "https://huggingface.co/chaofengc/IQA-PyTorch-Weights/resolve/main/{}"
TORCHVISION_URL = "https://download.pytorch.org/models/{}"
CLIP_RN50_URL = (
    "https://openaipublic.azureedge.net/clip/models/"
    "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762/RN50.pt"
)


@dataclass(frozen=True)
class WeightFile:
    """One file a metric loads: its name, the hub sub-folder it is read from, the URL it comes from, and its role."""

    name: str
    folder: str  # 'checkpoints' | 'pyiqa' | 'clip', under torch.hub.get_dir()
    url: str
    role: str

    @property
    def path(self) -> Path:
        """Where the file must be now (follows $TORCH_HOME)."""
        return Path(torch.hub.get_dir()) / self.folder / self.name


def _pyiqa(name: str, role: str) -> WeightFile:
    return WeightFile(name, "pyiqa", PYIQA_URL.format(name), role)


def _torchvision(name: str, role: str) -> WeightFile:
    return WeightFile(name, "checkpoints", TORCHVISION_URL.format(name), role)


# Metric name (see suite.METRICS) → the files pyiqa 0.1.16 loads when that metric is created.
WEIGHT_FILES: dict[str, tuple[WeightFile, ...]] = {
    "psnr": (),
    "ssim": (),
    "lpips": (
        _torchvision("alexnet-owt-7be5be79.pth", "AlexNet ImageNet backbone (torchvision IMAGENET1K_V1)"),
        _pyiqa("LPIPS_v0.1_alex-df73285e.pth", "LPIPS v0.1 linear heads for AlexNet"),
    ),
    "dists": (
        _torchvision("vgg16-397923af.pth", "VGG16 ImageNet backbone (torchvision IMAGENET1K_V1)"),
        _pyiqa("DISTS_weights-f5e65c96.pth", "DISTS α/β weights"),
    ),
    "niqe": (_pyiqa("niqe_modelparameters.mat", "NIQE pristine-image model (MVG mean and covariance)"),),
    "musiq": (_pyiqa("musiq_koniq_ckpt-e95806b9.pth", "MUSIQ trained on KonIQ-10k"),),
    # The ViT-B/8 backbone is built without timm's ImageNet download: the checkpoint (loaded strict) holds all of it.
    "maniqa": (_pyiqa("MANIQA_PIPAL-ae6d356b.pth", "MANIQA trained on PIPAL (the protocol's variant)"),),
    "clipiqa": (WeightFile("RN50.pt", "clip", CLIP_RN50_URL, "OpenAI CLIP RN50 (CLIPIQA, fixed prompts)"),),
    "fid": (_pyiqa("pt_inception-2015-12-05-6726825d.pth", "FID Inception-v3 (TensorFlow port)"),),
}


@dataclass(frozen=True)
class WeightStatus:
    """A weight file of one metric and whether it is in place."""

    metric: str
    file: WeightFile
    present: bool


@dataclass
class WeightsReport:
    """Presence of every weight file the requested metrics need."""

    metrics: list[str]
    entries: list[WeightStatus]

    @property
    def missing(self) -> list[WeightStatus]:
        return [e for e in self.entries if not e.present]

    @property
    def ok(self) -> bool:
        return not self.missing

    def format(self) -> str:
        """Human-readable report: one line per file, then how to fetch the missing ones."""
        lines = [f"Evaluation weights (torch hub folder: {torch.hub.get_dir()}; set TORCH_HOME to move it)"]
        for e in self.entries:
            lines.append(f"  [{'ok' if e.present else 'missing'}] {e.metric:8s} {e.file.path}")
        for metric in (m for m in self.metrics if not WEIGHT_FILES[m]):
            lines.append(f"  [ok] {metric:8s} (no weight files)")
        if self.missing:
            lines.append("")
            lines.append(missing_message(self.missing))
        else:
            lines.append("All weight files are present.")
        return "\n".join(lines)


def check_weights(metrics: Iterable[str]) -> WeightsReport:
    """Which weight files of `metrics` (canonical names, see suite.metric_names) are present; ConfigError for an
    unknown name."""
    metrics = list(metrics)
    for metric in metrics:
        if metric not in WEIGHT_FILES:
            raise ConfigError(f"unknown metric {metric!r}; choose from {', '.join(WEIGHT_FILES)}")
    entries = [WeightStatus(m, f, f.path.is_file()) for m in metrics for f in WEIGHT_FILES[m]]
    return WeightsReport(metrics, entries)


def missing_message(missing: list[WeightStatus]) -> str:
    """What is missing, where each file goes, and the URL to fetch it from on a connected machine."""
    metrics = sorted({e.metric for e in missing})
    lines = [f"Missing weight files for metric(s) {', '.join(metrics)} (nothing is downloaded):"]
    for e in missing:
        lines.append(f"  {e.file.name}  ({e.metric}: {e.file.role})")
        lines.append(f"    put it at: {e.file.path}")
        lines.append(f"    fetch it from: {e.file.url}")
    lines.append(
        "On a machine with internet, download each URL (e.g. `curl -L -o FILE URL`) and copy the files to the paths "
        "above (they follow $TORCH_HOME). `python -m d3sr.check_weights --metrics ...` lists them again."
    )
    return "\n".join(lines)


def require_weights(metrics: str | Iterable[str]) -> None:
    """Raise D3SRError listing every missing file of `metrics` at once (exact names, folders, URLs); return if all
    are present."""
    report = check_weights([metrics] if isinstance(metrics, str) else metrics)
    if not report.ok:
        raise D3SRError(missing_message(report.missing))


def _refuse_download(url, dst, *args, **kwargs):
    raise D3SRError(
        f"A metric tried to download {url} to {dst}; evaluation never downloads. Fetch that file on a connected "
        f"machine and put it at {dst}."
    )


def _refuse_urlopen(url, *args, **kwargs):
    target = getattr(url, "full_url", url)
    raise D3SRError(
        f"A metric tried to download {target}; evaluation never downloads. For CLIP checkpoints the file in "
        f"{Path(torch.hub.get_dir()) / 'clip'} is missing or its SHA-256 does not match the one in the URL."
    )


_ABSENT = object()


@contextlib.contextmanager
def swapped(owner: Any, **values: Any) -> Iterator[None]:
    """While active, `owner.<name>` is `values[name]` (for a mapping such as os.environ: `owner[name]`); on exit each
    name gets its old value back, or is removed if it had none."""
    is_mapping = isinstance(owner, MutableMapping)
    old = {name: owner.get(name, _ABSENT) if is_mapping else getattr(owner, name, _ABSENT) for name in values}
    try:
        for name, value in values.items():
            if is_mapping:
                owner[name] = value
            else:
                setattr(owner, name, value)
        yield
    finally:
        for name, value in old.items():
            if value is not _ABSENT:
                if is_mapping:
                    owner[name] = value
                else:
                    setattr(owner, name, value)
            elif is_mapping:
                owner.pop(name, None)
            elif hasattr(owner, name):
                delattr(owner, name)


@contextlib.contextmanager
def no_downloads() -> Iterator[None]:
    """While active: pyiqa reads its files from the current torch hub folder and any download raises D3SRError.

    pyiqa fixes its cache folder (`get_dir()/pyiqa`) when first imported; it is re-pointed here so a later change of
    TORCH_HOME is honoured, and stays consistent with `WeightFile.path`. pyiqa and torch.hub fetch files with
    `download_url_to_file` (pyiqa holds its own reference), CLIP with `urllib.request.urlopen`, timm and the Hugging
    Face hub honour HF_HUB_OFFLINE.
    """
    import pyiqa.utils.download_util as download_util

    cache = os.path.join(torch.hub.get_dir(), "pyiqa")
    with (
        swapped(download_util, DEFAULT_CACHE_DIR=cache, download_url_to_file=_refuse_download),
        swapped(torch.hub, download_url_to_file=_refuse_download),
        swapped(urllib.request, urlopen=_refuse_urlopen),
        swapped(os.environ, HF_HUB_OFFLINE="1"),
    ):
        yield


@contextlib.contextmanager
def maniqa_backbone_offline() -> Iterator[None]:
    """While active, MANIQA builds its ViT-B/8 backbone with random weights instead of asking timm for ImageNet ones.

    The ImageNet weights would only be overwritten: MANIQA's checkpoint is loaded strict, so every backbone weight
    comes from it (WEIGHT_FILES['maniqa'] is that checkpoint alone).
    """
    import pyiqa.archs.maniqa_arch as maniqa_arch

    timm = maniqa_arch.timm

    def create_model(model_name: str, pretrained: bool = False, **kwargs: Any) -> torch.nn.Module:
        return timm.create_model(model_name, pretrained=False, **kwargs)

    with swapped(maniqa_arch, timm=SimpleNamespace(create_model=create_model)):
        yield
