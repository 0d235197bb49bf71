"""`python -m d3sr.held_out CHECKPOINT_OR_BUNDLE`: the held-out photos table (bicubic, VAE only, d3sr).

Prints Markdown tables of PSNR-Y / SSIM-Y, colour error and sharpness on the photos no training stage has seen, ×4
from two LQs: the clean bicubic ×1/4, and the training's Real-ESRGAN degradation (set A, seeded per photo as
`d3sr.synth` does: the kind of LR of the paper's DIV2K-val), and whether d3sr meets the demo bounds against bicubic.
Two photo sets, each its own table with its own mean: `embedded` (chelsea, coffee, rocket from scikit-image) and
`extra` (photos shipped with matplotlib, gradio and pyiqa, d3sr.images.EXTRA_HELD_OUT); `--set embedded|extra|all`
picks. The default is `embedded`: the extra set (five photos up to 512², about 1.0 MP against the embedded 0.64 MP)
adds minutes, not seconds, on 2 CPU cores with the tiny demo model (measured beside a training run: 167 s for both
LQs; the embedded set 108 s).
`--photos NAME ...` scores only those photos. `--json FILE` also writes the numbers. `make demo` ends with it. See
d3sr.evaluation.held_out_scores for the protocol.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import torch

from d3sr.atomic_files import write_atomically
from d3sr.data.degradation import RealESRGANDegradation, degrade_image, image_rng
from d3sr.errors import D3SRError, run_reporting_errors
from d3sr.evaluation.held_out_scores import held_out_rows, held_out_table, missed_bounds, versus_bicubic
from d3sr.images import EMBEDDED_HELD_OUT, EXTRA_HELD_OUT
from d3sr.inference import D3SRPipeline, InferenceOptions

LQ_KINDS = {
    "clean": "×4 from clean bicubic LQ",
    "realesrgan": "×4 from Real-ESRGAN-degraded LQ (set A, seed {seed})",
}
EXTRA_SOURCES = ", ".join(sorted({distribution for distribution, _ in EXTRA_HELD_OUT.values()}))
PHOTO_SETS = {  # --set: (table title, photo names)
    "embedded": ("Held-out photos", tuple(EMBEDDED_HELD_OUT)),
    "extra": (f"Extra held-out photos (from {EXTRA_SOURCES})", tuple(EXTRA_HELD_OUT)),
}


def realesrgan_lq(seed: int):
    """degrade(name, hr) for held_out_rows: the Real-ESRGAN set-A degradation, one seeded generator per photo."""
    degradation = RealESRGANDegradation()

    def degrade(name: str, hr: torch.Tensor) -> torch.Tensor:
        return degrade_image(degradation, hr[0].cpu(), image_rng(seed, f"{name}.png"), "cpu")[None]

    return degrade


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m d3sr.held_out", description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a training checkpoint (.ckpt) or an inference bundle folder")
    parser.add_argument("--json", type=Path, help="also write the scores to this JSON file")
    parser.add_argument("--lq", nargs="+", choices=sorted(LQ_KINDS), default=["clean", "realesrgan"],
                        help="which LQ to score from (default: both)")  # fmt: skip
    parser.add_argument("--set", dest="photo_set", choices=[*PHOTO_SETS, "all"], default="embedded",
                        help="which held-out photos: embedded, extra, all (default: embedded)")  # fmt: skip
    parser.add_argument("--photos", nargs="+", metavar="NAME", choices=[*EMBEDDED_HELD_OUT, *EXTRA_HELD_OUT],
                        help="score only these photos of the chosen set(s) (default: all of them)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="seed of the Real-ESRGAN LQ (default 0)")
    defaults = InferenceOptions()
    parser.add_argument("--tile-size", type=int, default=defaults.tile_size, help="inference.tile_size (0: untiled)")
    parser.add_argument("--tile-overlap", type=int, default=defaults.tile_overlap)
    parser.add_argument("--color-fix", default=defaults.color_fix, help="adain | wavelet | backproject | none")
    parser.add_argument("--device", default=defaults.device)
    args = parser.parse_args(argv)

    def run() -> None:
        options = defaults.replace(tile_size=args.tile_size, tile_overlap=args.tile_overlap,
                                   color_fix=args.color_fix, device=args.device, precision="fp32")  # fmt: skip
        sets = list(PHOTO_SETS) if args.photo_set == "all" else [args.photo_set]
        chosen = {photo_set: [n for n in PHOTO_SETS[photo_set][1] if not args.photos or n in args.photos]
                  for photo_set in sets}  # fmt: skip
        if not any(chosen.values()):
            raise D3SRError(f"--photos {' '.join(args.photos)}: none of them is in --set {args.photo_set}")
        sets = [photo_set for photo_set in sets if chosen[photo_set]]
        pipe = D3SRPipeline.from_pretrained(args.model, options=options)
        tables = {photo_set: {} for photo_set in sets}
        for photo_set in sets:
            title, names = PHOTO_SETS[photo_set][0], chosen[photo_set]
            for kind in args.lq:
                degrade = realesrgan_lq(args.seed) if kind == "realesrgan" else None
                rows = held_out_rows(pipe, names, degrade=degrade)
                print(f"{title}, {LQ_KINDS[kind].format(seed=args.seed)}: PSNR-Y (dB) / SSIM-Y  [{args.model}]")
                print(held_out_table(rows) + "\n")
                tables[photo_set][kind] = [
                    {**asdict(row), "versus_bicubic": versus_bicubic(row), "missed_bounds": missed_bounds(row)}
                    for row in rows
                ]
        if args.json:
            embedded = tables.get("embedded", {})
            text = json.dumps({"model": str(args.model), "options": asdict(options), "seed": args.seed,
                               "rows": embedded.get("clean", []), "tables": embedded,
                               "extra_tables": tables.get("extra", {})}, indent=2)  # fmt: skip
            write_atomically(args.json, lambda path: path.write_text(text + "\n"))

    run_reporting_errors(run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
