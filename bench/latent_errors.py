"""Where a checkpoint's block grid comes from: its latent errors, split by latent frequency and by channel.

    python bench/latent_errors.py [--checkpoint outputs/demo/train/checkpoints/last.ckpt] [--photos chelsea ...]

For each held-out photo (clean ×1/4 LQ, untiled, no colour fix): z_H = E(HR), ẑ = the generator's latent, e = ẑ − z_H.
e is split into its low latent frequencies (a 5×5 box blur of e) and the rest, and each part is decoded on top of z_H
alone. The first table says which part carries the grid (`d3sr.psnr_ssim.block_grid` at the VAE's factor) and what
each part costs in PSNR-Y. The second compares, per latent channel, the high latent frequencies (z minus its 3×3 box
blur) of the generator's latent with those of z_H: their RMS ratio (1: as much detail as the HR's latent) and their
correlation. BENCHMARKS.md reads the demo's checkpoint with it.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from d3sr.images import (
    crop_to_multiple,
    downscale,
    from_model_range,
    generator_input,
    held_out_photo,
    to_model_range,
    upsample_lq,
)
from d3sr.models.saved_generator import load_generator
from d3sr.psnr_ssim import block_grid, psnr_y, sharpness


def box_blur(z: torch.Tensor, size: int) -> torch.Tensor:
    """Per-channel size×size box mean of a latent (B, C, h, w), edges replicated."""
    return F.avg_pool2d(F.pad(z, (size // 2,) * 4, mode="replicate"), size, stride=1)


def rms(z: torch.Tensor) -> torch.Tensor:
    """Per-channel RMS of (B, C, h, w): (C,)."""
    return z.pow(2).mean((0, 2, 3)).sqrt()


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="outputs/demo/train/checkpoints/last.ckpt")
    parser.add_argument("--photos", nargs="+", default=["chelsea", "coffee", "rocket"])
    args = parser.parse_args()

    generator, _ = load_generator(args.checkpoint)
    generator.eval()
    factor = generator.vae_factor

    def decode(z: torch.Tensor) -> torch.Tensor:
        return from_model_range(generator.decode(z))

    print(f"| photo | image | PSNR-Y (dB) | sharpness | {factor}-px grid |")
    print("|---|---|---|---|---|")
    channel_rows = []
    for name in args.photos:
        hr = crop_to_multiple(held_out_photo(name)[None])
        lq = downscale(hr)
        z_hr = generator.encode(to_model_range(hr)).float()
        z_sr = generator.denoise(generator.encode(generator_input(lq))).float()
        error = z_sr - z_hr
        low = box_blur(error, 5)
        images = {
            "bicubic ×4": upsample_lq(lq),
            "D(z_H): the VAE's reconstruction": decode(z_hr),
            "D(ẑ): d3sr": decode(z_sr),
            "D(z_H + e_low)": decode(z_hr + low),
            "D(z_H + e_high)": decode(z_hr + error - low),
        }
        for label, image in images.items():
            print(f"| {name} | {label} | {psnr_y(image, hr).item():.2f} | {sharpness(image, hr).item():.3f} | "
                  f"{block_grid(image, factor).item():.2f} |")  # fmt: skip
        high_hr, high_sr = z_hr - box_blur(z_hr, 3), z_sr - box_blur(z_sr, 3)
        correlation = (high_hr * high_sr).mean((0, 2, 3)) / (rms(high_hr) * rms(high_sr)).clamp_min(1e-12)
        channel_rows.append((name, rms(high_sr) / rms(high_hr).clamp_min(1e-12), correlation))

    channels = channel_rows[0][1].numel()
    print("\nHigh latent frequencies per channel, generator ÷ HR's latent (RMS ratio, correlation):\n")
    print("| photo | " + " | ".join(f"ch {k}" for k in range(channels)) + " |")
    print("|---|" + "---|" * channels)
    for name, ratio, correlation in channel_rows:
        cells = [f"{r:.2f} ({c:.2f})" for r, c in zip(ratio.tolist(), correlation.tolist(), strict=True)]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
