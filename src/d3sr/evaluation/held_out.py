"""The held-out photos table: bicubic vs "VAE only" vs d3sr, PSNR-Y / SSIM-Y per photo (what `make demo` prints).

The held-out photos (d3sr.images.EMBEDDED_HELD_OUT) are never seen by any training stage. Each is cropped to a
multiple of 8, made ×4 smaller with `downscale` (clean bicubic LQ) or by a given degradation (`degrade`, e.g. the
training's Real-ESRGAN pipeline, seeded per photo, as the paper's DIV2K-val LR), and brought back ×4 three ways:
- bicubic: `upsample_lq(lq)`, the generator's input;
- VAE only: decode(encode(bicubic)) with the generator's frozen VAE, the generator's starting point without the UNet;
- d3sr: the trained generator through D3SRPipeline (tiling and colour fix as configured).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from d3sr.images import EMBEDDED_HELD_OUT, downscale, embedded_photo, from_model_range, generator_input, upsample_lq
from d3sr.inference import D3SRPipeline
from d3sr.psnr_ssim import psnr_y, ssim_y

METHODS = ("bicubic", "vae_only", "d3sr")


@dataclass
class HeldOutRow:
    """Scores of one photo: {method: (psnr_y dB, ssim_y)}."""

    photo: str
    size: tuple[int, int]
    scores: dict[str, tuple[float, float]]


@torch.inference_mode()
def held_out_rows(
    pipe: D3SRPipeline,
    names: Sequence[str] = EMBEDDED_HELD_OUT,
    degrade: Callable[[str, torch.Tensor], torch.Tensor] | None = None,
) -> list[HeldOutRow]:
    """Score bicubic, VAE only and d3sr ×4 against each held-out photo.

    degrade(name, hr (1, 3, H, W) in [0, 1]) -> lq (1, 3, H/4, W/4): how the LQ is made; None: clean bicubic ×1/4.
    """
    generator, rows = pipe.generator, []
    for name in names:
        # The HR photo cropped to a multiple of 8 and its clean ×4-smaller LQ.
        hr = embedded_photo(name)[None]
        hr = hr[..., : hr.shape[-2] // 8 * 8, : hr.shape[-1] // 8 * 8].to(pipe.device)
        lq = downscale(hr) if degrade is None else degrade(name, hr).to(hr.device, hr.dtype)
        # The three ×4 reconstructions.
        outputs = {
            "bicubic": upsample_lq(lq),
            "vae_only": from_model_range(generator.decode(generator.encode(generator_input(lq)))),
            "d3sr": pipe.super_resolve(lq),
        }
        scores = {
            method: (psnr_y(image.float(), hr).item(), ssim_y(image.float(), hr).item())
            for method, image in outputs.items()
        }
        rows.append(HeldOutRow(name, tuple(hr.shape[-2:]), scores))
    return rows


def held_out_table(rows: Sequence[HeldOutRow]) -> str:
    """Markdown table: one row per photo and the mean, PSNR-Y (dB) / SSIM-Y per method."""
    lines = [
        "| held-out photo | size | bicubic | VAE only | d3sr | d3sr − bicubic | d3sr − VAE only |",
        "|---|---|---|---|---|---|---|",
    ]

    def cells(scores: dict[str, tuple[float, float]]) -> list[str]:
        shown = [f"{scores[m][0]:.2f} / {scores[m][1]:.4f}" for m in METHODS]
        gains = [scores["d3sr"][0] - scores[m][0] for m in ("bicubic", "vae_only")]
        return shown + [f"{g:+.2f} dB" for g in gains]

    for row in rows:
        lines.append("| " + " | ".join([row.photo, f"{row.size[1]}×{row.size[0]}", *cells(row.scores)]) + " |")
    mean = {m: tuple(sum(r.scores[m][i] for r in rows) / len(rows) for i in (0, 1)) for m in METHODS}
    lines.append("| " + " | ".join(["**mean**", "", *cells(mean)]) + " |")
    return "\n".join(lines)
