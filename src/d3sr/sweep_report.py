"""`python -m d3sr.sweep_report MULTIRUN_DIR`: a finished multirun as Markdown and CSV tables.

One row per configuration (jobs whose overrides differ only in `seed=...`): its overrides, n (completed jobs), seeds,
and each metric as mean ± sample standard deviation (ddof=1) over the seeds; failed and unfinished jobs, and NaN
metrics, are counted in the row and left out of the statistics. One row per job, as well: its overrides, status,
final validation metrics, iterations and checkpoint, or its error. An Optuna search's folder adds the study's best
parameters and a `best` column marking the job (and configuration) that ran them. Prints the configuration table
(`--per-job`: the job table) and writes both into the folder (or into --output): sweep_report.md/.csv per
configuration, sweep_report_jobs.md/.csv per job. See d3sr.evaluation.sweeps for what is read.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from d3sr.atomic_files import write_atomically
from d3sr.errors import run_reporting_errors
from d3sr.evaluation.sweeps import (
    METRICS,
    configs_csv,
    configs_markdown,
    metric_columns,
    read_sweep,
    sweep_csv,
    sweep_markdown,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m d3sr.sweep_report", description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="a multirun folder, e.g. logs/train/multiruns/2026-12-02_10-00-00")
    parser.add_argument("--output", type=Path, help="folder for the sweep_report files (default: the multirun folder)")
    parser.add_argument("--metrics", nargs="+", help="metrics in result.json, names or patterns such as 'val/*' "
                        f"(default: {' '.join(METRICS)}, those reported)")  # fmt: skip
    parser.add_argument("--per-job", action="store_true",
                        help="print the table of jobs, not of configurations (both are written)")  # fmt: skip
    args = parser.parse_args(argv)

    def run() -> int:
        jobs = read_sweep(args.folder)
        # Metrics asked for by name must be in some result.json; the default columns are those that are.
        metrics = tuple(metric_columns(jobs, tuple(args.metrics), required=True) if args.metrics else METRICS)
        output = args.output or args.folder
        tables = {
            "sweep_report.md": configs_markdown(jobs, args.folder, metrics) + "\n",
            "sweep_report.csv": configs_csv(jobs, metrics),
            "sweep_report_jobs.md": sweep_markdown(jobs, args.folder, metrics) + "\n",
            "sweep_report_jobs.csv": sweep_csv(jobs, metrics),
        }
        for name, text in tables.items():
            write_atomically(output / name, lambda path, text=text: path.write_text(text))
        print(tables["sweep_report_jobs.md" if args.per_job else "sweep_report.md"], end="")
        print(f"\nWritten: {', '.join(str(output / name) for name in tables)}")
        return 0

    return run_reporting_errors(run)


if __name__ == "__main__":
    sys.exit(main())
