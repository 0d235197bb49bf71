"""The paper's Table 3 columns for our generator: steps, parameters and MACs at a 512×512 output (meta device).

    python bench/complexity.py [--size 512]       # the same as `python -m d3sr.complexity [--size 512]`

MACs come from torch.utils.flop_counter.FlopCounterMode (MACs = FLOPs / 2) over VAE encoder + UNet + VAE decoder;
see d3sr/evaluation/model_complexity.py for the two totals (conv + linear layers, and all matrix products). The LoRA
settings are the defaults of that module, which tests/evaluation/test_complexity.py keeps equal to conf/model.
"""

from __future__ import annotations

import argparse

from d3sr.evaluation.model_complexity import complexity_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512, help="output side in pixels (the paper: 512)")
    args = parser.parse_args()
    print(complexity_report(args.size))


if __name__ == "__main__":
    main()
