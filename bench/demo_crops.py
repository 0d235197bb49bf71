"""Crops of held-out photos: bicubic ×4 | d3sr ×4 | HR, from the clean ×1/4 LQ (docs/demo_crops.png).

    python bench/demo_crops.py [--checkpoint outputs/demo/train/checkpoints/last.ckpt] [--output docs/demo_crops.png]

A picture to check by eye that the demo's SR looks like the photos (untiled; `--color-fix`, default the demo's
`backproject`). Photos of both held-out sets (d3sr.images.EMBEDDED_HELD_OUT and the colourful EXTRA_HELD_OUT, which no
training stage sees), centre crops.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image

from d3sr.images import crop_to_multiple, downscale, held_out_photo, to_uint8, upsample_lq
from d3sr.inference import D3SRPipeline, InferenceOptions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="outputs/demo/train/checkpoints/last.ckpt")
    parser.add_argument("--output", type=Path, default=Path("docs/demo_crops.png"))
    parser.add_argument("--photos", nargs="+", default=["chelsea", "kodak_hats", "eiffel_tower"])
    parser.add_argument("--color-fix", default="backproject", help="inference.color_fix (default: the demo's)")
    parser.add_argument("--crop", type=int, default=160, help="crop side in HR pixels (shown 2× larger)")
    args = parser.parse_args()

    options = InferenceOptions().replace(device="cpu", precision="fp32", tile_size=0, color_fix=args.color_fix)
    pipe = D3SRPipeline.from_pretrained(args.checkpoint, options=options)
    rows = []
    for name in args.photos:
        hr = crop_to_multiple(held_out_photo(name))
        lq = downscale(hr[None])
        bicubic, sr = upsample_lq(lq)[0], pipe(lq[0])
        top, left = (hr.shape[-2] - args.crop) // 2, (hr.shape[-1] - args.crop) // 2
        crops = [image[:, top : top + args.crop, left : left + args.crop] for image in (bicubic, sr, hr)]
        rows.append(torch.cat(crops, -1))
    grid = Image.fromarray(to_uint8(torch.cat(rows, -2)))
    grid = grid.resize((grid.width * 2, grid.height * 2), Image.NEAREST)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    grid.save(args.output)
    print(f"bicubic | d3sr | HR for {', '.join(args.photos)} → {args.output}")


if __name__ == "__main__":
    main()
