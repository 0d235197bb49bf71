"""How closely tiled inference matches one whole-image pass, per tile configuration and per generator stage.

    python bench/tiling.py --model outputs/demo/train/checkpoints/last.ckpt   # a checkpoint or bundle (make demo's)
    python bench/tiling.py --full-size --sizes 512 --tiles 256/64 256/128    # full-size SD 2.1-base, random weights

For each output size and tile.size/tile.overlap, super-resolves embedded photos (scikit-image, ×4 bicubic
downscale, cropped to the output size / 4) once untiled and once tiled, with no colour fix, and prints the mean and
max |tiled − untiled| over pixels in [0, 1] and the PSNR between the two. The three stage columns tile one stage at
a time (VAE encode, UNet, VAE decode), the others running on the whole image, and show which stage contributes the
difference. Every run is deterministic (float32, no noise), so the figures repeat exactly on the same machine.
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

from d3sr.images import embedded_lq, from_model_range, generator_input
from d3sr.inference.pipeline import D3SRPipeline
from d3sr.inference.tiling import STAGES, check_tiling, run_generator, tile_count
from d3sr.models.generator import OneStepGenerator

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inference import random_generator  # noqa: E402  (bench/inference.py: the full-size random generator)

PHOTOS = ("astronaut", "rocket", "coffee", "chelsea")


@torch.inference_mode()
def sr_stages(generator: OneStepGenerator, lq: torch.Tensor, tile: int, overlap: int, stages=STAGES):
    """SR (B, 3, 4h, 4w) in [0, 1] as D3SRPipeline.super_resolve without colour fix, tiling only `stages`."""
    sr = run_generator(generator, generator_input(lq), tile, overlap, tiled_stages=stages)
    return from_model_range(sr[..., : lq.shape[-2] * 4, : lq.shape[-1] * 4])


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = (a - b).pow(2).mean().item()
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def mean_abs_diff(outputs: list[torch.Tensor], references: list[torch.Tensor]) -> float:
    """Mean |output − reference| over pixels, averaged over the images."""
    return sum((o - r).abs().mean().item() for o, r in zip(outputs, references)) / len(outputs)


def parse_tile(text: str) -> tuple[int, int]:
    size, _, overlap = text.partition("/")
    tile = (int(size), int(overlap or int(size) // 4))
    check_tiling(*tile)
    return tile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", type=Path, help="a training checkpoint (.ckpt) or an inference bundle folder")
    source.add_argument("--full-size", action="store_true", help="full-size SD 2.1-base generator, random weights")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512], help="output sides (square crops)")
    parser.add_argument("--tiles", type=parse_tile, nargs="+", default=[(128, 32), (128, 64), (256, 64)],
                        help="tile.size/tile.overlap pairs, e.g. 256/64")  # fmt: skip
    parser.add_argument("--photos", nargs="+", default=list(PHOTOS), help="embedded photos to average over")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    if args.full_size:
        generator, label = random_generator(args.device), "full-size SD 2.1-base UNet + VAE, random weights"
    else:
        pipe = D3SRPipeline.from_pretrained(args.model, device=args.device, dtype=torch.float32)
        generator, label = pipe.generator, str(args.model)
    lqs = {name: embedded_lq(name).to(args.device) for name in args.photos}
    print(f"\nTiled vs untiled SR, {label}, {args.device}, torch {torch.__version__}")
    print(f"photos: {', '.join(args.photos)}, those large enough for the output (mean over them; images in [0, 1],")
    print("no colour fix)\n")
    print("| output | photos | tile/overlap | tiles/stage | mean abs diff | max abs diff | PSNR (dB) "
          "| encode only | UNet only | decode only |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        crops = [lq[None, :, : size // 4, : size // 4] for lq in lqs.values() if min(lq.shape[-2:]) * 4 >= size]
        if not crops:
            raise SystemExit(f"no photo among {args.photos} is large enough for a {size}² output")
        start = time.perf_counter()
        wholes = [sr_stages(generator, lq, 0, 0) for lq in crops]
        for tile, overlap in args.tiles:
            if tile >= size:
                continue  # one tile: exactly the untiled output
            outputs = [sr_stages(generator, lq, tile, overlap) for lq in crops]
            mean = mean_abs_diff(outputs, wholes)
            peak = max((o - w).abs().max().item() for o, w in zip(outputs, wholes))
            quality = sum(psnr(o, w) for o, w in zip(outputs, wholes)) / len(crops)
            # One stage tiled at a time, the others on the whole image.
            stages = [
                mean_abs_diff([sr_stages(generator, lq, tile, overlap, (stage,)) for lq in crops], wholes)
                for stage in STAGES
            ]
            tiles = tile_count(size, size, tile, overlap)
            print(f"| {size}² | {len(crops)} | {tile}/{overlap} | {tiles} | {mean:.4f} | {peak:.3f} | {quality:.1f} | "
                  f"{stages[0]:.4f} | {stages[1]:.4f} | {stages[2]:.4f} |", flush=True)  # fmt: skip
        print(f"  ({size}²: {time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
