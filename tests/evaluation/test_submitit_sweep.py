"""Cluster sweeps through Hydra's submitit launcher, tested with its local executor (hydra/launcher=submitit_local)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_sweeps import REPO, SMALL

pytest.importorskip("hydra_plugins.hydra_submitit_launcher")  # the `sweeps` extra


@pytest.mark.slow
def test_submitit_local_runs_each_job_in_its_own_process_and_is_reported(tmp_path):
    # One thread per job: the two jobs run at once, and two cores are all CI has.
    environ = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    command = ["-m", "d3sr.train", "-m", "experiment=demo", "hydra/launcher=submitit_local",
               "loss.lambda_adv=0.002,0.01", *SMALL, f"paths.log_dir={tmp_path}"]  # fmt: skip
    result = subprocess.run([sys.executable, *command], cwd=REPO, env=environ, capture_output=True, text=True,
                            timeout=900)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "demo" / "multiruns").iterdir()

    # submitit ran the jobs: one folder of logs per job under the launcher's submitit_folder, <sweep>/.submitit/<id>.
    logs = sorted(sweep.glob(".submitit/*/*_log.out"))
    assert len(logs) == 2 and all("Finished 1 iterations" in log.read_text() for log in logs)

    report = subprocess.run([sys.executable, "-m", "d3sr.sweep_report", str(sweep)], cwd=REPO, env=environ,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert report.returncode == 0, report.stderr[-2000:]
    rows = list(csv.DictReader((sweep / "sweep_report_jobs.csv").open()))
    assert [r["overrides"] for r in rows] == ["loss.lambda_adv=0.002", "loss.lambda_adv=0.01"]
    assert all(r["status"] == "completed" and float(r["val/psnr_y"]) > 15 for r in rows), rows
    assert all(Path(r["checkpoint / error"]).is_file() for r in rows)
    assert "best" not in rows[0]  # not an Optuna search
