"""Upscale images ×4: `python -m d3sr.infer bundle=PATH input=FILE|DIR|embedded output=DIR [key=value ...]`.

bundle: an inference bundle folder (d3sr.export) or a training checkpoint (.ckpt). Options in conf/infer.yaml.
Outputs are PNG files named like the inputs (`photo.jpg` → `photo.png`), each written to a temporary file and
renamed into place; inputs are never overwritten. Gray images become RGB, 16-bit images are scaled to [0, 1] (the
output is 8-bit), EXIF orientation is applied, and transparent images are composited on white (`alpha=white`) or
keep their alpha channel, upsampled bicubically (`alpha=keep`). Unreadable files are reported and skipped: the
exit status is then 1 (2 when the only named file is unreadable, and for every setup error).
`input=embedded` upscales ×4-downscaled photos shipped with scikit-image (outputs at the photos' own size).
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import hydra
import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from PIL import Image, ImageOps
from tqdm import tqdm

from d3sr.atomic_files import write_atomically
from d3sr.cli import run_reporting_errors
from d3sr.config import D3SRError, check_choice
from d3sr.data.datasets import IMAGE_EXTENSIONS, embedded_photo, pil_to_tensor, to_uint8
from d3sr.inference.color_fix import COLOR_FIXES
from d3sr.inference.pipeline import D3SRPipeline
from d3sr.inference.tiling import SCALE, check_tiling, upsample

log = logging.getLogger("d3sr.infer")

# Photos upscaled by `input=embedded` (make demo): astronaut and coffee are training photos of the demo,
# chelsea and colorwheel are its held-out validation photos.
EMBEDDED_INPUTS = ("astronaut", "chelsea", "coffee", "rocket", "colorwheel")
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
UNREADABLE = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


@dataclass
class Source:
    """One input: a file to read, or an embedded photo (`path` None)."""

    name: str
    path: Path | None = None


# ------------------------------------------------------------------------------------------------------------------
# Reading and writing images.


def read_input(path: Path, alpha: str = "white") -> tuple[torch.Tensor, torch.Tensor | None]:
    """(rgb (3, H, W), alpha (1, H, W) or None) in [0, 1], EXIF orientation applied.

    alpha='white' composites transparent images on white (no alpha returned); 'keep' returns the alpha channel
    and the unmodified colours. Raises OSError (or ValueError) when the file cannot be decoded.
    """
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image)
        image.load()
        transparent = image.mode in ("RGBA", "RGBa", "LA", "La", "PA") or (
            image.mode == "P" and "transparency" in image.info
        )
        if not transparent:
            return pil_to_tensor(image), None
        rgba = to_tensor_rgba(image.convert("RGBA"))
    rgb, opacity = rgba[:3], rgba[3:]
    if alpha == "keep":
        return rgb, opacity
    return rgb * opacity + (1 - opacity), None


def to_tensor_rgba(image: Image.Image) -> torch.Tensor:
    """(4, H, W) float32 in [0, 1] from an RGBA PIL image."""
    array = np.asarray(image, dtype=np.float32) / 255.0
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def embedded_lq(name: str) -> torch.Tensor:
    """A scikit-image photo cropped to multiples of 4 and downscaled ×4 (bicubic, antialiased): (3, h, w)."""
    photo = embedded_photo(name)
    height, width = photo.shape[-2:]
    photo = photo[:, : height - height % SCALE, : width - width % SCALE]
    lq = F.interpolate(photo[None], scale_factor=1 / SCALE, mode="bicubic", antialias=True, align_corners=False)
    return lq[0].clamp(0, 1)


def write_png(image: torch.Tensor, path: Path) -> None:
    """Save (3 or 4, H, W) in [0, 1] as an 8-bit PNG, atomically."""
    array = to_uint8(image)
    mode = "RGBA" if array.shape[-1] == 4 else "RGB"
    write_atomically(path, lambda temporary: Image.fromarray(array, mode).save(temporary, format="PNG"))


# ------------------------------------------------------------------------------------------------------------------
# Inputs, outputs and the device.


def collect_sources(input_spec: str) -> tuple[list[Source], Path | None]:
    """The images to upscale and the input folder (None for a single file or `embedded`)."""
    if input_spec == "embedded":
        return [Source(name) for name in EMBEDDED_INPUTS], None
    path = Path(input_spec).expanduser()
    if path.is_file():
        return [Source(path.stem, path)], None
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise D3SRError(f"input={path} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        return [Source(p.stem, p) for p in files], path
    raise D3SRError(f"input={input_spec} does not exist (give an image file, a folder, or 'embedded')")


def output_paths(sources: list[Source], input_dir: Path | None, output: Path) -> list[Path]:
    """`output/<name>.png` per source; D3SRError if any would overwrite an input or another output."""
    if input_dir is not None and output.resolve() == input_dir.resolve():
        raise D3SRError(f"output={output} is the input folder: choose another folder (inputs are never overwritten)")
    paths = [output / f"{source.name}.png" for source in sources]
    inputs = {source.path.resolve() for source in sources if source.path is not None}
    seen: dict[Path, Source] = {}
    for source, path in zip(sources, paths):
        if path.resolve() in inputs:
            raise D3SRError(f"writing {path} would overwrite an input: choose another output folder")
        if path in seen:
            raise D3SRError(f"{seen[path].path} and {source.path} would both be written to {path}: rename one")
        seen[path] = source
    return paths


def resolve_device(device: str, precision: str) -> tuple[str, torch.dtype]:
    """The torch device and dtype for `device` (auto|cpu|cuda|cuda:N) and `precision` (auto|fp32|bf16|fp16)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if not (device == "cpu" or device == "cuda" or device.startswith("cuda:")):
        raise D3SRError(f"device={device!r} is not valid; choose 'auto', 'cpu', 'cuda' or 'cuda:N'")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise D3SRError(f"device={device} but no CUDA device is available; use device=cpu")
    if precision == "auto":
        precision = "bf16" if device.startswith("cuda") else "fp32"
    check_choice("precision", precision, ("auto", *PRECISIONS))
    if precision == "fp16" and device == "cpu":
        raise D3SRError("precision=fp16 needs a CUDA device; use precision=fp32 or bf16 on the CPU")
    return device, PRECISIONS[precision]


