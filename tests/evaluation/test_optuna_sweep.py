"""`hparams_search=loss_weights_optuna`: Hydra's Optuna sweeper on demo-scale runs, its SQLite study, its report."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_sweeps import SMALL, write_job

from d3sr.errors import D3SRError
from d3sr.evaluation.sweeps import configs_markdown, read_sweep, sweep_markdown

optuna = pytest.importorskip("optuna")  # the `sweeps` extra
REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """python ARGS from the repository, offline: the Optuna sweeper's real command line, in its own process."""
    environ = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=environ, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def run_search(tmp_path: Path, *args: str) -> Path:
    """One invocation of the search (one iteration per trial, study in tmp_path/studies/study.db); its multirun folder.

    The studies/ folder does not exist before the first search: the command creates it (SQLite cannot).
    """
    before = set((tmp_path / "demo" / "multiruns").glob("*"))
    result = run_cli("-m", "d3sr.train", "-m", "experiment=demo", "hparams_search=loss_weights_optuna", *SMALL,
                     f"paths.log_dir={tmp_path}",
                     f"hydra.sweeper.storage=sqlite:///{tmp_path / 'studies' / 'study.db'}", *args)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = set((tmp_path / "demo" / "multiruns").glob("*")) - before
    return sweep


def job_trials(sweep: Path) -> list[tuple[dict[str, float], dict]]:
    """(swept parameters, result.json) of each job of the search in `sweep`."""
    jobs = []
    for job in sorted(p for p in sweep.iterdir() if p.name.isdigit()):
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        params = {k: float(v) for k, v in (o.split("=", 1) for o in overrides) if k.startswith("loss.lambda_")}
        jobs.append((params, json.loads((job / "result.json").read_text())))
    return jobs


def load_study(tmp_path: Path) -> optuna.study.Study:
    return optuna.load_study(study_name="loss_weights", storage=f"sqlite:///{tmp_path / 'studies' / 'study.db'}")


def test_the_search_maximises_the_default_metric_with_a_seeded_tpe(compose):
    from hydra.utils import instantiate

    cfg = compose(["experiment=demo", "hparams_search=loss_weights_optuna", "paths.output_dir=/tmp/x"],
                  return_hydra_config=True)  # fmt: skip
    sweeper = cfg.hydra.sweeper
    assert cfg.optimized_metric == "val/psnr_y" and sweeper.direction == "maximize"  # PSNR-Y: higher is better
    assert sweeper.storage is None and sweeper.study_name == "loss_weights"
    assert (sweeper.n_trials, sweeper.n_jobs) == (20, 1)
    assert sweeper._target_.endswith("OptunaSweeper")
    sampler = instantiate(sweeper.sampler)
    assert isinstance(sampler, optuna.samplers.TPESampler) and sweeper.sampler.seed == cfg.seed
    assert dict(sweeper.params) == {"loss.lambda_adv": "tag(log, interval(0.002, 0.01))",
                                    "loss.lambda_ea_dists": "interval(0.5, 2.0)"}  # fmt: skip


def test_two_trials_are_stored_in_the_sqlite_study_and_reported(tmp_path):
    sweep = run_search(tmp_path, "hydra.sweeper.n_trials=2")
    jobs = job_trials(sweep)
    assert len(jobs) == 2 and all(result["status"] == "completed" for _, result in jobs)
    for params, _ in jobs:  # the search's ranges: lambda_adv log-uniform in [0.002, 0.01], lambda_ea_dists in [0.5, 2]
        assert set(params) == {"loss.lambda_adv", "loss.lambda_ea_dists"}
        assert 0.002 <= params["loss.lambda_adv"] <= 0.01 and 0.5 <= params["loss.lambda_ea_dists"] <= 2.0
    assert jobs[0][0] != jobs[1][0]

    # The study holds both trials, complete, with the value each job returned (its val/psnr_y), and is maximised.
    study = load_study(tmp_path)
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert [(t.params, t.value) for t in study.trials] == [(p, r["metrics"]["val/psnr_y"]) for p, r in jobs]

    # The sweeper's summary and the report agree on the best trial: the higher PSNR-Y.
    best_params, best_result = max(jobs, key=lambda job: job[1]["metrics"]["val/psnr_y"])
    summary = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert summary["best_params"] == best_params and summary["best_value"] == best_result["metrics"]["val/psnr_y"]
    report = run_cli("-m", "d3sr.sweep_report", str(sweep))
    assert report.returncode == 0, report.stderr[-2000:]
    rows = list(csv.DictReader((sweep / "sweep_report_jobs.csv").open()))
    best_job = next(str(i) for i, (params, _) in enumerate(jobs) if params == best_params)
    assert [r["best"] for r in rows] == ["best" if r["job"] == best_job else "" for r in rows]
    assert [float(r["val/psnr_y"]) for r in rows] == pytest.approx([r["metrics"]["val/psnr_y"] for _, r in jobs],
                                                                   abs=1e-4)  # fmt: skip
    assert f"run by job {best_job}." in report.stdout


