"""Multirun tables: `python -m d3sr.sweep_report` on the paper's Table 4b sweep and on a sweep with a failed job."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from d3sr.errors import D3SRError
from d3sr.evaluation.sweeps import read_sweep, sweep_markdown, swept_overrides

REPO = Path(__file__).resolve().parents[2]
SMALL = ["iterations=1", "checkpoint_every=1", "degradation=bicubic", "data.crop_size=64", "data.crops_per_image=1",
         "data.batch_size=2", "data.val_crops_per_image=1", "data.val_crop_size=64", "trainer.val_check_interval=1",
         "callbacks.image_logger=null", "logger=none"]  # fmt: skip


def run_cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    environ = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=environ, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def write_job(folder: Path, number: int, overrides: list[str], result: dict | None) -> None:
    job = folder / str(number)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if result is not None:
        (job / "result.json").write_text(json.dumps(result))


def test_report_keeps_failed_and_unfinished_jobs(tmp_path):
    write_job(tmp_path, 0, ["experiment=demo", "loss=paper"], {"status": "completed", "iterations": 150,
              "metrics": {"val/psnr_y": 24.5, "val/ssim_y": 0.7}, "checkpoint": "/x/last.ckpt"})  # fmt: skip
    write_job(tmp_path, 1, ["experiment=demo", "loss=lpips"], {"status": "failed", "error": "D3SRError: no VGG16"})
    write_job(tmp_path, 2, ["experiment=demo", "loss=dists"], None)
    jobs = read_sweep(tmp_path)
    assert [(j.number, j.status) for j in jobs] == [(0, "completed"), (1, "failed"), (2, "no result")]
    table = sweep_markdown(jobs, tmp_path)
    assert "Shared overrides: experiment=demo" in table and "3 jobs, 1 completed, 2 not" in table
    assert "| 0 | loss=paper | completed | 24.5000 | 0.7000 | 150 | /x/last.ckpt |" in table
    assert "| 1 | loss=lpips | failed |" in table and "D3SRError: no VGG16" in table
    assert "| 2 | loss=dists | no result |" in table


def test_report_of_a_folder_without_jobs_is_one_clear_error(tmp_path):
    with pytest.raises(D3SRError, match="holds no multirun jobs"):
        read_sweep(tmp_path)
    result = run_cli("-m", "d3sr.sweep_report", str(tmp_path / "missing"))
    assert result.returncode == 2 and result.stderr.startswith("error:") and "Traceback" not in result.stderr


def test_table4b_multirun_runs_every_row_and_is_reported(tmp_path):
    """The demo-scale Table 4b (none, pixel CNN, random-init latent UNet, SD-style, SDXL-style), one iteration each."""
    result = run_cli("-m", "d3sr.train", "-m", "experiment=demo", "hparams_search=table4b", *SMALL,
                     f"paths.log_dir={tmp_path}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "demo" / "multiruns").iterdir()
    report = run_cli("-m", "d3sr.sweep_report", str(sweep))
    assert report.returncode == 0, report.stderr[-2000:]
    rows = list(csv.DictReader((sweep / "sweep_report.csv").open()))
    assert [r["overrides"] for r in rows] == [f"model/discriminator={d}" for d in
                                              ("none", "demo_pixel", "demo_scratch", "demo_sd", "demo")]  # fmt: skip
    assert all(r["status"] == "completed" and float(r["val/psnr_y"]) > 15 for r in rows), rows
    assert all(Path(r["checkpoint / error"]).is_file() for r in rows)
    assert "| 0 | model/discriminator=none | completed |" in report.stdout


def test_a_failed_job_does_not_stop_the_sweep_and_keeps_its_row(tmp_path):
    result = run_cli("-m", "d3sr.train", "-m", "experiment=demo", "model/generator=tiny", "model/discriminator=tiny",
                     "model.generator.timestep=5000,399", *SMALL, f"paths.log_dir={tmp_path}")  # fmt: skip
    assert result.returncode != 0  # Hydra reports the failed job once the sweep is done
    said = result.stdout + result.stderr
    assert "job 0 failed:" in said and "model.generator.timestep must be in [0, 999], got 5000" in said
    (sweep,) = (tmp_path / "demo" / "multiruns").iterdir()
    jobs = read_sweep(sweep)
    assert [j.status for j in jobs] == ["failed", "completed"]  # job 1 ran after job 0 failed
    assert "timestep must be in [0, 999], got 5000" in jobs[0].error and jobs[1].checkpoint


@pytest.mark.slow
def test_table4a_multirun_runs_every_loss_row(tmp_path):
    result = run_cli("-m", "d3sr.train", "-m", "experiment=demo", "hparams_search=table4a", *SMALL,
                     f"paths.log_dir={tmp_path}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "demo" / "multiruns").iterdir()
    jobs = read_sweep(sweep)
    _, own = swept_overrides(jobs)
    assert own == [[f"loss={o}"] for o in ("mse_only", "lpips", "ea_lpips", "dists", "paper")]
    assert all(j.status == "completed" for j in jobs)
