"""A finished Hydra multirun as one table: a row per job with its overrides, status, final metrics and checkpoint.

A multirun folder (`logs/train/multiruns/<date>/`, or any `hydra.sweep.dir`) holds one numbered folder per job with
`.hydra/overrides.yaml` (written by Hydra) and `result.json` (written by d3sr.train, see d3sr.run_results). Jobs that
failed are listed with their error and jobs that wrote no result (killed, or still running) are listed as such:
nothing is dropped. The folder of an Optuna search (`hparams_search=loss_weights_optuna`) also holds the sweeper's
`optimization_results.yaml`: its best parameters are shown, and the job (or jobs, for a Pareto front) that ran them
is marked best.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from d3sr.errors import D3SRError
from d3sr.run_results import read_run_result

METRICS = ("val/psnr_y", "val/ssim_y", "val/dists")
OPTUNA_RESULTS = "optimization_results.yaml"  # written by Hydra's Optuna sweeper at the end of a search


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


def _columns(jobs: list[SweepJob], metrics: tuple[str, ...]) -> list[str]:
    present = {name for job in jobs for name in job.metrics}
    return [m for m in metrics if m in present]


def sweep_rows(jobs: list[SweepJob], metrics: tuple[str, ...] = METRICS) -> tuple[list[str], list[list[str]]]:
    """Header and rows (strings) of the table: job, overrides, status, metrics, iterations, checkpoint or error."""
    columns = _columns(jobs, metrics)
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


def sweep_markdown(jobs: list[SweepJob], folder: str | Path, metrics: tuple[str, ...] = METRICS) -> str:
    """Markdown: the shared overrides, then one row per job."""
    common, _ = swept_overrides(jobs)
    header, rows = sweep_rows(jobs, metrics)
    failed = sum(job.status != "completed" for job in jobs)
    best = read_optuna_best(folder)
    lines = [f"Multirun {folder}: {len(jobs)} jobs, {len(jobs) - failed} completed, {failed} not.",
             f"Shared overrides: {' '.join(common) or '(none)'}", *([optuna_summary(jobs, best)] if best else []), "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]  # fmt: skip
    lines += ["| " + " | ".join(cell.replace("|", "\\|").replace("\n", " ") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def sweep_csv(jobs: list[SweepJob], metrics: tuple[str, ...] = METRICS) -> str:
    """CSV with the same columns as the Markdown table."""
    header, rows = sweep_rows(jobs, metrics)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()
