"""Differences paired by seed between the configurations of a multirun (BENCHMARKS.md, the ablations over seeds).

    python bench/paired_seeds.py MULTIRUN_DIR --reference model/discriminator=demo [--metrics val/psnr_y ...]

For each other configuration, the reference's value minus that configuration's on the same seed, then the mean ±
sample std (ddof = 1) over the seeds both completed. When the seed also draws the validation LQ (as at demo scale),
most of the seed-to-seed spread is shared by every row; the paired difference removes it, which makes it the fairer
reading of a claim "A beats B" than comparing each row's own mean ± std (`python -m d3sr.sweep_report`).
"""

from __future__ import annotations

import argparse
import statistics

from d3sr.evaluation.sweeps import METRICS, job_seed, read_sweep, sweep_configs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="a finished multirun folder")
    parser.add_argument("--reference", required=True, help="the reference configuration's override, e.g. loss=paper")
    parser.add_argument("--metrics", nargs="+", default=list(METRICS))
    args = parser.parse_args()

    configs = sweep_configs(read_sweep(args.folder))
    names = {" ".join(config.overrides): config for config in configs}
    if args.reference not in names:
        parser.error(f"--reference {args.reference!r} is none of the configurations: {sorted(names)}")

    def values(config) -> dict[str, dict[str, float]]:
        return {job_seed(job): job.metrics for job in config.completed}

    reference = values(names[args.reference])
    print(f"| {args.reference} minus | n | " + " | ".join(args.metrics) + " |")
    print("|---|---|" + "---|" * len(args.metrics))
    for name, config in names.items():
        if name == args.reference:
            continue
        other = values(config)
        seeds = sorted(set(reference) & set(other))
        cells = []
        for metric in args.metrics:
            differences = [reference[s][metric] - other[s][metric] for s in seeds
                           if metric in reference[s] and metric in other[s]]  # fmt: skip
            if not differences:
                cells.append("—")
                continue
            spread = f" ± {statistics.stdev(differences):.4f}" if len(differences) > 1 else ""
            cells.append(f"{statistics.fmean(differences):+.4f}{spread}")
        print(f"| {name} | {len(seeds)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