# ------------------------------------------------------------------------------------------------------------------
# The command.


def infer(cfg: DictConfig) -> int:
    """Upscale every input as configured; returns the exit status (0, or 1 when some inputs were unreadable)."""
    if not cfg.get("bundle") or not cfg.get("input") or not cfg.get("output"):
        raise D3SRError("usage: python -m d3sr.infer bundle=BUNDLE_DIR|CKPT input=FILE|DIR|embedded output=DIR")
    try:  # bad option values are the user's to fix: one message, status 2
        check_tiling(cfg.tile.size, cfg.tile.overlap)
        check_choice("color_fix", cfg.color_fix, COLOR_FIXES)
        check_choice("alpha", cfg.alpha, ("white", "keep"))
        device, dtype = resolve_device(str(cfg.device), str(cfg.precision))
    except ValueError as error:
        raise D3SRError(str(error)) from error
    sources, input_dir = collect_sources(str(cfg.input))
    output = Path(cfg.output).expanduser()
    targets = output_paths(sources, input_dir, output)

    pipe = D3SRPipeline.from_pretrained(
        cfg.bundle, device=device, dtype=dtype, base_model=cfg.get("base_model"), fuse=cfg.fuse_lora,
        tile_size=cfg.tile.size, tile_overlap=cfg.tile.overlap, color_fix=cfg.color_fix,
    )  # fmt: skip
    log.info("Loaded %s on %s (%s); tile.size=%d tile.overlap=%d color_fix=%s", cfg.bundle, device,
             str(dtype).removeprefix("torch."), cfg.tile.size, cfg.tile.overlap, cfg.color_fix)  # fmt: skip

    failed: list[str] = []
    start = time.perf_counter()
    for source, target in zip(tqdm(sources, desc="Upscaling", unit="image", file=sys.stderr), targets):
        # Read (skip unreadable files), super-resolve, carry the alpha channel if asked, write atomically.
        try:
            rgb, alpha = read_input(source.path, cfg.alpha) if source.path else (embedded_lq(source.name), None)
        except UNREADABLE as error:
            if len(sources) == 1 and input_dir is None:
                raise D3SRError(f"cannot read {source.path}: {error}") from error
            tqdm.write(f"skipped unreadable {source.path}: {error}", file=sys.stderr)
            failed.append(str(source.path))
            continue
        sr = pipe.super_resolve(rgb[None])[0].cpu()
        if alpha is not None:
            sr = torch.cat([sr, upsample(alpha[None])[0]])
        output.mkdir(parents=True, exist_ok=True)
        write_png(sr, target)
    done = len(sources) - len(failed)
    seconds = time.perf_counter() - start
    summary = f"Upscaled {done} image{'s' * (done != 1)}"
    summary += f" in {seconds:.1f} s ({seconds / max(done, 1):.2f} s/image) → {output}"
    if failed:
        summary += f"; {len(failed)} unreadable file{'s' * (len(failed) != 1)} skipped: {', '.join(failed)}"
    print(summary)
    return 1 if failed else 0


@hydra.main(version_base="1.3", config_path="../../conf", config_name="infer")
def main(cfg: DictConfig) -> None:
    status = run_reporting_errors(infer, cfg)
    if status:
        sys.exit(status)


if __name__ == "__main__":
    main()
