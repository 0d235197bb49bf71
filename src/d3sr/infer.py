"""Upscale images ×4: `python -m d3sr.infer bundle=PATH input=FILE|DIR|embedded output=DIR [key=value ...]`.

bundle: an inference bundle folder (d3sr.export) or a training checkpoint (.ckpt). Options in conf/infer.yaml.
Outputs are PNG files named like the inputs (`photo.jpg` → `photo.png`), each written to a temporary file and
renamed into place; inputs are never overwritten. Gray images become RGB, 16-bit images are scaled to [0, 1] (the
output is 8-bit), EXIF orientation is applied, and transparent images are composited on white (`alpha=white`) or
keep their alpha channel, upsampled bicubically (`alpha=keep`). GIFs are read too (in folders as well), and an
animated image (GIF, WebP, APNG, multi-page TIFF) is upscaled from its first frame, with a note that says so.
Unreadable files are reported and skipped: the
exit status is then 1 (2 when the only named file is unreadable, and for every setup error).
`input=embedded` upscales ×4-downscaled photos shipped with scikit-image (outputs at the photos' own size).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig
from tqdm import tqdm

from d3sr.commands import hydra_command
from d3sr.errors import D3SRError
from d3sr.images import (
    EMBEDDED_HELD_OUT,
    IMAGE_EXTENSIONS,
    UNREADABLE,
    embedded_lq,
    frame_count,
    list_image_files,
    read_image,
    read_image_with_alpha,
    upsample_lq,
    write_png,
)
from d3sr.inference import D3SRPipeline, InferenceOptions
from d3sr.options import check_choice

log = logging.getLogger("d3sr.infer")

# Photos upscaled by `input=embedded` (make demo): the held-out photos no training stage has seen, and astronaut.
EMBEDDED_INPUTS = (*EMBEDDED_HELD_OUT, "astronaut")
# What a folder input holds: the image formats, and GIFs (their first frame, as a single GIF file given).
INPUT_EXTENSIONS = (*IMAGE_EXTENSIONS, ".gif")


@dataclass
class Source:
    """One input: a file to read, or an embedded photo (`path` None)."""

    name: str
    path: Path | None = None


def read_input(path: Path, alpha: str = "white") -> tuple[torch.Tensor, torch.Tensor | None]:
    """(rgb (3, H, W), alpha (1, H, W) or None) in [0, 1]; 'white' composites transparency on white."""
    if alpha == "keep":
        return read_image_with_alpha(path)
    return read_image(path, alpha="white"), None


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
        files = list_image_files(path, extensions=INPUT_EXTENSIONS)
        if not files:
            names = ", ".join(e.removeprefix(".") for e in INPUT_EXTENSIONS)
            raise D3SRError(f"input={path} holds no images ({names})")
        return [Source(p.stem, p) for p in files], path
    raise D3SRError(f"input={input_spec} does not exist (give an image file, a folder, or 'embedded')")


def check_output_folder(output: Path) -> None:
    """D3SRError unless `output` is, or can be created as, a writable folder (checked before the model loads)."""
    if output.exists() and not output.is_dir():
        raise D3SRError(f"output={output} is a file, not a folder")
    existing = next(p for p in (output, *output.parents) if p.exists())
    if not existing.is_dir():
        raise D3SRError(f"output={output} cannot be created: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise D3SRError(f"output={output} cannot be written: no write permission in {existing}")


def output_paths(sources: list[Source], input_dir: Path | None, output: Path) -> list[Path]:
    """`output/<name>.png` per source; D3SRError if any would overwrite an input or another output."""
    check_output_folder(output)
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


class TileProgress:
    """A nested tqdm bar (leave=False) over the tiles of the image being upscaled, one bar per tiled stage.

    Called as pipeline progress(stage, done, total): steps are tiles through the UNet, and tiles through one layer
    of the VAE with vae_tiling=groupnorm_sync (tiles × layers in all).
    """

    NAMES = {"encode": "VAE encode", "denoise": "UNet", "decode": "VAE decode"}

    def __init__(self) -> None:
        self.bar: tqdm | None = None
        self.stage: str | None = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage != self.stage or self.bar is None:
            self.close()
            self.stage = stage
            self.bar = tqdm(total=total, desc=f"  {self.NAMES.get(stage, stage)}", unit="step", leave=False,
                            file=sys.stderr)  # fmt: skip
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.bar = self.stage = None


# ------------------------------------------------------------------------------------------------------------------
# The command.


def infer(cfg: DictConfig) -> int:
    """Upscale every input as configured; returns the exit status (0, or 1 when some inputs were unreadable)."""
    if not cfg.get("bundle") or not cfg.get("input") or not cfg.get("output"):
        raise D3SRError("usage: python -m d3sr.infer bundle=BUNDLE_DIR|CKPT input=FILE|DIR|embedded output=DIR")
    options = InferenceOptions.from_config(cfg.inference)
    device, dtype = options.torch_device(), options.torch_dtype()
    check_choice("alpha", cfg.alpha, ("white", "keep"))
    sources, input_dir = collect_sources(str(cfg.input))
    output = Path(cfg.output).expanduser()
    targets = output_paths(sources, input_dir, output)

    pipe = D3SRPipeline.from_pretrained(
        cfg.bundle, device=device, dtype=dtype, base_model=cfg.get("base_model"), fuse=cfg.fuse_lora, options=options
    )
    log.info("Loaded %s on %s; tile_size=%d tile_overlap=%d vae_tiling=%s color_fix=%s", cfg.bundle, device,
             options.tile_size, options.tile_overlap, options.vae_tiling, options.color_fix)  # fmt: skip
    log.info(options.resolved(device))

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
        if source.path is not None and (frames := frame_count(source.path)) > 1:
            tqdm.write(f"note: {source.path} is animated ({frames} frames): upscaling its first frame",
                       file=sys.stderr)  # fmt: skip
        tiles = TileProgress()
        try:
            sr = pipe.super_resolve(rgb[None], progress=tiles)[0].cpu()
        finally:
            tiles.close()
        if alpha is not None:
            sr = torch.cat([sr, upsample_lq(alpha[None])[0]])
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


main = hydra_command("infer", infer)

if __name__ == "__main__":
    main()
