"""How closely tiled inference matches one whole-image pass, per tile setting, VAE tiling mode and generator stage.

    python bench/tiling.py --backbone                                          # the shipped pretrained tiny backbone
    python bench/tiling.py --model outputs/demo/train/checkpoints/last.ckpt    # a checkpoint or bundle (make demo's)
    python bench/tiling.py --full-size --vae-only --sizes 512 --tiles 256/64   # full-size SD VAE, random weights

For each output size, tile.size/tile.overlap and vae_tiling (groupnorm_sync, blend), super-resolves embedded photos
(scikit-image, ×4 bicubic downscale, cropped to the output size / 4) once untiled and once tiled, with no colour
fix, and prints the PSNR between the two (images in [0, 1], mean over the photos) for the whole pipeline tiled and
for one stage tiled at a time (VAE encode, UNet, VAE decode; the others on the whole image), and the mean and max
|tiled − untiled|. --vae-only replaces the UNet by the identity (a VAE round trip: the full-size VAE in minutes on a
CPU). Every run is deterministic (no noise), so the figures repeat on the same machine. Prints a Markdown table.
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
from d3sr.inference.tiling import STAGES, check_tiling, core_count, run_generator, tile_count
from d3sr.models.generator import OneStepGenerator

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inference import random_generator  # noqa: E402  (bench/inference.py: the full-size random generator)

PHOTOS = ("astronaut", "rocket", "coffee", "chelsea")


@torch.inference_mode()
def sr_stages(generator: OneStepGenerator, lq: torch.Tensor, tile: int, overlap: int, stages=STAGES, **settings):
    """SR (B, 3, 4h, 4w) in [0, 1] as D3SRPipeline.super_resolve without colour fix, tiling only `stages`."""
    sr = run_generator(generator, generator_input(lq), tile, overlap, tiled_stages=stages, **settings)
    return from_model_range(sr[..., : lq.shape[-2] * 4, : lq.shape[-1] * 4])


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = (a.double() - b.double()).pow(2).mean().item()
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def mean_psnr(outputs: list[torch.Tensor], references: list[torch.Tensor]) -> str:
    value = sum(psnr(o, r) for o, r in zip(outputs, references)) / len(outputs)
    return "equal" if math.isinf(value) else f"{value:.1f}"


def parse_tile(text: str) -> tuple[int, int]:
    size, _, overlap = text.partition("/")
    tile = (int(size), int(overlap or int(size) // 4))
    check_tiling(*tile)
    return tile


def pretrained_backbone(device: str) -> OneStepGenerator:
    """The shipped demo backbone as a generator (LoRA at zero: the backbone itself), T_L of the demo."""
    from d3sr.models.loading import pretrained_tiny

    return OneStepGenerator(pretrained_tiny("sd"), timestep=199).eval().to(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", type=Path, help="a training checkpoint (.ckpt) or an inference bundle folder")
    source.add_argument("--backbone", action="store_true", help="the pretrained tiny backbone shipped in d3sr/assets")
    source.add_argument("--full-size", action="store_true", help="full-size SD 2.1-base generator, random weights")
    parser.add_argument("--vae-only", action="store_true", help="the UNet replaced by the identity (VAE round trip)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512], help="output sides (square crops)")
    parser.add_argument("--tiles", type=parse_tile, nargs="+", default=[(128, 32), (128, 64), (256, 64)],
                        help="tile.size/tile.overlap pairs, e.g. 256/64")  # fmt: skip
    parser.add_argument("--vae-tiling", nargs="+", default=["groupnorm_sync", "blend"], help="modes to compare")
    parser.add_argument("--vae-attention", default="global", choices=["global", "tile"])
    parser.add_argument("--photos", nargs="+", default=list(PHOTOS), help="embedded photos to average over")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    if args.full_size:
        generator, label = random_generator(args.device), "full-size SD 2.1-base UNet + VAE, random weights"
    elif args.backbone:
        generator, label = pretrained_backbone(args.device), "pretrained tiny backbone (d3sr/assets/tiny_backbone)"
    else:
        pipe = D3SRPipeline.from_pretrained(args.model, device=args.device, dtype=torch.float32)
        generator, label = pipe.generator, str(args.model)
    stages = STAGES
    if args.vae_only:
        generator.denoise = lambda z: z  # the VAE round trip: decode(encode(x))
        stages, label = ("encode", "decode"), label + ", VAE only (UNet = identity)"
    lqs = {name: embedded_lq(name).to(args.device) for name in args.photos}
    print(f"\nTiled vs untiled SR, {label}, {args.device}, torch {torch.__version__}")
    print(f"photos: {', '.join(args.photos)}, those large enough for the output (mean over them; images in [0, 1],")
    print(f"no colour fix); PSNR of tiled against untiled, dB; vae_attention={args.vae_attention}\n")
    print("| output | photos | tile/overlap | vae_tiling | VAE tiles / UNet tiles | PSNR all tiled "
          "| encode only | UNet only | decode only | mean abs diff | max abs diff |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        crops = [lq[None, :, : size // 4, : size // 4] for lq in lqs.values() if min(lq.shape[-2:]) * 4 >= size]
        if not crops:
            raise SystemExit(f"no photo among {args.photos} is large enough for a {size}² output")
        start = time.perf_counter()
        wholes = [sr_stages(generator, lq, 0, 0) for lq in crops]
        for tile, overlap in args.tiles:
            if tile >= size:
                continue  # one tile: exactly the untiled output
            for vae_tiling in args.vae_tiling:
                settings = {"vae_tiling": vae_tiling, "vae_attention": args.vae_attention}
                outputs = [sr_stages(generator, lq, tile, overlap, stages, **settings) for lq in crops]
                mean = sum((o - w).abs().mean().item() for o, w in zip(outputs, wholes)) / len(crops)
                peak = max((o - w).abs().max().item() for o, w in zip(outputs, wholes))
                # One stage tiled at a time, the others on the whole image.
                per_stage = {
                    stage: mean_psnr([sr_stages(generator, lq, tile, overlap, (stage,), **settings) for lq in crops],
                                     wholes) for stage in stages
                }  # fmt: skip
                unet_tiles = tile_count(size, size, tile, overlap)
                vae_tiles = core_count(size, size, tile) if vae_tiling == "groupnorm_sync" else unet_tiles
                tiles = f"{vae_tiles} / {unet_tiles}"
                print(f"| {size}² | {len(crops)} | {tile}/{overlap} | {vae_tiling} | {tiles} | "
                      f"{mean_psnr(outputs, wholes)} | {per_stage['encode']} | {per_stage.get('denoise', '—')} | "
                      f"{per_stage['decode']} | {mean:.4f} | {peak:.3f} |", flush=True)  # fmt: skip
        print(f"  ({size}²: {time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
