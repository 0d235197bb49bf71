"""The paper's Table 3 columns for our generator: steps, parameters and MACs at a 512×512 output (meta device).

    python bench/complexity.py [--size 512]

MACs come from torch.utils.flop_counter.FlopCounterMode (MACs = FLOPs / 2) over VAE encoder + UNet + VAE decoder;
see d3sr/evaluation/complexity.py for the two totals (conv + linear layers, and all matrix products).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from omegaconf import OmegaConf

from d3sr.evaluation.complexity import complexity_table, generator_macs, generator_params

CONF = Path(__file__).resolve().parents[1] / "conf" / "model" / "generator" / "sd21.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512, help="output side in pixels (the paper: 512)")
    args = parser.parse_args()
    g = OmegaConf.load(CONF)
    lora = {"lora_rank": g.lora_rank, "lora_alpha": g.lora_alpha, "lora_targets": list(g.lora_targets),
            "timestep": g.timestep}  # fmt: skip
    print(complexity_table(generator_params(**lora), generator_macs(args.size, **lora)))


if __name__ == "__main__":
    main()
