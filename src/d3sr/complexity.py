"""The paper's Table 3 columns for our generator: steps, parameters and MACs at a size×size output.

    python -m d3sr.complexity                 # at 512×512, as the paper
    python -m d3sr.complexity --size 1024

Counted on the meta device (the full-size SD 2.1-base UNet with its LoRA and the VAE, no weights, no GPU, no
download, a few seconds): parameters from the modules, MACs = FLOPs / 2 of one forward pass (VAE encoder → UNet →
VAE decoder), next to the paper's D³SR column. Exit status 0, or 2 for a size that is not a positive multiple of 8.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from d3sr.errors import run_reporting_errors


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m d3sr.complexity", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--size", type=int, default=512, help="output side in pixels, a multiple of 8 (the paper: 512)"
    )
    return parser.parse_args(argv)


def run(argv: Sequence[str] | None = None) -> int:
    """Print the complexity tables; returns 0."""
    args = parse_args(argv)
    # Imported after parsing: it pulls in diffusers and peft (seconds), which --help does not need.
    from d3sr.evaluation.model_complexity import complexity_report

    print(complexity_report(args.size))
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    sys.exit(run_reporting_errors(run, argv))


if __name__ == "__main__":
    main()
