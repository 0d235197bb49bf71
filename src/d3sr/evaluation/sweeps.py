"""A finished Hydra multirun as tables: a row per configuration (its seeds aggregated), and a row per job.

A multirun folder (`logs/train/multiruns/<date>/`, or any `hydra.sweep.dir`) holds one numbered folder per job with
`.hydra/overrides.yaml` (written by Hydra) and `result.json` (written by d3sr.train, see d3sr.run_results). Jobs that
failed are listed with their error and jobs that wrote no result (killed, or still running) are listed as such:
nothing is dropped. The folder of an Optuna search (`hparams_search=loss_weights_optuna`) also holds the sweeper's
`optimization_results.yaml`: its best parameters are shown, and the job (or jobs, for a Pareto front) that ran them
is marked best.

Jobs whose overrides differ only in `seed=...` are one configuration (a job without a seed override ran the config's
default seed). The configuration table gives each metric as the mean ± sample standard deviation (ddof=1) over the
completed jobs, their number n and seeds; failed and unfinished jobs, and non-finite values, are left out of the
statistics and listed in the row.
"""

from __future__ import annotations

import csv
import fnmatch
import io
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from d3sr.errors import ConfigError, D3SRError
from d3sr.run_results import read_run_result

METRICS = ("val/psnr_y", "val/ssim_y", "val/dists", "val/color_error", "val/sharpness", "val/grid")
OPTUNA_RESULTS = "optimization_results.yaml"  # written by Hydra's Optuna sweeper at the end of a search
SEED = "seed"  # the override that repeats a configuration (d3sr.train's `seed`)
SPREAD = "mean ± std over seeds (sample std, ddof=1), n: completed jobs"


@dataclass
class SweepJob:
    """One job of a multirun: its number, command-line overrides, status, metrics, checkpoint or error."""

    number: int
    overrides: list[str]
    status: str  # completed | failed | no result
    metrics: dict[str, float] = field(default_factory=dict)
    iterations: int | None = None
    checkpoint: str | None = None
    error: str | None = None
    best: bool | None = None  # ran the study's best parameters; None: not an Optuna search


@dataclass
class OptunaBest:
    """The best trials of an Optuna search (one, or a multi-objective Pareto front): their parameters and values."""

    params: list[dict[str, Any]]
    values: list[list[float]]


def read_optuna_best(folder: str | Path) -> OptunaBest | None:
    """What the Optuna sweeper wrote to folder/optimization_results.yaml; None where there is no such file."""
    path = Path(folder).expanduser() / OPTUNA_RESULTS
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text()) or {}
        if "best_params" in data:
            return OptunaBest([dict(data["best_params"])], [[float(data["best_value"])]])
        solutions = data["solutions"]
        return OptunaBest([dict(s["params"]) for s in solutions], [[float(v) for v in s["values"]] for s in solutions])
    except (yaml.YAMLError, KeyError, TypeError, ValueError) as error:
        raise D3SRError(f"{path} is not an Optuna sweeper result (best_params and best_value, or solutions): "
                        f"{type(error).__name__}: {error}") from None  # fmt: skip


def _runs_params(overrides: list[str], params: dict[str, Any]) -> bool:
    """Whether a job's `key=value` overrides set every one of `params` (numbers compared as floats)."""
    given = dict(o.split("=", 1) for o in overrides if "=" in o)
    for key, value in params.items():
        if key not in given:
            return False
        try:
            if float(given[key]) != float(value):
                return False
        except (TypeError, ValueError):
            if given[key] != str(value):
                return False
    return True