@pytest.mark.slow
def test_a_second_invocation_resumes_the_study(tmp_path):
    first = run_search(tmp_path, "hydra.sweeper.n_trials=1")
    # A new sampler seed, or TPE's random start-up trials would repeat the first invocation's points.
    second = run_search(tmp_path, "hydra.sweeper.n_trials=1", "hydra.sweeper.sampler.seed=1")
    (first_params, first_result), (second_params, second_result) = job_trials(first) + job_trials(second)
    study = load_study(tmp_path)
    assert [(t.number, t.state) for t in study.trials] == [(0, optuna.trial.TrialState.COMPLETE),
                                                           (1, optuna.trial.TrialState.COMPLETE)]  # fmt: skip
    assert [t.params for t in study.trials] == [first_params, second_params] and first_params != second_params
    assert study.trials[1].value == second_result["metrics"]["val/psnr_y"]
    # The second folder's summary is the whole study's best, which may be a trial of the first folder.
    summary = yaml.safe_load((second / "optimization_results.yaml").read_text())
    best = max(
        (first_params, first_result), (second_params, second_result), key=lambda j: j[1]["metrics"]["val/psnr_y"]
    )
    assert summary["best_params"] == best[0]
    (job,) = read_sweep(second)
    assert job.best == (best[0] == second_params)


def test_report_marks_the_best_trial_and_says_when_it_ran_elsewhere(tmp_path):
    write_job(tmp_path, 0, ["loss.lambda_adv=0.004", "loss.lambda_ea_dists=1.5", "experiment=demo"],
              {"status": "completed", "metrics": {"val/psnr_y": 24.1}, "iterations": 1})  # fmt: skip
    write_job(tmp_path, 1, ["loss.lambda_adv=0.0066", "loss.lambda_ea_dists=0.75", "experiment=demo"],
              {"status": "completed", "metrics": {"val/psnr_y": 24.3}, "iterations": 1})  # fmt: skip
    write_job(tmp_path, 2, ["loss.lambda_adv=0.009", "loss.lambda_ea_dists=1.9", "experiment=demo"],
              {"status": "failed", "error": "D3SRError: diverged"})  # fmt: skip
    results = tmp_path / "optimization_results.yaml"
    results.write_text("name: optuna\nbest_params:\n  loss.lambda_adv: 0.0066\n  loss.lambda_ea_dists: 0.75\n"
                       "best_value: 24.3\n")  # fmt: skip
    jobs = read_sweep(tmp_path)
    assert [job.best for job in jobs] == [False, True, False]
    table = sweep_markdown(jobs, tmp_path)
    assert "Optuna best: loss.lambda_adv=0.0066 loss.lambda_ea_dists=0.75 (value 24.3000), run by job 1." in table
    assert "| job | best | overrides | status |" in table
    assert "| 1 | best | loss.lambda_adv=0.0066 loss.lambda_ea_dists=0.75 | completed | 24.3000 |" in table
    assert "| 2 |  | loss.lambda_adv=0.009 loss.lambda_ea_dists=1.9 | failed |" in table
    # The configuration table (one seed each) marks the best trial's configuration too.
    table = configs_markdown(jobs, tmp_path)
    assert "| best | overrides | n | seeds | val/psnr_y | excluded |" in table
    assert "| best | loss.lambda_adv=0.0066 loss.lambda_ea_dists=0.75 | 1 | default | 24.3000 (n=1) |  |" in table
    assert "|  | loss.lambda_adv=0.009 loss.lambda_ea_dists=1.9 | 0 |  |  | failed: 1 (job 2 seed default) |" in table

    # A resumed study's best can be a trial of an earlier invocation, in another folder.
    results.write_text("name: optuna\nbest_params:\n  loss.lambda_adv: 0.003\n  loss.lambda_ea_dists: 1.0\n"
                       "best_value: 24.9\n")  # fmt: skip
    jobs = read_sweep(tmp_path)
    assert not any(job.best for job in jobs)
    assert "run by a trial of an earlier invocation of the study (not in this folder)" in sweep_markdown(
        jobs, tmp_path
    )

    # A multi-objective search: every job of the Pareto front is marked.
    results.write_text(yaml.safe_dump({"name": "optuna", "solutions": [
        {"params": {"loss.lambda_adv": 0.004, "loss.lambda_ea_dists": 1.5}, "values": [24.1, 0.02]},
        {"params": {"loss.lambda_adv": 0.0066, "loss.lambda_ea_dists": 0.75}, "values": [24.3, 0.03]}]}))  # fmt: skip
    jobs = read_sweep(tmp_path)
    assert [job.best for job in jobs] == [True, True, False]
    assert "2 Pareto-optimal trials, jobs 0, 1." in sweep_markdown(jobs, tmp_path)

    results.write_text("name: optuna\nbest_value: 24.3\n")
    with pytest.raises(D3SRError, match="is not an Optuna sweeper result"):
        read_sweep(tmp_path)


def test_a_search_without_an_optimized_metric_is_refused_before_training(run_command, tmp_path):
    """In this process (a real search process runs in test_two_trials_are_stored_in_the_sqlite_study_and_reported)."""
    result = run_command("train", "-m", "experiment=demo", "hparams_search=loss_weights_optuna", *SMALL,
                         f"paths.log_dir={tmp_path}", "optimized_metric=null", "hydra.sweeper.n_trials=1",
                         cwd=REPO)  # fmt: skip
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "optimized_metric is null, but the Optuna sweeper needs a value" in errors[0]
    assert not list(tmp_path.rglob("*.ckpt"))  # stopped before training


def test_a_nan_optimized_metric_is_a_failed_run(compose, monkeypatch, tmp_path):
    import d3sr.train

    metrics = {"val/psnr_y": float("nan"), "val/ssim_y": 0.5}
    monkeypatch.setattr(d3sr.train, "train", lambda cfg: {"metrics": metrics, "checkpoint": None, "iterations": 1})
    cfg = compose(["experiment=demo", f"paths.output_dir={tmp_path}"])
    value = d3sr.train.train_for_sweeper(cfg)
    assert value != value  # NaN goes back to the sweeper, which marks the trial failed
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["status"] == "failed" and result["error"] == "optimized_metric val/psnr_y is nan"
