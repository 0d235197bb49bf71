"""List the weight files the evaluation metrics need, and whether each is in place (nothing is downloaded).

    python -m d3sr.check_weights                          # the paper's Table 1 metrics
    python -m d3sr.check_weights --metrics lpips fid

Files are looked up under torch's hub folder ($TORCH_HOME/hub, default ~/.cache/torch/hub); for a missing one the
report gives its exact name, where to put it and the URL to fetch it from on a connected machine.
Exit status: 0 when every file is present, 1 when some are missing, 2 for an unknown metric.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from d3sr.errors import run_reporting_errors
from d3sr.evaluation.suite import DEFAULT_METRICS, METRICS, metric_names
from d3sr.evaluation.weights import check_weights


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m d3sr.check_weights", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--metrics", nargs="+", default=list(DEFAULT_METRICS), metavar="NAME",
        help=f"metrics to check (default: {' '.join(DEFAULT_METRICS)}; known: {', '.join(METRICS)})",
    )  # fmt: skip
    return parser.parse_args(argv)


def run(argv: Sequence[str] | None = None) -> int:
    """Print the weight-file report; 0 when everything is present, 1 otherwise."""
    args = parse_args(argv)
    report = check_weights(metric_names(args.metrics))
    print(report.format())
    return 0 if report.ok else 1


def main(argv: Sequence[str] | None = None) -> None:
    sys.exit(run_reporting_errors(run, argv))


if __name__ == "__main__":
    main()