def read_sweep(folder: str | Path) -> list[SweepJob]:
    """The jobs of the multirun in `folder`, by job number; D3SRError if it holds no job."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise D3SRError(f"{folder} is not a folder (expected a multirun folder such as logs/train/multiruns/<date>)")
    jobs = []
    for overrides_file in sorted(folder.glob("*/.hydra/overrides.yaml")):
        job_dir = overrides_file.parent.parent
        if not job_dir.name.isdigit():
            continue
        overrides = [str(o) for o in (yaml.safe_load(overrides_file.read_text()) or [])]
        result = read_run_result(job_dir)
        if result is None:
            jobs.append(SweepJob(int(job_dir.name), overrides, "no result", error="no result.json: killed or running"))
            continue
        jobs.append(SweepJob(
            int(job_dir.name), overrides, result.get("status", "failed"),
            metrics={k: float(v) for k, v in (result.get("metrics") or {}).items()},
            iterations=result.get("iterations"), checkpoint=result.get("checkpoint"), error=result.get("error"),
        ))  # fmt: skip
    if not jobs:
        raise D3SRError(f"{folder} holds no multirun jobs (no <number>/.hydra/overrides.yaml)")
    best = read_optuna_best(folder)
    if best is not None:
        for job in jobs:
            job.best = job.status == "completed" and any(_runs_params(job.overrides, p) for p in best.params)
    return sorted(jobs, key=lambda job: job.number)


def swept_overrides(jobs: list[SweepJob]) -> tuple[list[str], list[list[str]]]:
    """(the overrides every job shares, each job's own overrides): the table shows what differs."""
    common = [o for o in jobs[0].overrides if all(o in job.overrides for job in jobs)]
    return common, [[o for o in job.overrides if o not in common] for job in jobs]


def metric_columns(jobs: list[SweepJob], metrics: tuple[str, ...], required: bool = False) -> list[str]:
    """The metrics of `metrics` (names, or patterns such as `val/*`) that some job reported, in the order given.

    Names no job reported are left out, or raise ConfigError (naming what was reported) when `required`.
    """
    reported = sorted({name for job in jobs for name in job.metrics})
    columns = []
    for metric in metrics:
        if any(c in metric for c in "*?["):
            matched = fnmatch.filter(reported, metric)
        else:
            matched = [metric] if metric in reported else []
        if not matched and required:
            raise ConfigError(f"--metrics {metric}: no job of the multirun reported it in result.json (reported: "
                              f"{', '.join(reported) or 'none'})")  # fmt: skip
        columns += [m for m in matched if m not in columns]
    return columns


def sweep_rows(jobs: list[SweepJob], metrics: tuple[str, ...] = METRICS) -> tuple[list[str], list[list[str]]]:
    """Header and rows (strings) of the table: job, overrides, status, metrics, iterations, checkpoint or error."""
    columns = metric_columns(jobs, metrics)
    _, own = swept_overrides(jobs)
    searched = any(job.best is not None for job in jobs)  # an Optuna search: a `best` column after `job`
    header = ["job", *(["best"] if searched else []), "overrides", "status", *columns, "iterations",
              "checkpoint / error"]  # fmt: skip
    rows = []
    for job, overrides in zip(jobs, own):
        values = [f"{job.metrics[m]:.4f}" if m in job.metrics else "" for m in columns]
        where = (job.checkpoint or "") if job.status == "completed" else (job.error or "")
        best = ["best" if job.best else ""] if searched else []
        rows.append([str(job.number), *best, " ".join(overrides) or "(none)", job.status, *values,
                     "" if job.iterations is None else str(job.iterations), where])  # fmt: skip
    return header, rows


def optuna_summary(jobs: list[SweepJob], best: OptunaBest) -> str:
    """One line: the study's best parameters and value(s), and which job of this folder ran them."""
    marked = [str(job.number) for job in jobs if job.best]
    if len(best.params) == 1:
        params = " ".join(f"{k}={v}" for k, v in best.params[0].items())
        value = ", ".join(f"{v:.4f}" for v in best.values[0])
        where = f"job {marked[0]}" if marked else "a trial of an earlier invocation of the study (not in this folder)"
        return f"Optuna best: {params} (value {value}), run by {where}."
    jobs_text = f"jobs {', '.join(marked)}" if marked else "no job of this folder"
    return f"Optuna best: {len(best.params)} Pareto-optimal trials, {jobs_text}."


def _markdown(jobs: list[SweepJob], folder: str | Path, heading: list[str], header: list[str],
              rows: list[list[str]]) -> str:  # fmt: skip
    """The multirun's summary lines, `heading`, then the table."""
    common, _ = swept_overrides(jobs)
    failed = sum(job.status != "completed" for job in jobs)
    best = read_optuna_best(folder)
    lines = [f"Multirun {folder}: {len(jobs)} jobs, {len(jobs) - failed} completed, {failed} not.",
             f"Shared overrides: {' '.join(common) or '(none)'}", *([optuna_summary(jobs, best)] if best else []),
             *heading, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]  # fmt: skip
    lines += ["| " + " | ".join(cell.replace("|", "\\|").replace("\n", " ") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _csv(header: list[str], rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def sweep_markdown(jobs: list[SweepJob], folder: str | Path, metrics: tuple[str, ...] = METRICS) -> str:
    """Markdown: the shared overrides, then one row per job."""
    return _markdown(jobs, folder, [], *sweep_rows(jobs, metrics))


def sweep_csv(jobs: list[SweepJob], metrics: tuple[str, ...] = METRICS) -> str:
    """CSV with the same columns as the Markdown table."""
    return _csv(*sweep_rows(jobs, metrics))


def _is_seed(override: str) -> bool:
    """Whether an override sets the seed (`seed=1`, `+seed=1`, `++seed=1`)."""
    return override.split("=", 1)[0].lstrip("+") == SEED


def job_seed(job: SweepJob) -> str:
    """The seed a job's overrides set, or `default` (the config's own seed) where they set none."""
    seeds = [o.split("=", 1)[1] for o in job.overrides if "=" in o and _is_seed(o)]
    return seeds[-1] if seeds else "default"


Stats = tuple[float, float | None, int]  # a metric over seeds: mean, sample std (None for one value), n


@dataclass
class SweepConfig:
    """The jobs of one configuration (overrides equal but for the seed), and the overrides that set it apart."""

    overrides: list[str]  # the jobs' own overrides (not shared by the whole multirun), without the seed
    jobs: list[SweepJob]

    @property
    def completed(self) -> list[SweepJob]:
        return [job for job in self.jobs if job.status == "completed"]


def sweep_configs(jobs: list[SweepJob]) -> list[SweepConfig]:
    """The jobs grouped by their overrides without the seed (in any order), by first job number."""
    _, own = swept_overrides(jobs)
    configs: dict[tuple[str, ...], SweepConfig] = {}
    for job, overrides in zip(jobs, own):
        key = tuple(sorted(o for o in job.overrides if not _is_seed(o)))
        if key not in configs:
            configs[key] = SweepConfig([o for o in overrides if not _is_seed(o)], [])
        configs[key].jobs.append(job)
    return list(configs.values())


def seed_statistics(values: list[float]) -> Stats:
    """(mean, sample standard deviation with ddof=1 or None for one value, n) of a metric's values over seeds."""
    if not values:
        raise ValueError("seed_statistics needs at least one value")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None, len(values)


def _which(jobs: list[SweepJob]) -> str:
    return ", ".join(f"job {job.number} seed {job_seed(job)}" for job in jobs)


def _config_statistics(config: SweepConfig, columns: list[str]) -> tuple[dict[str, Stats | None], list[str]]:
    """{metric: (mean, std, n) or None} over the completed jobs' finite values, and what was left out and why."""
    excluded = []
    for status in dict.fromkeys(job.status for job in config.jobs if job.status != "completed"):
        left_out = [job for job in config.jobs if job.status == status]
        excluded.append(f"{status}: {len(left_out)} ({_which(left_out)})")
    stats = {}
    for metric in columns:
        # A non-finite value would make the mean NaN (or infinite): it is left out and named.
        reported = [job for job in config.completed if metric in job.metrics]
        bad = [job for job in reported if not math.isfinite(job.metrics[metric])]
        for value in dict.fromkeys(str(job.metrics[metric]) for job in bad):
            with_value = [job for job in bad if str(job.metrics[metric]) == value]
            excluded.append(f"{metric} {value}: {len(with_value)} excluded ({_which(with_value)})")
        values = [job.metrics[metric] for job in reported if job not in bad]
        stats[metric] = seed_statistics(values) if values else None
    return stats, excluded


def _config_table(
    jobs: list[SweepJob],
    metrics: tuple[str, ...],
    metric_header: Callable[[str], list[str]],
    metric_cells: Callable[[Stats | None, int], list[str]],
) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a configuration table, each metric's columns made by metric_header and metric_cells."""
    columns = metric_columns(jobs, metrics)
    searched = any(job.best is not None for job in jobs)  # an Optuna search: a `best` column first
    header = [*(["best"] if searched else []), "overrides", "n", "seeds",
              *(name for m in columns for name in metric_header(m)), "excluded"]  # fmt: skip
    rows = []
    for config in sweep_configs(jobs):
        stats, excluded = _config_statistics(config, columns)
        n = len(config.completed)
        best = ["best" if any(job.best for job in config.jobs) else ""] if searched else []
        rows.append([*best, " ".join(config.overrides) or "(none)", str(n),
                     ", ".join(job_seed(job) for job in config.completed),
                     *(cell for m in columns for cell in metric_cells(stats[m], n)), "; ".join(excluded)])  # fmt: skip
    return header, rows


def _rounded_cell(stats: Stats | None, n: int) -> list[str]:
    if stats is None:
        return [""]
    mean, std, k = stats
    cell = f"{mean:.4f}" if std is None else f"{mean:.4f} ± {std:.4f}"
    return [cell + (f" (n={k})" if k == 1 or k != n else "")]


def config_rows(jobs: list[SweepJob], metrics: tuple[str, ...] = METRICS) -> tuple[list[str], list[list[str]]]:
    """Header and rows (strings) of the configuration table: overrides, n, seeds, mean ± std per metric, excluded.

    A metric cell over one value is `mean (n=1)`; over fewer values than the row's n (some left out), it ends
    with its own `(n=k)`.
    """
    return _config_table(jobs, metrics, lambda metric: [metric], _rounded_cell)


def configs_markdown(jobs: list[SweepJob], folder: str | Path, metrics: tuple[str, ...] = METRICS) -> str:
    """Markdown: the shared overrides, then one row per configuration, its metrics as mean ± sample std over seeds."""
    configs = sweep_configs(jobs)
    heading = [f"{len(configs)} configurations (jobs whose overrides differ only in {SEED}=...); metrics: {SPREAD}."]
    return _markdown(jobs, folder, heading, *config_rows(jobs, metrics))


def _unrounded_header(metric: str) -> list[str]:
    return [f"{metric} mean", f"{metric} std (ddof=1)", f"{metric} n"]


def _unrounded_cells(stats: Stats | None, n: int) -> list[str]:
    if stats is None:
        return ["", "", "0"]
    mean, std, k = stats
    return [repr(mean), "" if std is None else repr(std), str(k)]


def configs_csv(jobs: list[SweepJob], metrics: tuple[str, ...] = METRICS) -> str:
    """CSV of the configuration table with unrounded numbers: per metric `mean`, `std (ddof=1)` and `n` columns."""
    return _csv(*_config_table(jobs, metrics, _unrounded_header, _unrounded_cells))
