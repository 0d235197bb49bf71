"""`python -m d3sr.sweep_report MULTIRUN_DIR`: a finished multirun as a Markdown and a CSV table.

One row per job: its overrides, status, final validation metrics, iterations and checkpoint; failed jobs keep their
row with their error. An Optuna search's folder adds the study's best parameters and a `best` column marking the job
that ran them. Prints the Markdown table and writes sweep_report.md and sweep_report.csv into the folder (or into
--output). See d3sr.evaluation.sweeps for what is read.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from d3sr.atomic_files import write_atomically
from d3sr.errors import run_reporting_errors
from d3sr.evaluation.sweeps import METRICS, read_sweep, sweep_csv, sweep_markdown


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m d3sr.sweep_report", description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="a multirun folder, e.g. logs/train/multiruns/2026-12-02_10-00-00")
    parser.add_argument("--output", type=Path, help="folder for sweep_report.md/.csv (default: the multirun folder)")
    parser.add_argument("--metrics", nargs="+", default=list(METRICS), help=f"columns (default: {' '.join(METRICS)})")
    args = parser.parse_args(argv)

    def run() -> int:
        jobs = read_sweep(args.folder)
        markdown = sweep_markdown(jobs, args.folder, tuple(args.metrics))
        output = args.output or args.folder
        write_atomically(output / "sweep_report.md", lambda path: path.write_text(markdown + "\n"))
        write_atomically(
            output / "sweep_report.csv", lambda path: path.write_text(sweep_csv(jobs, tuple(args.metrics)))
        )
        print(markdown)
        print(f"\nWritten: {output / 'sweep_report.md'}, {output / 'sweep_report.csv'}")
        return 0

    return run_reporting_errors(run)


if __name__ == "__main__":
    sys.exit(main())
