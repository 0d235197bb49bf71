"""`python -m d3sr.held_out CHECKPOINT_OR_BUNDLE`: the held-out photos table (bicubic, VAE only, d3sr).

Prints a Markdown table of PSNR-Y / SSIM-Y on the photos no training stage has seen (chelsea, coffee, rocket);
`--json FILE` also writes the numbers. `make demo` ends with it. See d3sr.evaluation.held_out for the protocol.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from d3sr.atomic_files import write_atomically
from d3sr.errors import run_reporting_errors
from d3sr.evaluation.held_out import held_out_rows, held_out_table
from d3sr.inference import D3SRPipeline, InferenceOptions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m d3sr.held_out", description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a training checkpoint (.ckpt) or an inference bundle folder")
    parser.add_argument("--json", type=Path, help="also write the scores to this JSON file")
    defaults = InferenceOptions.defaults_from_file()
    parser.add_argument("--tile-size", type=int, default=defaults.tile_size, help="inference.tile_size (0: untiled)")
    parser.add_argument("--tile-overlap", type=int, default=defaults.tile_overlap)
    parser.add_argument("--color-fix", default=defaults.color_fix, help="adain | wavelet | none")
    parser.add_argument("--device", default=defaults.device)
    args = parser.parse_args(argv)

    def run() -> None:
        options = defaults.replace(tile_size=args.tile_size, tile_overlap=args.tile_overlap,
                                   color_fix=args.color_fix, device=args.device, precision="fp32")  # fmt: skip
        pipe = D3SRPipeline.from_pretrained(args.model, options=options)
        rows = held_out_rows(pipe)
        print(f"Held-out photos, ×4 from clean bicubic LQ: PSNR-Y (dB) / SSIM-Y  [{args.model}]")
        print(held_out_table(rows))
        if args.json:
            text = json.dumps({"model": str(args.model), "options": asdict(options),
                               "rows": [asdict(row) for row in rows]}, indent=2)  # fmt: skip
            write_atomically(args.json, lambda path: path.write_text(text + "\n"))

    run_reporting_errors(run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
