"""The held-out photos table: bicubic vs "VAE only" vs d3sr per photo (what `make demo` prints).

The held-out photos are never seen by any training stage: d3sr.images.EMBEDDED_HELD_OUT (shipped with scikit-image)
and EXTRA_HELD_OUT (shipped with other installed packages, testing only). Each is cropped to a multiple of 8, made ×4
smaller with `downscale` (clean bicubic LQ) or by a given degradation (`degrade`, e.g. the training's Real-ESRGAN
pipeline, seeded per photo, as the paper's DIV2K-val LR), and brought back ×4 three ways:
- bicubic: `upsample_lq(lq)`, the generator's input;
- VAE only: decode(encode(bicubic)) with the generator's frozen VAE, the generator's starting point without the UNet;
- d3sr: the trained generator through D3SRPipeline (tiling and colour fix as configured).
Each is scored against the HR photo by PSNR-Y / SSIM-Y, the colour error (CIELAB a*b* distance at 1/8 scale, lower is
better) and the sharpness (RMS luma gradient ÷ the HR's, 1 = as sharp as the HR), and d3sr is held to DEMO_BOUNDS
relative to bicubic.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from d3sr.images import (
    EMBEDDED_HELD_OUT,
    crop_to_multiple,
    downscale,
    from_model_range,
    generator_input,
    held_out_photo,
    upsample_lq,
)
from d3sr.inference import D3SRPipeline
from d3sr.psnr_ssim import block_grid, color_error, psnr_y, sharpness, ssim_y

METHODS = ("bicubic", "vae_only", "d3sr")
METHOD_NAMES = {"bicubic": "bicubic", "vae_only": "VAE only", "d3sr": "d3sr"}
# What the demo asks of d3sr against bicubic: PSNR-Y at most 0.5 dB lower, colour error at most 1.2× bicubic's,
# sharpness at least bicubic's + 0.10 (the miniature must really super-resolve, not only blur less wrongly).
DEMO_BOUNDS = {"psnr_drop_db": 0.5, "color_ratio": 1.2, "sharpness_gain": 0.10}
BOUNDS_LINE = "demo bounds: PSNR-Y ≥ bicubic − {psnr_drop_db} dB, colour error ≤ {color_ratio} × bicubic's, " \
              "sharpness ≥ bicubic's + {sharpness_gain:.2f}".format(**DEMO_BOUNDS)  # fmt: skip


@dataclass
class HeldOutRow:
    """Scores of one photo: {method: (psnr_y dB, ssim_y)}, {method: colour error}, {method: sharpness}."""

    photo: str
    size: tuple[int, int]
    scores: dict[str, tuple[float, float]]
    color_error: dict[str, float]
    sharpness: dict[str, float]
    grid: dict[str, float]  # block_grid: 4-pixel block edges ÷ inside (≈ 1: no grid)


@torch.inference_mode()
def held_out_rows(
    pipe: D3SRPipeline,
    names: Sequence[str] = EMBEDDED_HELD_OUT,
    degrade: Callable[[str, torch.Tensor], torch.Tensor] | None = None,
) -> list[HeldOutRow]:
    """Score bicubic, VAE only and d3sr ×4 against each held-out photo (names from either held-out set).

    degrade(name, hr (1, 3, H, W) in [0, 1]) -> lq (1, 3, H/4, W/4): how the LQ is made; None: clean bicubic ×1/4.
    """
    generator, rows = pipe.generator, []
    for name in names:
        # The HR photo cropped to a multiple of 8 and its ×4-smaller LQ.
        hr = held_out_photo(name)[None]
        hr = crop_to_multiple(hr).to(pipe.device)
        lq = downscale(hr) if degrade is None else degrade(name, hr).to(hr.device, hr.dtype)
        # The three ×4 reconstructions.
        outputs = {
            "bicubic": upsample_lq(lq),
            "vae_only": from_model_range(generator.decode(generator.encode(generator_input(lq)))),
            "d3sr": pipe.super_resolve(lq),
        }
        outputs = {method: image.float() for method, image in outputs.items()}
        rows.append(
            HeldOutRow(
                name,
                tuple(hr.shape[-2:]),
                scores={m: (psnr_y(image, hr).item(), ssim_y(image, hr).item()) for m, image in outputs.items()},
                color_error={m: color_error(image, hr).item() for m, image in outputs.items()},
                sharpness={m: sharpness(image, hr).item() for m, image in outputs.items()},
                grid={m: block_grid(image).item() for m, image in outputs.items()},
            )
        )
    return rows


def mean_row(rows: Sequence[HeldOutRow]) -> HeldOutRow:
    """The mean of every score over `rows`, as a row named 'mean' (size (0, 0))."""

    def mean(values: list[float]) -> float:
        return sum(values) / len(values)

    return HeldOutRow(
        "mean",
        (0, 0),
        scores={m: (mean([r.scores[m][0] for r in rows]), mean([r.scores[m][1] for r in rows])) for m in METHODS},
        color_error={m: mean([r.color_error[m] for r in rows]) for m in METHODS},
        sharpness={m: mean([r.sharpness[m] for r in rows]) for m in METHODS},
        grid={m: mean([r.grid[m] for r in rows]) for m in METHODS},
    )


def versus_bicubic(row: HeldOutRow) -> dict[str, float]:
    """What DEMO_BOUNDS compare: d3sr − bicubic PSNR-Y (dB), colour error d3sr ÷ bicubic, sharpness d3sr − bicubic."""
    return {
        "psnr_gain_db": row.scores["d3sr"][0] - row.scores["bicubic"][0],
        "color_ratio": row.color_error["d3sr"] / row.color_error["bicubic"],
        "sharpness_gain": row.sharpness["d3sr"] - row.sharpness["bicubic"],
    }


def missed_bounds(row: HeldOutRow) -> list[str]:
    """The DEMO_BOUNDS d3sr misses on this row: a sublist of ['PSNR', 'colour', 'sharpness']; [] when all are met."""
    versus = versus_bicubic(row)
    missed = {
        "PSNR": versus["psnr_gain_db"] < -DEMO_BOUNDS["psnr_drop_db"],
        "colour": versus["color_ratio"] > DEMO_BOUNDS["color_ratio"],
        "sharpness": versus["sharpness_gain"] < DEMO_BOUNDS["sharpness_gain"],
    }
    return [name for name, is_missed in missed.items() if is_missed]


def bounds_cell(row: HeldOutRow) -> str:
    """'met', or 'missed (PSNR, colour, ...)' naming the DEMO_BOUNDS d3sr misses."""
    missed = missed_bounds(row)
    return f"missed ({', '.join(missed)})" if missed else "met"


def held_out_table(rows: Sequence[HeldOutRow]) -> str:
    """Two Markdown tables, one row per photo and the mean: PSNR-Y (dB) / SSIM-Y per method, then colour error /
    sharpness per method with d3sr against bicubic and whether d3sr meets DEMO_BOUNDS."""
    names = [METHOD_NAMES[m] for m in METHODS]
    fidelity = [
        f"| held-out photo | size | {' | '.join(names)} | d3sr − bicubic | d3sr − VAE only |",
        "|---|---|---|---|---|---|---|",
    ]
    perceptual = [
        "Colour error (CIELAB a*b*, 1/8 scale; lower is better) / sharpness (RMS luma gradient ÷ HR's; 1 = HR); "
        "4-px grid: luma gradient energy across 4×4 block edges ÷ inside (≈ 1 for HR and bicubic; above 1 the "
        "sharpness includes a block grid)",
        f"| held-out photo | {' | '.join(names)} | colour d3sr ÷ bicubic | sharpness d3sr − bicubic | 4-px grid d3sr "
        "| bounds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in [*rows, mean_row(rows)]:
        photo, size = ("**mean**", "") if row.photo == "mean" else (row.photo, f"{row.size[1]}×{row.size[0]}")
        shown = [f"{row.scores[m][0]:.2f} / {row.scores[m][1]:.4f}" for m in METHODS]
        gains = [f"{row.scores['d3sr'][0] - row.scores[m][0]:+.2f} dB" for m in ("bicubic", "vae_only")]
        fidelity.append("| " + " | ".join([photo, size, *shown, *gains]) + " |")
        versus = versus_bicubic(row)
        shown = [f"{row.color_error[m]:.3f} / {row.sharpness[m]:.3f}" for m in METHODS]
        compared = [f"{versus['color_ratio']:.3f}×", f"{versus['sharpness_gain']:+.3f}", f"{row.grid['d3sr']:.2f}",
                    bounds_cell(row)]  # fmt: skip
        perceptual.append("| " + " | ".join([photo, *shown, *compared]) + " |")
    return "\n".join([*fidelity, "", *perceptual, BOUNDS_LINE])
