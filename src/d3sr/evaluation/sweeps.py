"""A finished Hydra multirun as one table: a row per job with its overrides, status, final metrics and checkpoint.

A multirun folder (`logs/train/multiruns/<date>/`, or any `hydra.sweep.dir`) holds one numbered folder per job with
`.hydra/overrides.yaml` (written by Hydra) and `result.json` (written by d3sr.train, see d3sr.run_results). Jobs that
failed are listed with their error and jobs that wrote no result (killed, or still running) are listed as such:
nothing is dropped.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from d3sr.errors import D3SRError
from d3sr.run_results import read_run_result

METRICS = ("val/psnr_y", "val/ssim_y", "val/dists")


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
    header = ["job", "overrides", "status", *columns, "iterations", "checkpoint / error"]
    rows = []
    for job, overrides in zip(jobs, own):
        values = [f"{job.metrics[m]:.4f}" if m in job.metrics else "" for m in columns]
        where = (job.checkpoint or "") if job.status == "completed" else (job.error or "")
        rows.append([str(job.number), " ".join(overrides) or "(none)", job.status, *values,
                     "" if job.iterations is None else str(job.iterations), where])  # fmt: skip
    return header, rows


def sweep_markdown(jobs: list[SweepJob], folder: str | Path, metrics: tuple[str, ...] = METRICS) -> str:
    """Markdown: the shared overrides, then one row per job."""
    common, _ = swept_overrides(jobs)
    header, rows = sweep_rows(jobs, metrics)
    failed = sum(job.status != "completed" for job in jobs)
    lines = [f"Multirun {folder}: {len(jobs)} jobs, {len(jobs) - failed} completed, {failed} not.",
             f"Shared overrides: {' '.join(common) or '(none)'}", "",
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
